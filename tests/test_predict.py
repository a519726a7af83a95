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

from cnn_study import predict
from cnn_study.data.decode import decode_square
from cnn_study.module import load_classifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES, compose_run_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict:
    out = tmp_path_factory.mktemp("predict-run")
    cfg = compose_run_config(out, "data=image_folder", f"data.root={image_folder}",
                             "data.image_size=40", "arch=cnn3", "trainer=cpu",
                             "trainer.max_epochs=3", *NO_FIGURES)  # fmt: skip
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
    assert (output.parent / "preds_confusion.png").is_file()


def test_predict_files_without_classes_and_bad_input(
    trained: dict, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """In-process through the same `main` as the command line (the CLI test is above)."""
    files = sorted(image_folder.rglob("*.png"))[:3]
    listed = "[" + ",".join(str(f) for f in files) + "]"
    output = tmp_path / "preds.csv"
    code = predict.main([f"ckpt={trained['checkpoint_last']}", f"images={listed}",
                         f"output={output}"])  # fmt: skip
    assert code == 0 and "accuracy" not in capsys.readouterr().out
    with output.open() as handle:
        header, *rows = list(csv.reader(handle))
    assert "true" not in header and [row[0] for row in rows] == [str(f) for f in files]
    again = predict.main([f"ckpt={trained['checkpoint_last']}", f"images={listed}",
                          f"output={output}"])  # fmt: skip
    assert again == 2 and "preds.csv exists already" in capsys.readouterr().err
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
        assert predict.main(list(args)) == 2
        assert message in capsys.readouterr().err
