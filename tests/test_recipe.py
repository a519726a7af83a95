"""The modern recipe as config groups: each option changes what it claims to, measured on
tiny runs — label smoothing, MixUp/CutMix, an EMA of the weights, LR warmup, flip
test-time augmentation and the calibration error."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics.classification import MulticlassCalibrationError

from cnn_study.module import ImageClassifier
from cnn_study.recipe import BatchMixing, FlipTTA, warmup_then
from cnn_study.train import build, run
from tests.conftest import NO_FIGURES
from tests.test_reliability import HELPERS, checkpoint
from tests.test_train import cli, scalars

TINY = ("data=fake", "data.train_size=64", "trainer=cpu", "trainer.max_epochs=2", *NO_FIGURES)


def batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.arange(size) % 10


def test_label_smoothing_changes_the_training_loss_for_the_same_logits(compose_cfg) -> None:
    """The same weights and batch: the training step's loss with loss.label_smoothing=0.1
    is torch's smoothed cross-entropy of the logits, and differs from the plain one."""
    losses = {}
    for smoothing in (0.0, 0.1):
        torch.manual_seed(0)
        module = build(compose_cfg(*TINY, f"loss.label_smoothing={smoothing}")).module
        images, labels = batch()
        losses[smoothing] = module.training_step((images, labels), 0).item()
        with torch.no_grad():
            logits = module(module.preprocess(images))
        expected = F.cross_entropy(logits, labels, label_smoothing=smoothing).item()
        assert losses[smoothing] == pytest.approx(expected, rel=1e-5)
    assert abs(losses[0.1] - losses[0.0]) > 1e-4  # near-uniform logits: a small, real gap


@pytest.mark.parametrize("option", ["mixup", "cutmix", "mixup_cutmix"])
def test_mixing_mixes_train_batches_into_soft_targets_and_nothing_else(
    option: str, compose_cfg
) -> None:
    cfg = compose_cfg(*TINY, f"mixing={option}")
    mixing = instantiate(cfg.mixing)(num_classes=10)
    assert isinstance(mixing, BatchMixing)
    torch.manual_seed(1)
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8)
    mixed, targets = mixing(images, labels)
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert not torch.equal(mixed, images)  # mixed pixels
    assert (targets.max(dim=1).values < 1).any()  # soft: no longer one class per image

    module = build(cfg).module
    calls: list[int] = []
    module.mixing.register_forward_hook(lambda _, args, out: calls.append(len(args[1])))
    module.training_step(batch(), 0)
    assert calls == [8]  # the train split
    with torch.no_grad():
        module.validation_step(batch(), 0)
        module.probabilities(batch()[0])
    assert calls == [8]  # never validation or test


def test_mixing_trains_and_reports_training_accuracy(tmp_path: Path, compose_cfg) -> None:
    results = run(compose_cfg(*TINY, "mixing=mixup_cutmix", output_dir=tmp_path / "run"))
    assert results["status"] == "completed"
    assert 0.0 <= results["train/acc"] <= 1.0


def test_ema_weights_are_validated_saved_and_tested(tmp_path: Path, compose_cfg) -> None:
    """The best checkpoint's weights are the average (they differ from the raw weights
    beside them), and the test evaluates them, not the raw ones (Lightning's callback,
    still set up from fit, would load the raw weights back for trainer.test)."""
    cfg = compose_cfg(*TINY, "ema=ema", "callbacks.ema.decay=0.9", output_dir=tmp_path)
    parts = build(cfg)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    best = parts.trainer.checkpoint_callback.best_model_path
    saved = torch.load(best, weights_only=False)
    averaged, raw = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if k.startswith("net."))
    parts.trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=best, verbose=False)
    tested = parts.module.state_dict()
    for name, tensor in averaged.items():
        assert torch.equal(tested[name].cpu(), tensor), name


