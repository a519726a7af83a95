"""Freeze policies: what trains when a network moves to a task, chosen by its structure.

A network's structure is read the way timm reads it for layer-wise learning rates: a
`group_matcher` (timm models and `ConvNet` define one; torchvision ResNet and MobileNetV2
get one here) splits it into stem → stages → top, and `get_classifier()` (or the last
`nn.Linear`) is the output layer. A policy is one small function `network → None`;
`Finetune` loads optional starting weights, then applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torchvision
from timm.models import group_modules
from torch import nn

from cnn_study.errors import CnnStudyError
from cnn_study.inputs import checkpoint_input, declare_input, declared_input
from cnn_study.models.weights import load_weights, read_weights_file

log = logging.getLogger(__name__)

# group_matcher equivalents for torchvision families (timm models define their own).
TORCHVISION_MATCHERS: dict[type[nn.Module], dict[str, str]] = {
    torchvision.models.ResNet: {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)"},
    torchvision.models.MobileNetV2: {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)"},
}


@dataclass(frozen=True)
class Structure:
    """A network's parameterised layers in forward order, grouped for freeze policies."""

    stem: list[nn.Module]
    stages: list[list[nn.Module]]
    top: list[nn.Module]  # after the last stage: final norms, fully connected layers
    classifier: nn.Module  # the output layer


def classifier_layer(network: nn.Module) -> nn.Module:
    """The output layer: timm's / ConvNet's `get_classifier()`, else the last `nn.Linear`."""
    if hasattr(network, "get_classifier"):
        return network.get_classifier()
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CnnStudyError(f"{type(network).__name__} has no nn.Linear output layer")
    return linears[-1]


def structure(network: nn.Module) -> Structure:
    """Split `network` into stem, stages and top, or say which networks are understood."""
    if hasattr(network, "group_matcher"):
        matcher = network.group_matcher(coarse=True)
    else:
        matcher = next(
            (m for kind, m in TORCHVISION_MATCHERS.items() if isinstance(network, kind)), None
        )
    if matcher is None:
        known = ["ConvNet", "timm models", *(k.__name__ for k in TORCHVISION_MATCHERS)]
        raise CnnStudyError(
            f"freeze policies do not know the stages of {type(network).__name__}; known: {known}"
        )
    groups = group_modules(network, matcher, return_values=True)
    ordered = [groups[index] for index in sorted(groups)]
    classifier = classifier_layer(network)
    stem = ordered.pop(0) if "stem" in matcher else []
    top = ordered.pop() if ordered and any(m is classifier for m in ordered[-1]) else []
    return Structure(stem=stem, stages=ordered, top=top, classifier=classifier)


def _train_only(network: nn.Module, modules: list[nn.Module]) -> None:
    network.requires_grad_(False)
    for module in modules:
        module.requires_grad_(True)


def train_all(network: nn.Module) -> None:
    """Train every parameter (from scratch, or full fine-tuning of pretrained weights)."""
    network.requires_grad_(True)


def linear(network: nn.Module) -> None:
    """A linear probe: only the new output layer trains (Study A5, first row)."""
    _train_only(network, [structure(network).classifier])


def head(network: nn.Module) -> None:
    """Only the layers after the conv stages train: the fully connected head (Study B4)."""
    _train_only(network, structure(network).top)


def last_block(network: nn.Module) -> None:
    """The last conv stage and the head train (Study B4, second variant)."""
    parts = structure(network)
    _train_only(network, [*parts.stages[-1], *parts.top])


def partial(network: nn.Module, frozen_stages: int = 2) -> None:
    """Freeze the stem and the first `frozen_stages` stages; the rest trains (Study A5)."""
    parts = structure(network)
    if not 0 <= frozen_stages < len(parts.stages):
        raise CnnStudyError(
            f"finetune.frozen_stages={frozen_stages}, but {type(network).__name__} has "
            f"{len(parts.stages)} stages: choose 0 to {len(parts.stages) - 1}"
        )
    network.requires_grad_(True)
    for module in [*parts.stem, *(m for stage in parts.stages[:frozen_stages] for m in stage)]:
        module.requires_grad_(False)


class Finetune:
    """Optional starting weights from an earlier run, then a freeze policy.

    `from_checkpoint` loads a cnn_study checkpoint (or any state dict of the same
    architecture); with `new_head` an output layer of another class count is dropped, so
    the network keeps its new head; without, a class-count mismatch is an error. The
    checkpoint's input normalisation moves with its weights.
    """

    def __init__(
        self,
        policy: Callable[[nn.Module], None],
        from_checkpoint: str | None = None,
        needs_weights: bool = False,
        new_head: bool = True,
    ) -> None:
        self.policy = policy
        self.from_checkpoint = from_checkpoint
        self.needs_weights = needs_weights
        self.new_head = new_head

    def __call__(self, network: nn.Module) -> nn.Module:
        if self.from_checkpoint:
            loaded = read_weights_file(self.from_checkpoint)
            dropped = load_weights(network, self.from_checkpoint, loaded)
            if dropped and not self.new_head:
                raise CnnStudyError(
                    f"{self.from_checkpoint} was trained for another class count (its "
                    f"{', '.join(dropped)} do not fit {classifier_layer(network)}); set "
                    "finetune.new_head=true to train a new output layer for this data"
                )
            trained = checkpoint_input(loaded)
            if trained is not None:  # the normalisation moves with the weights
                declared = declared_input(network)
                declare_input(network, replace(declared, mean=trained.mean, std=trained.std))
        elif self.needs_weights and not declared_input(network).has_normalization:
            raise CnnStudyError(
                "this fine-tuning starts from trained weights, but the network has random ones: "
                "set finetune.from_checkpoint=<a cnn_study .ckpt> (or, for a pretrained "
                "backbone, arch.weights=imagenet|<file>)"
            )
        self.policy(network)
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        total = sum(p.numel() for p in network.parameters())
        log.info("trainable parameters: %d of %d", trainable, total)
        return network
