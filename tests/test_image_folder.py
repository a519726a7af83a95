"""Image folders: any mode or size becomes RGB, bad files are named, splits are stratified."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_study.data.decode import decode_square
from cnn_study.data.image_folder import ImageFolderDataModule
from cnn_study.errors import CnnStudyError
from tests.conftest import write_class_tree


def module(root: Path, tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root, cache_dir=tmp_path / "cache", image_size=16, **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 200, (200, 200, 200)),
        ("RGBA", (10, 20, 30, 128), (10, 20, 30)),
        ("P", 5, None),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_any_mode_becomes_rgb(mode: str, value, expected, tmp_path: Path) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"image{suffix}"
    Image.new(mode, (40, 24), value).save(path)
    decoded = decode_square(path, 16)
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    if expected is not None:
        np.testing.assert_allclose(decoded[8, 8], expected, atol=2)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = Image.new("RGB", (30, 20), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 0, 15, 20))  # blue left half
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes, EXIF says 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    decoded = decode_square(tmp_path / "rotated.jpg", 16).astype(float)
    left, right = decoded[:, :4].mean(axis=(0, 1)), decoded[:, -4:].mean(axis=(0, 1))
    assert left[2] > 200 and left[0] < 50  # blue on the left, as shown upright
    assert right[0] > 200 and right[2] < 50


def test_bad_files_are_skipped_and_named_once(tmp_path: Path, caplog) -> None:
    root = tmp_path / "data"
    write_class_tree(root, ["a", "b"], per_class=10, seed=0)
    (root / "a" / "empty.jpg").write_bytes(b"")
    good = (root / "b" / "0000.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    with caplog.at_level(logging.WARNING):
        dm = module(root, tmp_path, val_fraction=0.2, test_fraction=0.2)
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 3 " in message
    assert all(name in message for name in ("empty.jpg (unreadable", "truncated.png (unreadable",
                                            "notes.txt (not an image file)"))  # fmt: skip
    assert dm.class_names == ["a", "b"]
    s = dm.splits
    assert len(s.train_labels) + len(s.val_labels) + len(s.test_labels) == 20


def test_every_format_pillow_reads_is_an_image(tmp_path: Path, caplog) -> None:
    """GIF (its first frame), TIFF, WebP and BMP are images, not files to skip."""
    root = tmp_path / "data"
    colours = {"gif": (255, 0, 0), "tiff": (0, 255, 0), "webp": (0, 0, 255), "bmp": (9, 9, 9)}
    for cls in ("a", "b"):
        for suffix, colour in colours.items():
            folder = root / cls
            folder.mkdir(parents=True, exist_ok=True)
            first, second = Image.new("RGB", (20, 20), colour), Image.new("RGB", (20, 20))
            if suffix == "gif":  # an animation: the first frame is the image
                first.save(folder / "x.gif", save_all=True, append_images=[second])
            else:
                first.save(folder / f"x.{suffix}", lossless=True)
    with caplog.at_level(logging.WARNING):
        dm = module(root, tmp_path, val_fraction=0.25, test_fraction=0.25)
    assert "skipped" not in caplog.text
    s = dm.splits
    images = torch.cat([s.train_images, s.val_images, s.test_images])
    assert len(images) == 8
    found = {tuple(int(v) for v in image[:, 8, 8]) for image in images}
    assert all(any(max(abs(a - b) for a, b in zip(c, f)) <= 2 for f in found)
               for c in colours.values())  # fmt: skip


def test_stratified_seeded_split(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "data", ["x", "y", "z"], per_class=20, seed=0)
    dm = module(tmp_path / "data", tmp_path)
    s = dm.splits
    for labels, per_class in ((s.train_labels, 14), (s.val_labels, 3), (s.test_labels, 3)):
        assert torch.bincount(labels, minlength=3).tolist() == [per_class] * 3
    again = module(tmp_path / "data", tmp_path)
    assert torch.equal(again.splits.val_images, s.val_images)
    other = module(tmp_path / "data", tmp_path, split_seed=1)
    assert not torch.equal(other.splits.val_images, s.val_images)


def test_a_subset_of_the_class_folders(tmp_path: Path) -> None:
    """`data.classes`: only the named class folders, labelled in sorted order; a name
    that is no folder is an error naming the folders."""
    write_class_tree(tmp_path / "data", ["angry", "happy", "relaxed", "sad"], per_class=10, seed=0)
    dm = module(tmp_path / "data", tmp_path, classes=["sad", "angry", "happy"])
    assert dm.class_names == ["angry", "happy", "sad"]
    s = dm.splits
    assert len(s.train_labels) + len(s.val_labels) + len(s.test_labels) == 30
    assert set(s.train_labels.tolist()) == {0, 1, 2}
    with pytest.raises(CnnStudyError, match=r"no folder \['calm'\].*folders: \['angry'"):
        module(tmp_path / "data", tmp_path, classes=["calm", "happy"])


def test_existing_split_folders_are_used(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_class_tree(root / "train", ["a", "b"], per_class=10, seed=0)
    write_class_tree(root / "test", ["a", "b"], per_class=3, seed=1)
    dm = module(root, tmp_path, val_fraction=0.2)
    s = dm.splits
    assert len(s.test_labels) == 6  # test/ as given
    assert (len(s.train_labels), len(s.val_labels)) == (16, 4)  # val split off train/


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "data", ["a", "b"], per_class=4, seed=0)
    (tmp_path / "data" / "c").mkdir()
    with pytest.raises(CnnStudyError, match=r"class folder .*/c holds no images"):
        module(tmp_path / "data", tmp_path)


def test_single_class_is_an_error(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "data", ["only"], per_class=4, seed=0)
    with pytest.raises(CnnStudyError, match=r"one class \['only'\]"):
        module(tmp_path / "data", tmp_path)


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(CnnStudyError, match="does-not-exist does not exist"):
        module(tmp_path / "does-not-exist", tmp_path)
