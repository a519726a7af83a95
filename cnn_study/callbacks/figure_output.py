"""Where test-time figures go: a PNG in the run's `figures/`, and each logger's own view of
it (`cnn_study.loggers`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader

from cnn_study.loggers import output_for


def publish_figure(trainer: L.Trainer, figure: Figure, name: str, step: int = 0) -> Path:
    """Save `figure` as `<run dir>/figures/<name>.png` and show it in every logger that
    shows figures (`cnn_study.loggers`: TensorBoard's IMAGES, MLflow's artifacts, W&B)."""
    folder = Path(trainer.default_root_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('/', '_')}.png"
    figure.savefig(path, dpi=110)
    for logger in trainer.loggers:
        output_for(logger).figure(path, name, step)
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
