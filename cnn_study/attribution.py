"""Grad-CAM with Captum: heat maps of where a network looks, for any cnn_study network.

Used by the test-time callback and by `python -m cnn_study.explain`. Attribution runs
with gradients on and inference mode off on purpose (Lightning evaluates under
`torch.inference_mode`, Lightning #17653), in float32, with the network in eval mode
so BatchNorm statistics do not move, and with in-place ReLUs switched off for the
duration (they can break Captum's hooks, captum #156).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from cnn_study.errors import CnnStudyError
from cnn_study.module import ImageClassifier


def conv_layer_names(network: nn.Module) -> list[str]:
    """Names of the network's Conv2d layers, in registration order."""
    return [name for name, m in network.named_modules() if isinstance(m, nn.Conv2d)]


def target_layer(network: nn.Module, name: str | None = None) -> nn.Module:
    """The layer to explain: `name`; by default the network's own `gradcam_layer()` (the
    cnn_study CNNs: the last conv layer's activation), else its last Conv2d."""
    convs = conv_layer_names(network)
    if name is None and hasattr(network, "gradcam_layer"):
        name = network.gradcam_layer()
    if name is None:
        if not convs:
            raise CnnStudyError(f"{type(network).__name__} has no Conv2d layer for Grad-CAM")
        return network.get_submodule(convs[-1])
    try:
        return network.get_submodule(name)
    except AttributeError:
        shown = ", ".join(convs[-12:])
        raise CnnStudyError(
            f"no layer {name!r} in {type(network).__name__}; its conv layers are: {shown}"
        ) from None


@contextmanager
def _no_inplace_relu(network: nn.Module) -> Iterator[None]:
    relus = [m for m in network.modules() if isinstance(m, nn.ReLU | nn.ReLU6) and m.inplace]
    for relu in relus:
        relu.inplace = False
    try:
        yield
    finally:
        for relu in relus:
            relu.inplace = True


def grad_cam(
    model: ImageClassifier,
    images: Tensor,
    targets: Tensor | None = None,
    layer: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps (N×H×W in [0, 1], at the model's input size) and the predictions.

    `images` are uint8 N×3×H×W; `targets` are the classes to explain (default: predicted).
    """
    network = model.net
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(device.type, enabled=False),
            _no_inplace_relu(network),
        ):
            inputs = model.preprocess(images.to(device).clone()).float().requires_grad_(True)
            predictions = network(inputs).argmax(dim=1)
            chosen = predictions if targets is None else targets.to(device)
            cam = LayerGradCam(network, target_layer(network, layer))
            maps = cam.attribute(inputs, target=chosen, relu_attributions=True)
            maps = LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]), "bilinear")
            maps = maps.squeeze(1).detach().float()
            peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
            return (maps / peak).clamp(0, 1).cpu(), predictions.detach().cpu()
    finally:
        model.train(was_training)
