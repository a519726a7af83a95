"""`python -m cnn_study.bench`: cnn_study's training speed against a plain loop and a DataLoader.

Three ways to train the same network on the same training images, one process:
  (a) lightning:   cnn_study's own path (config → `train.build` → `Trainer.fit`), validation
                   off; uint8 data on the training device when it fits.
  (b) plain:       a hand-written PyTorch loop over the same device-resident uint8 tensors,
                   same network config, optimizer, precision, memory layout and compilation as (a).
  (c) torchvision: the studies' style: the DataModule's training images served one PIL image
                   at a time (as torchvision's CIFAR10 does), ToTensor → Normalize per image,
                   DataLoader workers, fp32, a copy per batch.
`--layout contiguous --layout compiled` adds (a) with contiguous tensors and (a) compiled.
The variants alternate (a b c a b c …) for `--rounds` rounds, so that a busy machine slows
all of them alike; each round's throughput is its epochs after the first (warm-up). It
prints the median images/s of each variant with its range over rounds, the ratios a/b and
a/c (the median of the per-round ratios, with their range), what (a) adds to a training
step over (b) in ms, each layout variant over (a), and writes `bench.json` and the
resolved config of (a) to the output folder.

`--late-from <checkpoint>` instead times training steps from a late (regularized) training
state against a fresh one, with and without subnormals flushed (`cnn_study.bench.late`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from torch import nn

from cnn_study import paths
from cnn_study.bench.late import late_training
from cnn_study.config import CONFIG_NAME
from cnn_study.inputs import Preprocess, declared_input
from cnn_study.provenance import environment
from cnn_study.train import Components, build, resolved_config

OPTIONAL_VARIANTS = ("plain", "torchvision")
# Fixed for every variant: no validation, checkpoints, loggers or progress bar in the timing.
BENCH_OVERRIDES = (
    "callbacks=none",
    "logger=none",
    "++trainer.limit_val_batches=0",
    "++trainer.num_sanity_val_steps=0",
    "++trainer.enable_checkpointing=false",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
)


@dataclass
class Timing:
    """Wall time of each epoch of one variant, per round, and what an epoch trained on."""

    images_per_epoch: int
    rounds: list[list[float]] = field(default_factory=list)

    @property
    def round_images_per_s(self) -> list[float]:
        """Each round's throughput over its epochs after the first (warm-up: allocation,
        autotuning, compilation); a one-epoch round counts its only epoch."""
        return [
            self.images_per_epoch / statistics.fmean(epochs[1:] or epochs) for epochs in self.rounds
        ]

    @property
    def images_per_s(self) -> float:
        return statistics.median(self.round_images_per_s)

    @property
    def epoch_s(self) -> float:
        return self.images_per_epoch / self.images_per_s

    def summary(self) -> dict[str, Any]:
        rates = self.round_images_per_s
        return {**asdict(self), "epoch_s": self.epoch_s, "images_per_s": self.images_per_s,
                "images_per_s_range": [min(rates), max(rates)]}  # fmt: skip


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(L.Callback):
    """Records the wall time of every training epoch, GPU work included."""

    def __init__(self, epoch_times_s: list[float]) -> None:
        self.epoch_times_s = epoch_times_s
        self.start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.epoch_times_s.append(time.perf_counter() - self.start)
        print(f"  lightning epoch {trainer.current_epoch}: {self.epoch_times_s[-1]:.2f} s")


def autocast_for(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The autocast context matching a Lightning precision string ("bf16-mixed", ...)."""
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    return nullcontext


def bench_config(
    data_root: str | None,
    device: str,
    epochs: int,
    batches: int | None,
    out: Path,
    overrides: Iterable[str],
) -> DictConfig:
    """The run config of variant (a): the A1 baseline unless overridden."""
    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[device]
    chosen = [
        *BENCH_OVERRIDES,
        *([f"data.root={data_root}"] if data_root else []),
        f"trainer.accelerator={accelerator}",
        f"trainer.max_epochs={epochs}",
        *([f"++trainer.limit_train_batches={batches}"] if batches else []),
        *overrides,
    ]
    with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
        cfg = compose(config_name=CONFIG_NAME, overrides=chosen)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "lightning")
    return cfg


def trained_images(total: int, batch_size: int, batches: int | None) -> int:
    """Images seen in one epoch over `total` images when limited to `batches` batches."""
    return total if not batches else min(total, batches * batch_size)


def run_lightning(cfg: DictConfig) -> tuple[list[float], Components]:
    """Variant (a): one round's epoch times, and the built components (their data serves b
    and c)."""
    L.seed_everything(cfg.seed, workers=True)
    parts = build(cfg)
    epoch_times: list[float] = []
    parts.trainer.callbacks.append(EpochTimer(epoch_times))
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    return epoch_times, parts


