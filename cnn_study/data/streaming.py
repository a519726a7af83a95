"""Image files decoded in DataLoader workers, a batch at a time: memory that does not grow
with the folder.

Only the file list is held; each worker opens, decodes and transforms its images with
Pillow (libjpeg-turbo), the decoder of the in-memory path, so that the `square` view gives
the same pixels on both paths. Random transforms draw from a generator seeded with
(seed, epoch, index): the same crops whatever the number of workers, and on resume.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from cnn_study.data.decode import (
    UNREADABLE,
    decode_resized,
    decode_square,
    decode_upright,
    why_unreadable,
)
from cnn_study.data.in_memory import channel_stats
from cnn_study.errors import CnnStudyError

log = logging.getLogger(__name__)

VIEWS = ("square", "full_resolution")
_NAMED: set[str] = set()  # files this process has already warned about


class NamedOnce:
    """Unreadable files named once for a whole loader, its worker processes included: a
    marker file per name in a folder made by the main process (creating it with O_EXCL
    succeeds in exactly one process); the folder is removed when the main process exits."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cnn_study-skipped-"))
        atexit.register(shutil.rmtree, self.folder, True)

    def first(self, name: str) -> bool:
        """True for the first caller with `name`, in any process."""
        marker = self.folder / hashlib.sha1(name.encode()).hexdigest()
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # the folder is gone: fall back to this process's memory
            if name in _NAMED:
                return False
            _NAMED.add(name)
        return True


class SquareView:
    """Centre square of `crop_fraction` × the shorter side, resized to size² (the in-memory
    path's decoding; with 0.875, ImageNet's resize-and-centre-crop evaluation)."""

    random = False

    def __init__(self, size: int, crop_fraction: float = 1.0) -> None:
        self.size = size
        self.crop_fraction = crop_fraction

    def __call__(self, path: Path) -> Tensor:
        pixels = decode_square(path, self.size, self.crop_fraction)
        return torch.from_numpy(pixels).permute(2, 0, 1)


class RandomResizedView:
    """Training view of pretrained networks from the full-resolution image: a random crop
    of 8–100 % of its area and aspect 3/4–4/3 resized to size² (torchvision's
    RandomResizedCrop, antialiased), mirrored left-right with probability `flip`."""

    random = True

    def __init__(self, size: int, interpolation: str = "bilinear", flip: float = 0.5) -> None:
        self.size = size
        self.steps = v2.Compose([
            v2.RandomResizedCrop(size, interpolation=InterpolationMode(interpolation)),
            v2.RandomHorizontalFlip(flip),
        ])  # fmt: skip

    def __call__(self, path: Path) -> Tensor:
        view = self.steps(decode_upright(path))
        return torch.from_numpy(np.array(view)).permute(2, 0, 1)


class ImageFiles(Dataset):
    """(uint8 3×S×S image, label) per file through `view`. A key is an index or
    (epoch, index) from a `TagsEpoch` sampler; a file that cannot be read gives None,
    dropped by `readable_batch` and named once (per process, or with `named` once for the
    whole loader, DataLoader workers included)."""

    def __init__(
        self,
        files: Sequence[Path],
        labels: Tensor,
        view: SquareView | RandomResizedView,
        seed: int,
        named: NamedOnce | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = list(files)
        self.labels = labels
        self.view = view
        self.seed = seed
        self.named = named

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor] | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path = self.files[index]
        try:
            if not self.view.random:
                return self.view(path), self.labels[index]
            with torch.random.fork_rng(devices=[]):  # the caller's RNG stays untouched
                torch.manual_seed(hash((self.seed, epoch, index)) & 0xFFFF_FFFF_FFFF)
                return self.view(path), self.labels[index]
        except UNREADABLE as error:
            if self.named.first(str(path)) if self.named else str(path) not in _NAMED:
                _NAMED.add(str(path))
                log.warning("skipped %s (%s)", path, why_unreadable(error))
            return None


