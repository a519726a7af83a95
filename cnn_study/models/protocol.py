"""What a network must provide to be an `arch` option: the one seam a new architecture
plugs into — one YAML (`conf/arch/<name>.yaml`, its builder as `_target_`) and one small
function, nothing else touched.

Required, checked by `check_network` when a run builds its model (one line naming what is
missing):
- the builder, called with `num_classes=` and the YAML's other keys, returns an
  `nn.Module` whose `forward` maps float N×3×S×S inputs to N×`num_classes` logits;
- it declares its input: `cnn_study.inputs.declare_input(network, InputSpec(size=S))` (and,
  for trained weights, the mean and std they expect), which the data, `predict`, `explain`
  and `export` read;
- its output layer gives `num_classes` outputs.

Optional, each with a default:
- `get_classifier()` → the output layer (default: the last `nn.Linear`): freeze policies
  and new heads (`cnn_study.finetune`);
- `group_matcher(coarse=True)` → `{"stem": regex, "blocks": regex}` (timm's convention):
  the `partial` and `last_block` policies (torchvision's ResNet and MobileNetV2 get one in
  `cnn_study.finetune`);
- `gradcam_layer()` → the name of the module Grad-CAM explains (default: the last Conv2d).

`conf/arch/cnn3.yaml` with `cnn_study.models.cnn.build_cnn` is the smallest example.
"""

from __future__ import annotations

from torch import nn

from cnn_study.errors import CnnStudyError
from cnn_study.finetune import classifier_layer
from cnn_study.inputs import declared_input


def check_network(network: object, num_classes: int, builder: str) -> nn.Module:
    """`network` as `builder` returned it, when it keeps the protocol; else one line
    naming what it lacks and how to add it."""
    if not isinstance(network, nn.Module):
        raise CnnStudyError(
            f"arch: {builder} returned a {type(network).__name__}, not a torch nn.Module"
        )
    if declared_input(network).size is None:
        raise CnnStudyError(
            f"arch: {builder} declares no input size; end the builder with "
            "cnn_study.inputs.declare_input(network, InputSpec(size=...)) "
            "(see cnn_study.models.protocol)"
        )
    outputs = getattr(classifier_layer(network), "out_features", None)
    if outputs is not None and outputs != num_classes:
        raise CnnStudyError(
            f"arch: {builder}: its output layer gives {outputs} outputs for {num_classes} "
            "classes; size the head from the builder's num_classes"
        )
    if hasattr(network, "gradcam_layer"):
        names = dict(network.named_modules())
        layer = network.gradcam_layer()
        if layer not in names:
            raise CnnStudyError(
                f"arch: {builder}.gradcam_layer() names {layer!r}, which is no module of it"
            )
    return network
