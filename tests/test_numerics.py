"""Subnormal floats are flushed to zero on every intra-op thread, in every training run.

Nothing here is timed: the checks are arithmetic. A thread that does not flush turns
half of a subnormal number into a subnormal number, one that flushes turns it into 0.
"""

from __future__ import annotations

import platform
from typing import ClassVar

import lightning as L
import pytest
import torch

from cnn_study.numerics import flush_denormals, is_subnormal, subnormals, threads_flushing
from cnn_study.train import run
from tests.conftest import NO_FIGURES

needs_ftz = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="flush-to-zero is an x86 mode"
)


@pytest.fixture
def two_threads():
    """At least two intra-op threads (CI has two cores), so a worker thread exists; the
    process is left with subnormals flushed, as every run in it leaves it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    threads_flushing()  # the OpenMP team exists before any flag is set
    yield
    flush_denormals(True)
    torch.set_num_threads(threads)


def subnormal_count(tensors) -> int:
    """Read from the bits: a flushing thread (DAZ) compares a subnormal equal to zero, so
    `(t != 0) & (t.abs() < tiny)` would count none exactly when flushing is on."""
    return sum(int(is_subnormal(t).sum()) for t in tensors)


@needs_ftz
def test_setting_the_calling_thread_alone_leaves_worker_threads_slow(two_threads) -> None:
    flush_denormals(False)
    torch.set_flush_denormal(True)  # what torch offers: the calling thread only
    flushing = threads_flushing()
    assert flushing[0] and not all(flushing)


@needs_ftz
def test_flush_reaches_every_intra_op_thread_and_can_be_undone(two_threads) -> None:
    assert flush_denormals(True)
    assert all(threads_flushing())
    assert flush_denormals(False)
    assert not any(threads_flushing())


@needs_ftz
@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_subnormal_weights_and_moments_do_not_survive_a_step(two_threads, name: str) -> None:
    """A dead unit under weight decay: no gradient but the decay of its subnormal weights.
    Big enough that the optimizer's elementwise work is split across the threads."""
    optimizers = {
        "Adam": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2),
        "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
        "SGD": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-2),
    }

    def one_step() -> int:
        weight = torch.nn.Parameter(subnormals(8 * 32_768))
        optimizer = optimizers[name]([weight])
        weight.grad = torch.zeros_like(weight)
        optimizer.step()
        state = [t for t in optimizer.state[weight].values() if t.dim()]
        return subnormal_count([weight.detach(), *state])

    flush_denormals(False)
    assert one_step() > 0  # without the protection the state stays subnormal
    flush_denormals(True)
    assert one_step() == 0


class RecordFlushing(L.Callback):
    """What every intra-op thread does with subnormals while the run trains."""

    seen: ClassVar[list[bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        RecordFlushing.seen = threads_flushing()


@needs_ftz
@pytest.mark.parametrize("flush", [True, False])
def test_a_training_run_flushes_on_every_thread(two_threads, compose_cfg, flush: bool) -> None:
    flush_denormals(False)  # as a fresh process starts
    cfg = compose_cfg(
        "data=fake", "debug=limit", "logger=none", *NO_FIGURES,
        f"flush_denormal={str(flush).lower()}",
        "+callbacks.record._target_=tests.test_numerics.RecordFlushing",
    )  # fmt: skip
    assert run(cfg)["status"] == "completed"
    assert len(RecordFlushing.seen) >= 2
    assert all(RecordFlushing.seen) if flush else not any(RecordFlushing.seen)
