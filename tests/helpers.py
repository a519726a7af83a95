"""Callbacks that simulate what happens to long runs: a hard kill, a diverging loss."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch

from cnn_study.callbacks.safeguards import DivergenceGuard


def first_time(trainer: L.Trainer, name: str) -> bool:
    """True the first time a run folder asks (a marker file): the same command, run again
    to continue, is not stopped again — a run continues with its own settings."""
    from pathlib import Path

    marker = Path(trainer.default_root_dir) / f".{name}.{trainer.global_rank}"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


class KillAfterEpoch(L.Callback):
    """SIGKILL the process after epoch `epoch` and its checkpoints (as the next one starts:
    checkpoint callbacks run after all others at an epoch's end); once per run folder."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1 and first_time(trainer, "killed"):
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeightsAtEpoch(L.Callback):
    """Set the network's weights to NaN at the start of epoch `epoch` (a diverging run)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class Sabotage(L.Callback):
    """A sweep's bad jobs: `action` "poison" poisons the weights, "crash" raises a bug-like
    RuntimeError, "none" does nothing; at the start of epoch `epoch`."""

    def __init__(self, action: str, epoch: int = 0) -> None:
        self.action = action
        self.poison = PoisonWeightsAtEpoch(epoch)
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.action == "poison":
            self.poison.on_train_epoch_start(trainer, pl_module)
        elif self.action == "crash" and trainer.current_epoch == self.epoch:
            raise RuntimeError("sabotaged job")


class WorseningValAcc(L.Callback):
    """Make the monitored val/acc fall after the first epoch, so that the best checkpoint
    stays at epoch 0 (the case where Lightning stopped rewriting last.ckpt)."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before ModelCheckpoint's own on_validation_end (Lightning orders those last).
        trainer.callback_metrics["val/acc"] = torch.tensor(1.0 / (trainer.current_epoch + 1))


class SignalAtEpoch(L.Callback):
    """Send `signal_name` (SIGINT, SIGTERM; "SIGUSR1,SIGTERM" for several in turn) to this
    process in epoch `epoch`, as Ctrl-C, `kill` or a cluster's pre-emption would; once per
    run folder; with `first_attempt_only`, not in a SLURM job that was requeued
    (SLURM_RESTART_COUNT > 0)."""

    def __init__(self, signal_name: str, epoch: int, first_attempt_only: bool = False) -> None:
        self.signals = [getattr(signal, name) for name in signal_name.split(",")]
        self.epoch = epoch
        self.armed = not (first_attempt_only and os.environ.get("SLURM_RESTART_COUNT", "0") != "0")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        at = trainer.current_epoch == self.epoch and batch_idx == 1
        if self.armed and at and first_time(trainer, "signalled"):
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                # A shell starts background jobs with SIGINT ignored (`pytest &`); a
                # terminal's Ctrl-C reaches Python's own handler.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            for number in self.signals:
                os.kill(os.getpid(), number)


class NonfiniteLossOnRank(L.Callback):
    """Tell the NaN guard of rank `rank` only that a training loss was not finite (the
    weights stay finite, so the other ranks see nothing themselves)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank:
            guard = next(c for c in trainer.callbacks if isinstance(c, DivergenceGuard))
            guard.nonfinite = torch.tensor(True)


class RecordRngState(L.Callback):
    """Write a fingerprint of this rank's torch RNG state at the start of every training
    epoch to `<run dir>/rng/rank<r>_epoch<e>.txt`: what augmentation, dropout and mixing
    will draw from."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import hashlib
        from pathlib import Path

        folder = Path(trainer.default_root_dir) / "rng"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
        name = f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.txt"
        (folder / name).write_text(digest)


class SignalInSeed(SignalAtEpoch):
    """`SignalAtEpoch` only in the run of seed `seed` (one job of a sweep or a study)."""

    def __init__(self, signal_name: str, seed: int, epoch: int = 0) -> None:
        super().__init__(signal_name, epoch)
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if pl_module.hparams["run_config"]["seed"] == self.seed:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
