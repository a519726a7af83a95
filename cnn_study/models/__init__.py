"""Network builders: each `arch` option names one of these through `_target_`."""

from cnn_study import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "build_cnn": "cnn",
    "torchvision_backbone": "backbones",
    "timm_backbone": "backbones",
    "check_network": "protocol",
})  # fmt: skip
