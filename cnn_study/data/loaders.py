"""Batch iteration over in-memory uint8 tensors: on the training device, or through a DataLoader.

Both paths draw the epoch's order from `EpochOrder`, a function of (seed, epoch) only, so
they give identical batches, and a run resumed at epoch k sees the order an uninterrupted
run would have seen, with no RNG state to save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from cnn_study.errors import CnnStudyError

PLACEMENTS = ("auto", "device", "host")  # data=image_folder adds "stream"
# Share of the device's free memory the data may take before `auto` keeps it on the host.
DEVICE_MEMORY_SHARE = 0.5


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


class EpochOrder(Sampler[int]):
    """Indices 0..n-1, shuffled by a generator seeded with (seed, epoch), or in order.

    Lightning calls `set_epoch` before every training epoch (also on resume).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.size


class DeviceBatches:
    """Batches sliced from tensors that already live on the training device.

    No workers, no collation, no host-to-device copy per step: one index operation per
    batch. Exposes `sampler` so that Lightning's `set_epoch` call reaches `EpochOrder`.
    """

    batch_sampler = None  # Lightning inspects DataLoader-like objects for one

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, sampler: EpochOrder):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.sampler = sampler

    @property
    def dataset(self) -> TensorImageDataset:
        """The images as a Dataset, as on a DataLoader (callbacks sample figures from it)."""
        return TensorImageDataset(self.images, self.labels)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.sampler.order().to(self.images.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images[index], self.labels[index]


def epoch_sampler(
    size: int, shuffle: bool, seed: int, trainer: L.Trainer | None, tag_epochs: bool = False
) -> Sampler:
    """The order of one split: `EpochOrder` in one process; under DDP this rank's shard.

    Training shards are disjoint and of equal length (DDP needs the same step count on
    every rank): the last `size % world_size` images of each epoch's permutation are left
    out, a different few every epoch, instead of repeating images as padding would.
    Evaluation shards are disjoint and not padded, so no image is counted twice.
    `tag_epochs`: indices come as (epoch, index), for datasets whose random transforms
    are a function of both (`cnn_study.data.streaming`)."""
    if trainer is None or trainer.world_size == 1:
        return (TaggedOrder if tag_epochs else EpochOrder)(size, shuffle, seed)
    replicas, rank = trainer.world_size, trainer.global_rank
    if shuffle:
        shards = TaggedShards if tag_epochs else DistributedSampler
        return shards(range(size), replicas, rank, shuffle=True, seed=seed, drop_last=True)
    if size < replicas:
        raise CnnStudyError(
            f"an evaluation split of {size} image{'s' if size != 1 else ''} cannot be shared "
            f"by {replicas} processes (each needs at least one image to take part in the "
            "metrics); use fewer trainer.devices or a larger split"
        )
    return (TaggedEvalShards if tag_epochs else EvalShards)(size, replicas, rank)


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable = keep_batch,
) -> DataLoader:
    """A DataLoader over `sampler`'s order. Its own generator: iterating never draws from
    the global RNG (exact resume)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(getattr(sampler, "seed", 0)),
    )


class TagsEpoch:
    """Sampler mix-in: yields (epoch, index) instead of index."""

    epoch: int

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in super().__iter__())  # type: ignore[misc]


class TaggedOrder(TagsEpoch, EpochOrder):
    """`EpochOrder`, yielding (epoch, index)."""


class TaggedShards(TagsEpoch, DistributedSampler):
    """A training shard under DDP, yielding (epoch, index)."""


class EvalShards(DistributedSampler):
    """An evaluation shard under DDP: every `replicas`-th index from `rank`, never padded,
    so no image counts twice (as Lightning's `UnrepeatedDistributedSampler`, which ends a
    split smaller than the ranks with a bare assertion; `epoch_sampler` says why first).
    A `DistributedSampler`, so that Lightning does not shard it a second time."""

    def __init__(self, size: int, replicas: int, rank: int) -> None:
        super().__init__(range(size), num_replicas=replicas, rank=rank, shuffle=False)
        self.indices = range(rank, size, replicas)
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class TaggedEvalShards(TagsEpoch, EvalShards):
    """An evaluation shard under DDP, yielding (epoch, index)."""


def fits_on_device(num_bytes: int, device: torch.device) -> bool:
    """Whether `num_bytes` of data may live on `device` (host memory always qualifies)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return num_bytes <= DEVICE_MEMORY_SHARE * free
