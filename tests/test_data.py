"""Data sources, the seeded split, the decode cache and the offline error."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image
from torchvision.datasets import CIFAR10

from cnn_study.data import cifar10 as cifar10_module
from cnn_study.data.cifar10 import CIFAR10DataModule
from cnn_study.data.fake import FakeDataModule
from cnn_study.data.in_memory import seeded_split, stratified_subset
from cnn_study.errors import CnnStudyError, DataNotFoundError
from tests.conftest import CIFAR_CLASSES, write_class_tree


def tree_snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_seeded_split_sizes_disjoint_and_fixed() -> None:
    train, val = seeded_split(50_000, 6_250, split_seed=0)
    assert (len(train), len(val)) == (43_750, 6_250)
    assert len(set(train.tolist()) | set(val.tolist())) == 50_000
    torch.manual_seed(123)  # the run seed must not move the split
    again_train, _ = seeded_split(50_000, 6_250, split_seed=0)
    assert torch.equal(train, again_train)
    other_train, _ = seeded_split(50_000, 6_250, split_seed=1)
    assert not torch.equal(train, other_train)


def test_seeded_split_rejects_impossible_sizes() -> None:
    with pytest.raises(CnnStudyError, match="val_size=100"):
        seeded_split(100, 100, 0)


def test_folder_export_is_read_split_and_cached(cifar_folder: Path, tmp_path: Path, monkeypatch):
    before = tree_snapshot(cifar_folder)
    dm = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path / "cache", val_size=20)
    dm.setup("fit")
    s = dm.splits
    assert dm.class_names == CIFAR_CLASSES
    assert (len(s.train_labels), len(s.val_labels), len(s.test_labels)) == (60, 20, 30)
    assert s.train_images.dtype == torch.uint8 and s.train_images.shape[1:] == (3, 32, 32)
    # The first test image is class 0's first file, pixel for pixel.
    first = np.array(Image.open(cifar_folder / "test" / "airplane" / "0000.png"))
    assert torch.equal(s.test_images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert s.test_labels[0] == 0
    assert list(tmp_path.joinpath("cache").glob("cifar10-folder-*.pt"))
    assert tree_snapshot(cifar_folder) == before  # nothing written into the data root

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cifar10_module, "decode_same_size", no_decoding)
    cached = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path / "cache", val_size=20)
    cached.setup("fit")
    assert torch.equal(cached.splits.train_images, s.train_images)
    assert torch.equal(cached.splits.val_labels, s.val_labels)


def test_a_train_subset_keeps_the_class_balance_for_every_seed(cifar_folder: Path, tmp_path: Path):
    """`data.train_size`: a class-balanced part of the training split, the same images
    whatever the run's seed; validation and test stay whole."""
    whole = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path / "cache", val_size=20)
    whole.setup("fit")
    subsets = []
    for order_seed in (0, 1):
        dm = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path / "cache", val_size=20,
                               train_size=30, order_seed=order_seed)  # fmt: skip
        dm.setup("fit")
        subsets.append(dm.splits)
    s = subsets[0]
    assert len(s.train_labels) == 30
    counts = torch.bincount(s.train_labels, minlength=10)
    whole_counts = torch.bincount(whole.splits.train_labels, minlength=10)
    assert (counts - whole_counts * 30 / 60).abs().max() < 1  # each class at its share
    assert torch.equal(s.train_images, subsets[1].train_images)
    assert torch.equal(s.val_images, whole.splits.val_images)
    assert torch.equal(s.test_labels, whole.splits.test_labels)
    # every subset image is a training image of the whole split, none is a validation one
    pool = {bytes(image.flatten().tolist()) for image in whole.splits.train_images}
    assert all(bytes(image.flatten().tolist()) in pool for image in s.train_images)
    too_many = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path / "cache", val_size=20,
                                 train_size=61)  # fmt: skip
    with pytest.raises(CnnStudyError, match=r"data\.train_size=61: the training split has 60"):
        too_many.setup("fit")


