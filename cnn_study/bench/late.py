"""The late-training variant of `python -m cnn_study.bench --late-from <checkpoint>`.

Regularized runs drive the weights of dead units and their optimizer moments toward zero;
in float32 they become subnormal, and on CPUs that compute subnormals in microcode every
step slows down as training goes on (`cnn_study.numerics`). This variant loads a late
training state (weights and optimizer state of a cnn_study checkpoint, e.g. the last epoch
of `regularization=a3/d04_wd1e-2 flush_denormal=false`) and times training steps on the
same batches from (1) a fresh state, (2) the late state with IEEE arithmetic and (3) the
late state with subnormals flushed to zero on every thread. The figure is the ratio of
late to fresh step time: near 1 with flushing, what IEEE arithmetic costs without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnn_study.numerics import flush_denormals, is_subnormal
from cnn_study.train import Components


def subnormal_count(tensors: list[torch.Tensor]) -> int:
    return sum(int(is_subnormal(t).sum()) for t in tensors if t.dtype == torch.float32)


def _state(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    moments = [t for state in optimizer.state.values() for t in state.values() if t.dim()]
    return [p.detach() for p in net.parameters()] + moments


def _time_steps(
    cfg: DictConfig, parts: Components, checkpoint: dict[str, Any] | None, steps: int
) -> dict[str, Any]:
    """ms per training step over `steps` batches, from a fresh or a loaded state."""
    torch.manual_seed(cfg.seed)
    data = parts.datamodule
    net = instantiate(cfg.arch, num_classes=data.num_classes)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    if checkpoint is not None:
        net.load_state_dict(
            {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
        )
        optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    if cfg.module.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    size, images, labels = cfg.data.batch_size, data.splits.train_images, data.splits.train_labels

    def step(index: int) -> None:
        batch = slice(index * size, (index + 1) * size)
        loss = F.cross_entropy(
            net(parts.module.preprocess(images[batch], train=True)), labels[batch]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if checkpoint is None:
        step(0)  # Adam's moments exist from the first step on
    before = subnormal_count(_state(net, optimizer))
    start = time.perf_counter()
    for index in range(steps):
        step(index % max(1, len(labels) // size))
    elapsed = time.perf_counter() - start
    return {
        "ms_per_step": 1000 * elapsed / steps,
        "subnormals_before": before,
        "subnormals_after": subnormal_count(_state(net, optimizer)),
    }


def late_training(
    cfg: DictConfig, parts: Components, checkpoint_path: Path, steps: int
) -> dict[str, Any]:
    """Step times from a fresh and from a late training state, with and without flushing."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    cases = (("fresh", None, True), ("late, IEEE", checkpoint, False),
             ("late, flushed", checkpoint, True))  # fmt: skip
    results: dict[str, Any] = {}
    for name, state, flush in cases:
        flush_denormals(flush)
        results[name] = _time_steps(cfg, parts, state, steps)
        print(f"  {name}: {results[name]['ms_per_step']:.1f} ms/step")
    flush_denormals(cfg.flush_denormal)
    fresh = results["fresh"]["ms_per_step"]
    ratios = {
        "late/fresh, IEEE": results["late, IEEE"]["ms_per_step"] / fresh,
        "late/fresh, flushed": results["late, flushed"]["ms_per_step"] / fresh,
    }
    print(f"\n{'state':<15} {'ms/step':>9} {'subnormals before':>18} {'after':>9}")
    for name, row in results.items():
        print(
            f"{name:<15} {row['ms_per_step']:>9.1f} {row['subnormals_before']:>18,} "
            f"{row['subnormals_after']:>9,}"
        )
    for label, value in ratios.items():
        print(f"{label} = {value:.2f}")
    return {"checkpoint": str(checkpoint_path), "steps": steps, "cases": results, "ratios": ratios}
