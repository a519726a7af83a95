"""DDP on CPU (gloo): two processes train, and the test figures count every image once;
jobs of two processes inside sweeps, studies and srun-started SLURM tasks; each rank's own
random stream, saved and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from cnn_study.data.fake import FakeDataModule
from cnn_study.module import load_classifier
from tests.conftest import NO_FIGURES, compose_run_config
from tests.test_train import REPO, cli, scalars


def test_ddp_on_cpu_trains_and_evaluates_without_duplicates(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    # 37 test images in batches of 8 on 2 processes: DistributedSampler would pad one duplicate.
    data = ("data=fake", "data.train_size=64", "data.test_size=37", "data.eval_batch_size=8")
    done = cli(
        *data, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.max_epochs=1", "callbacks.gradcam.num_images=2", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "distributed_backend=gloo" in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    # The test-end figures: drawn once, by rank 0, from the gathered metrics.
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert figures == ["curves.png", "test_confusion.png", "test_gradcam.png",
                       "test_predictions.png", "test_reliability.png", "test_roc.png"]  # fmt: skip
    assert output.count("Grad-CAM figure:") == 1, output[-3000:]

    # The same weights evaluated in one process, on the same 37 images.
    datamodule = FakeDataModule(train_size=64, test_size=37, eval_batch_size=8)
    model = load_classifier(results["checkpoint_best"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (single,) = trainer.test(model, datamodule=datamodule, verbose=False)
    for name in ("test/acc", "test/loss", "test/f1", "test/auroc"):
        assert results[name] == pytest.approx(single[name], abs=1e-6), name


def test_a_nonfinite_loss_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    """Epochs without validation: the NaN guard decides at the epoch's end. Only rank 1
    saw a non-finite loss; rank 0 must stop too (alone, rank 1 would leave rank 0 waiting
    in its next collective until gloo's timeout)."""
    run_dir = tmp_path / "ddp"
    done = cli(
        "data=fake", "data.train_size=64", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.max_epochs=2", "trainer.limit_val_batches=0",
        "+callbacks.nan_on_rank._target_=tests.helpers.NonfiniteLossOnRank",
        "+callbacks.nan_on_rank.rank=1", *NO_FIGURES, f"hydra.run.dir={run_dir}",
        cwd=tmp_path, env={"PYTHONPATH": str(REPO)}, timeout=240,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and "epoch 0" in results["error"]


DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
TINY = ("data=fake", "data.train_size=64", *NO_FIGURES)


def test_a_sweep_of_ddp_jobs_runs_each_job_once(tmp_path: Path) -> None:
    """Each job of a `-m` sweep hands its two ranks to a single run of its own overrides:
    three folders, each completed, one sweep (Lightning's rank 1 used to re-run the whole
    sweep: "Launching 3 jobs locally" twice, a job left running)."""
    sweep = tmp_path / "sweep"
    done = cli("-m", *TINY, *DDP, "trainer.max_epochs=2", "seed=0,1,2",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("Launching 3 jobs locally") == 1
    runs = sorted(sweep.rglob("results.json"))
    assert [p.parent.name for p in runs] == ["0", "1", "2"]
    for path in runs:
        results = json.loads(path.read_text())
        assert results["status"] == "completed" and results["epochs"] == 2
        assert len(scalars(path.parent)["val/acc"]) == 2  # one point per epoch
    assert json.loads((sweep / "summary.json").read_text())["status_counts"] == {"completed": 3}


def test_a_study_of_ddp_jobs_completes_and_is_judged(tmp_path: Path) -> None:
    """2 parts × 2 seeds, every job on 2 gloo processes (the study used to die: rank 1
    re-ran `python -m cnn_study.study` without its study and Lightning killed them all)."""
    study = {
        "title": "ddp study", "protocol": [*TINY, *DDP, "trainer.max_epochs=2"],
        "seeds": [0, 1],
        "parts": [{"name": "constant", "overrides": ["scheduler=constant"]},
                  {"name": "step", "overrides": ["scheduler=step"], "baseline": "constant"}],
        "claims": [{"text": "step beats constant", "order": ["step", "constant"]}],
    }  # fmt: skip
    (tmp_path / "ddp.yaml").write_text(json.dumps(study))
    env = {**os.environ, "CNN_STUDY_OUTPUT": str(tmp_path / "out")}
    command = [sys.executable, "-m", "cnn_study.study", "study=ddp.yaml"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "out" / "studies" / "ddp"
    runs = sorted(folder.rglob("results.json"))
    assert [str(p.parent.relative_to(folder)) for p in runs] == [
        "constant/seed0", "constant/seed1", "step/seed0", "step/seed1"]  # fmt: skip
    for path in runs:
        assert json.loads(path.read_text())["status"] == "completed"
        assert len(scalars(path.parent)["val/acc"]) == 2
    (look,) = json.loads((folder / "looks.json").read_text())["looks"]
    assert look["seeds"] == {"constant": [0, 1], "step": [0, 1]}
    report = json.loads((folder / "report.json").read_text())
    assert report["claims"][0]["verdict"] in ("supported", "contradicted", "not resolved")


def slurm_env(rank: int, port: int, restarts: int) -> dict[str, str]:
    """What srun gives each task of a 2-task job on one node."""
    return {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cnn_study", "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
        "SLURM_NODELIST": "localhost", "SLURM_STEP_NODELIST": "localhost",
        "SLURM_RESTART_COUNT": str(restarts), "MASTER_PORT": str(port),
        "MASTER_ADDR": "127.0.0.1", "PYTHONPATH": str(REPO),
    }  # fmt: skip


def srun(args: tuple[str, ...], cwd: Path, restarts: int, port: int) -> list[int]:
    """Start the two tasks as srun would (each a `python -m cnn_study`), wait for both."""
    tasks = [
        subprocess.Popen([sys.executable, "-m", "cnn_study", *args], cwd=cwd,
                         env={**os.environ, **slurm_env(rank, port, restarts)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rank in (0, 1)
    ]  # fmt: skip
    try:
        return [task.wait(timeout=300) for task in tasks]
    finally:
        for task in tasks:
            task.kill()


def test_srun_started_ranks_train_and_a_requeue_continues_the_folder(tmp_path: Path) -> None:
    """Two tasks with SLURM's variables: Lightning's SLURM environment joins them (no
    process of its own: no train_ddp_process_*.log); killed after epoch 1, started again
    with SLURM_RESTART_COUNT=1, they continue the folder to 3 epochs, one point each."""
    run_dir = tmp_path / "run"
    port = free_port()
    kill = ("+callbacks.kill._target_=tests.helpers.KillAfterEpoch", "+callbacks.kill.epoch=1")
    args = (*TINY, *DDP, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}", *kill)
    assert srun(args, tmp_path, restarts=0, port=port) == [-signal.SIGKILL] * 2
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 1
    assert srun(args, tmp_path, restarts=1, port=free_port()) == [0, 0]  # the same command
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs"] == 3
    assert len(scalars(run_dir)["val/acc"]) == 3
    assert not list(run_dir.glob("train_ddp_process_*.log"))


def test_each_rank_draws_its_own_stream_and_resumes_it(tmp_path: Path) -> None:
    """The two ranks' RNG states differ at every epoch (same seed, same initial weights,
    then rank 1 reseeded); killed after epoch 1 and resumed, each rank starts epoch 2 from
    its own saved state, as in an uninterrupted run (every rank used to restore rank 0's)."""
    record = ("+callbacks.rng._target_=tests.helpers.RecordRngState",)
    base = (*TINY, *DDP, "trainer.max_epochs=3", "augmentation=crop_flip_jitter", *record)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = {"PYTHONPATH": str(REPO)}
    assert cli(*base, f"hydra.run.dir={whole}", cwd=tmp_path, env=env).returncode == 0
    kill = ("+callbacks.kill._target_=tests.helpers.KillAfterEpoch", "+callbacks.kill.epoch=1")
    crashed = cli(*base, *kill, f"hydra.run.dir={killed}", cwd=tmp_path, env=env)
    assert crashed.returncode != 0
    for path in (killed / "rng").glob("*epoch2*"):
        path.unlink()  # only the resumed attempt's epoch 2 counts
    resumed = cli(*base, *kill, "resume=true", f"hydra.run.dir={killed}", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    states = {run: {p.stem: p.read_text() for p in (run / "rng").glob("*.txt")}
              for run in (whole, killed)}  # fmt: skip
    for epoch in range(3):
        assert states[whole][f"rank0_epoch{epoch}"] != states[whole][f"rank1_epoch{epoch}"]
    for rank in (0, 1):
        assert states[killed][f"rank{rank}_epoch2"] == states[whole][f"rank{rank}_epoch2"]
    saved = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)
    assert len(saved["cnn_study_rng_states_per_rank"]) == 2


def test_the_slurm_launcher_gives_a_ddp_job_one_task_per_device(tmp_path: Path) -> None:
    cfg = compose_run_config(tmp_path, "hydra/launcher=slurm", "trainer=ddp",
                             "trainer.devices=4", "data.num_workers=3")  # fmt: skip
    launcher = cfg.hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.cpus_per_task) == (4, 4, 4)
    single = compose_run_config(tmp_path, "hydra/launcher=slurm").hydra.launcher
    assert (single.tasks_per_node, single.nodes) == (1, 1)


def test_an_evaluation_split_smaller_than_the_ranks_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = cli(*TINY, "data.test_size=1", *DDP, "trainer.max_epochs=1",
               f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "an evaluation split of 1 image cannot be shared by 2 processes" in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "rejected"  # refused before any epoch
    assert not (run_dir / "checkpoints").exists()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
