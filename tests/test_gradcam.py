"""Grad-CAM and the evaluation figures: they run for any network and they explain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnn_study import explain
from cnn_study.attribution import grad_cam, target_layer
from cnn_study.errors import CnnStudyError
from cnn_study.inputs import declared_input
from cnn_study.models.cnn import build_cnn
from cnn_study.module import ImageClassifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES, ComposeFn

FIGURES = ("test_gradcam", "test_roc", "test_confusion", "test_predictions", "curves")


@pytest.mark.parametrize(
    "arch", ["cnn3_bn", "resnet18 arch.weights=none arch.input_size=32",
             "timm arch.name=efficientnet_lite0 arch.weights=none arch.input_size=32"],
)  # fmt: skip
def test_figures_at_test_end_as_png_and_in_tensorboard(arch, compose_cfg: ComposeFn, tmp_path):
    name, *extra = arch.split()
    run(compose_cfg("data=fake", f"arch={name}", *extra, "debug=limit",
                    output_dir=tmp_path / "run"))  # fmt: skip
    for figure in FIGURES:
        with Image.open(tmp_path / "run" / "figures" / f"{figure}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 300
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"test/gradcam", "test/roc", "test/confusion", "test/predictions", "curves"} <= images


def test_gradcam_under_fast_dev_run_and_bf16(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    cfg = compose_cfg("data=fake", "arch=cnn3_bn", "trainer.fast_dev_run=true",
                      "trainer.precision=bf16-mixed", output_dir=tmp_path / "run")  # fmt: skip
    run(cfg)
    assert (tmp_path / "run" / "figures" / "test_gradcam.png").is_file()


def test_validation_gradcam_every_n_epochs(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    every_epoch = "callbacks.gradcam.every_n_val_epochs=1"
    cfg = compose_cfg("data=fake", "trainer.max_epochs=2", "++trainer.limit_train_batches=1",
                      every_epoch, output_dir=tmp_path / "run")  # fmt: skip
    run(cfg)
    names = sorted(p.name for p in (tmp_path / "run" / "figures").glob("val_gradcam_*.png"))
    assert names == ["val_gradcam_000.png", "val_gradcam_001.png"]


def classifier(input_size: int = 32, classes: int = 4, pooling: str = "flatten") -> ImageClassifier:
    network = build_cnn(classes, [16, 32, 32], 64, input_size=input_size, pooling=pooling)
    names = [str(i) for i in range(classes)]
    spec = declared_input(network).completed((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return ImageClassifier(network, optimizer=None, input_spec=spec.as_dict(), class_names=names)


def test_maps_match_the_input_size_and_layers_are_named() -> None:
    model = classifier(input_size=40)
    maps, predictions = grad_cam(model, torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8))
    assert maps.shape == (3, 40, 40) and predictions.shape == (3,)
    assert maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(CnnStudyError, match=r"no layer 'features\.9'.*features\.0\.0"):
        target_layer(model.net, "features.9")


PATCH = 10
CORNERS = [(2, 2), (2, 20), (20, 2), (20, 20)]  # top-left of each class's bright patch


def patch_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noise with one bright square whose position is the class."""
    labels = torch.randint(0, 4, (count,), generator=generator)
    images = torch.rand(count, 3, 32, 32, generator=generator) * 0.3
    for image, label in zip(images, labels.tolist()):
        top, left = CORNERS[label]
        image[:, top : top + PATCH, left : left + PATCH] = 1.0
    return (images * 255).to(torch.uint8), labels


