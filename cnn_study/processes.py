"""Which process does a job's work: a job of several processes inside a sweep or a study.

Lightning's DDP starts the other ranks by running the command line again
(`_SubprocessScriptLauncher`; under Hydra with the job's run dir). Inside a Hydra
multirun that command line is the whole sweep — or `python -m cnn_study.study`, whose
argument the study runner consumed — so the other ranks would run every job again, or
fail. A sweep's (or a study's) job that needs several processes therefore hands itself to
a child: `python -m cnn_study <the job's overrides> hydra.run.dir=<the job's folder>`, a
single run of exactly the job's config, which Lightning's launcher re-runs faithfully for
each rank. The job waits for it and reports what it wrote to results.json.

Where the cluster starts the ranks itself (SLURM's tasks: `hydra/launcher=slurm` with
`tasks_per_node` = `trainer.devices`, or srun; torchrun), every process is a rank already
and runs the job in place.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from cnn_study.errors import CnnStudyError

log = logging.getLogger(__name__)

# Strategies whose launcher runs the script again for every other rank.
SCRIPT_LAUNCHED = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
RANK_VARIABLES = ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "RANK")


def device_count(devices: Any, accelerator: str = "auto") -> int:
    """How many devices `trainer.devices` names: an int, a list, a string of either;
    "auto" or -1 are the visible GPUs on a GPU accelerator, else 1."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    if accelerator in ("auto", "gpu", "cuda"):
        import torch

        return max(torch.cuda.device_count(), 1)
    return 1


def processes(trainer: DictConfig) -> int:
    """The training processes a run's trainer config asks for (devices × nodes)."""
    count = device_count(trainer.get("devices", "auto"), str(trainer.get("accelerator", "auto")))
    return count * int(trainer.get("num_nodes", 1) or 1)


def relaunches_script(trainer: DictConfig) -> bool:
    """Whether Lightning would start this run's other ranks by running the command again."""
    strategy = trainer.get("strategy", "auto")
    return isinstance(strategy, str) and strategy in SCRIPT_LAUNCHED and processes(trainer) > 1


def is_rank_process() -> bool:
    """Whether a launcher or the cluster made this process one rank of a run already."""
    return any(name in os.environ for name in RANK_VARIABLES)


def needs_own_process_group(cfg: DictConfig) -> bool:
    """A sweep's job that must hand its run to a child command (see the module's doc)."""
    return relaunches_script(cfg.trainer) and not is_rank_process()


def child_command(overrides: list[str], output_dir: Path) -> list[str]:
    """The single-run command of a job: its overrides, its folder."""
    return [sys.executable, "-m", "cnn_study", *overrides, f"hydra.run.dir={output_dir}",
            "hydra.job.name=cnn_study_ranks"]  # fmt: skip


def run_in_child(overrides: list[str], output_dir: Path) -> int:
    """Run a job as a single run in a child process (which starts the other ranks) and
    wait; a stop signal to this process is passed on, so the run ends `interrupted`."""
    child = subprocess.Popen(child_command(overrides, output_dir))
    previous = {}

    def forward(number: int, frame: Any) -> None:
        child.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGUSR1):
        previous[number] = signal.signal(number, forward)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        child.wait()
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def outcome(code: int, results: dict[str, Any]) -> dict[str, Any]:
    """A child's exit as this job's outcome: its results when it completed; a stop signal
    raised as the interruption it was (the job says how to continue), a config or data
    error (exit 2) as a user error, any other failure as an error naming it."""
    if code == 0:
        return results
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number == signal.SIGINT:
        raise KeyboardInterrupt
    if number == signal.SIGTERM:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException
    error = results.get("error") or (
        f"killed by signal {number}" if number is not None else f"exit code {code}"
    )
    if code == 2:
        raise CnnStudyError(str(error))
    raise RuntimeError(f"the job's processes failed: {error}")


def run_job_in_child(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """A sweep's job of several processes, run as a single-run child (see the module's
    doc); its results.json."""
    from cnn_study.rundir import read_results

    output_dir = Path(cfg.paths.output_dir)
    log.info("%s: %d processes, started by a single run of this job's overrides",
             output_dir, processes(cfg.trainer))  # fmt: skip
    code = run_in_child(overrides, output_dir)
    return outcome(code, read_results(output_dir))
