"""In-memory image data: uint8 tensors, batched indexing, no per-image Python.

Every DataModule of cnn_study yields `(images uint8 [B, 3, H, W], labels int64 [B])`;
conversion to float, augmentation and normalisation happen in the LightningModule on
the training device, so the data side stays a cheap index into tensors. With one
device and data that fits (`placement`), the tensors move to the device once and
batches are sliced there (the fast path); otherwise a DataLoader serves host tensors.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace

import lightning as L
import torch
from torch import Tensor

from cnn_study.data.loaders import (
    PLACEMENTS,
    DeviceBatches,
    EpochOrder,
    TensorImageDataset,
    batch_loader,
    epoch_sampler,
    fits_on_device,
)
from cnn_study.errors import CnnStudyError
from cnn_study.inputs import InputSpec

log = logging.getLogger(__name__)


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


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units. About 64 MiB of float32
    at a time, whatever the image size: the statistics must not take several times the
    memory of the images themselves."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    chunk = max(1, 2**24 // max(1, images[0].numel() if len(images) else 1))
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        total += block.sum(dim=(0, 2, 3), dtype=torch.float64) / 255.0
        total_sq += block.float().square().sum(dim=(0, 2, 3), dtype=torch.float64) / 255.0**2
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def permute_in_place(tensor: Tensor, order: Tensor) -> None:
    """`tensor[k] = tensor[order[k]]` for every k (`order` a permutation of its rows),
    following the permutation's cycles with one row of extra memory instead of a copy."""
    if sorted(order.tolist()) != list(range(len(tensor))):
        raise ValueError(f"order is not a permutation of {len(tensor)} rows")
    source = order.tolist()
    placed = [False] * len(source)
    for start in range(len(source)):
        if placed[start] or source[start] == start:
            continue
        first = tensor[start].clone()
        position = start
        while not placed[position]:
            placed[position] = True
            if source[position] == start:
                tensor[position] = first
            else:
                tensor[position] = tensor[source[position]]
                position = source[position]


def seeded_split(n: int, val_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a fixed random train/val split; depends only on (n, val_size, split_seed)."""
    if not 0 < val_size < n:
        raise CnnStudyError(f"val_size={val_size} must be between 1 and {n - 1} for {n} images")
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return permutation[val_size:], permutation[:val_size]


def stratified_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Sorted indices of `size` items drawn by `seed`, each class at its share of `labels`
    (largest remainders): a smaller training set with the same class balance."""
    if not 0 < size <= len(labels):
        raise CnnStudyError(f"subset of {size}: choose 1 to {len(labels)} images")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * size / len(labels)
    quotas = exact.floor().long()
    quotas[torch.argsort(exact - quotas, descending=True)[: size - int(quotas.sum())]] += 1
    picked = [order[labels[order] == c][:q] for c, q in zip(classes, quotas, strict=True)]
    return torch.cat(picked).sort().values


class InMemoryImageDataModule(L.LightningDataModule):
    """Base DataModule: subclasses implement `load_splits`; batching and stats live here.

    `placement`: "device" keeps the uint8 splits on the training device (an error if
    they do not fit), "host" always uses a DataLoader over host memory, "auto" takes the
    device when training on one device and the data fits. `order_seed` fixes the
    per-epoch shuffling (see `EpochOrder`).
    """

    placements = PLACEMENTS

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int = 0,
        placement: str = "auto",
        order_seed: int = 0,
    ) -> None:
        super().__init__()
        if placement not in self.placements:
            raise CnnStudyError(
                f"data.placement={placement!r}; choose one of {list(self.placements)}"
                + ("" if "stream" in self.placements else " (stream: data=image_folder)")
            )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.placement = placement
        self.order_seed = order_seed
        self._splits: ImageSplits | None = None
        self._stats: tuple[list[float], list[float]] | None = None
        self._on_device: dict[str, tuple[Tensor, Tensor]] = {}
        self._device_path: dict[str, bool] = {}  # decided once per device, for every split

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
        return len(self.class_names)

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

    def fit_input(self, spec: InputSpec) -> InputSpec:
        """A network's declared input, completed by the data: the training split's mean/std
        where its weights fix none, and the side the images were decoded to (new images
        are decoded the same way by predict and explain)."""
        if not spec.has_normalization:
            spec = spec.completed(self.mean, self.std)
        return replace(spec, decoded_size=int(self.splits.train_images.shape[-1]))

    def training_device(self) -> torch.device:
        """The device batches are consumed on (the CPU outside a Trainer)."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def uses_device_path(self) -> bool:
        """Whether batches are sliced from device-resident tensors (see `placement`).

        Decided once per device, for all three splits together, against the memory free
        at the first loader: asked again later, the splits already placed and the memory
        PyTorch's allocator keeps after training would count as used, so `trainer.test`
        could refuse (or take another path than) data that fitted before training."""
        if self.placement == "host" or self.num_workers > 0:
            return False
        if self.trainer is not None and self.trainer.world_size > 1:
            return False  # each process needs its own shard: the DataLoader's sampler
        device = self.training_device()
        key = str(device)
        if key not in self._device_path:
            self._device_path[key] = self._fits(device)
        return self._device_path[key]

    def _fits(self, device: torch.device) -> bool:
        s = self.splits
        num_bytes = sum(
            t.numel() * t.element_size() for t in (s.train_images, s.val_images, s.test_images)
        )
        if fits_on_device(num_bytes, device):
            return True
        if self.placement == "device":
            raise CnnStudyError(
                f"data.placement=device: the data ({num_bytes / 2**30:.1f} GiB) does not fit "
                f"on {device}; use data.placement=auto or host"
            )
        log.info("data (%.1f GiB) does not fit on %s: DataLoader path", num_bytes / 2**30, device)
        return False

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> Iterable:
        images = getattr(self.splits, f"{split}_images")
        labels = getattr(self.splits, f"{split}_labels")
        order = epoch_sampler(len(labels), shuffle, self.order_seed, self.trainer)
        device = self.training_device()
        if not self.uses_device_path():
            # In-memory batches are tensor slices: Lightning's "few workers" hint does not
            # apply (it stays on for streamed image folders, where workers decode).
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            return batch_loader(
                TensorImageDataset(images, labels),
                batch_size,
                order,
                self.num_workers,
                pin_memory=device.type == "cuda",
            )
        assert isinstance(order, EpochOrder)
        key = f"{split}@{device}"
        if key not in self._on_device:  # moved once, reused every epoch
            self._on_device[key] = (images.to(device), labels.to(device))
        return DeviceBatches(*self._on_device[key], batch_size, order)

    def train_dataloader(self) -> Iterable:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> Iterable:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> Iterable:
        return self._batches("test", self.eval_batch_size, shuffle=False)
