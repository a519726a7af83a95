"""What a figure was measured on: machine and software, recorded beside every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import torch

PACKAGES = ("cnn_study", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Machine (CPU, cores, threads, GPU) and the versions of the software that computes."""
    facts: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def describe(facts: dict[str, Any]) -> str:
    """One line: 'AMD EPYC, 2 cores, no GPU; torch 2.14.1, lightning 2.6.0, …'."""
    machine = f"{facts.get('cpu', '?')}, {facts.get('cpu_count', '?')} cores, "
    machine += f"GPU {facts['gpu']}" if facts.get("gpu") else "no GPU"
    software = ", ".join(
        f"{name} {facts[name]}" for name in ("python", *PACKAGES) if facts.get(name)
    )
    return f"{machine}; {software}"
