"""Wiring: compose objects from the config, fit, test, fill the run directory.

What the run directory holds, and the statuses its `results.json` goes through, is
`cnn_study.rundir`'s contract; this module only writes it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from cnn_study.callbacks.safeguards import DivergenceGuard, FrozenBatchNorm, RngState
from cnn_study.checkpoint_io import AtomicCheckpointIO
from cnn_study.console import print_run_summary, quiet_noise
from cnn_study.data.in_memory import InMemoryImageDataModule
from cnn_study.errors import CnnStudyError, interruption, user_error
from cnn_study.inputs import declared_input
from cnn_study.loggers import output_class, output_for
from cnn_study.models.protocol import check_network
from cnn_study.module import ImageClassifier
from cnn_study.numerics import flush_denormals
from cnn_study.provenance import environment
from cnn_study.rundir import (
    COMPLETED,
    CONFIG_FILE,
    RUNNING,
    claim_folder,
    ended_status,
    read_results,
    save_predictions,
    setting_differences,
    write_results,
)
from cnn_study.runlock import acquire, is_first_process, release, slurm_restart
from cnn_study.schema import check_config

log = logging.getLogger(__name__)


def checkpoint_callbacks(
    trainer: L.Trainer,
) -> tuple[ModelCheckpoint | None, ModelCheckpoint | None]:
    """(best, last): the val/acc-monitored checkpoint and the one rewritten every epoch."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    best = next((c for c in callbacks if c.monitor is not None), None)
    last = next((c for c in callbacks if c.monitor is None), None)
    return best, last


def resume_checkpoint(cfg: DictConfig, required: bool = True) -> str | None:
    """The run's last checkpoint (callbacks.last_checkpoint); when there is none, an error if
    `required` (resume=true), else None (resume=auto: start from scratch)."""
    node = (cfg.get("callbacks") or {}).get("last_checkpoint")
    if not node or not node.get("dirpath"):
        raise CnnStudyError(
            "resume needs checkpoints every epoch, but callbacks.last_checkpoint is off"
        )
    last = Path(node.dirpath) / f"{node.get('filename') or 'last'}{ModelCheckpoint.FILE_EXTENSION}"
    if not last.is_file() and not required:
        return None
    if not last.is_file():
        raise CnnStudyError(
            f"resume=true, but there is no checkpoint to resume from ({last}); give the "
            f"interrupted run's directory with hydra.run.dir=... (this one: "
            f"{cfg.paths.output_dir}), or drop resume=true"
        )
    return str(last)


def requeued_on_slurm() -> bool:
    """True in a SLURM job that SLURM started again after a pre-emption, a timeout or a
    requeue (Lightning's auto-requeue on the job's SIGUSR1, or submitit's). One rule with
    the folder the job continues (`runlock.RunLock`): the job id and its restart count,
    whether or not Lightning detects SLURM (a plain `sbatch` sets no SLURM_NTASKS)."""
    return slurm_restart() > 0


def drop_midepoch_checkpoints(output_dir: Path) -> None:
    """Remove the checkpoint Lightning saves when SLURM warns of a pre-emption (SIGUSR1):
    it holds the middle of an epoch, which the batch order cannot continue exactly, and
    Lightning would resume from it by itself whenever no `ckpt_path` is given (a job
    pre-empted before its first epoch ended). Runs resume from `last.ckpt`, an epoch's end."""
    for path in sorted(output_dir.glob("hpc_ckpt_*.ckpt")):
        log.info("ignoring %s, a mid-epoch checkpoint: resuming from epoch ends only", path)
        path.unlink(missing_ok=True)  # every DDP rank looks


def effective_resume(cfg: DictConfig) -> bool | str:
    """`resume`, except that a requeued SLURM job always continues its own run (auto)."""
    if not cfg.resume and requeued_on_slurm():
        log.info("requeued SLURM job (restart %s): resume=auto", os.environ["SLURM_RESTART_COUNT"])
        return "auto"
    return cfg.resume


def in_sweep() -> bool:
    """Whether this run is a job of a Hydra multirun (a sweep or a study)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def recorded_config(output_dir: Path) -> dict[str, Any]:
    """The resolved config a folder's run recorded ({} when it recorded none)."""
    path = output_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return container if isinstance(container, dict) else {}


def job_config(cfg: DictConfig) -> DictConfig:
    """The run's config without Hydra's own node (present when composed in tests)."""
    without_hydra = cfg.copy()
    with open_dict(without_hydra):
        without_hydra.pop("hydra", None)
    return without_hydra


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with every interpolation resolved, without Hydra's own node."""
    container = OmegaConf.to_container(job_config(cfg), resolve=True)
    assert isinstance(container, dict)
    return container


