"""One live run per folder: a run holds `.run.lock` (PID, host, SLURM job, start time) in
its folder while it trains; a second process refuses with one line naming the holder.

A lock whose process is gone (same host, PID not alive) or that an earlier attempt of a
requeued SLURM job left behind (same SLURM_JOB_ID, a lower SLURM_RESTART_COUNT) is stale:
taken over with a warning. A lock from another host cannot be checked and is refused; the
message says which file to delete if that process is known to be gone. Only the first
process of a run takes the lock: the other DDP ranks (RANK / LOCAL_RANK / SLURM_PROCID set
and not 0) share their rank 0's folder.

Hydra writes `.hydra/` and the job log into a run folder before the task starts, so a
single run takes its lock in Hydra's `on_run_start` callback, before any of that (where
a requeued SLURM job also finds its first attempt's folder: see `RunLock`); sweep
jobs get distinct folders by construction (`hydra.sweep.subdir`, the study runner's
`<part>/seed<k>`), and `train.run` takes the lock again, so that two sweeps pointed at
one folder cannot both train in it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from cnn_study.errors import CnnStudyError
from cnn_study.rundir import REPLACED, claim_folder, find_runs, move_aside, setting_differences

LOCK_FILE = ".run.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")

log = logging.getLogger(__name__)
_held: set[Path] = set()


class FolderBusyError(CnnStudyError):
    """Another live process trains in this run folder."""


def is_first_process() -> bool:
    """False in the other ranks of a DDP run, which share rank 0's folder and lock."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": slurm_restart(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_reason(holder: dict[str, Any]) -> str | None:
    """Why a lock left by `holder` no longer protects a live run, or None when it does."""
    me = _holder()
    job = holder.get("slurm_job_id")
    earlier = int(holder.get("slurm_restart") or 0) < me["slurm_restart"]
    if job and job == me["slurm_job_id"] and earlier:  # not a live process of this attempt
        return f"SLURM job {job} was requeued"
    if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
        return f"process {holder.get('pid')} has ended"
    return None


def acquire(folder: Path) -> None:
    """Take `folder`'s run lock (creating the folder); released at exit. Refuses with
    FolderBusyError when a live process holds it. Idempotent within one process."""
    folder = folder.resolve()
    if folder in _held or not is_first_process():
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    for _ in range(2):  # a second try after taking over a stale lock
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder.get("pid") == os.getpid() and holder.get("host") == _holder()["host"]:
                break
            reason = stale_reason(holder)
            if reason is None:
                raise FolderBusyError(
                    f"run folder {folder} is in use by process {holder.get('pid')} on "
                    f"{holder.get('host')} (since {holder.get('started')}); wait for it to "
                    "end or choose another folder (hydra.run.dir=...). If that process is "
                    f"gone, delete {path}"
                ) from None
            log.warning("taking over the run lock of %s: %s", folder, reason)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(_holder(), handle)
        break
    _held.add(folder)
    atexit.register(release, folder)


def release(folder: Path) -> None:
    """Give up `folder`'s lock if this process holds it."""
    folder = folder.resolve()
    if folder not in _held:
        return
    _held.discard(folder)
    path = folder / LOCK_FILE
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # half-written or just removed: treat as unknown holder
        return {}


def slurm_restart() -> int:
    """How often SLURM has started this job again (pre-emption, timeout, requeue); 0
    outside SLURM."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(restarts) if os.environ.get("SLURM_JOB_ID") and restarts.isdigit() else 0


def earlier_attempt(runs: Path, job_id: str, overrides: list[str]) -> Path | None:
    """The newest run folder under `runs` that this SLURM job made with these overrides
    before SLURM started it again (a requeued job's default folder is a new `${now}`)."""
    found = []
    for results in runs.glob("*/results.json"):
        try:
            recorded = json.loads(results.read_text())
        except (OSError, ValueError):
            continue
        if recorded.get("slurm_job_id") == job_id and recorded.get("overrides") == overrides:
            found.append(results.parent)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _pinned(config: DictConfig) -> bool:
    """Whether the command line chose the run folder (hydra.run.dir=...)."""
    given = config.hydra.overrides.get("hydra", []) or []
    return any(str(o).split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for o in given)


class RunLock(Callback):
    """Before Hydra writes into a single run's folder: a SLURM job that SLURM started again
    continues its first attempt's folder (unless `hydra.run.dir` pins one), the run takes
    the folder's lock, and a folder that holds a run is refused unless the command
    continues it or starts over (`rundir.claim_folder`); a busy or refused folder ends the
    command with one line and exit code 2, the folder untouched."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        if slurm_restart() and not _pinned(config):
            overrides = list(config.hydra.overrides.get("task", []) or [])
            earlier = earlier_attempt(folder.parent, os.environ["SLURM_JOB_ID"], overrides)
            if earlier is not None:
                log.info("requeued SLURM job %s: continuing %s", os.environ["SLURM_JOB_ID"],
                         earlier)  # fmt: skip
                with open_dict(config):
                    config.hydra.run.dir = str(earlier)
                folder = earlier
        if not is_first_process():  # a DDP rank joins its rank 0's run
            return
        try:
            acquire(folder)
            resume = "auto" if slurm_restart() and not config.resume else config.resume
            claim_folder(folder, resume, bool(config.get("start_over")),
                         lambda: recorded_differences(folder, config))  # fmt: skip
        except CnnStudyError as refused:
            release(folder)
            print(f"cnn_study: error: {refused}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep into a folder that holds runs: refused before any job unless it
        continues them (resume) or starts over (its runs move aside). A study's folder is
        the study runner's to check (`cnn_study.study`)."""
        if str(config.hydra.sweeper.get("_target_", "")).endswith("StudySweeper"):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = find_runs([sweep_dir]) if sweep_dir.is_dir() else []
        if not runs:
            return
        if config.get("start_over"):
            log.warning("start_over=true: %d runs of %s moved to %s", len(runs), sweep_dir,
                        move_aside(sweep_dir))  # fmt: skip
        elif not config.resume:
            print(
                f"cnn_study: error: sweep folder {sweep_dir} holds {len(runs)} runs; continue "
                "them with resume=auto (completed jobs are not run again), or start over "
                f"with start_over=true (they move to {sweep_dir}/{REPLACED}<time>/)",
                file=sys.stderr,
            )
            sys.exit(2)


def recorded_differences(folder: Path, config: DictConfig) -> list[str]:
    """Settings of the command that differ from those Hydra recorded for the folder's run
    (`.hydra/config.yaml`, both as composed, interpolations unresolved)."""
    path = folder / ".hydra" / "config.yaml"
    if not path.is_file():
        return []
    recorded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    wanted = OmegaConf.to_container(config, resolve=False)
    assert isinstance(recorded, dict) and isinstance(wanted, dict)
    wanted.pop("hydra", None)
    return setting_differences(recorded, wanted)
