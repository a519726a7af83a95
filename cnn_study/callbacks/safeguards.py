"""Three pieces every training run needs, whatever `callbacks=` says (`train.build` adds
them): the RNG state in checkpoints, the NaN guard, and frozen BatchNorm kept frozen."""

from __future__ import annotations

import io
import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from cnn_study.errors import DivergedError

log = logging.getLogger(__name__)

RNG_KEY = "cnn_study_rng_states"  # rank 0's (the only one of a single-process run)
RNG_RANKS_KEY = "cnn_study_rng_states_per_rank"
RANK_STRIDE = 1_000_003  # ranks' seeds far apart: seed + stride × rank


def rng_states() -> dict[str, Any]:
    """The global random states a training step draws from (torch, CUDA, numpy, python)."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # As tensors and plain types, so that `torch.load(weights_only=True)` accepts it.
        "numpy": [
            torch.from_numpy(part) if isinstance(part, np.ndarray) else part
            for part in np.random.get_state()
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` captured."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(
        tuple(part.numpy() if isinstance(part, Tensor) else part for part in states["numpy"])
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        saved, count = list(states["cuda"]), torch.cuda.device_count()
        if len(saved) != count:  # resumed on a node with another number of GPUs
            log.warning(
                "the checkpoint holds the random state of %d GPUs, this node has %d: "
                "restored the first %d; GPU randomness (dropout on the device) continues "
                "differently from an uninterrupted run",
                len(saved), count, min(len(saved), count),
            )  # fmt: skip
        for device, state in enumerate(saved[:count]):
            torch.cuda.set_rng_state(state, device)


class RngState(L.Callback):
    """Lightning's checkpoints hold no RNG state, yet augmentation, dropout and mixing draw
    from it: save it in every checkpoint and restore it when a run resumes (never on a test
    load). Under DDP each rank draws from its own stream — the same seed gives every rank
    the same initial weights, then ranks > 0 reseed — and the checkpoint keeps every rank's
    state (gathered: only rank 0 writes the file), each restored to its own rank."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # After the network was built (identical on every rank), before a resume restores
        # the states it saved: augmentation draws differ from rank to rank.
        if stage == "fit" and trainer.world_size > 1 and trainer.global_rank > 0:
            seed = (torch.initial_seed() + RANK_STRIDE * trainer.global_rank) % 2**32
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        states = rng_states()
        checkpoint[RNG_KEY] = states
        if trainer.world_size > 1:  # every rank saves a checkpoint's contents: a collective
            buffer = io.BytesIO()
            torch.save(states, buffer)  # as bytes: pickled tensors do not travel back intact
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, buffer.getvalue())
            checkpoint[RNG_RANKS_KEY] = [
                torch.load(io.BytesIO(data), weights_only=True) for data in gathered
            ]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        if trainer.state.fn != TrainerFn.FITTING:
            return
        ranks = checkpoint.get(RNG_RANKS_KEY)
        if ranks is not None and len(ranks) == trainer.world_size:
            set_rng_states(ranks[trainer.global_rank])
        elif RNG_KEY in checkpoint:
            if trainer.world_size > 1 or ranks is not None:
                log.warning(
                    "the checkpoint holds the random state of %d processes, this run has %d: "
                    "every rank continues from rank 0's (augmentation draws differ from an "
                    "uninterrupted run)", len(ranks or [None]), trainer.world_size,
                )  # fmt: skip
            set_rng_states(checkpoint[RNG_KEY])


class DivergenceGuard(L.Callback):
    """The NaN guard: a non-finite training loss sets a flag on the device (no sync per
    step); the flag is read once per epoch, before any checkpoint of that epoch is saved,
    and ends the run as `diverged` so the checkpoints keep the last finite weights."""

    def __init__(self) -> None:
        self.nonfinite: Tensor | None = None
        self._checked_epoch = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = ~torch.isfinite(loss.detach())
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Checkpoints of this epoch are saved after validation; every DDP rank reaches this
        # hook in step, so the decision is shared.
        if not trainer.sanity_checking:
            self._check(trainer, across_processes=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Epochs without validation: runs before the checkpoint callbacks (Lightning orders
        # them last). Every rank reaches it in step, so the decision is shared here too: a
        # rank that stopped alone would leave the others waiting in their next collective.
        if self._checked_epoch != trainer.current_epoch:
            self._check(trainer, across_processes=True)

    def _check(self, trainer: L.Trainer, across_processes: bool) -> None:
        self._checked_epoch = trainer.current_epoch
        diverged = bool(self.nonfinite) if self.nonfinite is not None else False
        if across_processes:  # every rank must stop, not only the one that saw it
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            epoch = trainer.current_epoch
            kept = (f"the checkpoints hold epochs 0–{epoch - 1}, the last finite ones"
                    if epoch > 0 else "no epoch finished, so there is no checkpoint")  # fmt: skip
            raise DivergedError(
                f"the training loss became NaN or infinite in epoch {epoch}; {kept} (try a "
                "lower optimizer.lr)"
            )


def keep_frozen_batchnorm_in_eval(network: nn.Module) -> None:
    """BatchNorm layers whose parameters are all frozen go to eval mode, so that a frozen
    backbone's running statistics do not drift while the rest trains."""
    for layer in network.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in layer.parameters()
        ):
            layer.eval()


class FrozenBatchNorm(L.Callback):
    """Applies `keep_frozen_batchnorm_in_eval` at the start of every training epoch, after
    Lightning has put the module in train mode (validation restores the modes it found)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        keep_frozen_batchnorm_in_eval(pl_module)