def task_overrides() -> list[str]:
    """The command-line overrides of this job (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def count_parameters(module: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; return (and save) its results."""
    missing = sorted(OmegaConf.missing_keys(job_config(cfg)))
    if missing:
        raise CnnStudyError(
            f"missing values: {', '.join(missing)}; set them on the command line (key=value)"
        )
    if not (isinstance(cfg.resume, bool) or cfg.resume == "auto"):
        raise CnnStudyError(f"resume={cfg.resume!r}; choose one of true, false, auto")
    output_dir = Path(cfg.paths.output_dir)
    acquire(output_dir)  # a sweep job's folder: a second live process refuses here
    resume = effective_resume(cfg)
    config = resolved_config(cfg)
    try:
        if is_first_process():  # a folder never changes hands silently (rundir.claim_folder)
            recorded = recorded_config(output_dir)
            claim_folder(output_dir, resume, cfg.start_over,
                         lambda: setting_differences(recorded, config))  # fmt: skip
        previous = read_results(output_dir)
        if resume and previous.get("status") == COMPLETED:
            log.info("resume=%s: %s already completed; not run again", resume, output_dir)
            return previous
        if resume is True and not previous and in_sweep():
            resume = "auto"  # a job the stopped sweep never started: it starts now
        elif resume is True:  # nothing to resume: say so without touching the run's record
            resume_checkpoint(cfg, required=True)
    except CnnStudyError:
        release(output_dir)
        raise
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # under DDP every rank runs this
        OmegaConf.save(OmegaConf.create(config), output_dir / CONFIG_FILE)
    results: dict[str, Any] = {
        "status": RUNNING,
        "overrides": task_overrides(),
        "seed": cfg.seed,
        "output_dir": str(output_dir),
        # A requeued SLURM job finds its folder by this (see runlock.RunLock).
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "environment": environment(),
        "objective": OmegaConf.to_container(cfg.objective),
    }
    write_results(output_dir, results)
    try:  # a rejected value is recorded too: a sweep's report lists it as failed
        check_config(cfg)
        results.update(_fit_and_test(cfg, config, resume))
        results["status"] = COMPLETED
    except BaseException as error:  # the file must say that this run did not finish
        cause = user_error(error) or error
        trained = any((output_dir / "checkpoints").glob("*.ckpt"))
        results["status"] = ended_status(error, trained)
        stopped = interruption(error)
        results["error"] = (
            f"stopped by {stopped}" if stopped else f"{type(cause).__name__}: {cause}"
        )
        raise
    finally:
        write_results(output_dir, results)
        release(output_dir)
    if rank_zero_only.rank == 0:
        print_run_summary(results, output_dir)
    return results


def objective_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The run's objective (cfg.objective.metric) from its results, for sweepers; None, with
    a warning naming what there is, when the run did not produce it."""
    value = results.get(cfg.objective.metric)
    if isinstance(value, (int, float)):
        return float(value)
    numeric = sorted(k for k, v in results.items() if isinstance(v, float))
    log.warning(
        "objective.metric=%s is not in results.json; numeric keys: %s",
        cfg.objective.metric, ", ".join(numeric),
    )  # fmt: skip
    return None


@dataclass
class Components:
    """What a run's config builds: the data, the LightningModule and the Trainer."""

    datamodule: InMemoryImageDataModule
    module: ImageClassifier
    trainer: L.Trainer


def build(
    cfg: DictConfig, config: dict[str, Any] | None = None, resumed_step: int | None = None
) -> Components:
    """Instantiate a run's objects from its config (also used by `cnn_study.bench`).

    `resumed_step`: the global step a resumed run continues from; TensorBoard hides what an
    interrupted process logged after it, so every epoch keeps one point."""
    quiet_noise()
    # Not options: Timer keeps the training time across resumes (its state is in the
    # checkpoint), and the safeguards keep runs reproducible and honest.
    callbacks = [
        *(instantiate(c) for c in cfg.callbacks.values()),
        Timer(verbose=False),
        RngState(),
        DivergenceGuard(),
        FrozenBatchNorm(),
    ]
    loggers = [
        instantiate(c, **(output_class(str(c.get("_target_"))).resume_arguments(resumed_step)
                          if resumed_step is not None else {}))
        for c in cfg.logger.values()
    ]  # fmt: skip
    if not loggers:  # logger=none: Lightning refuses an lr monitor with nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False,
        plugins=[AtomicCheckpointIO()], **torch_flags(cfg),
    )  # fmt: skip

    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer  # the data's choices (memory budget) see the devices
    prepare_once(datamodule, trainer)
    datamodule.setup("fit")  # the class count and the normalisation come from the data
    if trainer.world_size > 1:  # every rank's evaluation shards exist, before any epoch
        datamodule.val_dataloader(), datamodule.test_dataloader()

    network = check_network(instantiate(cfg.arch, num_classes=datamodule.num_classes),
                            datamodule.num_classes, str(cfg.arch.get("_target_")))  # fmt: skip
    network = instantiate(cfg.finetune)(network)
    # Trained weights brought their own normalisation; fresh ones take the training split's.
    input_spec = datamodule.fit_input(declared_input(network))
    # A partial, so that Hydra does not merge (and instantiate) the run_config dict.
    mixing = instantiate(cfg.mixing)
    module = instantiate(cfg.module, _partial_=True)(
        net=network,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        augmentation=instantiate(cfg.augmentation),
        loss=instantiate(cfg.loss),
        mixing=mixing(num_classes=datamodule.num_classes) if mixing is not None else None,
        tta=instantiate(cfg.tta),
        input_spec=input_spec.as_dict(),
        class_names=datamodule.class_names,
        run_config=config if config is not None else resolved_config(cfg),
    )
    return Components(datamodule, module, trainer)


