"""The three safeguards every run gets: RNG state in checkpoints, the NaN guard, frozen
BatchNorm kept frozen — each on its own, then inside a real `Trainer.fit`."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_study.callbacks.safeguards import (
    RNG_KEY,
    DivergenceGuard,
    FrozenBatchNorm,
    RngState,
    keep_frozen_batchnorm_in_eval,
)
from cnn_study.errors import DivergedError
from cnn_study.finetune import linear
from cnn_study.models.cnn import build_cnn
from cnn_study.module import ImageClassifier


class FakeTrainer:
    """The attributes of a Trainer the safeguards read."""

    def __init__(self, fn: TrainerFn = TrainerFn.FITTING, epoch: int = 0) -> None:
        self.state = type("State", (), {"fn": fn})()
        self.current_epoch = epoch
        self.sanity_checking = False
        self.world_size, self.global_rank = 1, 0
        self.strategy = type("Strategy", (), {"reduce_boolean_decision": staticmethod(
            lambda decision, all=True: decision)})()  # fmt: skip


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_rng_state_is_restored_when_resuming_and_only_then() -> None:
    checkpoint: dict = {}
    RngState().on_save_checkpoint(FakeTrainer(), None, checkpoint)
    expected = draws()
    RngState().on_load_checkpoint(FakeTrainer(TrainerFn.TESTING), None, checkpoint)
    assert draws() != expected  # a test-time load leaves the RNG alone
    RngState().on_load_checkpoint(FakeTrainer(TrainerFn.FITTING), None, checkpoint)
    assert draws() == expected
    assert set(checkpoint[RNG_KEY]) >= {"torch", "numpy", "python"}


def test_resuming_on_a_node_with_fewer_gpus(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A checkpoint saved on 2 GPUs resumed on 1: torch's `set_rng_state_all` would set
    device 1, which this node lacks (invalid device ordinal). Restored: device 0, warned."""
    restored: dict[int, torch.Tensor] = {}

    def set_rng_state(new_state: torch.Tensor, device: int | str = "cuda") -> None:
        index = int(device) if not isinstance(device, str) else 0
        if index >= 1:  # what CUDA answers for a device this node does not have
            raise RuntimeError("CUDA error: invalid device ordinal")
        restored[index] = new_state

    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    checkpoint: dict = {}
    with monkeypatch.context() as saving_on_two_gpus:
        saving_on_two_gpus.setattr(torch.cuda, "get_rng_state_all",
                                   lambda: [torch.full((8,), 1), torch.full((8,), 2)])  # fmt: skip
        RngState().on_save_checkpoint(FakeTrainer(), None, checkpoint)
    RngState().on_load_checkpoint(FakeTrainer(TrainerFn.FITTING), None, checkpoint)
    assert list(restored) == [0] and torch.equal(restored[0], torch.full((8,), 1))
    assert "random state of 2 GPUs, this node has 1" in caplog.text


def test_divergence_guard_stops_at_the_first_check_after_a_nonfinite_loss() -> None:
    guard, trainer = DivergenceGuard(), FakeTrainer(epoch=3)
    for loss in (1.0, float("nan"), 0.5):  # a later finite loss does not clear the flag
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
    with pytest.raises(DivergedError, match="epoch 3"):
        guard.on_validation_epoch_start(trainer, None)
    healthy = DivergenceGuard()
    healthy.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0)}, None, 0)
    healthy.on_validation_epoch_start(trainer, None)
    healthy.on_train_epoch_end(trainer, None)


def frozen_and_trained_batchnorm() -> tuple[nn.Module, nn.BatchNorm2d, nn.BatchNorm1d]:
    network = build_cnn(4, [8, 8], fc_hidden=16, input_size=16, batch_norm=True)
    linear(network)  # conv stages (and their BatchNorm) frozen, the head trains
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    frozen = next(m for m in norms if not m.weight.requires_grad)
    trained = [m for m in norms if m.weight.requires_grad]
    return network, frozen, trained


def test_keep_frozen_batchnorm_in_eval() -> None:
    network, frozen, trained = frozen_and_trained_batchnorm()
    network.train()
    keep_frozen_batchnorm_in_eval(network)
    assert not frozen.training and all(m.training for m in trained)


@pytest.mark.parametrize("with_safeguard", [True, False])
def test_frozen_batchnorm_statistics_do_not_move_in_training(with_safeguard: bool) -> None:
    """Fails without the callback: Lightning's train mode would update the statistics."""
    torch.manual_seed(0)
    network, frozen, _ = frozen_and_trained_batchnorm()
    before = frozen.running_mean.clone()
    module = ImageClassifier(
        network,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        class_names=["a", "b", "c", "d"],
    )
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    data = DataLoader(TensorDataset(images, torch.randint(0, 4, (32,))), batch_size=8)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[FrozenBatchNorm()] if with_safeguard else [],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    assert torch.equal(frozen.running_mean, before) == with_safeguard
