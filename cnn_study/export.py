"""A trained checkpoint as a model to take elsewhere: ONNX or TorchScript, preprocessing inside.

    python -m cnn_study.export ckpt=<run>/checkpoints/best-epoch09.ckpt format=onnx
    python -m cnn_study.export ckpt=... format=torchscript output=model.pt

The exported model takes uint8 RGB images N×3×S×S (S: the checkpoint's input size, any N)
and returns class probabilities N×C; scaling, normalisation and the network are inside.
Beside it, `<output>.json` names the classes and the input (size, mean, std, layout).
ONNX needs the `export` extra: pip install 'cnn_study[export]'.
Default output: $CNN_STUDY_OUTPUT/export/<time>/model.onnx (or model.pt).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from cnn_study import paths
from cnn_study.data.decode import image_files, square_batches
from cnn_study.errors import CnnStudyError
from cnn_study.inputs import Preprocess
from cnn_study.module import ImageClassifier, load_classifier
from cnn_study.tool import refuse_overwrite, run_tool

log = logging.getLogger("cnn_study.export")
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class ExportArgs:
    """Command-line keys (key=value); a typo'd key is an error, not ignored."""

    ckpt: str = MISSING
    format: str = "onnx"  # onnx or torchscript
    output: str | None = None  # default: <output root>/export/<time>/model.onnx|.pt
    opset: int = 18  # ONNX opset
    check_images: str | None = None  # a folder or file: compare the export with PyTorch on it
    overwrite: bool = False  # replace an existing export (and its .json)


class ProbabilityModel(nn.Module):
    """uint8 images at the input size → probabilities: the classifier's preprocessing (in
    plain NCHW, what exporters and runtimes expect) and network, then a softmax."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.preprocess = Preprocess(classifier.input_spec, channels_last=False)
        self.net = classifier.net.to(memory_format=torch.contiguous_format)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self.preprocess(images)).softmax(dim=-1)


def sidecar(classifier: ImageClassifier, checkpoint: str, model_format: str) -> dict:
    spec = classifier.input_spec
    return {
        "format": model_format,
        "checkpoint": str(Path(checkpoint).expanduser().resolve()),
        "class_names": classifier.class_names,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NCHW, RGB",
            "shape": ["N", len(spec.mean or ()), spec.size, spec.size],
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", "C"]},
        "input_spec": spec.as_dict(),
    }


def export(args: ExportArgs) -> list[str]:
    """Write the model and its sidecar JSON; return their paths."""
    if args.format not in FORMATS:
        raise CnnStudyError(f"format={args.format!r}; choose one of {list(FORMATS)}")
    if args.format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise CnnStudyError(
            "format=onnx needs the onnx package: pip install 'cnn_study[export]' "
            "(or use format=torchscript)"
        )
    classifier = load_classifier(args.ckpt)
    size = classifier.input_spec.size
    if size is None:
        raise CnnStudyError(f"{args.ckpt}: its network declares no input size to export for")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    suffix = FORMATS[args.format]
    target = (
        Path(args.output).expanduser()
        if args.output
        else paths.output_root() / "export" / stamp / f"model{suffix}"
    )
    described = target.with_suffix(target.suffix + ".json")
    refuse_overwrite([target, described], args.overwrite, "output")
    target.parent.mkdir(parents=True, exist_ok=True)
    model = ProbabilityModel(classifier).eval()
    example = torch.zeros(2, len(classifier.input_spec.mean or ()), size, size, dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        # The input size is fixed at export (the sidecar says so): the size check that
        # skips the resize is a constant of the exported graph, as the tracer warns.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if args.format == "onnx":
            torch.onnx.export(
                model, (example,), target, input_names=["images"],
                output_names=["probabilities"], opset_version=args.opset, dynamo=False,
                dynamic_axes={"images": {0: "N"}, "probabilities": {0: "N"}},
            )  # fmt: skip
        else:
            torch.jit.trace(model, example).save(str(target))
    described.write_text(json.dumps(sidecar(classifier, args.ckpt, args.format), indent=2) + "\n")
    lines = [str(target), str(described)]
    if args.check_images:
        difference, count = largest_difference(target, args.format, model, args.check_images)
        lines.append(
            f"max |probability difference| from PyTorch on {count} images: {difference:.2e}"
        )
    return lines


def exported_runner(target: Path, model_format: str) -> Callable[[Tensor], Tensor]:
    """The exported model as a function of a uint8 batch, run by its own runtime."""
    if model_format == "torchscript":
        return torch.jit.load(str(target))
    if importlib.util.find_spec("onnxruntime") is None:
        raise CnnStudyError("check_images needs onnxruntime: pip install 'cnn_study[export]'")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])

    def run(batch: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])

    return run


def largest_difference(
    target: Path, model_format: str, model: ProbabilityModel, images: str
) -> tuple[float, int]:
    """The largest difference between the exported model's probabilities and PyTorch's on
    the images under `images`, decoded to the input size the export takes; files that
    cannot be read are named in one warning."""
    spec = model.preprocess.spec
    skipped: list[str] = []
    files = image_files(images)
    batches = [
        torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        for _, pixels in square_batches(files, spec.size, 64, skipped, spec.crop_fraction)
    ]
    if skipped:
        log.warning("check_images: skipped %d images: %s", len(skipped), ", ".join(skipped))
    if not batches:
        raise CnnStudyError(f"check_images: none of the {len(files)} files could be read")
    run = exported_runner(target, model_format)
    largest = 0.0
    with torch.no_grad():
        for batch in batches:
            largest = max(largest, float((run(batch) - model(batch)).abs().max()))
    return largest, sum(len(batch) for batch in batches)


def main(argv: list[str] | None = None) -> int:
    return run_tool(__doc__, ExportArgs, export, argv)


if __name__ == "__main__":
    sys.exit(main())
