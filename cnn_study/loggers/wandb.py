"""Weights & Biases (`logger=wandb`, offline unless `logger.wandb.offline=false`): figures
as images, the config as the run's config, the test metrics in its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnn_study.loggers import LoggerOutput

LOGGER = "lightning.pytorch.loggers.WandbLogger"


class Output(LoggerOutput):
    def figure(self, path: Path, name: str, step: int) -> None:
        self.logger.log_image(key=name, images=[str(path)], step=step)

    def config(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self.logger.log_hyperparams(params)
        self.logger.experiment.summary.update(metrics)

    def close(self) -> None:
        # Lightning's finalize leaves the W&B run open until the process exits: its
        # config and summary files are written when it finishes.
        self.logger.experiment.finish()
