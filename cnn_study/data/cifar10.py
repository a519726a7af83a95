"""CIFAR-10 from torchvision's archive, a folder export, or torchvision's download."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10

from cnn_study.data.cache import fingerprint, load_or_build
from cnn_study.data.decode import class_folders, decode_same_size, scan_class_tree
from cnn_study.data.in_memory import (
    ImageSplits,
    InMemoryImageDataModule,
    seeded_split,
    stratified_subset,
)
from cnn_study.errors import CnnStudyError, DataNotFoundError

log = logging.getLogger(__name__)

ARCHIVE_DIR = "cifar-10-batches-py"


def _layouts(root: Path) -> str:
    return (
        "Accepted layouts under the data root:\n"
        f"  1. torchvision's archive: {root / ARCHIVE_DIR}/ (data_batch_1..5, test_batch)\n"
        f"  2. a folder export: {root}/train/<class>/*.jpg|png and {root}/test/<class>/*\n"
        "Choose the root with CNN_STUDY_DATA=/path or data.root=/path."
    )


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 split into train/val by a fixed seed; the test set only for `test`.

    Sources under `root`, first match wins: torchvision's `cifar-10-batches-py`, a folder
    export `train/<class>/*` + `test/<class>/*` (decoded once, cached in `cache_dir`),
    else torchvision's download (when `download` is true). `train_size`: train on a
    class-balanced subset of that many training images, the same for every seed (a
    smaller scale of a study); validation and test stay whole.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        val_size: int = 6250,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        placement: str = "auto",
        order_seed: int = 0,
        download: bool = True,
        train_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, placement, order_seed)
        self.root = Path(root).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser()
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        self.train_size = train_size

    def _has_archive(self) -> bool:
        return (self.root / ARCHIVE_DIR).is_dir()

    def _has_folders(self) -> bool:
        return (self.root / "train").is_dir() and (self.root / "test").is_dir()

    def prepare_data(self) -> None:
        if self._has_archive() or self._has_folders():
            return
        if not self.download:
            raise DataNotFoundError(
                f"No CIFAR-10 found under {self.root} and data.download=false.\n"
                + _layouts(self.root)
            )
        try:
            CIFAR10(str(self.root), train=True, download=True)
            CIFAR10(str(self.root), train=False, download=True)
        except Exception as error:  # no network, proxy, disk full: say what and where
            raise DataNotFoundError(
                f"No CIFAR-10 found under {self.root} and the download failed "
                f"({type(error).__name__}: {error}).\n" + _layouts(self.root)
            ) from None

    def load_splits(self) -> ImageSplits:
        self.prepare_data()
        if self._has_archive():
            train_images, train_labels, test_images, test_labels, classes = self._read_archive()
        else:
            train_images, train_labels, test_images, test_labels, classes = self._read_folders()
        train_idx, val_idx = seeded_split(len(train_labels), self.val_size, self.split_seed)
        if self.train_size is not None:
            if self.train_size > len(train_idx):
                raise CnnStudyError(
                    f"data.train_size={self.train_size}: the training split has "
                    f"{len(train_idx)} images (after {self.val_size} for validation)"
                )
            subset = stratified_subset(train_labels[train_idx], self.train_size, self.split_seed)
            train_idx = train_idx[subset]
        return ImageSplits(
            train_images=train_images[train_idx],
            train_labels=train_labels[train_idx],
            val_images=train_images[val_idx],
            val_labels=train_labels[val_idx],
            test_images=test_images,
            test_labels=test_labels,
            class_names=classes,
        )

    def _read_archive(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list]:
        try:
            train = CIFAR10(str(self.root), train=True, download=False)
            test = CIFAR10(str(self.root), train=False, download=False)
        except RuntimeError as error:  # torchvision checks every file's MD5 sum
            raise CnnStudyError(
                f"{self.root / ARCHIVE_DIR} is incomplete or corrupt ({error}); "
                "delete it to download again, or point data.root elsewhere"
            ) from None

        def to_tensors(dataset: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
            return images, torch.tensor(dataset.targets, dtype=torch.int64)

        return *to_tensors(train), *to_tensors(test), list(train.classes)

    def _read_folders(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list]:
        train_classes = [p.name for p in class_folders(self.root / "train")]
        test_classes = [p.name for p in class_folders(self.root / "test")]
        if train_classes != test_classes:
            raise CnnStudyError(
                f"class folders differ between {self.root / 'train'} {train_classes} "
                f"and {self.root / 'test'} {test_classes}"
            )
        train_tree = scan_class_tree(self.root / "train")
        test_tree = scan_class_tree(self.root / "test")
        classes, train_files, train_labels = train_tree.classes, train_tree.files, train_tree.labels
        test_files, test_labels = test_tree.files, test_tree.labels
        key = fingerprint([*train_files, *test_files], str(self.root))
        cache_file = self.cache_dir / f"cifar10-folder-{key}.pt"

        def decode() -> dict:
            log.info("decoding the CIFAR-10 folder export under %s (once; cached)", self.root)
            return {
                "train_images": decode_same_size(train_files, "decode train"),
                "test_images": decode_same_size(test_files, "decode test"),
            }

        decoded = load_or_build(cache_file, decode)
        return (
            decoded["train_images"],
            torch.tensor(train_labels, dtype=torch.int64),
            decoded["test_images"],
            torch.tensor(test_labels, dtype=torch.int64),
            classes,
        )
