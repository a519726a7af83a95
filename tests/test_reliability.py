"""Long runs and sweeps: resume after a hard kill, the NaN guard, failures inside sweeps."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnn_study.__main__ import cli as cli_here
from cnn_study.errors import CnnStudyError, DivergedError
from cnn_study.rundir import RESULTS_FILE
from cnn_study.train import run
from tests.conftest import NO_FIGURES, command_here
from tests.test_train import REPO, cli, scalars

# Augmentation and dropout draw from the global RNG every step: resume must restore it.
RUN = (
    "data=fake", "data.train_size=96", "trainer=cpu", "trainer.max_epochs=3",
    "augmentation=crop_flip_jitter", "regularization=dropout", "seed=7", *NO_FIGURES,
)  # fmt: skip
HELPERS = {"PYTHONPATH": str(REPO)}  # the subprocesses import tests.helpers
WORSENING = ("+callbacks.worsening._target_=tests.helpers.WorseningValAcc",)


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS_FILE).read_text())


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, compose_cfg) -> None:
    """Validation accuracy never improves after epoch 0, the run is killed after epoch 2 of
    4 and resumed: weights, optimizer state and every logged point equal an uninterrupted run.
    Only the killed run is a process of its own; both compute on one thread, as here."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    four = (*RUN, "trainer.max_epochs=4", *WORSENING)
    assert run(compose_cfg(*four, output_dir=whole))["status"] == "completed"
    steps_per_epoch = checkpoint(whole)["global_step"] // 4
    assert checkpoint(whole)["epoch"] == 3  # last.ckpt is the last epoch, not the best one

    kill = ("+callbacks.kill._target_=tests.helpers.KillAfterEpoch", "+callbacks.kill.epoch=2")
    crashed = cli(*four, *kill, f"hydra.run.dir={killed}", cwd=tmp_path, env=HELPERS)
    assert crashed.returncode == -signal.SIGKILL
    assert results(killed)["status"] == "running"  # the file shows it never finished
    assert checkpoint(killed)["epoch"] == 2
    assert checkpoint(killed)["global_step"] == 3 * steps_per_epoch
    timers = [v for k, v in checkpoint(killed)["callbacks"].items() if k.startswith("Timer")]
    trained_before_kill = timers[0]["time_elapsed"]["train"]

    # The same command continues it (its kill callback fires once per folder).
    assert run(compose_cfg(*four, *kill, "resume=true", output_dir=killed))["status"] == "completed"
    expected, got = checkpoint(whole), checkpoint(killed)
    assert got["global_step"] == expected["global_step"] == 4 * steps_per_epoch
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), name
    for index, state in expected["optimizer_states"][0]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got["optimizer_states"][0]["state"][index][key]), key
    a, b = results(whole), results(killed)
    assert b["status"] == "completed" and b["epochs"] == a["epochs"] == 4
    assert b["train_time_s"] > trained_before_kill > 0  # both processes' training counted
    for key in ("test/acc", "test/loss", "test/f1", "best_val/acc", "val/acc"):
        assert a[key] == b[key], key
    logged, relogged = scalars(whole), scalars(killed)  # one point per epoch, same values
    assert logged.keys() == relogged.keys()
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "lr"):
        assert len(logged[tag]) == 4 and logged[tag] == relogged[tag], tag


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_sigint_and_sigterm_end_as_interrupted_and_resume(
    tmp_path: Path, compose_cfg, name: str, code: int
) -> None:
    run_dir = tmp_path / "run"
    stop = ("+callbacks.stop._target_=tests.helpers.SignalAtEpoch",
            f"+callbacks.stop.signal_name={name}", "+callbacks.stop.epoch=2")  # fmt: skip
    stopped = cli(*RUN, *stop, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=HELPERS)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    assert "resume=true" in stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stdout + stopped.stderr
    saved = results(run_dir)
    assert saved["status"] == "interrupted" and saved["error"] == f"stopped by {name}"
    assert checkpoint(run_dir)["epoch"] == 1  # the last completed epoch
    run(compose_cfg(*RUN, *stop, "resume=true", output_dir=run_dir))  # the same command
    assert results(run_dir)["status"] == "completed" and results(run_dir)["epochs"] == 3
    assert len(scalars(run_dir)["val/acc"]) == 3


