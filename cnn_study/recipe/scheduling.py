"""Learning-rate warmup before any schedule: `scheduler.warmup_epochs=k` ramps the rate
linearly over the first k epochs (epoch e of the ramp at (e + 1)/(k + 1) of the rate, as
torch's `LinearLR` steps it), then hands over to the schedule (`SequentialLR`), whose
epochs count from the end of the warmup (a cosine's `T_max` is the epochs after it)."""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR

from cnn_study.errors import CnnStudyError

Schedule = Callable[[Optimizer], LRScheduler]


def warmup_then(optimizer: Optimizer, schedule: Schedule, warmup_epochs: int = 0) -> LRScheduler:
    """`schedule(optimizer)`, after `warmup_epochs` of linear warmup (none when 0)."""
    if warmup_epochs < 0:
        raise CnnStudyError(f"scheduler.warmup_epochs={warmup_epochs}: must be ≥ 0")
    if warmup_epochs == 0:
        return schedule(optimizer)
    ramp = LinearLR(optimizer, start_factor=1 / (warmup_epochs + 1), end_factor=1.0,
                    total_iters=warmup_epochs)  # fmt: skip
    return SequentialLR(optimizer, [ramp, schedule(optimizer)], milestones=[warmup_epochs])
