"""Every option of every config group composes, instantiates and trains for a step."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest
import torch

from cnn_study.models.cnn import build_cnn
from cnn_study.train import run
from tests.conftest import NO_FIGURES, ComposeFn

CONF = Path(str(files("cnn_study.conf")))
# conf/study holds study files (python -m cnn_study.study), not options of a run.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "study"))
OPTIONS = [  # nested options too, e.g. regularization=a3/d05_wd1e-4; base/ holds the keys
    # a group's options share (arch/base/torchvision.yaml), not options
    (group, path.relative_to(CONF / group).with_suffix("").as_posix())
    for group in GROUPS
    for path in sorted((CONF / group).rglob("*.yaml"))
    if path.relative_to(CONF / group).parts[0] != "base"
]
# Shortens every run; `debug=limit` is already short and keeps its own limits.
QUICK = ("trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1", "++trainer.num_sanity_val_steps=0")  # fmt: skip


def test_all_groups_present() -> None:
    expected = {"data", "arch", "regularization", "scheduler", "optimizer", "augmentation",
                "finetune", "trainer", "logger", "callbacks", "experiment"}  # fmt: skip
    assert expected <= set(GROUPS)


BACKBONES = {
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_lite0",
    "timm",
}


@pytest.fixture(scope="module")
def gap4_bn_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of gap4_bn (10 classes): the "earlier run" that transfer options start from."""
    path = tmp_path_factory.mktemp("weights") / "gap4_bn.pt"
    torch.save(build_cnn(10, [32, 64, 128, 256], 512, input_size=64, padding=0,
                         batch_norm=True, pooling="global_avg").state_dict(), path)  # fmt: skip
    return path


def data_overrides(group: str, option: str, cifar: Path, folder: Path) -> list[str]:
    """Where each option's data comes from: generated trees, or fake data."""
    on_folders = option.startswith(("b4", "b5"))  # the transfer experiments; the rest: CIFAR
    source = ("folder" if on_folders else "cifar") if group == "experiment" else None
    if group == "data":
        source = {"cifar10": "cifar", "image_folder": "folder", "dog_emotion": "folder"}.get(option)
    if source == "cifar":
        return [f"data.root={cifar}", "data.val_size=20"]
    if source == "folder":
        return [f"data.root={folder}", "data.image_size=48"]
    return [] if group == "data" else ["data=fake"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_trains(
    group: str,
    option: str,
    compose_cfg: ComposeFn,
    cifar_folder: Path,
    image_folder: Path,
    gap4_bn_weights: Path,
) -> None:
    overrides = [f"{group}={option}", *data_overrides(group, option, cifar_folder, image_folder)]
    if (group, option) == ("trainer", "gpu") and not torch.cuda.is_available():
        cfg = compose_cfg(*overrides)  # composes here; trains where a GPU is
        assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("gpu", 1)
        pytest.skip("trainer=gpu trains only on a CUDA machine")
    if (group, option) == ("trainer", "ddp"):
        cfg = compose_cfg(*overrides)  # DDP in this process would leave a process group
        assert (cfg.trainer.strategy, cfg.trainer.sync_batchnorm) == ("ddp", True)
        pytest.skip("trainer=ddp trains in tests/test_distributed.py (2 gloo processes)")
    if group != "debug":  # debug: short already
        overrides += QUICK
    if (group, option) != ("callbacks", "none"):
        overrides += NO_FIGURES
    if group == "arch" and option in BACKBONES:
        overrides += ["arch.weights=none", "arch.input_size=32"]
    if group == "finetune" and option == "full":
        overrides += ["arch=gap4_bn", f"finetune.from_checkpoint={gap4_bn_weights}"]
    if group == "experiment" and option.startswith(("a5", "b5")):
        overrides += ["arch.weights=none", "arch.input_size=32", "finetune.needs_weights=false"]
    if group == "experiment" and option.startswith("b4"):
        overrides += [f"finetune.from_checkpoint={gap4_bn_weights}"]
    if group == "experiment" and option.startswith(("b1", "b2", "b3", "b4")):
        overrides += ["arch.input_size=64"]  # B3/B4 train at 224 px: too slow for a smoke run
    results = run(compose_cfg(*overrides))
    assert results["status"] == "completed"
    assert 0.0 <= results["test/acc"] <= 1.0
    assert results["params_trainable"] > 0


@pytest.mark.parametrize(
    ("option", "key", "value"),
    [("fast", "fast_dev_run", True), ("limit", "max_epochs", 1), ("overfit", "max_epochs", 20)],
)
def test_debug_wins_over_the_experiment(
    option: str, key: str, value: object, compose_cfg: ComposeFn
) -> None:
    assert compose_cfg("experiment=a3_grid").trainer[key] != value  # the experiment's own
    assert compose_cfg("experiment=a3_grid", f"debug={option}").trainer[key] == value


def test_early_stopping_stops_when_val_acc_stalls(compose_cfg: ComposeFn) -> None:
    """Fake data is learnt in a couple of epochs; then val/acc stalls at 1.0."""
    cfg = compose_cfg("data=fake", "callbacks=early_stopping", "trainer.max_epochs=30",
                      "callbacks.early_stopping.patience=1", *NO_FIGURES)  # fmt: skip
    results = run(cfg)
    assert results["status"] == "completed" and results["epochs"] < 30
