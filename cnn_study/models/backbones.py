"""Pretrained backbones from torchvision and timm, their heads sized for the data.

`weights` is "none"; "imagenet" (the library's own download and cache; an error when
neither is reachable); "auto" (ImageNet weights when they can be had, else random
initialisation with a warning); or a path to a local file with the architecture's own
keys (see `cnn_study.models.weights`). Every network declares its input
(`cnn_study.inputs.declare_input`): `input_size`, and for pretrained weights the mean, std
and interpolation of the library's own preset for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import timm
import torchvision
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from cnn_study.errors import CnnStudyError
from cnn_study.inputs import INTERPOLATIONS, InputSpec, declare_input
from cnn_study.models.weights import load_weights

log = logging.getLogger(__name__)

T = TypeVar("T")


def _offline_error(name: str, error: Exception) -> CnnStudyError:
    return CnnStudyError(
        f"ImageNet weights for {name} could not be fetched and are not cached "
        f"({type(error).__name__}: {error}). Without network access, download the weights "
        f"elsewhere and point arch.weights at the file: arch.weights=/path/to/{name}.pth"
    )


def _fetch_imagenet(name: str, weights: str, fetch: Callable[[], T]) -> T | None:
    """`fetch()` ImageNet weights; for weights="auto", None and a warning when unavailable."""
    try:
        return fetch()
    except Exception as error:  # URLError, socket errors, hub errors, a proxy page
        if weights != "auto":
            raise _offline_error(name, error) from None
        log.warning(
            "ImageNet weights for %s are unavailable (%s: %s): training from random "
            "initialisation. Point arch.weights at a local file to use pretrained weights.",
            name, type(error).__name__, error,
        )  # fmt: skip
        return None


def replace_last_linear(
    network: nn.Module, num_classes: int, dropout: float | None = None
) -> nn.Linear:
    """Swap the network's last `nn.Linear` (its classifier) for one with `num_classes` outputs.

    `dropout` (regularization.dropout), when given, is the dropout before that classifier:
    the network's own (MobileNetV2, EfficientNet) takes it as its rate, a network without
    one (ResNet) gets one; None keeps what the architecture has."""
    name, last = next(
        ((n, m) for n, m in reversed(list(network.named_modules())) if isinstance(m, nn.Linear)),
        (None, None),
    )
    if last is None or name is None:
        raise CnnStudyError(f"{type(network).__name__} has no nn.Linear classifier to replace")
    head = nn.Linear(last.in_features, num_classes, bias=last.bias is not None)
    parent_name, _, attribute = name.rpartition(".")
    parent = network.get_submodule(parent_name)
    own = [m for m in parent.children() if isinstance(m, nn.Dropout)]
    replacement: nn.Module = head
    if dropout is not None:
        for module in own:
            module.p = dropout
        if not own and dropout > 0:
            replacement = nn.Sequential(nn.Dropout(dropout), head)
    setattr(parent, attribute, replacement)
    return head


def _torchvision_input(name: str, input_size: int) -> InputSpec:
    """What torchvision's own preset for `name`'s ImageNet weights feeds the network."""
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    return InputSpec(input_size, tuple(preset.mean), tuple(preset.std), preset.interpolation.value)


def _timm_input(network: nn.Module, input_size: int) -> InputSpec:
    """What timm's pretrained config of `network` says its weights expect."""
    config = network.pretrained_cfg
    mean = tuple(config.get("mean", IMAGENET_DEFAULT_MEAN))
    std = tuple(config.get("std", IMAGENET_DEFAULT_STD))
    interpolation = config.get("interpolation") or "bilinear"
    return InputSpec(input_size, mean, std, interpolation if interpolation in INTERPOLATIONS
                     else "bilinear")  # fmt: skip


def torchvision_backbone(
    name: str,
    num_classes: int,
    weights: str = "none",
    input_size: int = 224,
    dropout: float | None = None,
) -> nn.Module:
    """A torchvision classification model (`resnet18`, `mobilenet_v2`, …) with a new head;
    `dropout` before it as `replace_last_linear` says; fed `input_size` px squares."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise CnnStudyError(f"unknown torchvision model {name!r}")
    network = torchvision.models.get_model(name, weights=None)
    pretrained = weights not in ("none", "imagenet", "auto")
    if pretrained:
        load_weights(network, weights)
    elif weights != "none":
        enum = torchvision.models.get_model_weights(name).DEFAULT
        state = _fetch_imagenet(name, weights, lambda: enum.get_state_dict(progress=True))
        if state is not None:
            network.load_state_dict(state)
            pretrained = True
    replace_last_linear(network, num_classes, dropout)
    spec = _torchvision_input(name, input_size) if pretrained else InputSpec(input_size)
    return declare_input(network, spec)


def timm_backbone(
    name: str,
    num_classes: int,
    weights: str = "none",
    input_size: int = 224,
    dropout: float | None = None,
) -> nn.Module:
    """Any timm model by name (`efficientnet_b0`, `convnext_tiny`, …) with a new head;
    `dropout` is timm's `drop_rate` before it (None: the model's default); fed
    `input_size` px squares."""
    if not timm.is_model(name):
        raise CnnStudyError(f"unknown timm model {name!r}; timm.list_models('*{name[:6]}*') helps")
    options = {} if dropout is None else {"drop_rate": dropout}
    network = None
    if weights in ("imagenet", "auto"):
        network = _fetch_imagenet(
            name, weights, lambda: timm.create_model(name, pretrained=True, **options)
        )
    pretrained = network is not None or weights not in ("none", "imagenet", "auto")
    if network is None:
        network = timm.create_model(name, pretrained=False, **options)
        if pretrained:
            load_weights(network, Path(weights))
    network.reset_classifier(num_classes)
    spec = _timm_input(network, input_size) if pretrained else InputSpec(input_size)
    return declare_input(network, spec)
