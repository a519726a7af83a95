"""Callbacks that simulate what happens to long runs: a hard kill, a diverging loss."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class KillAfterEpoch(L.Callback):
    """SIGKILL the process at the end of epoch `epoch`, after its checkpoints were saved."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeightsAtEpoch(L.Callback):
    """Set the network's weights to NaN at the start of epoch `epoch` (a diverging run)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))
