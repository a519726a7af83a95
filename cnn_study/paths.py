"""Where runs and caches live: always outside the repository and the data folder.

`python -m cnn_study.paths output` prints the output root (used by `make tensorboard`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def output_root() -> Path:
    """Root of all run and sweep directories: $CNN_STUDY_OUTPUT, else ~/cnn_study/outputs."""
    env = os.environ.get("CNN_STUDY_OUTPUT")
    return Path(env).expanduser() if env else Path.home() / "cnn_study" / "outputs"


def cache_root() -> Path:
    """Decoded-dataset cache: $CNN_STUDY_CACHE, else $XDG_CACHE_HOME/cnn_study (~/.cache)."""
    env = os.environ.get("CNN_STUDY_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cnn_study"


if __name__ == "__main__":
    roots = {"output": output_root, "cache": cache_root}
    which = sys.argv[1] if len(sys.argv) > 1 else "output"
    if which not in roots:
        sys.exit(f"unknown root {which!r}; choose one of {sorted(roots)}")
    print(roots[which]())
