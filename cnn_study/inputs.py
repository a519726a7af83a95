"""What a network expects of its input images, decided in one place.

Every architecture builder declares its network's `InputSpec` (`declare_input`): the
square side its layers are built or were pretrained for, and — when its weights are
trained — the mean, std and interpolation those weights expect. `train.build` completes it
with the training split's mean/std where the weights fixed none, the checkpoint stores it,
and `Preprocess` applies it wherever images meet the network: training, evaluation,
figures, `explain` and `bench`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnn_study.errors import CnnStudyError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_DECLARED = "cnn_study_input_spec"  # written by `declare_input`, read by `declared_input`


@dataclass(frozen=True)
class InputSpec:
    """Square side in pixels (None: as stored), per-channel mean and std of [0, 1] pixels
    (None: not fixed by the weights, so the training split's), the interpolation that
    resizes to `size`, and the square side the training images were decoded to before
    that (`decoded_size`; None: unknown) and the central share of the shorter side kept
    when decoding (`crop_fraction`, 0.875 after full-resolution training), so that new
    images take the evaluation path of training."""

    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    decoded_size: int | None = None
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.crop_fraction <= 1:
            raise CnnStudyError(f"crop_fraction {self.crop_fraction}: must be in (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise CnnStudyError(
                f"interpolation {self.interpolation!r}; choose one of {list(INTERPOLATIONS)}"
            )
        if self.size is not None and self.size < 1:
            raise CnnStudyError(f"input size {self.size}: must be an integer ≥ 1")

    @property
    def has_normalization(self) -> bool:
        """Whether mean/std are set: declared by trained weights, or completed."""
        return self.mean is not None and self.std is not None

    def completed(self, mean: Sequence[float], std: Sequence[float]) -> InputSpec:
        """This spec, with `mean`/`std` (the training split's) where the weights fix none."""
        if self.has_normalization:
            return self
        return replace(self, mean=tuple(map(float, mean)), std=tuple(map(float, std)))

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("mean", "std"):
            values[key] = None if values[key] is None else list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputSpec:
        def channels(key: str) -> tuple[float, ...] | None:
            return None if values.get(key) is None else tuple(map(float, values[key]))

        return cls(
            values.get("size"),
            channels("mean"),
            channels("std"),
            values.get("interpolation") or "bilinear",
            values.get("decoded_size"),
            values.get("crop_fraction") or 1.0,
        )

    @property
    def decode_side(self) -> int | None:
        """The square side to decode a new image file to: the training images' own."""
        return self.decoded_size or self.size


def declare_input(network: nn.Module, spec: InputSpec) -> nn.Module:
    """Record what `network` expects as input (architecture builders and fine-tuning)."""
    setattr(network, _DECLARED, spec)
    return network


def declared_input(network: nn.Module) -> InputSpec:
    """What `declare_input` recorded; for a network built elsewhere, nothing fixed."""
    return getattr(network, _DECLARED, InputSpec())


def checkpoint_input(checkpoint: object) -> InputSpec | None:
    """The input spec a cnn_study checkpoint's network was trained with, if it is one
    (checkpoints from before the spec kept `input_size`, `mean` and `std`)."""
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if hparams.get("input_spec") is not None:
        return InputSpec.from_dict(hparams["input_spec"])
    if "mean" in hparams and "std" in hparams:
        return InputSpec(hparams.get("input_size"), tuple(hparams["mean"]), tuple(hparams["std"]))
    return None


def resize(pixels: Tensor, spec: InputSpec) -> Tensor:
    """Float N×C×H×W resized to the spec's square side (unchanged when it already is)."""
    size = spec.size
    if size is None or tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    smooth = spec.interpolation != "nearest"
    return F.interpolate(pixels, size=(size, size), mode=spec.interpolation, antialias=smooth)


def displayable(images: Tensor, spec: InputSpec) -> np.ndarray:
    """uint8 N×3×H×W as the network sees them (resized, not normalised), N×H×W×3 uint8."""
    pixels = resize(images.float(), spec).clamp(0, 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


class Preprocess(nn.Module):
    """uint8 N×3×H×W → float in [0, 1] → resized → [augmented] → normalised, on the
    batch's device, so batches travel as uint8."""

    def __init__(self, spec: InputSpec, channels_last: bool = True) -> None:
        super().__init__()
        if not spec.has_normalization:
            raise CnnStudyError(f"{spec} has no mean/std: complete it with the data's first")
        self.spec = spec
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor, augmentation: nn.Module | None = None) -> Tensor:
        x = resize(images.float() / 255.0, self.spec)
        if augmentation is not None:
            x = augmentation(x)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
