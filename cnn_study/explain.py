"""Grad-CAM overlays of a trained checkpoint on your own images.

    python -m cnn_study.explain ckpt=<run>/checkpoints/best-epoch09.ckpt images=<dir or file>
    python -m cnn_study.explain ckpt=... images=[a.jpg,b.png] layer=features.2.0 output_dir=out

Writes one `<image>_gradcam.png` (image | heat map | overlay, predicted class in the title)
per image into `output_dir` (default: $CNN_STUDY_OUTPUT/explain/<time>).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from cnn_study import paths
from cnn_study.attribution import grad_cam
from cnn_study.data.decode import IMAGE_SUFFIXES, decode_square, why_unreadable
from cnn_study.errors import CnnStudyError
from cnn_study.figures import gradcam_figure
from cnn_study.module import load_classifier

log = logging.getLogger("cnn_study.explain")


@dataclass
class ExplainArgs:
    """Command-line keys (key=value); a typo'd key is an error, not ignored."""

    ckpt: str = MISSING
    images: Any = MISSING  # a folder, a file, or a list of files
    layer: str | None = None  # default: the last conv layer
    output_dir: str | None = None
    batch_size: int = 16


def image_files(images: Any) -> list[Path]:
    """Image files named by a folder (searched recursively), a file, or a list of either."""
    entries = images if isinstance(images, list | tuple) else [images]
    files: list[Path] = []
    for entry in map(lambda e: Path(str(e)).expanduser(), entries):
        if entry.is_dir():
            files += sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif entry.is_file():
            files.append(entry)
        else:
            raise CnnStudyError(f"images: {entry} is neither a folder nor a file")
    if not files:
        raise CnnStudyError(f"images: no image files (.jpg, .png, .gif, .tiff, …) in {images}")
    return files


def explain(args: ExplainArgs) -> list[Path]:
    """Write one Grad-CAM figure per image; return their paths."""
    model = load_classifier(args.ckpt)
    size = model.input_spec.size
    if size is None:
        raise CnnStudyError(
            f"{args.ckpt}: its network declares no input size, so images cannot be batched"
        )
    files = image_files(args.images)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.output_dir) if args.output_dir else paths.output_root() / "explain" / stamp
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for start in range(0, len(files), args.batch_size):
        chunk, decoded = [], []
        for path in files[start : start + args.batch_size]:
            try:
                decoded.append(decode_square(path, size))
                chunk.append(path)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                skipped.append(f"{path} ({why_unreadable(error)})")
        if not chunk:
            continue
        pixels = np.stack(decoded)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        maps, predictions = grad_cam(model, images, layer=args.layer)
        for path, image, heat, label in zip(chunk, pixels, maps.numpy(), predictions.tolist()):
            figure = gradcam_figure(image[None], heat[None], None, [model.class_names[label]])
            target = out / f"{path.stem}_gradcam.png"
            figure.savefig(target, dpi=110)
            written.append(target)
    if skipped:
        log.warning("skipped %d images: %s", len(skipped), ", ".join(skipped))
    if not written:
        raise CnnStudyError(f"images: none of the {len(files)} files could be read")
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        args = OmegaConf.merge(OmegaConf.structured(ExplainArgs), OmegaConf.from_dotlist(argv))
        missing = sorted(OmegaConf.missing_keys(args))
        if missing:
            raise CnnStudyError(f"missing: {', '.join(missing)} (see --help)")
        written = explain(OmegaConf.to_object(args))  # type: ignore[arg-type]
    except (CnnStudyError, OmegaConfBaseException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