def test_stratified_subset_shares_by_largest_remainder() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_subset(labels, 11, seed=3)
    assert torch.bincount(labels[picked]).tolist() == [6, 3, 2]  # 5.5, 3.3, 2.2 → +1 to 0
    assert len(set(picked.tolist())) == 11
    assert torch.equal(picked, stratified_subset(labels, 11, seed=3))


def test_channel_statistics_come_from_the_train_split(cifar_folder: Path, tmp_path: Path):
    dm = CIFAR10DataModule(cifar_folder, cache_dir=tmp_path, val_size=20)
    dm.setup("fit")
    pixels = dm.splits.train_images.double() / 255
    torch.testing.assert_close(
        torch.tensor(dm.mean, dtype=torch.float64), pixels.mean(dim=(0, 2, 3))
    )
    torch.testing.assert_close(
        torch.tensor(dm.std, dtype=torch.float64),
        pixels.transpose(0, 1).reshape(3, -1).std(dim=1, correction=0),
    )


def test_mismatched_class_folders_are_named(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "train", ["cat", "dog"], per_class=2, seed=0)
    write_class_tree(tmp_path / "test", ["cat", "emu"], per_class=2, seed=0)
    dm = CIFAR10DataModule(tmp_path, cache_dir=tmp_path / "cache", val_size=1)
    with pytest.raises(CnnStudyError, match=r"\['cat', 'dog'\].*\['cat', 'emu'\]"):
        dm.setup("fit")


def write_fake_archive(root: Path, per_batch: int) -> None:
    """torchvision's cifar-10-batches-py layout with random pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}))


def test_torchvision_archive_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_archive(tmp_path, per_batch=10)
    # The fake files cannot match the real archive's MD5 sums.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    dm = CIFAR10DataModule(tmp_path, cache_dir=tmp_path / "cache", val_size=10)
    dm.setup("fit")
    s = dm.splits
    assert (len(s.train_labels), len(s.val_labels), len(s.test_labels)) == (40, 10, 10)
    assert s.test_images.shape == (10, 3, 32, 32)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert torch.equal(s.test_images[0].flatten(), torch.from_numpy(raw["data"][0]))
    assert dm.class_names == CIFAR_CLASSES


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    write_fake_archive(tmp_path, per_batch=2)  # MD5 sums do not match the real release
    dm = CIFAR10DataModule(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(CnnStudyError, match=r"cifar-10-batches-py.*corrupt"):
        dm.setup("fit")


def test_missing_data_without_download_names_root_and_layouts(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(tmp_path, cache_dir=tmp_path / "cache", download=False)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path) in message
    assert "cifar-10-batches-py" in message and "train/<class>" in message


def test_failed_download_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(self) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR10, "download", offline)
    dm = CIFAR10DataModule(tmp_path, cache_dir=tmp_path / "cache")  # downloads by default
    with pytest.raises(DataNotFoundError, match=r"download failed .*URLError") as info:
        dm.setup("fit")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_cli_missing_data_exits_with_message_not_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnn_study", f"data.root={tmp_path}", "data.download=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "No CIFAR-10 found under" in output and "Traceback" not in output


def test_fake_data_is_seeded_and_learnable_shape() -> None:
    a, b = FakeDataModule(seed=3), FakeDataModule(seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.splits.train_images, b.splits.train_images)
    assert a.num_classes == 10 and a.splits.test_images.shape == (64, 3, 32, 32)
    c = FakeDataModule(seed=4)
    c.setup()
    assert not torch.equal(a.splits.train_images, c.splits.train_images)


def test_train_loader_yields_whole_uint8_batches_covering_the_split() -> None:
    dm = FakeDataModule(train_size=100, batch_size=32)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert [len(labels) for _, labels in batches] == [32, 32, 32, 4]
    assert all(images.dtype == torch.uint8 for images, _ in batches)
    seen = torch.cat([images for images, _ in batches]).flatten(1)
    assert len(torch.unique(seen, dim=0)) == 100  # a permutation: each image once