def run_plain(cfg: DictConfig, parts: Components, epochs: int, batches: int | None) -> list[float]:
    """Variant (b): the minimal loop a PyTorch user would write over device-resident tensors."""
    L.seed_everything(cfg.seed, workers=True)
    device = parts.trainer.strategy.root_device
    data = parts.datamodule
    images = data.splits.train_images.to(device)
    labels = data.splits.train_labels.to(device)
    net = instantiate(cfg.arch, num_classes=data.num_classes).to(device)
    channels_last = cfg.module.channels_last
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.module.compile:
        net.compile()
    augmentation = instantiate(cfg.augmentation) or nn.Identity()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    spec = declared_input(net).completed(data.mean, data.std)
    preprocess = Preprocess(spec, channels_last).to(device)
    autocast = autocast_for(str(parts.trainer.precision), device)
    scaler = torch.amp.GradScaler(device.type, enabled=str(parts.trainer.precision) == "16-mixed")
    batch_size = cfg.data.batch_size
    epoch_times: list[float] = []
    net.train()
    for epoch in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=device)
        for step, first in enumerate(range(0, len(order), batch_size)):
            if batches and step >= batches:
                break
            index = order[first : first + batch_size]
            x = preprocess(images[index], augmentation)
            with autocast():
                loss = F.cross_entropy(net(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        synchronize(device)
        epoch_times.append(time.perf_counter() - start)
        print(f"  plain epoch {epoch}: {epoch_times[-1]:.2f} s")
    return epoch_times


class PilImages(torch.utils.data.Dataset):
    """uint8 N×3×H×W images served one PIL image at a time through `transform`, the way
    torchvision's CIFAR10 dataset serves its arrays."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.pixels = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.pixels[index])), self.labels[index]


def run_torchvision(
    cfg: DictConfig, parts: Components, epochs: int, batches: int | None, workers: int
) -> list[float]:
    """Variant (c): per-image PIL transforms + DataLoader over the DataModule's training
    images, fp32."""
    from torchvision import transforms

    L.seed_everything(cfg.seed, workers=True)
    device = parts.trainer.strategy.root_device
    data = parts.datamodule
    spec = parts.module.input_spec
    steps = [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    if spec.size is not None and tuple(data.splits.train_images.shape[-2:]) != (spec.size,) * 2:
        steps.insert(0, transforms.Resize((spec.size, spec.size)))
    dataset = PilImages(
        data.splits.train_images, data.splits.train_labels, transforms.Compose(steps)
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    net = instantiate(cfg.arch, num_classes=data.num_classes).to(device)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    epoch_times: list[float] = []
    net.train()
    for epoch in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            if batches and step >= batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        epoch_times.append(time.perf_counter() - start)
        print(f"  torchvision epoch {epoch}: {epoch_times[-1]:.2f} s")
    return epoch_times


RATIOS = (("plain", "a/b"), ("torchvision", "a/c"))
# Variants of (a) with one setting of the module changed, each against (a) itself.
LAYOUT_VARIANTS = {
    "contiguous": "module.channels_last=false",
    "compiled": "module.compile=true",
}


def _spread(per_round: list[float]) -> dict[str, float]:
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}


def ratios(timings: dict[str, Timing], batch_size: int) -> dict[str, dict[str, float]]:
    """(a)'s throughput over (b)'s and over (c)'s, each layout variant's over (a)'s, round
    by round (neighbours in time see the same machine load): the median and the range of
    the per-round ratios; and what (a) adds to each training step over (b), in ms."""
    result = {}
    if "lightning" in timings:
        a = timings["lightning"].round_images_per_s
        for name, label in RATIOS:
            if name in timings:
                result[label] = _spread(
                    [x / y for x, y in zip(a, timings[name].round_images_per_s)]
                )
        if "plain" in timings:
            b = timings["plain"].round_images_per_s
            result["a − b, ms per step"] = _spread(
                [(1 / x - 1 / y) * batch_size * 1000 for x, y in zip(a, b)]
            )
        for name in LAYOUT_VARIANTS:
            if name in timings:
                rates = timings[name].round_images_per_s
                result[f"{name}/a"] = _spread([x / y for x, y in zip(rates, a)])
    return result


def print_table(timings: dict[str, Timing], result_ratios: dict[str, dict[str, float]]) -> None:
    print(f"\n{'variant':<12} {'images/epoch':>12} {'epoch s':>9} {'images/s':>10} {'range':>13}")
    for name, timing in timings.items():
        low, high = min(timing.round_images_per_s), max(timing.round_images_per_s)
        print(
            f"{name:<12} {timing.images_per_epoch:>12} {timing.epoch_s:>9.2f} "
            f"{timing.images_per_s:>10.0f} {f'{low:.0f}–{high:.0f}':>13}"
        )
    for label, value in result_ratios.items():
        print(f"{label} = {value['median']:.2f} (rounds: {value['min']:.2f}–{value['max']:.2f})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for (a) and (b), e.g. arch=cnn4"
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="image root of the data group (CIFAR-10: archive or train/ test/ folders); "
        "default: the config's, paths.data_root ($CNN_STUDY_DATA or ./data)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per variant; the first is warm-up"
    )
    parser.add_argument(
        "--batches", type=int, default=None, help="train batches per epoch (default: all)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of a b c, alternated (default: 3)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of (c) (default: CPU cores, at most 8)",
    )
    parser.add_argument(
        "--skip", nargs="+", choices=OPTIONAL_VARIANTS, default=[], help="variants not to run"
    )
    parser.add_argument(
        "--layout",
        action="append",
        dest="layouts",
        choices=tuple(LAYOUT_VARIANTS),
        default=[],
        help="also (a) with contiguous tensors (module.channels_last=false) or compiled "
        "(module.compile=true), each against (a); repeat for both",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <output root>/bench/<time>)"
    )
    parser.add_argument(
        "--late-from",
        type=Path,
        default=None,
        help="instead of (a)-(c): time training steps from this checkpoint's late training "
        "state (weights, optimizer moments) against a fresh state, with and without subnormals "
        "flushed (cnn_study.bench.late)",
    )
    parser.add_argument(
        "--late-steps", type=int, default=20, help="timed steps per state of --late-from"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs={args.epochs}; give at least 1")
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}; give at least 1")
    if args.late_from is not None and not args.late_from.is_file():
        parser.error(f"--late-from={args.late_from}: no such checkpoint file")
    if args.late_steps < 1:
        parser.error(f"--late-steps={args.late_steps}; give at least 1")
    if args.batches is not None and args.batches < 1:
        parser.error(f"--batches={args.batches}; give at least 1, or leave it out for all")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device=cuda, but torch sees no CUDA device; use auto or cpu")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = (args.out or paths.output_root() / "bench" / stamp).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(args.data_root, args.device, args.epochs, args.batches, out, args.overrides)
    OmegaConf.save(OmegaConf.create(resolved_config(cfg)), out / "config.yaml")
    if cfg.trainer.accelerator != "cpu" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    if args.late_from is not None:
        print(f"late training: step times from {args.late_from}")
        late = late_training(cfg, build(cfg), args.late_from, args.late_steps)
        report = {
            "command": [sys.executable, "-m", "cnn_study.bench", *(argv or sys.argv[1:])],
            "machine": environment(),
            "batch_size": cfg.data.batch_size,
            "late_training": late,
        }
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"bench.json: {out / 'bench.json'}")
        return report

    timings: dict[str, Timing] = {}
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number} of {args.rounds}")
        print("(a) lightning: cnn_study's training path")
        epoch_times, parts = run_lightning(cfg)
        images = trained_images(
            len(parts.datamodule.splits.train_labels), cfg.data.batch_size, args.batches
        )
        timings.setdefault("lightning", Timing(images)).rounds.append(epoch_times)
        if "plain" not in args.skip:
            print("(b) plain: hand-written loop over the same device tensors")
            epoch_times = run_plain(cfg, parts, args.epochs, args.batches)
            timings.setdefault("plain", Timing(images)).rounds.append(epoch_times)
        if "torchvision" not in args.skip:
            print(f"(c) torchvision: PIL transforms + DataLoader({args.workers} workers)")
            epoch_times = run_torchvision(cfg, parts, args.epochs, args.batches, args.workers)
            timings.setdefault("torchvision", Timing(images)).rounds.append(epoch_times)
        for name in args.layouts:
            override = LAYOUT_VARIANTS[name]
            print(f"(a) {name}: {override}")
            variant = bench_config(args.data_root, args.device, args.epochs, args.batches,
                                   out, [*args.overrides, override])  # fmt: skip
            epoch_times, _ = run_lightning(variant)
            timings.setdefault(name, Timing(images)).rounds.append(epoch_times)

    result_ratios = ratios(timings, cfg.data.batch_size)
    print_table(timings, result_ratios)
    report = {
        "command": [sys.executable, "-m", "cnn_study.bench", *(argv or sys.argv[1:])],
        "machine": environment(),
        "device": str(parts.trainer.strategy.root_device),
        "precision": str(parts.trainer.precision),
        "data_placement": "device" if parts.datamodule.uses_device_path() else "host",
        "batch_size": cfg.data.batch_size,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "workers_c": args.workers,
        "variants": {name: timing.summary() for name, timing in timings.items()},
        "ratios": result_ratios,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench.json: {out / 'bench.json'}")
    return report


if __name__ == "__main__":
    main()
