"""Generated images with a learnable class signal: tests and smoke runs without files."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnn_study.data.in_memory import ImageSplits, InMemoryImageDataModule


def class_pattern_images(
    num_images: int, num_classes: int, image_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """uint8 images: a per-class coarse colour pattern plus pixel noise, and their labels."""
    prototypes = torch.rand(num_classes, 3, 4, 4, generator=generator)
    prototypes = F.interpolate(prototypes, size=(image_size, image_size), mode="nearest")
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=generator)]
    noise = torch.rand(num_images, 3, image_size, image_size, generator=generator)
    images = 0.7 * prototypes[labels] + 0.3 * noise
    return (images * 255).round().to(torch.uint8), labels


class FakeDataModule(InMemoryImageDataModule):
    """Same interface as the real DataModules, data generated from `seed` in memory."""

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        placement: str = "auto",
        order_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, placement, order_seed)
        self.class_count = num_classes
        self.image_size = image_size
        self.sizes = (train_size, val_size, test_size)
        self.seed = seed

    def load_splits(self) -> ImageSplits:
        generator = torch.Generator().manual_seed(self.seed)
        images, labels = class_pattern_images(
            sum(self.sizes), self.class_count, self.image_size, generator
        )
        train, val, _ = self.sizes
        return ImageSplits(
            train_images=images[:train],
            train_labels=labels[:train],
            val_images=images[train : train + val],
            val_labels=labels[train : train + val],
            test_images=images[train + val :],
            test_labels=labels[train + val :],
            class_names=[f"class_{i}" for i in range(self.class_count)],
        )
