"""`ema=ema`: an exponential moving average of the weights (Lightning's
`EMAWeightAveraging`), used for validation (so for choosing the best epoch), saved as the
checkpoints' weights (so for test and `predict`), and continued on resume (its state and
the raw weights travel in the checkpoint)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Lightning's EMA callback, with the averaged weights kept when a checkpoint is loaded
    to evaluate after fitting: a checkpoint's `state_dict` holds the average, and Lightning's
    callback, still set up from fit, would load the raw weights back over it for
    `trainer.test(ckpt_path=...)`."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