def test_ema_survives_a_hard_kill(tmp_path: Path, compose_cfg) -> None:
    """SIGKILL after epoch 1 of 3 and resume: the final averaged weights, the raw weights
    and the test accuracy equal an uninterrupted run's."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    three = (*TINY, "trainer.max_epochs=3", "ema=ema", "callbacks.ema.decay=0.9", "seed=3")
    assert run(compose_cfg(*three, output_dir=whole))["status"] == "completed"
    kill = ("+callbacks.kill._target_=tests.helpers.KillAfterEpoch", "+callbacks.kill.epoch=1")
    crashed = cli(*three, *kill, f"hydra.run.dir={killed}", cwd=tmp_path, env=HELPERS)
    assert crashed.returncode == -signal.SIGKILL
    assert checkpoint(killed)["epoch"] == 1
    assert (
        run(compose_cfg(*three, *kill, "resume=true", output_dir=killed))["status"] == "completed"
    )
    expected, got = checkpoint(whole), checkpoint(killed)
    for key in ("state_dict", "current_model_state"):
        for name, tensor in expected[key].items():
            assert torch.equal(tensor, got[key][name]), (key, name)
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert a["test/acc"] == b["test/acc"] and a["best_val/acc"] == b["best_val/acc"]


def test_warmup_ramps_the_first_epochs_then_hands_over(tmp_path: Path, compose_cfg) -> None:
    """warmup_epochs=2 at lr 0.003: epochs 0 and 1 at 1/3 and 2/3 of it, then the schedule
    (constant: 0.003); with cosine, T_max is the epochs after the warmup."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.003)
    constant = lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0)  # noqa: E731
    scheduler = warmup_then(optimizer, constant, warmup_epochs=2)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.001, 0.002, 0.003, 0.003])
    cosine = compose_cfg(*TINY, "trainer.max_epochs=5", "scheduler=cosine",
                         "scheduler.warmup_epochs=2")  # fmt: skip
    assert cosine.scheduler.schedule.T_max == 3
    out = tmp_path / "run"
    run(compose_cfg(*TINY, "trainer.max_epochs=3", "scheduler.warmup_epochs=2",
                    "optimizer.lr=0.003", output_dir=out))  # fmt: skip
    assert scalars(out)["lr"] == pytest.approx([0.001, 0.002, 0.003])  # what TensorBoard got


class LeftHalf(nn.Module):
    """Sees only the left half of the image: a mirror image changes its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[..., :16].flatten(1))


def test_flip_tta_averages_the_two_views() -> None:
    torch.manual_seed(0)
    plain = ImageClassifier(LeftHalf(), optimizer=None, class_names=[str(i) for i in range(10)])
    flipped = ImageClassifier(plain.net, optimizer=None, tta=FlipTTA(),
                              class_names=plain.class_names)  # fmt: skip
    images, _ = batch()
    with torch.no_grad():
        one, two = plain.probabilities(images), flipped.probabilities(images)
        inputs = plain.preprocess(images)
        mirror = plain(inputs.flip(-1)).softmax(dim=-1)
    assert not torch.allclose(one, two)
    assert torch.allclose(two, (one + mirror) / 2, atol=1e-6)
    assert torch.allclose(two.sum(dim=1), torch.ones(len(images)))


def test_tta_is_the_runs_and_predicts(tmp_path: Path, compose_cfg, image_folder: Path) -> None:
    """A run with tta=flip tests with it and its checkpoint predicts with it; predict's
    tta=none turns it off, a name that is no option is one line."""
    from cnn_study.module import load_classifier
    from cnn_study.predict import main as predict

    out = tmp_path / "run"
    results = run(compose_cfg(*TINY, "tta=flip", output_dir=out))
    model = load_classifier(results["checkpoint_best"])
    assert isinstance(model.tta, FlipTTA)
    rows = {}
    for tta in ("flip", "none"):
        csv = tmp_path / f"{tta}.csv"
        code = predict([f"ckpt={results['checkpoint_best']}", f"images={image_folder}",
                        f"output={csv}", f"tta={tta}"])  # fmt: skip
        assert code == 0
        rows[tta] = csv.read_text().splitlines()[1:]
    assert rows["flip"] != rows["none"]
    assert predict([f"ckpt={results['checkpoint_best']}", f"images={image_folder}",
                    f"output={tmp_path / 'x.csv'}", "tta=rotate"]) == 2  # fmt: skip


def test_ece_is_torchmetrics_on_the_runs_own_predictions(tmp_path: Path, compose_cfg) -> None:
    """results.json's test/ece is torchmetrics' calibration error of the test predictions
    the run saved (float16 probabilities: equal to 1e-3); the reliability figure is drawn."""
    out = tmp_path / "run"
    one_epoch = ("data=fake", "data.train_size=64", "trainer=cpu", "trainer.max_epochs=1")
    results = run(compose_cfg(*one_epoch, "~callbacks.gradcam", output_dir=out))
    with np.load(out / "test_predictions.npz") as saved:
        probabilities = torch.from_numpy(saved["probabilities"].astype(np.float32))
        target = torch.from_numpy(saved["target"]).long()
    expected = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(
        probabilities, target
    )
    assert results["test/ece"] == pytest.approx(float(expected), abs=1e-3)
    assert (out / "figures" / "test_reliability.png").is_file()
