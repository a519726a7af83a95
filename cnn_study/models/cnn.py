"""The studies' small CNNs, from one configurable builder.

A network is `features` (conv blocks) → `pool` → `classifier` (two fully connected
layers), the structure freeze policies and Grad-CAM rely on:

    conv block = Conv2d(k×k) → [BatchNorm2d] → ReLU → MaxPool2d(2)
    classifier = Linear → ReLU → Dropout → Linear

Study A (`cnn2`…`cnn5`, `cnn3_bn`) uses padded convs and flattens the last feature map;
Study B (`gap4`, `gap4_slim`, `gap4_bn`) uses unpadded convs and global average pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
from torch import nn

from cnn_study.errors import CnnStudyError
from cnn_study.inputs import InputSpec, declare_input
from cnn_study.models.geometry import feature_map_size, smallest_input_size

Pooling = Literal["flatten", "global_avg"]


def conv_block(
    in_channels: int, out_channels: int, padding: int, batch_norm: bool
) -> nn.Sequential:
    """Conv 3×3 → [BN] → ReLU → max-pool 2. ReLU is not in-place (Captum hooks, captum #156)."""
    # The conv keeps its bias with BN too: the studies' parameter counts include it.
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=padding)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers += [nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """Conv feature extractor, pooling and a two-layer fully connected classifier."""

    def __init__(self, features: nn.Sequential, pool: nn.Module, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.pool = pool
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(images)), 1))

    def group_matcher(self, coarse: bool = True) -> dict[str, str]:
        """Stages for freeze policies, in timm's format: one group per conv block."""
        return {"blocks": r"^features\.(\d+)"}

    def gradcam_layer(self) -> str:
        """Grad-CAM's default layer: the last conv layer's rectified output (its ReLU).

        On the raw conv output (before BatchNorm and ReLU) the weighted maps of some images
        sum to nothing but negatives and Grad-CAM shows a blank map.
        """
        block = len(self.features) - 1
        relu = next(i for i, m in enumerate(self.features[block]) if isinstance(m, nn.ReLU))
        return f"features.{block}.{relu}"

    def get_classifier(self) -> nn.Linear:
        """The output layer, replaced when the network moves to a new task (as in timm)."""
        return self.classifier[-1]


def build_cnn(
    num_classes: int,
    channels: Sequence[int],
    fc_hidden: int,
    input_size: int,
    padding: int = 1,
    batch_norm: bool = False,
    pooling: Pooling = "flatten",
    dropout: float | None = None,
    in_channels: int = 3,
) -> ConvNet:
    """Build a `ConvNet` with one conv block per entry of `channels`.

    `input_size` (square, pixels) fixes the flattened feature size and is checked here,
    so an input too small for the depth fails now with the smallest size that works.
    """
    if pooling not in ("flatten", "global_avg"):
        raise CnnStudyError(f"pooling={pooling!r}; choose one of ['flatten', 'global_avg']")
    if not channels:
        raise CnnStudyError("channels must list at least one conv layer width")
    dropout = dropout or 0.0  # None: regularization=none, no dropout in these networks
    if not 0.0 <= dropout < 1.0:
        raise CnnStudyError(f"dropout={dropout} must be in [0, 1)")
    final_size = feature_map_size(input_size, len(channels), padding)
    if final_size < 1:
        smallest = smallest_input_size(len(channels), padding)
        raise CnnStudyError(
            f"input_size={input_size} px is too small for {len(channels)} conv blocks with "
            f"padding={padding}; use arch.input_size >= {smallest}"
        )
    widths = [in_channels, *channels]
    features = nn.Sequential(
        *(conv_block(c_in, c_out, padding, batch_norm) for c_in, c_out in pairwise(widths))
    )
    if pooling == "global_avg":
        pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        flat_features = channels[-1]
    else:
        pool = nn.Identity()
        flat_features = channels[-1] * final_size * final_size
    classifier = nn.Sequential(
        nn.Linear(flat_features, fc_hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(fc_hidden, num_classes),
    )
    # Its layers are sized for input_size; mean/std are the training data's.
    return declare_input(ConvNet(features, pool, classifier), InputSpec(size=input_size))
