"""Reading `root/<class>/<image>` trees into uint8 tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from cnn_study.errors import CnnStudyError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def class_folders(root: Path) -> list[Path]:
    """Sub-folders that are classes, sorted; hidden ones (.git, .ipynb_checkpoints) are not."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_tree(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted folder names), image files and their labels under `root`."""
    folders = class_folders(root)
    if not folders:
        raise CnnStudyError(f"no class folders under {root}")
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        images = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not images:
            raise CnnStudyError(f"class folder {folder} holds no images ({sorted(IMAGE_SUFFIXES)})")
        files.extend(images)
        labels.extend([label] * len(images))
    return [f.name for f in folders], files, labels


def decode_rgb(path: Path) -> np.ndarray:
    """One image file as an H×W×3 uint8 array (PIL: any mode becomes RGB)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def decode_same_size(files: list[Path], description: str) -> Tensor:
    """Decode equally sized images into one uint8 tensor N×3×H×W, with a progress bar."""
    images = [decode_rgb(path) for path in tqdm(files, desc=description, unit="img")]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise CnnStudyError(f"{description}: images differ in size {sorted(shapes)[:4]}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
