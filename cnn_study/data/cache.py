"""Decode once, load in seconds: decoded uint8 tensors cached on disk, outside the repo."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: skipped files carry their reason


def fingerprint(files: Iterable[Path], *extra: object) -> str:
    """A short key that changes when any file is added, removed, resized or touched."""
    digest = hashlib.sha1(f"v{CACHE_FORMAT}".encode())
    for item in extra:
        digest.update(repr(item).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_or_build(cache_file: Path, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return the tensors stored in `cache_file`, building and saving them on a miss.

    The file is written to a temporary name and renamed, so an interrupted run never
    leaves a truncated cache behind; an unreadable cache is rebuilt, not trusted. The cache
    is an optimisation: when it cannot be written the run goes on with the decoded data.
    """
    if cache_file.exists():
        try:
            return torch.load(cache_file, weights_only=True)
        except Exception as error:  # a corrupt or foreign file: rebuild it
            log.warning("ignoring unreadable cache %s (%s); rebuilding", cache_file, error)
    data = build()
    partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, partial)
        os.replace(partial, cache_file)
    except (OSError, RuntimeError) as error:  # torch.save reports a bad path as RuntimeError
        with contextlib.suppress(OSError):
            partial.unlink()
        log.warning(
            "could not cache the decoded images in %s (%s); going on without a cache, set "
            "CNN_STUDY_CACHE to a writable folder to decode only once",
            cache_file.parent,
            error,
        )
        return data
    log.info("cached decoded images in %s", cache_file)
    return data
