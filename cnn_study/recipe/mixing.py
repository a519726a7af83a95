"""MixUp and CutMix of training batches on the training device (torchvision.transforms.v2).

Applied after the input pipeline (resize, augmentation, normalisation), to the train split
only: a batch's images are blended (MixUp, Zhang et al. 2018) or pasted into one another
(CutMix, Yun et al. 2019) and its labels become the matching soft targets, which torch's
cross-entropy takes as class probabilities. With both, each batch gets one of the two at
random (as timm's `Mixup` does with `switch_prob` 0.5).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.transforms import v2

from cnn_study.errors import CnnStudyError


class BatchMixing(nn.Module):
    """(images, integer labels) → (mixed images, soft targets N × classes)."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        super().__init__()
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha == cutmix_alpha == 0:
            raise CnnStudyError(
                f"mixing: mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}; give one or "
                "both > 0 (the Beta(α, α) of the mixing ratio), or mixing=none"
            )
        choices: list[nn.Module] = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.mix(images, labels)
