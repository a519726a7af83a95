"""`python -m cnn_study.predict`: one row per image, the checkpoint's own preprocessing,
accuracy and a confusion figure for a class tree, unreadable files skipped and named."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_study.data.decode import decode_square
from cnn_study.module import load_classifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict:
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    out = tmp_path_factory.mktemp("predict-run")
    overrides = ["data=image_folder", f"data.root={image_folder}", "data.image_size=40",
                 "arch=cnn3", "trainer=cpu", "trainer.max_epochs=3", *NO_FIGURES]  # fmt: skip
    with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return run(cfg)


def predict_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn_study.predict", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)  # fmt: skip


def test_predict_a_class_tree(trained: dict, image_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(image_folder, images)
    (images / "owls" / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "out" / "preds.csv"
    done = predict_cli(f"ckpt={trained['checkpoint_best']}", f"images={images}",
                       f"output={output}", "batch_size=7", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "broken.png (unreadable" in done.stderr
    with output.open() as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["path", "predicted", "probability", "true", "p_cats", "p_dogs", "p_owls"]
    assert len(rows) == 30  # every readable image once
    model = load_classifier(trained["checkpoint_best"])
    for row in rows[:5]:  # as in training: decoded at data.image_size, then the input spec
        assert model.input_spec.decode_side == 40 and model.input_spec.size == 32
        tensor = torch.from_numpy(decode_square(Path(row[0]), 40)).permute(2, 0, 1)[None]
        with torch.no_grad():
            expected = model(model.preprocess(tensor)).softmax(dim=-1)[0]
        assert [float(v) for v in row[4:]] == pytest.approx(expected.tolist(), abs=1e-5)
        assert row[1] == ["cats", "dogs", "owls"][int(expected.argmax())]
        assert float(row[2]) == pytest.approx(float(expected.max()), abs=1e-5)
    correct = sum(row[1] == row[3] for row in rows) / len(rows)
    assert f"accuracy: {correct:.4f}" in done.stdout
    assert (output.parent / "confusion.png").is_file()


def test_predict_files_without_classes_and_bad_input(trained: dict, image_folder: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    files = sorted(image_folder.rglob("*.png"))[:3]
    listed = "[" + ",".join(str(f) for f in files) + "]"
    output = tmp_path / "preds.csv"
    done = predict_cli(f"ckpt={trained['checkpoint_last']}", f"images={listed}",
                       f"output={output}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy" not in done.stdout
    with output.open() as handle:
        header, *rows = list(csv.reader(handle))
    assert "true" not in header and [row[0] for row in rows] == [str(f) for f in files]
    for args, message in [
        ((f"ckpt={tmp_path / 'none.ckpt'}", f"images={files[0]}"), "no such file"),
        ((f"ckpt={trained['checkpoint_last']}", f"images={tmp_path / 'nowhere'}"), "neither"),
        (
            (f"ckpt={trained['checkpoint_last']}", f"images={files[0]}", "device=tpu"),
            "choose one of ['auto', 'cpu', 'cuda']",
        ),
        (
            (f"ckpt={trained['checkpoint_last']}", f"images={files[0]}", "batch_sise=3"),
            "batch_sise",
        ),
    ]:
        failed = predict_cli(*args, cwd=tmp_path)
        assert failed.returncode == 2 and message in failed.stderr, failed.stderr[-500:]
        assert "Traceback" not in failed.stderr
