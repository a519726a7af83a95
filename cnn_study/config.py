"""Hydra/OmegaConf glue: the config search path and the resolvers the YAML files use."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from cnn_study import paths

# `pkg://` finds the configs inside the installed package, wherever the user runs from.
CONFIG_PATH = "pkg://cnn_study.conf"
CONFIG_NAME = "config"


def auto_precision(accelerator: str = "auto") -> str:
    """Mixed precision on CUDA — bf16 where the GPU computes it in hardware (Ampere and
    later), fp16 where bf16 would only be emulated (V100, T4: slower than fp16) — full
    precision elsewhere.

    Resolving it queries the GPU, which initialises CUDA: this happens in the training
    process, as the run's config is resolved just before Lightning sets up the same
    device. Processes that only compose configs (the study runner, `--cfg job`, reports)
    keep it unresolved and touch no GPU."""
    if accelerator not in ("auto", "gpu", "cuda"):
        return "32-true"
    import torch

    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"


def epochs_after(total: int, warmup: int) -> int:
    """The epochs a schedule runs after a warmup (at least 1; a warmup as long as the run
    is refused by the config check)."""
    return max(1, int(total) - int(warmup))


def slurm_tasks(strategy: str, devices: Any) -> int:
    """SLURM tasks per node of a job: one per device for DDP (SLURM starts the ranks),
    else one."""
    from cnn_study.processes import SCRIPT_LAUNCHED, device_count

    return device_count(devices, "cpu") if strategy in SCRIPT_LAUNCHED else 1


def slurm_gpus(accelerator: str, devices: Any) -> int:
    """GPUs per node of a job: its devices, none on a CPU accelerator."""
    from cnn_study.processes import device_count

    return 0 if accelerator == "cpu" else device_count(devices, "cpu")


def slurm_cpus(num_workers: Any) -> int:
    """CPUs of one task: the training process and its DataLoader workers (8 for auto)."""
    return 8 if num_workers == "auto" else int(num_workers) + 1


def register_resolvers() -> None:
    """Register the `cnn_study.*` resolvers once (importing cnn_study does this)."""
    resolvers = {
        "cnn_study.output_root": lambda: str(paths.output_root()),
        "cnn_study.cache_root": lambda: str(paths.cache_root()),
        "cnn_study.precision": auto_precision,
        "cnn_study.epochs_after": epochs_after,
        "cnn_study.slurm_tasks": slurm_tasks,
        "cnn_study.slurm_gpus": slurm_gpus,
        "cnn_study.slurm_cpus": slurm_cpus,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