PREPARED_WAIT_S = 3600.0


def prepare_once(datamodule: L.LightningDataModule, trainer: L.Trainer) -> None:
    """`prepare_data` (a download) on each node's first process only, as Lightning's hook
    rule says; the node's other ranks wait for it (srun and torchrun start every rank at
    once; Lightning's own launcher starts them after this has run)."""
    marker = Path(trainer.default_root_dir) / f".data_prepared.node{trainer.node_rank}"
    if trainer.local_rank == 0:
        datamodule.prepare_data()
        if trainer.world_size > 1:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return
    deadline = time.monotonic() + PREPARED_WAIT_S
    while not marker.exists():
        if time.monotonic() > deadline:
            raise CnnStudyError(
                f"rank {trainer.global_rank}: the node's first process did not prepare the "
                f"data within {PREPARED_WAIT_S:.0f} s ({marker} never appeared)"
            )
        time.sleep(0.5)


def torch_flags(cfg: DictConfig) -> dict[str, Any]:
    """cuDNN's autotuner (`benchmark`) on unless the config sets it or asks for determinism:
    inputs are resized to the network's fixed input size, so the kernels chosen for the
    first batch of each shape serve the whole run. No effect on CPU."""
    if cfg.trainer.get("benchmark") is not None or cfg.trainer.get("deterministic"):
        return {}
    return {"benchmark": True}


def set_numerics(cfg: DictConfig) -> None:
    """Process-wide arithmetic settings of a run: TF32 matmuls on CUDA, subnormal floats
    flushed to zero on every CPU thread (`flush_denormal`)."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    flush_denormals(cfg.flush_denormal)


def _fit_and_test(cfg: DictConfig, config: dict[str, Any], resume: bool | str) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    set_numerics(cfg)
    resume_from = resume_checkpoint(cfg, required=resume is True) if resume else None
    resumed_step = None
    if resume_from:
        log.info("resuming from %s", resume_from)
        # Memory-mapped: every rank reads the step without loading the weights.
        resumed_step = torch.load(resume_from, map_location="cpu", weights_only=False, mmap=True)[
            "global_step"
        ]
    drop_midepoch_checkpoints(Path(cfg.paths.output_dir))
    parts = build(cfg, config, resumed_step)
    datamodule, module, trainer = parts.datamodule, parts.module, parts.trainer

    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    train_time = timer.time_elapsed("train")
    # The last epoch's figures (train vs validation: does the network overfit?).
    last_epoch = {
        name: float(value) if (value := trainer.callback_metrics.get(name)) is not None else None
        for name in ("train/acc", "train/loss", "val/acc", "val/loss")
    }
    best, last = checkpoint_callbacks(trainer)
    best_path = best.best_model_path if best else ""
    last_path = last.best_model_path if last else ""  # its one kept file: the latest epoch
    best_score = best.best_model_score if best else None

    eval_path = best_path if cfg.eval_weights == "best" and best_path else None
    trainer.test(module, datamodule=datamodule, ckpt_path=eval_path, verbose=False)
    test_metrics = {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith("test/")
    }

    if module.test_predictions is not None and trainer.is_global_zero:
        labels, probabilities = module.test_predictions
        save_predictions(Path(cfg.paths.output_dir), labels.numpy(), probabilities.numpy())
    total, trainable = count_parameters(module.net)
    results = {
        **test_metrics,
        "best_val/acc": float(best_score) if best_score is not None else None,
        "best_val_epoch": _checkpoint_epoch(best_path) if best_path else None,
        **last_epoch,
        "params_total": total,
        "params_trainable": trainable,
        "epochs": trainer.current_epoch,
        "train_time_s": round(train_time, 3),
        "eval_weights": "best" if eval_path else "last",
        "checkpoint_best": best_path or None,
        "checkpoint_last": last_path or None,
    }
    _log_hparams(trainer, config, test_metrics)
    return results


def _checkpoint_epoch(path: str) -> int | None:
    """The epoch a checkpoint was saved in (memory-mapped: its weights are not read)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"])
    except (OSError, KeyError, RuntimeError):
        return None


def _log_hparams(trainer: L.Trainer, config: dict[str, Any], metrics: dict[str, float]) -> None:
    """Record the config with every logger, linked to the test metrics where the logger
    can (`cnn_study.loggers`), then close the loggers."""
    params = {k: v for k, v in config.items() if k not in ("paths",)}
    for logger in trainer.loggers:
        output = output_for(logger)
        if trainer.is_global_zero:
            output.config(params, metrics)
        logger.finalize("success")
        if trainer.is_global_zero:
            output.close()
