"""Grad-CAM overlays of a trained checkpoint on your own images.

    python -m cnn_study.explain ckpt=<run>/checkpoints/best-epoch09.ckpt images=<dir or file>
    python -m cnn_study.explain ckpt=... images=[a.jpg,b.png] layer=features.2.0 output_dir=out
    python -m cnn_study.explain ckpt=... images=... device=cuda

Writes one `<image>_gradcam.png` (image | heat map | overlay, predicted class in the title)
per image into `output_dir` (default: $CNN_STUDY_OUTPUT/explain/<time>), at the image's
path below the images' common folder: `angry/x.jpg` and `happy/x.jpg` give
`angry/x_gradcam.png` and `happy/x_gradcam.png`. Existing outputs are an error unless
`overwrite=true`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from cnn_study import paths
from cnn_study.attribution import grad_cam
from cnn_study.data.decode import image_files, square_batches
from cnn_study.errors import CnnStudyError
from cnn_study.figures import gradcam_figure
from cnn_study.inputs import displayable
from cnn_study.module import load_classifier
from cnn_study.predict import resolve_device
from cnn_study.tool import refuse_overwrite, relative_outputs, run_tool

log = logging.getLogger("cnn_study.explain")


@dataclass
class ExplainArgs:
    """Command-line keys (key=value); a typo'd key is an error, not ignored."""

    ckpt: str = MISSING
    images: Any = MISSING  # a folder, a file, or a list of files
    layer: str | None = None  # default: the last conv layer
    output_dir: str | None = None
    batch_size: int = 16
    device: str = "auto"  # auto (CUDA when available), cpu, cuda
    overwrite: bool = False  # replace existing overlays in output_dir


def explain(args: ExplainArgs) -> list[Path]:
    """Write one Grad-CAM figure per image; return their paths."""
    device = resolve_device(args.device)
    model = load_classifier(args.ckpt, map_location=str(device)).to(device)
    size = model.input_spec.decode_side
    if size is None:
        raise CnnStudyError(
            f"{args.ckpt}: its network declares no input size, so images cannot be batched"
        )
    files = image_files(args.images)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.output_dir) if args.output_dir else paths.output_root() / "explain" / stamp
    targets = dict(zip(files, relative_outputs(files, out, "_gradcam.png"), strict=True))
    refuse_overwrite(list(targets.values()), args.overwrite, "output_dir")
    written: list[Path] = []
    skipped: list[str] = []
    crop = model.input_spec.crop_fraction
    for chunk, pixels in square_batches(files, size, args.batch_size, skipped, crop):
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        maps, predictions = grad_cam(model, images, layer=args.layer)
        maps, predictions = maps.cpu(), predictions.cpu()
        shown = displayable(images, model.input_spec)  # as the network sees them
        for path, image, heat, label in zip(chunk, shown, maps.numpy(), predictions.tolist()):
            figure = gradcam_figure(image[None], heat[None], None, [model.class_names[label]])
            target = targets[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(target, dpi=110)
            written.append(target)
    if skipped:
        log.warning("skipped %d images: %s", len(skipped), ", ".join(skipped))
    if not written:
        raise CnnStudyError(f"images: none of the {len(files)} files could be read")
    return written


def main(argv: list[str] | None = None) -> int:
    return run_tool(__doc__, ExplainArgs, explain, argv)


if __name__ == "__main__":
    sys.exit(main())
