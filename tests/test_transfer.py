"""A trained network moves to a new task: its weights load, the head is new, frozen stays frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_study.train import run
from tests.conftest import ComposeFn


@pytest.fixture
def source_run(compose_cfg: ComposeFn, tmp_path: Path) -> dict:
    """A 10-class gap4_bn trained briefly on fake data: the "B3" run."""
    return run(compose_cfg("data=fake", "arch=gap4_bn", "debug=limit",
                           output_dir=tmp_path / "source"))  # fmt: skip


def network_state(checkpoint: str) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.parametrize(("policy", "trained_prefixes"), [
    ("head", ("classifier.",)),
    ("last_block", ("features.3.", "classifier.")),
])  # fmt: skip
def test_checkpoint_to_new_task_with_three_classes(
    policy, trained_prefixes, source_run, compose_cfg: ComposeFn, image_folder: Path, tmp_path
) -> None:
    source = network_state(source_run["checkpoint_last"])
    cfg = compose_cfg(
        "data=image_folder", f"data.root={image_folder}", "data.image_size=48",
        "arch=gap4_bn", f"finetune={policy}",
        f"finetune.from_checkpoint={source_run['checkpoint_last']}",
        "trainer.max_epochs=2", "eval_weights=last", output_dir=tmp_path / "target",
    )  # fmt: skip
    results = run(cfg)
    assert results["status"] == "completed"
    target = network_state(results["checkpoint_last"])
    assert target["classifier.3.weight"].shape == (3, 512)
    for key, value in target.items():
        if key.startswith("classifier.3."):
            continue  # the new head
        trained = key.startswith(trained_prefixes)
        if trained and key.endswith("num_batches_tracked"):
            continue  # a counter: it moves with training whatever the weights do
        # Frozen layers, BatchNorm running statistics included, end as they were loaded.
        assert torch.equal(value, source[key]) != trained, key
    source_hparams = torch.load(source_run["checkpoint_last"], weights_only=False)
    target_hparams = torch.load(results["checkpoint_last"], weights_only=False)
    source_input = source_hparams["hyper_parameters"]["input_spec"]
    assert target_hparams["hyper_parameters"]["input_spec"]["mean"] == source_input["mean"]
    assert target_hparams["hyper_parameters"]["class_names"] == ["cats", "dogs", "owls"]
