"""Study A2's vanishing-gradient check: the first conv layer's mean absolute weight gradient."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

log = logging.getLogger(__name__)

METRIC = "train/first_conv_grad_abs_mean"


def first_conv(module: nn.Module) -> nn.Conv2d | None:
    """The first `nn.Conv2d` in registration order (the network's input layer)."""
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


class FirstConvGradientMonitor(Callback):
    """Logs, every epoch, the mean over steps of mean(|∂loss/∂W|) of the first conv layer.

    Accumulated on the device and logged once per epoch, so it adds no per-step sync.
    Gradients are read in `on_before_optimizer_step`, after mixed-precision unscaling.
    """

    def __init__(self) -> None:
        self.conv: nn.Conv2d | None = None
        self._total: torch.Tensor | None = None
        self._steps = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.conv = first_conv(pl_module)
        if self.conv is None:
            log.warning("no Conv2d layer found: %s is not logged", METRIC)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total = torch.zeros((), device=pl_module.device)
        self._steps = 0

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.conv is None or self.conv.weight.grad is None or self._total is None:
            return
        self._total += self.conv.weight.grad.detach().abs().mean().float()
        self._steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps and self._total is not None:
            pl_module.log(METRIC, self._total / self._steps, on_epoch=True)
