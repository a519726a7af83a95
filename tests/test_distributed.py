"""DDP on CPU (gloo): two processes train, and the test figures count every image once."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest

from cnn_study.data.fake import FakeDataModule
from cnn_study.module import load_classifier
from tests.conftest import NO_FIGURES
from tests.test_train import REPO, cli


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
