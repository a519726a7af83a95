"""`python -m cnn_study.bench.gpu_check` (`make gpu-check`): the CUDA paths, on the day a
GPU is at hand, as one short script whose output can be pasted into README.

Steps, each a command of the package run as a user would run it, under `--out`:
  a1        Study A1 for 2 epochs with the default precision (bf16-mixed where the GPU
            computes bf16, else 16-mixed) and the data on the device (data.placement=device);
            its test-end Grad-CAM figure is computed under that autocast
  bench     the training benchmark on CUDA with the compiled layout (`cnn_study.bench`)
  stream    the image-folder benchmark on CUDA (`cnn_study.bench.stream`), small sizes
  ddp       DDP on every GPU of the machine (`trainer=ddp trainer.devices=-1`), 1 epoch
  study     with 2 GPUs or more: a 2-part × 2-seed study whose every job is DDP on every
            GPU (the job hands its ranks to a single run), 1 epoch each, and its report
  predict   `cnn_study.predict device=cuda` with the a1 checkpoint on generated images
  explain   `cnn_study.explain device=cuda` (Grad-CAM) with the a1 checkpoint on the same
            images
Each step has a time limit (`--step-timeout`, default 900 s): a hung collective ends as a
timed-out step instead of eating the GPU's time; every step prints a one-line verdict.
Data: CIFAR-10 from $CNN_STUDY_DATA when it is set, else `data=fake` (larger than the
tests'). Prints one table: step, exit code, seconds, the figures the step reports.
Without a CUDA device it says so and exits 0: every one of these paths has a CPU test.

  --plan    print the steps' commands and exit (nothing runs; works without a GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def steps(out: Path, gpus: int = 1) -> list[tuple[str, list[str]]]:
    """(name, argv) of every step, in order (later steps read the a1 run's checkpoint);
    with `gpus` > 1 the DDP study too."""
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
        *([("study", [python, "-m", "cnn_study.study", f"study={out / 'ddp_study.yaml'}",
                      f"study.dir={out / 'study'}"])] if gpus > 1 else []),
        ("predict", [python, "-m", "cnn_study.predict", f"ckpt={checkpoint}",
                     f"images={images}", "device=cuda", f"output={out / 'predict.csv'}"]),
        ("explain", [python, "-m", "cnn_study.explain", f"ckpt={checkpoint}",
                     f"images={images}", "device=cuda", f"output_dir={out / 'explain'}"]),
    ]  # fmt: skip


def write_ddp_study(path: Path) -> None:
    """Two parts × two seeds, every job DDP on every GPU of the machine, one epoch."""
    import yaml

    study = {
        "title": "gpu-check: a study of DDP jobs",
        "protocol": ["experiment=a1_baseline", *data_overrides(), "trainer=ddp",
                     "trainer.devices=-1", "trainer.max_epochs=1"],
        "seeds": [0, 1],
        "parts": [{"name": "constant", "overrides": ["scheduler=constant"]},
                  {"name": "cosine", "overrides": ["scheduler=cosine"], "baseline": "constant"}],
        "claims": [{"text": "cosine beats constant", "order": ["cosine", "constant"]}],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))


def run_step(command: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code, output) of a step; None for one that ran out of time, killed with every
    process it started (a DDP job's ranks)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output + f"\n[gpu-check: stopped after {timeout:.0f} s]\n"


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
    if name == "study":
        verdicts = json.loads((out / "study" / "looks.json").read_text())["looks"][-1]
        jobs = [json.loads(p.read_text())["status"] for p in (out / "study").rglob("results.json")]
        return f"{jobs.count('completed')}/{len(jobs)} jobs completed, look: {verdicts['verdicts']}"
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
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs to plan for with --plan (default: those visible)")  # fmt: skip
    parser.add_argument("--step-timeout", type=float, default=900.0,
                        help="seconds a step may take (default 900)")  # fmt: skip
    args = parser.parse_args(argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = (args.out or paths.output_root() / "gpu_check" / stamp).expanduser()
    import torch

    gpus = args.gpus if args.gpus is not None else torch.cuda.device_count()
    if args.plan:
        for name, command in steps(out, gpus):
            print(f"{name}: {' '.join(command)}")
        return 0

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; nothing to check (each of these paths has a "
              "CPU test: tests/test_config_glue.py, test_fast_path.py, test_distributed.py, "
              "test_streaming.py, test_predict.py, test_gradcam.py)")  # fmt: skip
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_images(out / "images")
    write_ddp_study(out / "ddp_study.yaml")
    print(f"gpu-check on {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}, "
          f"torch {torch.__version__}, outputs in {out}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, command in steps(out, gpus):
        started = time.perf_counter()
        code, output = run_step(command, args.step_timeout)
        seconds = time.perf_counter() - started
        (out / f"{name}.log").write_text(output)
        try:
            shown = figures(name, out) if code == 0 else f"see {out / name}.log"
        except (OSError, ValueError, StopIteration, KeyError) as error:
            shown = f"no figures ({type(error).__name__}: {error})"
        verdict = "ok" if code == 0 else "TIMED OUT" if code is None else f"FAILED (exit {code})"
        rows.append({"step": name, "exit": code, "verdict": verdict,
                     "seconds": round(seconds, 1), "figures": shown})  # fmt: skip
        print(f"| {name} | {verdict} | {seconds:.1f} s | {shown} |", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
