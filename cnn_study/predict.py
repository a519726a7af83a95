"""Predictions of a trained checkpoint for your own images, one CSV row per image.

    python -m cnn_study.predict ckpt=<run>/checkpoints/best-epoch09.ckpt images=<dir or file>
    python -m cnn_study.predict ckpt=... images=[a.jpg,b.png] output=preds.csv device=cuda
    python -m cnn_study.predict ckpt=... images=... tta=flip   # test-time views (conf/tta)

Each row: the image's path, the predicted class and its probability, and every class's
probability. Images get the checkpoint's own preprocessing (its input spec), batched, with
a progress bar; unreadable files are skipped and named. When `images` is one folder whose
sub-folders are named after the checkpoint's classes, the true class is added to each row,
the accuracy printed and a confusion figure `<csv name>_confusion.png` written beside the CSV.
Probabilities average the run's test-time views (its `tta`), or those `tta=none|flip` names.
An existing CSV (or figure) is an error unless `overwrite=true`.
Default output: $CNN_STUDY_OUTPUT/predict/<time>/predictions.csv.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from tqdm.auto import tqdm

from cnn_study import paths
from cnn_study.data.decode import image_files, square_batches
from cnn_study.errors import CnnStudyError
from cnn_study.figures import confusion_figure
from cnn_study.module import load_classifier
from cnn_study.rundir import disk_full
from cnn_study.tool import config_option, refuse_overwrite, run_tool

log = logging.getLogger("cnn_study.predict")


@dataclass
class PredictArgs:
    """Command-line keys (key=value); a typo'd key is an error, not ignored."""

    ckpt: str = MISSING
    images: Any = MISSING  # a folder, a file, or a list of files
    output: str | None = None  # the CSV; default: <output root>/predict/<time>/predictions.csv
    batch_size: int = 64
    device: str = "auto"  # auto (CUDA when available), cpu, cuda
    overwrite: bool = False  # replace an existing CSV (and its confusion figure)
    tta: str | None = None  # test-time views: the run's own (default), or a conf/tta option


def true_classes(images: Any, files: list[Path], class_names: list[str]) -> list[int] | None:
    """Each file's class when `images` is one folder of `<class>/<image>` sub-folders named
    after the checkpoint's classes; None otherwise."""
    if isinstance(images, list | tuple) or not Path(str(images)).expanduser().is_dir():
        return None
    root = Path(str(images)).expanduser()
    folders = [path.relative_to(root).parts[0] for path in files]
    if any(len(path.relative_to(root).parts) < 2 for path in files):
        return None
    if not set(folders) <= set(class_names):
        return None
    return [class_names.index(folder) for folder in folders]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise CnnStudyError(f"device={name!r}; choose one of ['auto', 'cpu', 'cuda']")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnStudyError("device=cuda, but torch sees no CUDA device; use auto or cpu")
    return torch.device(name)


def predict(args: PredictArgs) -> list[str]:
    """Write the predictions CSV (and, with true classes, the confusion figure); return
    what to print."""
    if args.batch_size < 1:
        raise CnnStudyError(f"batch_size={args.batch_size}: must be an integer ≥ 1")
    device = resolve_device(args.device)
    model = load_classifier(args.ckpt, map_location=str(device)).to(device)
    if args.tta is not None:
        model.tta = config_option("tta", args.tta)
    size = model.input_spec.decode_side
    if size is None:
        raise CnnStudyError(
            f"{args.ckpt}: its network declares no input size, so images cannot be batched"
        )
    names = model.class_names
    files = image_files(args.images)
    truth = true_classes(args.images, files, names)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    target = (
        Path(args.output).expanduser()
        if args.output
        else paths.output_root() / "predict" / stamp / "predictions.csv"
    )
    confusion_path = target.with_name(f"{target.stem}_confusion.png")
    refuse_overwrite([target, *([confusion_path] if truth else [])], args.overwrite, "output")
    target.parent.mkdir(parents=True, exist_ok=True)
    accuracy = MulticlassAccuracy(num_classes=len(names), average="micro")
    confusion = MulticlassConfusionMatrix(num_classes=len(names))
    label_of = dict(zip(files, truth)) if truth is not None else {}
    skipped: list[str] = []
    # Written to a temporary file and renamed when complete: a prediction that fails
    # leaves no header-only CSV behind to block the next one.
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with partial.open("w", newline="") as handle, torch.inference_mode():
            writer = csv.writer(handle)
            writer.writerow(["path", "predicted", "probability", *(["true"] if truth else []),
                             *(f"p_{name}" for name in names)])  # fmt: skip
            batches = square_batches(
                files, size, args.batch_size, skipped, model.input_spec.crop_fraction
            )
            total = -(-len(files) // args.batch_size)
            for chunk, pixels in tqdm(batches, total=total, desc="predict", unit="batch"):
                images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
                probabilities = model.probabilities(images).cpu()
                best, predicted = probabilities.max(dim=-1)
                if truth is not None:
                    labels = torch.tensor([label_of[path] for path in chunk])
                    accuracy.update(predicted, labels)
                    confusion.update(predicted, labels)
                for path, row, p, k in zip(chunk, probabilities.tolist(), best.tolist(),
                                           predicted.tolist()):  # fmt: skip
                    true = [names[label_of[path]]] if truth is not None else []
                    writer.writerow([str(path), names[k], f"{p:.6f}", *true,
                                     *(f"{value:.6f}" for value in row)])  # fmt: skip
        if len(skipped) == len(files):
            raise CnnStudyError(f"images: none of the {len(files)} files could be read")
        os.replace(partial, target)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(target, error) from error
        raise
    finally:
        partial.unlink(missing_ok=True)
    if skipped:
        log.warning("skipped %d images: %s", len(skipped), ", ".join(skipped))
    lines = [f"predictions: {target} ({len(files) - len(skipped)} images)"]
    if truth is not None:
        figure = confusion_figure(confusion.compute().numpy(), names)
        figure.savefig(confusion_path, dpi=110)
        lines += [
            f"accuracy: {float(accuracy.compute()):.4f} (true classes from the folder names)",
            f"confusion: {confusion_path}",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_tool(__doc__, PredictArgs, predict, argv)


if __name__ == "__main__":
    sys.exit(main())
