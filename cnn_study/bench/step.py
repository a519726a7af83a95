"""`python -m cnn_study.bench.step study=<name|path> [study.scale=NAME]`: how fast each part
of a study trains here, before running it — what a study's scale is chosen from.

For every part, its composed network (with its freeze policy, random weights: the same
arithmetic as pretrained ones), optimizer, batch size and input size take training steps
on random images for `--seconds`, after two warm-up steps; printed: images per second and,
where the training set's size follows from the config (CIFAR-10: `data.train_size`, else
50,000 less `data.val_size`), the seconds of one epoch and of the part's epochs. Data
loading, augmentation, validation and test are not counted: a lower bound of a job's time.

  --seconds S   timed seconds per part (default 4)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from cnn_study.errors import CnnStudyError
from cnn_study.study.definition import read_study, study_path
from cnn_study.study.membership import compose_config

CIFAR10_TRAIN = 50_000


def train_images(cfg: DictConfig) -> int | None:
    """The training set's size where the config alone says it (CIFAR-10), else None."""
    data = cfg.data
    if not str(data.get("_target_", "")).endswith("CIFAR10DataModule"):
        return None
    return int(data.get("train_size") or CIFAR10_TRAIN - int(data.val_size))


def images_per_second(cfg: DictConfig, seconds: float, classes: int = 10) -> float:
    """Training steps of `cfg`'s network on random images for `seconds`: images/s."""
    with open_dict(cfg):
        if "weights" in cfg.arch:
            cfg.arch.weights = "none"  # the same arithmetic, nothing to read
    network = instantiate(cfg.arch, num_classes=classes)
    instantiate(cfg.finetune.policy)(network)  # frozen layers as in training
    network.train()
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer)(trainable)
    size, batch = int(cfg.arch.input_size), int(cfg.data.batch_size)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(network(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(), step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count == 0:
        step()
        count += batch
    return count / (time.perf_counter() - started)


def measure(argv: list[str], seconds: float) -> list[dict[str, Any]]:
    """One row per part of the study named in `argv` (study=..., study.scale=...)."""
    name = next((a.split("=", 1)[1] for a in argv if a.startswith("study=")), None)
    if not name:
        raise CnnStudyError("give the study: study=<name> or study=<path.yaml>")
    settings = {a.split("=", 1)[0].removeprefix("study."): a.split("=", 1)[1]
                for a in argv if a.startswith("study.")}  # fmt: skip
    study = read_study(study_path(name), settings)
    rows = []
    for part in study.parts:
        cfg = OmegaConf.create(compose_config(study.job_overrides(part)))
        rate = images_per_second(cfg, seconds)
        per_epoch = (count / rate) if (count := train_images(cfg)) else None
        epochs = int(cfg.trainer.max_epochs)
        rows.append({
            "part": part.name, "input_px": int(cfg.arch.input_size),
            "batch": int(cfg.data.batch_size), "images_per_s": round(rate, 1),
            "epoch_s": round(per_epoch, 1) if per_epoch else None, "epochs": epochs,
            "job_min": round(per_epoch * epochs / 60, 1) if per_epoch else None,
        })  # fmt: skip
        shown = (
            f"{per_epoch:.0f} s an epoch, {per_epoch * epochs / 60:.1f} min" if per_epoch else ""
        )
        print(f"| {part.name} | {cfg.arch.input_size} px | batch {cfg.data.batch_size} | "
              f"{rate:.0f} img/s | {shown} |", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.bench.step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("settings", nargs="+", help="study=<name|path> [study.scale=NAME]")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    print(f"training steps on {torch.get_num_threads()} threads, fp32, random images")
    try:
        measure(args.settings, args.seconds)
    except CnnStudyError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
