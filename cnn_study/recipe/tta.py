"""Test-time augmentation: the views of a batch whose class probabilities are averaged at
test and in `predict` (not in validation, which picks the best epoch on the plain view)."""

from __future__ import annotations

from torch import Tensor, nn


class FlipTTA(nn.Module):
    """Two views: the images as they are and mirrored left–right (CIFAR-10's training
    augmentation, A6, flips too)."""

    def forward(self, inputs: Tensor) -> list[Tensor]:
        return [inputs, inputs.flip(-1)]
