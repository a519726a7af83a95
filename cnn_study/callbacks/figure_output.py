"""Where test-time figures go: a PNG in the run's `figures/`, an image in TensorBoard, an
artifact in MLflow."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader


def publish_figure(trainer: L.Trainer, figure: Figure, name: str, step: int = 0) -> Path:
    """Save `figure` as `<run dir>/figures/<name>.png` and log it to TensorBoard as `name`."""
    folder = Path(trainer.default_root_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('/', '_')}.png"
    figure.savefig(path, dpi=110)
    for tracker in (lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)):
        tracker.experiment.log_artifact(tracker.run_id, str(path), artifact_path="figures")
    boards = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    if boards:  # log the rendered PNG: drawing the figure a second time costs seconds
        with Image.open(path) as png:
            pixels = np.asarray(png.convert("RGB"))
        for board in boards:
            board.experiment.add_image(name, pixels, global_step=step, dataformats="HWC")
    return path


def seeded_sample(loader: DataLoader | list, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """`count` images and labels of a loader's dataset, the same ones for the same seed."""
    if isinstance(loader, list):
        loader = loader[0]
    dataset = loader.dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[: min(count, len(dataset))]
    images, labels = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(images), torch.stack([torch.as_tensor(label) for label in labels])