def fake_slurm(tmp_path: Path, restarts: int) -> dict[str, str]:
    """The environment of SLURM job 4242 (one task), with a stand-in `scontrol` on PATH
    that records what it is asked to do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return {
        **HELPERS, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "cnn_study", "SLURM_NTASKS": "1", "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
        "SLURM_RESTART_COUNT": str(restarts),
    }  # fmt: skip


def test_slurm_preemption_requeues_and_the_requeued_job_continues(
    tmp_path: Path, compose_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SLURM warns with SIGUSR1 (#SBATCH --signal=USR1@90), then pre-empts with SIGTERM:
    Lightning's auto-requeue calls `scontrol requeue`; the same command, started again by
    SLURM (SLURM_RESTART_COUNT=1; here in-process), continues from last.ckpt instead of
    starting over."""
    run_dir = tmp_path / "job"
    command = (*RUN, f"hydra.run.dir={run_dir}",
               "+callbacks.preempt._target_=tests.helpers.SignalAtEpoch",
               "+callbacks.preempt.signal_name='SIGUSR1,SIGTERM'", "+callbacks.preempt.epoch=2",
               "+callbacks.preempt.first_attempt_only=true")  # fmt: skip
    first = cli(*command, cwd=tmp_path, env=fake_slurm(tmp_path, restarts=0))
    assert first.returncode == 143, first.stderr[-2000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert results(run_dir)["status"] == "interrupted"
    assert checkpoint(run_dir)["epoch"] == 1
    steps_per_epoch = checkpoint(run_dir)["global_step"] // 2

    for key, value in fake_slurm(tmp_path, restarts=1).items():
        monkeypatch.setenv(key, value)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGUSR1, signal.SIGTERM)}
    with caplog.at_level("INFO"):
        run(compose_cfg(*command, output_dir=run_dir))  # its preempt callback: inert now
    assert {number: signal.getsignal(number) for number in handlers} == handlers  # restored
    assert "requeued SLURM job (restart 1): resume=auto" in caplog.text
    assert "resuming from" in caplog.text and "last.ckpt" in caplog.text
    assert results(run_dir)["status"] == "completed" and results(run_dir)["epochs"] == 3
    assert checkpoint(run_dir)["global_step"] == 3 * steps_per_epoch
    assert len(scalars(run_dir)["val/acc"]) == 3  # epochs 0 and 1 were not trained again


def test_a_single_sbatch_run_preempted_in_its_first_epoch_continues_its_folder(
    tmp_path: Path,
) -> None:
    """`sbatch` of `python -m cnn_study` (no sweep, the default `runs/${now}` folder),
    pre-empted before its first epoch ended: the requeued job continues the first attempt's
    folder (it used to start over in a new one, the first left `running` forever) and
    trains from epoch 0, not from Lightning's mid-epoch SIGUSR1 checkpoint."""
    command = (*RUN, "+callbacks.preempt._target_=tests.helpers.SignalAtEpoch",
               "+callbacks.preempt.signal_name='SIGUSR1,SIGTERM'", "+callbacks.preempt.epoch=0",
               "+callbacks.preempt.first_attempt_only=true")  # fmt: skip
    out = tmp_path / "out"
    env = {"CNN_STUDY_OUTPUT": str(out)}
    first = cli(*command, cwd=tmp_path, env={**fake_slurm(tmp_path, restarts=0), **env})
    assert first.returncode == 143, first.stderr[-2000:]
    (run_dir,) = (out / "runs").iterdir()
    assert results(run_dir)["status"] == "interrupted"
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list(run_dir.glob("hpc_ckpt_*.ckpt"))  # Lightning's, saved mid-epoch on SIGUSR1

    again = cli(*command, cwd=tmp_path, env={**fake_slurm(tmp_path, restarts=1), **env})
    assert again.returncode == 0, again.stderr[-2000:]
    assert list((out / "runs").iterdir()) == [run_dir]
    assert results(run_dir)["status"] == "completed" and results(run_dir)["epochs"] == 3
    output = again.stdout + again.stderr
    restored = re.findall(r"Restoring states from the checkpoint path at (\S+)", output)
    assert not [path for path in restored if "hpc_ckpt" in path]
    assert len(scalars(run_dir)["val/acc"]) == 3
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))


