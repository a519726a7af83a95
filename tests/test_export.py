"""`python -m cnn_study.export`: ONNX and TorchScript models that take uint8 images and give
the probabilities PyTorch gives, read back with onnxruntime and torch.jit on real images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_study import export
from cnn_study.data.decode import decode_square, image_files
from cnn_study.module import load_classifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES, compose_run_config


def export_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn_study.export", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint_and_images(image_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = compose_run_config(tmp_path_factory.mktemp("export-run"), "data=image_folder",
                             f"data.root={image_folder}", "arch=cnn3_bn", "debug=limit",
                             *NO_FIGURES)  # fmt: skip
    results = run(cfg)
    model = load_classifier(results["checkpoint_last"])
    size = model.input_spec.size
    files = image_files(image_folder)[::4]
    images = torch.from_numpy(np.stack([decode_square(f, size) for f in files]))
    images = images.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        expected = model(model.preprocess(images)).softmax(dim=-1)
    return results["checkpoint_last"], images, expected, model.class_names


def test_onnx_export_matches_pytorch(checkpoint_and_images, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint, images, expected, names = checkpoint_and_images
    target = tmp_path / "model.onnx"
    done = export_cli(f"ckpt={checkpoint}", "format=onnx", f"output={target}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})  # a batch size not exported with
    assert got.shape == tuple(expected.shape)
    assert np.abs(got - expected.numpy()).max() < 1e-5
    described = json.loads((tmp_path / "model.onnx.json").read_text())
    assert described["class_names"] == names
    assert described["input"]["dtype"] == "uint8"
    assert described["input"]["shape"][2:] == list(images.shape[2:])


def test_torchscript_export_matches_pytorch(
    checkpoint_and_images, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, images, expected, _ = checkpoint_and_images
    target = tmp_path / "model.pt"  # in-process: the command line is tested with ONNX above
    assert export.main([f"ckpt={checkpoint}", "format=torchscript", f"output={target}"]) == 0
    with torch.no_grad():
        got = torch.jit.load(str(target))(images)
    assert torch.allclose(got, expected, atol=1e-5)
    # In-process through the same `main` as the command line; the same output again is
    # refused unless overwrite=true:
    again = [f"ckpt={checkpoint}", "format=torchscript", f"output={target}",
             f"check_images={image_folder}"]  # fmt: skip
    assert export.main(again) == 2
    assert "model.pt and 1 more exists already" in capsys.readouterr().err
    code = export.main([*again, "overwrite=true"])
    difference = float(capsys.readouterr().out.split("on 30 images: ")[1].split()[0])
    assert code == 0 and difference < 1e-5
    assert export.main([f"ckpt={checkpoint}", "format=tflite"]) == 2
    assert "choose one of ['onnx', 'torchscript']" in capsys.readouterr().err