def readable_batch(samples: list[tuple[Tensor, Tensor] | None]) -> tuple[Tensor, Tensor]:
    """Collate: stack the images that could be read (uint8 N×3×S×S, int64 labels)."""
    kept = [s for s in samples if s is not None]
    if not kept:
        raise CnnStudyError(f"no image of a batch of {len(samples)} could be read (named above)")
    images, labels = zip(*kept, strict=True)
    return torch.stack(images), torch.stack(labels)


def sampled_stats(
    files: Sequence[Path], size: int, seed: int, count: int = 1000
) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of up to `count` files picked with `seed`, decoded as size²
    squares (as in memory): the training split's statistics without decoding all of it."""
    picked = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
    images, _ = decode_resized([files[i] for i in picked.tolist()], size, "sample statistics")
    if len(images) == 0:
        raise CnnStudyError(f"none of {len(picked)} sampled training images could be read")
    return channel_stats(images)


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as a page-rounded 2**63 − 1.
_V1_UNLIMITED = 2**60


def _cgroup_levels() -> list[tuple[int, int]]:
    """(limit, usage) of every memory-limited level of this process's cgroups (v2, or
    v1's memory controller): its own cgroup and every ancestor (a SLURM job's limit sits on
    the job's cgroup, above the step's)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    candidates: list[tuple[Path, str, str]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            candidates.append((CGROUP_ROOT / path.lstrip("/"), "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):  # v1's memory controller
            candidates.append(
                (CGROUP_ROOT / "memory" / path.lstrip("/"),
                 "memory.limit_in_bytes", "memory.usage_in_bytes")
            )  # fmt: skip
    levels = []
    for folder, limit_file, usage_file in candidates:
        for level in (folder, *folder.parents):
            if level == CGROUP_ROOT.parent:
                break
            try:
                limit = (level / limit_file).read_text().strip()
                usage = int((level / usage_file).read_text())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < _V1_UNLIMITED:
                levels.append((int(limit), usage))
    return levels


def cgroup_headroom() -> int | None:
    """Bytes this process's cgroups still allow: the least limit − usage over their
    levels; None where no limit is set or none can be read."""
    levels = _cgroup_levels()
    return min(limit - usage for limit, usage in levels) if levels else None


def memory_limit() -> int:
    """Bytes of memory this process may ever hold: the machine's, or its cgroups' least
    limit. The same for every process of a node at any moment (unlike what is free)."""
    limits = [limit for limit, _ in _cgroup_levels()]
    return min([psutil.virtual_memory().total, *limits])


def available_cpus() -> int:
    """CPUs this process may run on: its affinity (a SLURM job's or container's CPUs),
    else every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return os.cpu_count() or 1


def memory_available() -> int:
    """Bytes of memory this process could still take: the system's available memory, or
    what its cgroups (containers, SLURM jobs) still allow where that is lower."""
    available = psutil.virtual_memory().available
    headroom = cgroup_headroom()
    if headroom is not None:
        available = min(available, headroom)
    return max(available, 0)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def budget_bytes(budget: float | str, steady: bool = False) -> int:
    """`data.memory_budget` in bytes: a fraction in (0, 1] of the memory available now (with
    `steady`: of the memory limit, what every process of a node reads alike), or a size
    with its unit (500MB, 8GiB)."""
    if isinstance(budget, int | float) and not isinstance(budget, bool) and 0 < budget <= 1:
        return int(budget * (memory_limit() if steady else memory_available()))
    size = _SIZE.match(budget) if isinstance(budget, str) else None
    if size and float(size[1]) > 0:
        return int(float(size[1]) * _UNITS[size[2].upper()])
    raise CnnStudyError(
        f"data.memory_budget={budget!r}: give a fraction of the available memory in (0, 1] "
        "(e.g. 0.5) or a size with its unit (e.g. 500MB, 8GiB)"
    )


def image_bytes(count: int, size: int) -> int:
    """Bytes of `count` decoded uint8 RGB images of size²."""
    return count * 3 * size * size


def format_bytes(count: float) -> str:
    """A byte count for people: 976.6 KiB, 14.0 GiB."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} GiB"
