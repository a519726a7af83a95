"""`python -m cnn_study.bench.gpu_check` (`make gpu-check`): the CUDA paths, on the day a
GPU is at hand, as one short script whose output can be pasted into README.

Steps, each a command of the package run as a user would run it, under `--out`:
  a1        Study A1 for 2 epochs with the default precision (bf16-mixed where the GPU
            computes bf16, else 16-mixed) and the data on the device (data.placement=device);
            its test-end Grad-CAM figure is computed under that autocast
  bench     the training benchmark on CUDA with the compiled layout (`cnn_study.bench`)
  stream    the image-folder benchmark on CUDA (`cnn_study.bench.stream`), small sizes
  ddp       DDP on every GPU of the machine (`trainer=ddp trainer.devices=-1`), 1 epoch
  predict   `cnn_study.predict device=cuda` with the a1 checkpoint on generated images
  explain   `cnn_study.explain` (Grad-CAM) with the a1 checkpoint on the same images
Data: CIFAR-10 from $CNN_STUDY_DATA when it is set, else `data=fake` (larger than the
tests'). Prints one table: step, exit code, seconds, the figures the step reports.
Without a CUDA device it says so and exits 0: every one of these paths has a CPU test.

  --plan    print the steps' commands and exit (nothing runs; works without a GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cnn_study import paths


def data_overrides() -> list[str]:
    if os.environ.get("CNN_STUDY_DATA"):
        return []  # the A1 config's CIFAR-10 at $CNN_STUDY_DATA
    return ["data=fake", "data.train_size=8192", "data.val_size=1024", "data.test_size=1024"]


def steps(out: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of every step, in order (later steps read the a1 run's checkpoint)."""
    python = sys.executable
    a1 = out / "a1"
    checkpoint = a1 / "checkpoints" / "last.ckpt"
    images = out / "images"
    return [
        ("a1", [python, "-m", "cnn_study", "experiment=a1_baseline", *data_overrides(),
                "trainer.max_epochs=2", "data.placement=device", f"hydra.run.dir={a1}"]),
        ("bench", [python, "-m", "cnn_study.bench", "--device", "cuda", "--epochs", "2",
                   "--rounds", "2", "--layout", "compiled", "--out", str(out / "bench"),
                   *data_overrides()]),
        ("stream", [python, "-m", "cnn_study.bench.stream", "--device", "cuda", "--sizes",
                    "2000", "--rounds", "1", "--folder", str(out / "photos"),
                    "--out", str(out / "stream")]),
        ("ddp", [python, "-m", "cnn_study", "experiment=a1_baseline", *data_overrides(),
                 "trainer=ddp", "trainer.devices=-1", "trainer.max_epochs=1",
                 f"hydra.run.dir={out / 'ddp'}"]),
        ("predict", [python, "-m", "cnn_study.predict", f"ckpt={checkpoint}",
                     f"images={images}", "device=cuda", f"output={out / 'predict.csv'}"]),
        ("explain", [python, "-m", "cnn_study.explain", f"ckpt={checkpoint}",
                     f"images={images}", f"output_dir={out / 'explain'}"]),
    ]  # fmt: skip


def write_images(folder: Path, count: int = 20) -> None:
    """Small generated photos in two class folders, for predict and explain."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        target = folder / f"class{index % 2}" / f"{index:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(target)


def figures(name: str, out: Path) -> str:
    """What a finished step reports, read from the files it wrote."""
    if name in ("a1", "ddp"):
        results = json.loads((out / name / "results.json").read_text())
        config = (out / name / "config.yaml").read_text()
        precision = next((line.split(":", 1)[1].strip() for line in config.splitlines()
                          if line.strip().startswith("precision:")), "?")  # fmt: skip
        return (f"precision {precision}, train {results.get('train_time_s')} s, "
                f"test acc {results.get('test/acc', float('nan')):.4f}")  # fmt: skip
    if name == "bench":
        report = json.loads((out / "bench" / "bench.json").read_text())
        ratios = ", ".join(f"{name} {value}" for name, value in report["ratios"].items())
        return f"{report['precision']}, data on {report['data_placement']}: {ratios}"
    if name == "stream":
        summary = json.loads((out / "stream" / "bench_stream.json").read_text())["summary"]
        return "; ".join(f"{r['path']} {r['images_per_s']:.0f} img/s" for r in summary)
    if name == "predict":
        return f"{sum(1 for _ in (out / 'predict.csv').open()) - 1} rows"
    return f"{len(list((out / 'explain').rglob('*.png')))} overlays"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.bench.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: <output root>/gpu_check/<time>"
    )
    parser.add_argument("--plan", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = (args.out or paths.output_root() / "gpu_check" / stamp).expanduser()
    if args.plan:
        for name, command in steps(out):
            print(f"{name}: {' '.join(command)}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; nothing to check (each of these paths has a "
              "CPU test: tests/test_config_glue.py, test_fast_path.py, test_distributed.py, "
              "test_streaming.py, test_predict.py, test_gradcam.py)")  # fmt: skip
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_images(out / "images")
    print(f"gpu-check on {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}, "
          f"torch {torch.__version__}, outputs in {out}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, command in steps(out):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        (out / f"{name}.log").write_text(done.stdout + done.stderr)
        try:
            shown = figures(name, out) if done.returncode == 0 else f"see {out / name}.log"
        except (OSError, ValueError, StopIteration, KeyError) as error:
            shown = f"no figures ({type(error).__name__}: {error})"
        rows.append({"step": name, "exit": done.returncode, "seconds": round(seconds, 1),
                     "figures": shown})  # fmt: skip
        print(f"| {name} | {done.returncode} | {seconds:.1f} s | {shown} |", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
