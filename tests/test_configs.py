"""Every option of every config group composes, instantiates and trains for a step."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from cnn_study.train import run
from tests.conftest import ComposeFn

CONF = files("cnn_study.conf")
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))
OPTIONS = [
    (group, entry.name.removesuffix(".yaml"))
    for group in GROUPS
    for entry in sorted(CONF.joinpath(group).iterdir(), key=lambda e: e.name)
    if entry.name.endswith(".yaml")
]
# Shortens every run; `trainer=debug` is already short and keeps its own limits.
QUICK = ("trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1", "++trainer.num_sanity_val_steps=0")  # fmt: skip


def test_all_groups_present() -> None:
    expected = {"data", "arch", "regularization", "scheduler", "optimizer", "augmentation",
                "finetune", "trainer", "logger", "callbacks", "experiment"}  # fmt: skip
    assert expected <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_trains(
    group: str, option: str, compose_cfg: ComposeFn, cifar_folder: Path
) -> None:
    overrides = [f"{group}={option}"]
    if option == "cifar10" or group == "experiment":
        overrides += [f"data.root={cifar_folder}", "data.val_size=20"]
    elif group != "data":
        overrides.append("data=fake")
    if (group, option) != ("trainer", "debug"):
        overrides += QUICK
    results = run(compose_cfg(*overrides))
    assert results["status"] == "completed"
    assert 0.0 <= results["test/acc"] <= 1.0
    assert results["params_trainable"] > 0
