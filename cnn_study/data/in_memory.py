"""In-memory image data: uint8 tensors, batched indexing, no per-image Python.

Every DataModule of cnn_study yields `(images uint8 [B, 3, H, W], labels int64 [B])`;
conversion to float, augmentation and normalisation happen in the LightningModule on
the training device, so the data side stays a cheap index into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cnn_study.errors import CnnStudyError


@dataclass(frozen=True)
class ImageSplits:
    """Train/val/test images (uint8, N×3×H×W) with int64 labels and the class names."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: list[str]


class TensorImageDataset(Dataset):
    """Images and labels held in tensors; a batch is fetched with one index operation."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of indices (torch >= 2.0).
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for batches that `__getitems__` already stacked."""
    return batch


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, computed in chunks."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def seeded_split(n: int, val_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a fixed random train/val split; depends only on (n, val_size, split_seed)."""
    if not 0 < val_size < n:
        raise CnnStudyError(f"val_size={val_size} must be between 1 and {n - 1} for {n} images")
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return permutation[val_size:], permutation[:val_size]


class InMemoryImageDataModule(L.LightningDataModule):
    """Base DataModule: subclasses implement `load_splits`; batching and stats live here."""

    def __init__(self, batch_size: int, eval_batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self._splits: ImageSplits | None = None
        self._stats: tuple[list[float], list[float]] | None = None

    def load_splits(self) -> ImageSplits:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self.load_splits()
            self._stats = channel_stats(self._splits.train_images)

    @property
    def splits(self) -> ImageSplits:
        if self._splits is None:
            raise RuntimeError("call setup() before reading the data")
        return self._splits

    @property
    def class_names(self) -> list[str]:
        return list(self.splits.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)

    @property
    def mean(self) -> list[float]:
        """Per-channel mean of the training split, in [0, 1] units."""
        return self._require_stats()[0]

    @property
    def std(self) -> list[float]:
        """Per-channel standard deviation of the training split, in [0, 1] units."""
        return self._require_stats()[1]

    def _require_stats(self) -> tuple[list[float], list[float]]:
        if self._stats is None:
            raise RuntimeError("call setup() before reading the data")
        return self._stats

    def _loader(self, images: Tensor, labels: Tensor, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            TensorImageDataset(images, labels),
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        s = self.splits
        return self._loader(s.train_images, s.train_labels, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        s = self.splits
        return self._loader(s.val_images, s.val_labels, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        s = self.splits
        return self._loader(s.test_images, s.test_labels, self.eval_batch_size, train=False)
