"""`python -m cnn_study [group=option ...] [key=value ...]`: one run, or a sweep with -m.

Exit codes: 0 done; 1 a run failed, or a sweep ran and some of its jobs failed (after its
summary; a diverged job is a result, not a failure); 2 the command line or the config is
wrong (nothing trained);
128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM), resumable from its last checkpoint.

Thin and light: torch and Lightning are imported only once the config is composed and its
numbers are checked, so `--help`, an unknown option and an out-of-range value answer in a
couple of seconds."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnn_study.config import CONFIG_NAME, CONFIG_PATH
from cnn_study.errors import CnnStudyError, interruption, user_error
from cnn_study.paths import output_root
from cnn_study.processes import needs_own_process_group, run_job_in_child
from cnn_study.runlock import LOCK_FILE
from cnn_study.schema import check_ranges
from cnn_study.sweep import unfinished_jobs

log = logging.getLogger("cnn_study")
# Jobs that reached the task function: an error before the first one is the command
# line's or the config's (exit 2), not a run's.
JOBS_STARTED: list[bool] = []


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    """Run one job; return its objective (cfg.objective, what sweepers optimise)."""
    JOBS_STARTED.append(True)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if not multirun:  # a sweep records a rejected job in its results.json (train.run)
        reject_early(cfg)
    from cnn_study.train import objective_value, resume_checkpoint, run, task_overrides

    try:
        if multirun and needs_own_process_group(cfg):  # its ranks re-run a single run
            results = run_job_in_child(cfg, task_overrides())
        else:
            results = run(cfg)
    except BaseException as error:
        stopped = interruption(error)
        if stopped is not None:  # also ends a sweep: the user (or the cluster) stopped it
            try:
                last = resume_checkpoint(cfg, required=False)
            except CnnStudyError:  # checkpoints off: nothing to resume either
                last = None
            if multirun:
                log.warning("%s: stopped. %s", stopped, continuation())
            elif last:
                log.warning(
                    "%s: stopped; %s holds the last completed epoch. Continue with the same "
                    "command and resume=true hydra.run.dir=%s",
                    stopped, last, cfg.paths.output_dir,
                )  # fmt: skip
            else:
                log.warning(
                    "%s: stopped before an epoch completed: no checkpoint, nothing to resume; "
                    "start again with the same command",
                    stopped,
                )
            sys.exit(128 + int(getattr(signal, stopped)))
        if not isinstance(error, Exception):
            raise
        problem = user_error(error)
        if multirun:
            # One job must not end a sweep: its results.json records the status and error,
            # its log file the message (and the traceback of a bug); the sweep goes on.
            if problem is None:
                log.exception("job failed")
            else:
                log.error("%s", problem)
            return None  # no objective: Optuna's sweeper marks the trial failed
        if problem is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", problem)  # a user error: one clear message, exit code 2
        sys.exit(2)
    return objective_value(cfg, results) if multirun else None


def continuation() -> str:
    """How a stopped sweep or study continues, as it must be typed: a study's job points
    to the study's own command, a sweep's job to the sweep's."""
    hydra_cfg = HydraConfig.get()
    if str(hydra_cfg.sweeper.get("_target_", "")).endswith("StudySweeper"):
        from cnn_study.study.definition import read_study

        command = read_study(Path(hydra_cfg.sweeper.study)).run.command
        return f"Continue the study with the same command: {command}"
    return (
        "Continue the sweep with the same command and resume=auto "
        f"hydra.sweep.dir={hydra_cfg.sweep.dir} (completed jobs are not run again, "
        "interrupted ones resume from their last epoch)"
    )


def reject_early(cfg: DictConfig) -> None:
    """A single run's out-of-range value: one line, exit 2, before any heavy import
    (HYDRA_FULL_ERROR=1: its traceback, as for every other error); the folder Hydra made
    for it is removed when it holds nothing else (no run happened)."""
    try:
        check_ranges(cfg)
        # A declared sweep whose keys the command does not set (a sweep's job, or its
        # ranks' single run, sets each one: it is a point of the sweep).
        declared = HydraConfig.get().sweeper.get("params") or {}
        given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
        if set(declared) - given:
            sweep = " ".join(f"{key}={value}" for key, value in declared.items())
            raise CnnStudyError(
                f"this config declares a sweep ({sweep}), which a single run would not "
                "run: add -m to run it, or set those keys yourself for one run"
            )
    except CnnStudyError as problem:
        output_dir = Path(cfg.paths.output_dir)
        leftovers = {p.name for p in output_dir.iterdir()} if output_dir.is_dir() else set()
        if leftovers <= {".hydra", f"{HydraConfig.get().job.name}.log", LOCK_FILE}:
            shutil.rmtree(output_dir, ignore_errors=True)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", problem)
        sys.exit(2)


def writable_problem(path: Path) -> str | None:
    """Why runs cannot be written under `path`, or None when they can."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_outputs(arguments: list[str]) -> None:
    """The output root and any run/sweep dir given on the command line must be writable:
    say so in one line before Hydra creates folders or log files there."""
    candidates = [("the output root ($CNN_STUDY_OUTPUT)", output_root())]
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            candidates.append((key, Path(value.strip("'\"")).expanduser()))
    for what, path in candidates:
        problem = writable_problem(path)
        if problem:
            raise CnnStudyError(f"{what} {path}: cannot write there, {problem}")


def misspelt_key_hint(arguments: list[str]) -> str | None:
    """For a command Hydra refused because an override names no key ("Could not override
    'optimizer.weight_decya'"): the closest key of that node. None for any other error."""
    import difflib

    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

    overrides = [a for a in arguments if "=" in a and not a.startswith(("-", "hydra"))
                 and "," not in a.split("=", 1)[1]]  # fmt: skip
    try:
        with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
            try:
                compose(CONFIG_NAME, overrides)
                return None
            except HydraException as error:
                cause = error.__cause__
                if not isinstance(cause, ConfigAttributeError) or not cause.full_key:
                    return None
                parent, _, key = str(cause.full_key).rpartition(".")
                rest = [o for o in overrides if o.split("=", 1)[0] != cause.full_key]
                node = OmegaConf.select(compose(CONFIG_NAME, rest), parent) if parent else None
    except (HydraException, OmegaConfBaseException):
        return None
    keys = [str(k) for k in node] if node is not None and OmegaConf.is_dict(node) else []
    close = difflib.get_close_matches(key, keys, n=1)
    if not close:
        return None
    return f"did you mean '{parent}.{close[0]}'? (keys of {parent}: {', '.join(keys)})"


def cli() -> None:
    """`cnn-study` / `python -m cnn_study`: outputs checked, then the Hydra app."""
    try:
        if any(argument.startswith("study=") for argument in sys.argv[1:]):
            raise CnnStudyError(
                "a study runs as its own command: python -m cnn_study.study study=<name>"
            )
        check_outputs(sys.argv[1:])
    except CnnStudyError as problem:
        print(f"cnn_study: error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except SystemExit as stop:
        # Hydra ends with 1 for any error; one before a job started is a config error
        # (unknown option or key, bad override syntax, missing launcher plugin).
        if stop.code == 1 and not JOBS_STARTED:
            hint = misspelt_key_hint(sys.argv[1:])
            if hint:
                print(f"cnn_study: {hint}", file=sys.stderr)
            sys.exit(2)
        raise
    if unfinished_jobs():
        sys.exit(1)  # a sweep that ran but has failed jobs: its summary names them


if __name__ == "__main__":
    cli()
