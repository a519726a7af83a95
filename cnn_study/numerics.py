"""Subnormal floats flushed to zero on every CPU thread that computes.

Weight decay pulls the weights of dead units, and their Adam moments, toward zero; once
they fall below float32's smallest normal number (1.2e-38) an x86 CPU computes with them
in microcode, many times slower, so a regularized run slows down epoch after epoch.
The FTZ/DAZ bits that make the CPU treat such values as zero live in each thread's MXCSR
register. `torch.set_flush_denormal` sets them on the calling thread only, while ATen,
oneDNN and MKL do most of the work on the threads of PyTorch's intra-op OpenMP team, so
`flush_denormals` also runs it once on every thread of that team. `threads_flushing` checks
the outcome by arithmetic, not by trusting the flags: each thread multiplies its own chunk
of subnormal numbers and the chunks that stay non-zero name the threads that do not flush.
"""

from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# The bits of 2**-127, a subnormal float32 whose half is still subnormal unless the thread
# flushes. Made from bits, since converting 1e-39 to float32 on a flushing thread gives 0.
SUBNORMAL_BITS = 0x0040_0000
# ATen gives a thread no less than 32,768 elements of an elementwise op (at::internal::GRAIN_SIZE).
GRAIN = 32_768
_OPENMP_LIBRARY = re.compile(r"lib(gomp|iomp5)[^/]*\.so[.\d]*$")


def subnormals(numel: int) -> torch.Tensor:
    """`numel` copies of a subnormal float32, whatever the calling thread's mode."""
    return torch.full((numel,), SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)


def is_subnormal(tensor: torch.Tensor) -> torch.Tensor:
    """Mask of subnormal float32 values, read from the bits: a flushing thread (DAZ) would
    compare them as equal to zero."""
    bits = tensor.detach().float().contiguous().view(torch.int32)
    return (bits & 0x7F80_0000 == 0) & (bits & 0x007F_FFFF != 0)


def threads_flushing() -> list[bool]:
    """Per intra-op thread: True when it flushes subnormal results to zero."""
    threads = torch.get_num_threads()
    products = subnormals(threads * GRAIN * 8) * 0.5  # thread i computes chunk i
    return [not bool(chunk.any()) for chunk in products.chunk(threads)]


def _loaded_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime this process already loaded (PyTorch's own), if any."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return None
    for line in maps.read_text().splitlines():
        path = line.split()[-1]
        if _OPENMP_LIBRARY.search(path):
            library = ctypes.CDLL(path)
            return library if hasattr(library, "GOMP_parallel") else None
    return None


_PARALLEL_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _on_every_openmp_thread(enabled: bool) -> None:
    library = _loaded_openmp()
    if library is None:
        return

    @_PARALLEL_BODY
    def body(_: int | None) -> None:  # runs once on each thread of the team
        torch.set_flush_denormal(enabled)

    library.GOMP_parallel.argtypes = [_PARALLEL_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    library.GOMP_parallel.restype = None
    library.GOMP_parallel(body, None, torch.get_num_threads(), 0)


def flush_denormals(enabled: bool = True) -> bool:
    """Set (or clear) flush-to-zero on this thread and every intra-op thread; True when
    every thread now behaves as asked."""
    if not torch.set_flush_denormal(enabled):
        return False  # this CPU has no such mode (not x86 with SSE3)
    if torch.__config__.parallel_info().find("parallel backend: OpenMP") >= 0:
        _on_every_openmp_thread(enabled)
    flushing = threads_flushing()
    done = all(flushing) if enabled else not any(flushing)
    if not done:
        log.warning(
            "subnormal floats could not be %s on %d of %d CPU threads; regularized runs "
            "may slow down as weights shrink (set OMP_NUM_THREADS=1 to avoid it)",
            "flushed" if enabled else "restored",
            flushing.count(not enabled),
            len(flushing),
        )
    return done
