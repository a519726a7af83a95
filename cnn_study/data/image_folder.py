"""Any image-folder dataset: `root/<class>/*`, or `root/{train,val,test}/<class>/*`.

Two paths to the same split: decoded once into memory (fast, the default where it fits)
or streamed from the files by DataLoader workers (`cnn_study.data.streaming`), chosen by
`placement` and the memory budget.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cnn_study.data.cache import fingerprint, load_or_build
from cnn_study.data.decode import ClassTree, decode_resized, readable_files, scan_class_tree
from cnn_study.data.in_memory import ImageSplits, InMemoryImageDataModule, permute_in_place
from cnn_study.data.loaders import PLACEMENTS, batch_loader, epoch_sampler
from cnn_study.data.streaming import (
    VIEWS,
    ImageFiles,
    NamedOnce,
    RandomResizedView,
    SquareView,
    available_cpus,
    budget_bytes,
    format_bytes,
    image_bytes,
    readable_batch,
    sampled_stats,
)
from cnn_study.errors import CnnStudyError, DataNotFoundError
from cnn_study.inputs import InputSpec

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


def split_plan(
    labels: dict[str, Tensor], fractions: tuple[float, float], seed: int, classes: list[str]
) -> dict[str, tuple[str, Tensor | None]]:
    """For each of train/val/test: (the folder part it comes from, its indices there; None
    for the whole part). Parts: "all" (no train/ folder) or train/val/test folders; a
    missing val/ or test/ is split off the source with `fractions` (val, test)."""
    source = "all" if "all" in labels else "train"
    held_out = (
        0.0 if "val" in labels else fractions[0],
        0.0 if "test" in labels else fractions[1],
    )
    train, val, test = stratified_split(labels[source], held_out, seed, classes)
    plan: dict[str, tuple[str, Tensor | None]] = {"train": (source, train)}
    for split, indices in (("val", val), ("test", test)):
        plan[split] = (split, None) if split in labels else (source, indices)
    return plan


class ImageFolderDataModule(InMemoryImageDataModule):
    """Class-folder images, split, served in memory or streamed from their files.

    With `train/` (and optional `val/`, `test/`) under `root` those splits are used, a
    missing one split off `train/`; otherwise a stratified split by `val_fraction` and
    `test_fraction` with `split_seed`. Any size or mode becomes RGB; unreadable and
    non-image files are skipped and named in one warning before training.

    `placement`: "auto" holds the images decoded to `image_size`² in memory (cached on
    disk) when that fits `memory_budget` (a fraction of the available memory, or a size
    such as "8GiB"), else streams them; "stream" always streams; "device"/"host" as for
    every DataModule. `view`: "square" (centre square at `image_size`, the same pixels on
    both paths) or "full_resolution" (streaming only: a random-resized crop and flip of the
    full image for training, the central `crop_fraction` for evaluation, at the network's
    input size — how pretrained networks were trained). `classes`: only these class
    folders (e.g. a 3-class subset of a dataset), labelled in their sorted order.
    """

    placements = (*PLACEMENTS, "stream")

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
        num_workers: int | str = 0,
        placement: str = "auto",
        order_seed: int = 0,
        memory_budget: float | str = 0.5,
        view: str = "square",
        crop_fraction: float = 0.875,
        classes: list[str] | None = None,
    ) -> None:
        if num_workers != "auto" and not (isinstance(num_workers, int) and num_workers >= 0):
            raise CnnStudyError(f"data.num_workers={num_workers!r}: an integer ≥ 0, or auto")
        workers = num_workers if isinstance(num_workers, int) else 0  # auto: set in setup
        super().__init__(batch_size, eval_batch_size, workers, placement, order_seed)
        self.workers_setting = num_workers
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise CnnStudyError(
                f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be "
                "at least 0 and together below 1"
            )
        if view not in VIEWS:
            raise CnnStudyError(f"data.view={view!r}; choose one of {list(VIEWS)}")
        if view == "full_resolution" and placement in ("device", "host"):
            raise CnnStudyError(
                f"data.view=full_resolution reads the full images, which data.placement="
                f"{placement} does not hold (it holds {image_size}² squares); use "
                "data.placement=stream (or auto)"
            )
        if not 0 < crop_fraction <= 1:
            raise CnnStudyError(f"data.crop_fraction={crop_fraction}: must be in (0, 1]")
        budget_bytes(memory_budget)  # a mistyped budget fails before any file is read
        self.root = Path(root).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser()
        self.image_size = image_size
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.memory_budget = memory_budget
        self.view = view
        self.crop_fraction = crop_fraction
        self.classes = list(classes) if classes is not None else None
        self.streaming: bool | None = None  # decided in setup
        self._trees_found: dict[str, ClassTree] | None = None
        self._files: dict[str, tuple[list[Path], Tensor]] = {}
        self._classes: list[str] = []
        self._input: InputSpec | None = None  # the network's, for the full-resolution view
        self._named: NamedOnce | None = None  # unreadable files named once, workers included

    def prepare_data(self) -> None:
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"image folder {self.root} does not exist; expected root/<class>/<image> or "
                "root/train/<class>/<image>. Set it with data.root=/path"
            )

    def _trees(self) -> dict[str, ClassTree]:
        if self._trees_found is not None:
            return self._trees_found
        if not (self.root / "train").is_dir():
            trees = {"all": scan_class_tree(self.root, self.classes)}
        else:
            trees = {
                s: scan_class_tree(self.root / s, self.classes)
                for s in SPLITS
                if (self.root / s).is_dir()
            }
        for split, tree in trees.items():
            if tree.classes != next(iter(trees.values())).classes:
                raise CnnStudyError(
                    f"classes of {self.root / split} {tree.classes} differ from "
                    f"{self.root / 'train'} {trees['train'].classes}"
                )
        classes = next(iter(trees.values())).classes
        if len(classes) < 2:
            raise CnnStudyError(
                f"image folder {self.root} has one class {classes}: classification needs "
                "at least two class folders"
            )
        self._trees_found, self._classes = trees, classes
        return trees

    def setup(self, stage: str | None = None) -> None:
        if self.streaming is not None:
            return
        self.prepare_data()
        trees = self._trees()
        streaming = self._choose_path(sum(len(tree.files) for tree in trees.values()))
        self.num_workers = self._workers(streaming)
        if streaming:
            self._files = self._file_splits(trees)
            self._named = NamedOnce()
            if self.num_workers == 0:
                log.warning(
                    "data.num_workers=0: images are decoded in the training process, between "
                    "steps; data.num_workers=2 (or more) decodes them while the network trains"
                )
        else:
            super().setup(stage)
        self.streaming = streaming

    def _local_processes(self) -> int:
        """Training processes on this node: each holds its data and feeds its workers."""
        return max(self.trainer.num_devices if self.trainer is not None else 1, 1)

    def _workers(self, streaming: bool) -> int:
        """`data.num_workers`, with `auto`: in memory none (batches are tensor slices);
        streaming, the CPUs this process may use (its affinity: a SLURM job's allotment),
        shared by the node's training processes, less one for the training loop."""
        if self.workers_setting != "auto":
            return int(self.workers_setting)
        if not streaming:
            return 0
        share = available_cpus() // self._local_processes()
        workers = max(share - 1, 1)
        log.info("data.num_workers=auto: %d DataLoader workers per process", workers)
        return workers

    def _choose_path(self, count: int) -> bool:
        """Whether to stream, logged with the reason."""
        if self.placement == "stream":
            log.info("data.placement=stream: %d images read from their files in DataLoader "
                     "workers", count)  # fmt: skip
            return True
        if self.view == "full_resolution":
            log.info("data.view=full_resolution: %d images read from their files in "
                     "DataLoader workers (memory holds squares only)", count)  # fmt: skip
            return True
        if self.placement != "auto":
            return False
        # Every training process of the node holds its own copy: they share the budget,
        # taken from the memory limit, which they all read alike (the memory free at the
        # moment differs from process to process: ranks would load, and normalise, apart).
        local = self._local_processes()
        decoded = image_bytes(count, self.image_size)
        budget = budget_bytes(self.memory_budget, steady=local > 1) // max(local, 1)
        share = f", shared by the node's {local} processes" if local > 1 else ""
        why = (
            f"{count} images decoded at {self.image_size}² take {format_bytes(decoded)}, "
            f"%s the memory budget of {format_bytes(budget)} "
            f"(data.memory_budget={self.memory_budget}{share})"
        )
        if decoded > budget:
            log.info("data.placement=auto: streaming from the files: " + why, "above")
            return True
        log.info("data.placement=auto: in memory: " + why, "within")
        return False

    def _named_skips(self, skipped: list[str]) -> None:
        if skipped:
            names = ", ".join(skipped[:20]) + (" …" if len(skipped) > 20 else "")
            log.warning("skipped %d files under %s: %s", len(skipped), self.root, names)

    def _decode(self, trees: dict[str, ClassTree]) -> dict[str, dict]:
        files = [f for tree in trees.values() for f in tree.files]
        key = fingerprint(files, str(self.root), self.image_size)
        cache_file = self.cache_dir / f"image-folder-{key}.pt"

        def decode() -> dict[str, dict]:
            decoded = {}
            for split, tree in trees.items():
                images, failed = decode_resized(tree.files, self.image_size, f"decode {split}")
                decoded[split] = {
                    "images": images,
                    "labels": _kept(torch.tensor(tree.labels, dtype=torch.int64), failed),
                    "failed": [f"{tree.files[i]} ({reason})" for i, reason in failed],
                }
            return decoded

        return load_or_build(cache_file, decode)

    def load_splits(self) -> ImageSplits:
        trees = self._trees()
        decoded = self._decode(trees)
        skipped = [p for d in decoded.values() for p in d["failed"]]
        self._named_skips(skipped + self._not_images(trees))
        labels = {part: d["labels"] for part, d in decoded.items()}
        plan = self._plan(labels)
        picked = {}
        for part in dict.fromkeys(p for p, indices in plan.values() if indices is not None):
            # Reordered in place so that the splits are slices of one tensor: indexing
            # would copy them, holding the images twice at the peak.
            drawn = [(split, plan[split][1]) for split in SPLITS if plan[split][0] == part]
            order = torch.cat([indices for _, indices in drawn])
            images, part_labels = decoded[part]["images"], decoded[part]["labels"][order]
            permute_in_place(images, order)
            start = 0
            for split, indices in drawn:
                end = start + len(indices)
                picked[split] = (images[start:end], part_labels[start:end])
                start = end
        for split, (part, indices) in plan.items():
            if indices is None:
                picked[split] = (decoded[part]["images"], decoded[part]["labels"])
        return ImageSplits(*(t for split in SPLITS for t in picked[split]), self._classes)

    def _file_splits(self, trees: dict[str, ClassTree]) -> dict[str, tuple[list[Path], Tensor]]:
        """The streaming path's splits: the files whose header Pillow reads, split as the
        in-memory path splits the images it decoded."""
        files, labels, skipped = {}, {}, []
        for part, tree in trees.items():
            failed = readable_files(tree.files, f"check {part}")
            skipped += [f"{tree.files[i]} ({reason})" for i, reason in failed]
            unreadable = {i for i, _ in failed}
            files[part] = [f for i, f in enumerate(tree.files) if i not in unreadable]
            labels[part] = _kept(torch.tensor(tree.labels, dtype=torch.int64), failed)
        self._named_skips(skipped + self._not_images(trees))
        splits = {}
        for split, (part, indices) in self._plan(labels).items():
            chosen = range(len(files[part])) if indices is None else indices.tolist()
            splits[split] = ([files[part][i] for i in chosen], labels[part][list(chosen)])
        return splits

    def _plan(self, labels: dict[str, Tensor]) -> dict[str, tuple[str, Tensor | None]]:
        return split_plan(labels, self.fractions, self.split_seed, self._classes)

    @staticmethod
    def _not_images(trees: dict[str, ClassTree]) -> list[str]:
        return [f"{p} ({why})" for tree in trees.values() for p, why in tree.ignored]

    @property
    def splits(self) -> ImageSplits:
        if self.streaming:
            raise CnnStudyError(
                "the streaming path (data.placement=stream) holds no decoded images; this "
                "needs data.placement=host or device"
            )
        return super().splits

    @property
    def class_names(self) -> list[str]:
        if not self._classes:
            raise RuntimeError("call setup() before reading the data")
        return list(self._classes)

    def split_files(self, split: str) -> list[Path]:
        """The files of a split on the streaming path, in index order."""
        return list(self._files[split][0])

    def _require_stats(self) -> tuple[list[float], list[float]]:
        if self.streaming and self._stats is None:
            self._stats = sampled_stats(self._files["train"][0], self.image_size, self.split_seed)
        return super()._require_stats()

    def uses_device_path(self) -> bool:
        return not self.streaming and super().uses_device_path()

    def fit_input(self, spec: InputSpec) -> InputSpec:
        if not self.streaming:
            return super().fit_input(spec)
        if not spec.has_normalization:
            spec = spec.completed(self.mean, self.std)
        if self.view == "square":
            return replace(spec, decoded_size=self.image_size)
        size = spec.size or self.image_size
        self._input = replace(spec, size=size, decoded_size=size, crop_fraction=self.crop_fraction)
        return self._input

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> Any:
        if not self.streaming:
            return super()._batches(split, batch_size, shuffle)
        files, labels = self._files[split]
        sampler = epoch_sampler(len(files), shuffle, self.order_seed, self.trainer, True)
        return batch_loader(
            ImageFiles(files, labels, self._view_of(split), self.order_seed, self._named),
            batch_size,
            sampler,
            self.num_workers,
            pin_memory=self.training_device().type == "cuda",
            collate_fn=readable_batch,
        )

    def _view_of(self, split: str) -> SquareView | RandomResizedView:
        if self.view == "square":
            return SquareView(self.image_size)
        spec = self._input or InputSpec(self.image_size)
        size = spec.size or self.image_size
        if split == "train":
            return RandomResizedView(size, spec.interpolation)
        return SquareView(size, self.crop_fraction)


def _kept(labels: Tensor, failed: list[tuple[int, str]]) -> Tensor:
    """`labels` without those of the files in `failed` (index, reason)."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[[index for index, _ in failed]] = False
    return labels[keep]
