"""TensorBoard: figures in its IMAGES tab, the config in HPARAMS linked to the test
metrics, and a resumed run's points after its checkpoint purged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.tensorboard.summary import hparams

from cnn_study.loggers import LoggerOutput

LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"


class Output(LoggerOutput):
    @classmethod
    def resume_arguments(cls, resumed_step: int) -> dict[str, Any]:
        # TensorBoard hides what an interrupted process logged after the checkpoint it
        # resumes from: every epoch keeps one point.
        return {"purge_step": resumed_step}

    def figure(self, path: Path, name: str, step: int) -> None:
        # The rendered PNG: drawing the figure a second time costs seconds.
        with Image.open(path) as png:
            pixels = np.asarray(png.convert("RGB"))
        self.logger.experiment.add_image(name, pixels, global_step=step, dataformats="HWC")

    def config(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The config in the HPARAMS tab, linked to the test metrics the module logged
        (without writing those metrics a second time)."""
        self.logger.log_hyperparams(params)
        experiment, start, end = hparams(flat(params), dict.fromkeys(metrics, 0.0))
        writer = self.logger.experiment._get_file_writer()  # as Lightning's own logger does
        for summary in (experiment, start, end):
            writer.add_summary(summary)


def flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → {"a/b": value}, values TensorBoard takes (others as text)."""
    found: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= flat(value, f"{name}/")
        else:
            found[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return found