def test_resume_without_a_checkpoint_says_so(tmp_path: Path, compose_cfg) -> None:
    """A user error (CnnStudyError: one line and exit 2 on the command line, as in
    test_data.py::test_cli_missing_data_exits_with_message_not_traceback)."""
    with pytest.raises(CnnStudyError, match="resume=true, but there is no checkpoint"):
        run(compose_cfg(*RUN, "resume=true", output_dir=tmp_path / "new"))
    assert not (tmp_path / "new" / "results.json").exists()  # nothing ran: nothing recorded


def test_resume_of_a_completed_run_does_not_train_again(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    quick = (*RUN, "trainer.max_epochs=1")
    assert run(compose_cfg(*quick, output_dir=run_dir))["status"] == "completed"
    before = results(run_dir)
    checkpoints = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.ckpt")}
    with caplog.at_level("INFO"):
        again = run(compose_cfg(*quick, "resume=true", output_dir=run_dir))
    assert "already completed" in caplog.text
    assert again == before and results(run_dir) == before
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.ckpt")} == checkpoints


def test_nan_guard_stops_the_run_as_diverged_without_checkpointing_it(
    tmp_path: Path, compose_cfg
) -> None:
    """In-process (a DivergedError is a CnnStudyError: exit 2 on the command line, and a
    sweep's diverged job below)."""
    poison = (
        "+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch",
        "+callbacks.poison.epoch=1",
    )
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError, match="NaN or infinite in epoch 1"):
        run(compose_cfg(*RUN, *poison, output_dir=run_dir))
    saved = results(run_dir)
    assert saved["status"] == "diverged" and "epoch 1" in saved["error"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best-epoch00.ckpt", "last.ckpt"]  # epoch 1 never saved
    assert all(torch.isfinite(w).all() for w in last_weights(run_dir).values())


def test_sweep_survives_a_diverged_and_a_crashed_job_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`python -m cnn_study -m` (in this process: see command_here)."""
    sweep_dir = tmp_path / "sweep"
    sweep = [
        "-m",
        *RUN,
        "trainer.max_epochs=1",
        "+callbacks.sabotage._target_=tests.helpers.Sabotage",
        "+callbacks.sabotage.action=none,poison,crash,none",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    code, output = command_here(cli_here, sweep, tmp_path, monkeypatch, capsys)
    assert code == 1, output[-3000:]  # every job ran; one failed (after its summary)
    statuses = [results(sweep_dir / str(n))["status"] for n in range(4)]
    assert statuses == ["completed", "diverged", "failed", "completed"]
    assert "RuntimeError: sabotaged job" in results(sweep_dir / "2")["error"]
    assert "sabotaged job" in (sweep_dir / "2" / "cnn_study.log").read_text()  # with traceback
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["status_counts"] == {"completed": 2, "diverged": 1, "failed": 1}
    # The job after the crash started clean: its own TensorBoard log has its epoch.
    events = EventAccumulator(str(sweep_dir / "3" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val/acc")) == 1
    assert [job["status"] for job in summary["jobs"]] == statuses
    table = (sweep_dir / "summary.md").read_text()
    assert "| diverged |" in table and "sabotage.action=crash" in table


def test_resume_without_checkpointing_says_so(compose_cfg) -> None:
    cfg = compose_cfg("data=fake", "debug=limit", "callbacks=none", "resume=true")
    with pytest.raises(CnnStudyError, match="resume needs checkpoints every epoch"):
        run(cfg)


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(
    tmp_path: Path, compose_cfg
) -> None:
    """Stopped before any epoch completed: the hint says so (it used to point at a
    last.ckpt that did not exist), and following resume=true anyway fails with exit 2
    without rewriting the run's `interrupted` status to `failed`."""
    run_dir = tmp_path / "run"
    stop = ("+callbacks.stop._target_=tests.helpers.SignalAtEpoch",
            "+callbacks.stop.signal_name=SIGINT", "+callbacks.stop.epoch=0")  # fmt: skip
    stopped = cli(*RUN, *stop, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=HELPERS)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    output = stopped.stdout + stopped.stderr
    assert "nothing to resume; start again with the same command" in output
    assert "resume=true" not in output
    assert results(run_dir)["status"] == "interrupted"
    with pytest.raises(CnnStudyError, match="no checkpoint to resume from"):
        run(compose_cfg(*RUN, *stop, "resume=true", output_dir=run_dir))  # the same command
    assert results(run_dir)["status"] == "interrupted"
