"""Batched, per-image random augmentation on float images in [0, 1], on any device.

Each transform draws its own random parameters for every image of the batch (as the
torchvision transform it mirrors does per image), from torch's global RNG, so
`seed` makes augmentation reproducible. Used on the train split only.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LUMA = (0.2989, 0.587, 0.114)  # the weights of torchvision's rgb_to_grayscale


class Pipeline(nn.Sequential):
    """Named steps applied in order; a step can be dropped from the CLI (`~augmentation.jitter`)."""

    def __init__(self, **steps: nn.Module) -> None:
        super().__init__(OrderedDict(steps))


class RandomCrop(nn.Module):
    """Zero-pad by `padding`, then crop back to the input size at a random offset per image.

    Matches torchvision's `RandomCrop(size=input size, padding=padding)`.
    """

    def __init__(self, padding: int = 4) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, images: Tensor) -> Tensor:
        n, _, h, w = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p))
        top = torch.randint(0, 2 * p + 1, (n, 1), device=images.device)
        left = torch.randint(0, 2 * p + 1, (n, 1), device=images.device)
        rows = (top + torch.arange(h, device=images.device)).view(n, 1, h, 1)
        cols = (left + torch.arange(w, device=images.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
        channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
        return padded[batch, channel, rows, cols]


class RandomHorizontalFlip(nn.Module):
    """Mirror each image left-right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, images: Tensor) -> Tensor:
        flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < self.p
        return torch.where(flip, images.flip(-1), images)


def _grayscale(images: Tensor) -> Tensor:
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class ColorJitter(nn.Module):
    """Random brightness, contrast and saturation per image, as torchvision's `ColorJitter`.

    Each factor is uniform in [max(0, 1 - v), 1 + v]; each adjustment blends with the
    same reference image as torchvision (black, mean grey, grayscale) and clamps to
    [0, 1]. The order of the three adjustments is drawn at random once per batch.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
        super().__init__()
        self.strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}

    @staticmethod
    def adjust(images: Tensor, name: str, factor: Tensor) -> Tensor:
        """Apply one adjustment with per-image factors (N×1×1×1), as torchvision's adjust_*."""
        if name == "brightness":
            reference = torch.zeros_like(images)
        elif name == "contrast":
            reference = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
        elif name == "saturation":
            reference = _grayscale(images)
        else:
            raise ValueError(
                f"unknown adjustment {name!r}; choose brightness, contrast, saturation"
            )
        return (factor * images + (1.0 - factor) * reference).clamp(0.0, 1.0)

    def forward(self, images: Tensor) -> Tensor:
        active = [(name, v) for name, v in self.strengths.items() if v > 0]
        for index in torch.randperm(len(active)).tolist():
            name, strength = active[index]
            low = max(0.0, 1.0 - strength)
            uniform = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype)
            images = self.adjust(images, name, low + (1.0 + strength - low) * uniform)
        return images


class RandomRotateScale(nn.Module):
    """Random rotation in ±`degrees` and isotropic scale in `scale`, per image, one affine
    resample (bilinear, zero fill), as torchvision's RandomRotation + RandomAffine(scale)."""

    def __init__(self, degrees: float = 20.0, scale: tuple[float, float] = (0.8, 1.2)) -> None:
        super().__init__()
        self.degrees = degrees
        self.scale = tuple(scale)

    def forward(self, images: Tensor) -> Tensor:
        n = images.shape[0]
        options = {"device": images.device, "dtype": images.dtype}
        angle = (torch.rand(n, **options) * 2 - 1) * self.degrees * torch.pi / 180
        low, high = self.scale
        zoom = low + (high - low) * torch.rand(n, **options)
        # affine_grid maps output to input coordinates: the inverse of rotate-then-zoom.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zeros = torch.zeros_like(cos)
        theta = torch.stack(
            [torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