def test_gradcam_points_at_the_evidence() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = classifier(pooling="global_avg")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(80):
        images, labels = patch_images(32, generator)
        loss = F.cross_entropy(model(model.preprocess(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, labels = patch_images(64, generator)
    # The second conv layer's 16×16 maps resolve a 10 px patch; count the patch as
    # Grad-CAM sees it, grown by one map cell (2 px) on each side: about 19% of the image.
    maps, predictions = grad_cam(model, images, targets=labels, layer="features.1.0")
    assert (predictions == labels).float().mean() > 0.9
    inside = torch.zeros_like(maps, dtype=torch.bool)
    for mask, label in zip(inside, labels.tolist()):
        top, left = CORNERS[label]
        mask[max(0, top - 2) : top + PATCH + 2, max(0, left - 2) : left + PATCH + 2] = True
    share = (maps * inside).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)
    assert share.median() > 0.5, share
    area = inside.flatten(1).float().mean(1)
    assert bool((share > 1.5 * area).all()), share  # every map leans on the evidence


def test_explain_cli_writes_overlays(compose_cfg: ComposeFn, tmp_path: Path, capsys) -> None:
    results = run(compose_cfg("data=fake", "debug=limit", output_dir=tmp_path / "run"))
    folder = tmp_path / "mine"
    folder.mkdir()
    for index, size in enumerate([(50, 40), (32, 32), (120, 90)]):
        Image.new("RGB", size, (40 * index, 90, 160)).save(folder / f"photo{index}.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "cnn_study.explain", f"ckpt={results['checkpoint_best']}",
         f"images={folder}", f"output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["photo0_gradcam.png", "photo1_gradcam.png", "photo2_gradcam.png"]
    capsys.readouterr()
    bad = explain.main([f"ckpt={results['checkpoint_best']}", f"images={folder}",
                        "layr=features.0"])  # fmt: skip
    assert bad == 2 and "layr" in capsys.readouterr().err


def test_explain_skips_unreadable_images_and_explains_the_rest(
    compose_cfg: ComposeFn, tmp_path: Path, capsys, caplog
) -> None:
    results = run(compose_cfg("data=fake", "debug=limit", *NO_FIGURES, output_dir=tmp_path / "r"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 90, 10)).save(folder / "good.jpg")
    Image.new("RGB", (30, 30), (10, 90, 200)).save(folder / "also_good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code = explain.main([f"ckpt={results['checkpoint_best']}", f"images={folder}",
                         f"output_dir={tmp_path / 'out'}"])  # fmt: skip
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["also_good_gradcam.png", "good_gradcam.png"]
    assert "skipped 1 images" in caplog.text and "broken.jpg (unreadable" in caplog.text


def test_explain_keeps_class_folders_and_never_overwrites(
    compose_cfg: ComposeFn, tmp_path: Path, capsys
) -> None:
    """`angry/x.jpg` and `happy/x.jpg` get two overlays (the CIFAR-10 export names files
    0000.jpg in every class); a second explain into the same folder is refused."""
    results = run(compose_cfg("data=fake", "debug=limit", *NO_FIGURES, output_dir=tmp_path / "r"))
    for index, name in enumerate(["angry", "happy"]):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (90 * index, 90, 10)).save(tmp_path / "photos" / name / "x.jpg")
    arguments = [f"ckpt={results['checkpoint_best']}", f"images={tmp_path / 'photos'}",
                 f"output_dir={tmp_path / 'out'}"]  # fmt: skip
    assert explain.main(arguments) == 0
    written = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")
    )
    assert written == ["angry/x_gradcam.png", "happy/x_gradcam.png"]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")}
    capsys.readouterr()
    assert explain.main(arguments) == 2
    assert "x_gradcam.png and 1 more exists already" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")} == before
    assert explain.main([*arguments, "overwrite=true"]) == 0


@pytest.mark.parametrize("case", ["missing", "not a checkpoint", "foreign checkpoint"])
def test_explain_names_a_bad_checkpoint_in_one_line(tmp_path: Path, capsys, case: str) -> None:
    ckpt = tmp_path / "model.ckpt"
    if case == "not a checkpoint":
        ckpt.write_text("hello")
    elif case == "foreign checkpoint":
        torch.save({"state_dict": {}}, ckpt)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    code = explain.main([f"ckpt={ckpt}", f"images={tmp_path / 'x.png'}"])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    expected = {"missing": "no such file", "not a checkpoint": "not a readable checkpoint",
                "foreign checkpoint": "not a cnn_study checkpoint"}[case]  # fmt: skip
    assert f"checkpoint {ckpt}: {expected}" in error
