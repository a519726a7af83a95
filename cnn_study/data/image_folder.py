"""Any image-folder dataset: `root/<class>/*`, or `root/{train,val,test}/<class>/*`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from cnn_study.data.cache import fingerprint, load_or_build
from cnn_study.data.decode import ClassTree, decode_resized, scan_class_tree
from cnn_study.data.in_memory import ImageSplits, InMemoryImageDataModule
from cnn_study.errors import CnnStudyError, DataNotFoundError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: Tensor, fractions: tuple[float, float], seed: int, class_names: list[str]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class seeded split into (train, val, test) indices; `fractions` = (val, test)."""
    generator = torch.Generator().manual_seed(seed)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for label, name in enumerate(class_names):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val, n_test = (round(len(members) * f) for f in fractions)
        if len(members) - n_val - n_test < 1:
            raise CnnStudyError(
                f"class {name!r} has {len(members)} readable images: too few to split "
                f"val {fractions[0]:.0%} / test {fractions[1]:.0%} and keep one for training"
            )
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (torch.cat(p).sort().values for p in parts)
    return train, val, test


class ImageFolderDataModule(InMemoryImageDataModule):
    """Class-folder images decoded once to `image_size`² uint8 tensors (cached), then split.

    With `train/` (and optional `val/`, `test/`) under `root` those splits are used, a
    missing one split off `train/`; otherwise a stratified split by `val_fraction` and
    `test_fraction` with `split_seed`. Any size or mode becomes RGB; unreadable and
    non-image files are skipped and named in one warning before training.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        image_size: int = 224,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        placement: str = "auto",
        order_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, placement, order_seed)
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise CnnStudyError(
                f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be "
                "at least 0 and together below 1"
            )
        self.root = Path(root).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser()
        self.image_size = image_size
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed

    def prepare_data(self) -> None:
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"image folder {self.root} does not exist; expected root/<class>/<image> or "
                "root/train/<class>/<image>. Set it with data.root=/path"
            )

    def _trees(self) -> dict[str, ClassTree]:
        if not (self.root / "train").is_dir():
            return {"all": scan_class_tree(self.root)}
        trees = {s: scan_class_tree(self.root / s) for s in SPLITS if (self.root / s).is_dir()}
        for split, tree in trees.items():
            if tree.classes != trees["train"].classes:
                raise CnnStudyError(
                    f"classes of {self.root / split} {tree.classes} differ from "
                    f"{self.root / 'train'} {trees['train'].classes}"
                )
        return trees

    def _decode(self, trees: dict[str, ClassTree]) -> dict[str, dict]:
        files = [f for tree in trees.values() for f in tree.files]
        key = fingerprint(files, str(self.root), self.image_size)
        cache_file = self.cache_dir / f"image-folder-{key}.pt"

        def decode() -> dict[str, dict]:
            decoded = {}
            for split, tree in trees.items():
                images, failed = decode_resized(tree.files, self.image_size, f"decode {split}")
                keep = torch.ones(len(tree.files), dtype=torch.bool)
                keep[[index for index, _ in failed]] = False
                decoded[split] = {
                    "images": images,
                    "labels": torch.tensor(tree.labels, dtype=torch.int64)[keep],
                    "failed": [f"{tree.files[i]} ({reason})" for i, reason in failed],
                }
            return decoded

        return load_or_build(cache_file, decode)

    def load_splits(self) -> ImageSplits:
        self.prepare_data()
        trees = self._trees()
        classes = next(iter(trees.values())).classes
        if len(classes) < 2:
            raise CnnStudyError(
                f"image folder {self.root} has one class {classes}: classification needs "
                "at least two class folders"
            )
        decoded = self._decode(trees)
        skipped = [p for d in decoded.values() for p in d["failed"]]
        skipped += [f"{p} (not an image file)" for tree in trees.values() for p in tree.ignored]
        if skipped:
            names = ", ".join(skipped[:20]) + (" …" if len(skipped) > 20 else "")
            log.warning(
                "skipped %d files under %s: %s",
                len(skipped), self.root, names,
            )  # fmt: skip
        return self._split(decoded, classes)

    def _split(self, decoded: dict[str, dict], classes: list[str]) -> ImageSplits:
        source = decoded.get("all", decoded.get("train"))
        assert source is not None
        images, labels = source["images"], source["labels"]
        val_fraction = 0.0 if "val" in decoded else self.fractions[0]
        test_fraction = 0.0 if "test" in decoded else self.fractions[1]
        train, val, test = stratified_split(
            labels, (val_fraction, test_fraction), self.split_seed, classes
        )
        pick = {"train": (images[train], labels[train])}
        for split, indices in (("val", val), ("test", test)):
            given = decoded.get(split)
            pick[split] = (
                (given["images"], given["labels"]) if given else (images[indices], labels[indices])
            )
        return ImageSplits(
            train_images=pick["train"][0],
            train_labels=pick["train"][1],
            val_images=pick["val"][0],
            val_labels=pick["val"][1],
            test_images=pick["test"][0],
            test_labels=pick["test"][1],
            class_names=classes,
        )
