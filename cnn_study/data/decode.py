"""Reading `root/<class>/<image>` trees into uint8 tensors."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from tqdm.auto import tqdm

from cnn_study.errors import CnnStudyError

log = logging.getLogger(__name__)


def pillow_suffixes() -> frozenset[str]:
    """File suffixes of every format Pillow can open (GIF, TIFF, WebP, BMP, …), less its
    stubs that need a handler registered by the user (BUFR, GRIB, HDF5, …)."""
    Image.init()
    return frozenset(
        suffix
        for suffix, name in Image.registered_extensions().items()
        if name in Image.OPEN and "Stub" not in Image.OPEN[name][0].__module__
    )


IMAGE_SUFFIXES = pillow_suffixes()
_HIGH_BIT_DEPTH = {"I;16": 257.0, "I;16B": 257.0, "I;16L": 257.0, "I": 257.0, "F": 1.0}


@dataclass
class ClassTree:
    """Image files under `root/<class>/`, their labels, and files that are not images."""

    classes: list[str]
    files: list[Path]
    labels: list[int]
    ignored: list[tuple[Path, str]] = field(default_factory=list)  # (path, why not used)


def class_folders(root: Path) -> list[Path]:
    """Sub-folders that are classes, sorted; hidden ones (.git, .ipynb_checkpoints) are not."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_tree(root: Path, classes: Sequence[str] | None = None) -> ClassTree:
    """Class names (sorted folder names), image files and labels under `root`; with
    `classes`, only those class folders (a subset of a dataset's classes).

    An empty class folder is an error that names it; what a class folder holds but is
    not used — files that are not images by their suffix, sub-folders (classes are the
    first level only), dangling or looping symlinks — is collected in `ignored` with the
    reason, so the caller names it in one warning.
    """
    folders = class_folders(root)
    if not folders:
        raise CnnStudyError(f"no class folders under {root}")
    if classes is not None:
        names = [f.name for f in folders]
        unknown = [c for c in classes if c not in names]
        if unknown or len(set(classes)) < 2:
            raise CnnStudyError(
                f"data.classes={list(classes)}: name at least two distinct class folders of "
                f"{root}" + (f"; no folder {unknown}" if unknown else "") + f" (folders: {names})"
            )
        folders = [f for f in folders if f.name in classes]
    tree = ClassTree(classes=[f.name for f in folders], files=[], labels=[])
    for label, folder in enumerate(folders):
        visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        entries = [p for p in visible if p.is_file()]
        for other in (p for p in visible if not p.is_file()):
            why = ("a sub-folder: classes are one level deep, its images are not used"
                   if other.is_dir() else "a dangling or looping symlink")  # fmt: skip
            tree.ignored.append((other, why))
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise CnnStudyError(
                f"class folder {folder} holds no images (any format Pillow reads: .jpg, .png, "
                ".gif, .tiff, .webp, .bmp, …)"
            )
        tree.files.extend(images)
        tree.labels.extend([label] * len(images))
        tree.ignored.extend((p, "not an image file") for p in entries
                            if p.suffix.lower() not in IMAGE_SUFFIXES)  # fmt: skip
    return tree


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit and float grey scaled down, not clipped."""
    if image.mode in _HIGH_BIT_DEPTH:
        grey = np.asarray(image, dtype=np.float64) / _HIGH_BIT_DEPTH[image.mode]
        image = Image.fromarray(grey.clip(0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_rgb(path: Path) -> np.ndarray:
    """One image file as an H×W×3 uint8 array (PIL: any mode becomes RGB)."""
    with Image.open(path) as image:
        return np.asarray(to_rgb(image))


def decode_upright(path: Path) -> Image.Image:
    """An image file as an upright (EXIF orientation applied) 8-bit RGB PIL image."""
    with Image.open(path) as image:
        return to_rgb(ImageOps.exif_transpose(image))


def decode_square(path: Path, size: int, crop_fraction: float = 1.0) -> np.ndarray:
    """An image file upright (EXIF), RGB, its central square of `crop_fraction` × the
    shorter side, resized to size² (bilinear): 1.0 keeps the whole shorter side; 0.875 is
    the resize-to-size/0.875-then-centre-crop of ImageNet evaluation."""
    bleed = (1.0 - crop_fraction) / 2
    square = ImageOps.fit(
        decode_upright(path), (size, size), method=Image.Resampling.BILINEAR, bleed=bleed
    )
    return np.array(square)  # writable: torch.from_numpy takes it without a warning


def decode_same_size(files: list[Path], description: str) -> Tensor:
    """Decode equally sized images into one uint8 tensor N×3×H×W, with a progress bar."""
    images = [decode_rgb(path) for path in tqdm(files, desc=description, unit="img")]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise CnnStudyError(f"{description}: images differ in size {sorted(shapes)[:4]}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def why_unreadable(error: Exception) -> str:
    """Why an image file was skipped, in a few words."""
    if isinstance(error, Image.DecompressionBombError):
        return (
            f"decompression bomb, more pixels than twice PIL's limit of {Image.MAX_IMAGE_PIXELS:,}"
        )
    return f"unreadable: {error}"


def decode_resized(
    files: list[Path], size: int, description: str
) -> tuple[Tensor, list[tuple[int, str]]]:
    """Decode images of any size and mode to N×3×size×size uint8, skipping unreadable ones.

    Returns the tensor of the readable images and (index into `files`, reason) of those
    that could not be read, so the caller can name them before training starts.
    """
    # Written in place: the peak is the decoded size itself, not a list plus its stack.
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    failed: list[tuple[int, str]] = []
    for index, path in enumerate(tqdm(files, desc=description, unit="img")):
        try:
            pixels = decode_square(path, size)
            images[index - len(failed)] = torch.from_numpy(pixels).permute(2, 0, 1)
        except UNREADABLE as error:
            log.debug("cannot read %s: %s", path, error)
            failed.append((index, why_unreadable(error)))
    return images[: len(files) - len(failed)], failed


def readable_files(files: list[Path], description: str) -> list[tuple[int, str]]:
    """(index, reason) of the files whose header Pillow cannot read (not an image, a
    truncated header, a decompression bomb): what decoding everything would skip, found
    without decoding the pixels."""
    failed: list[tuple[int, str]] = []
    for index, path in enumerate(tqdm(files, desc=description, unit="img")):
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - opening parses the header; the size is in it
        except UNREADABLE as error:
            failed.append((index, why_unreadable(error)))
    return failed


def image_files(images: Any) -> list[Path]:
    """Image files named by a folder (searched recursively), a file, or a list of either."""
    entries = images if isinstance(images, list | tuple) else [images]
    files: list[Path] = []
    for entry in (Path(str(e)).expanduser() for e in entries):
        if entry.is_dir():
            files += sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif entry.is_file():
            files.append(entry)
        else:
            raise CnnStudyError(f"images: {entry} is neither a folder nor a file")
    if not files:
        raise CnnStudyError(f"images: no image files (.jpg, .png, .gif, .tiff, …) in {images}")
    return files


def square_batches(
    files: list[Path], size: int, batch_size: int, skipped: list[str], crop_fraction: float = 1.0
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """`files` decoded as size² squares (`decode_square`), `batch_size` at a time, as
    (paths, N×size×size×3 uint8); an unreadable file is left out and named in `skipped`."""
    for start in range(0, len(files), batch_size):
        paths, pixels = [], []
        for path in files[start : start + batch_size]:
            try:
                pixels.append(decode_square(path, size, crop_fraction))
                paths.append(path)
            except UNREADABLE as error:
                skipped.append(f"{path} ({why_unreadable(error)})")
        if paths:
            yield paths, np.stack(pixels)
