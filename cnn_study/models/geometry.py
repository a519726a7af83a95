"""Feature-map arithmetic of the CNN family, without torch: the config checks use it before
any heavy import (a too-small `arch.input_size` is an error in seconds)."""

from __future__ import annotations


def feature_map_size(input_size: int, depth: int, padding: int) -> int:
    """The side left by `depth` blocks of 3×3 conv + 2×2 max-pool (0 when nothing is left)."""
    size = input_size
    for _ in range(depth):
        size = size + 2 * padding - 2  # 3×3 convolution
        if size < 2:
            return 0
        size //= 2  # max-pool 2
    return size


def smallest_input_size(depth: int, padding: int) -> int:
    """The smallest square input (pixels) that `depth` conv blocks leave at least 1×1."""
    return next(s for s in range(1, 4097) if feature_map_size(s, depth, padding))
