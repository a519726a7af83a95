"""`python -m cnn_study.bench.stream`: an image folder held in memory against streamed from
its files.

Builds once a synthetic folder of real JPEG photos (300–500 px a side, 10 classes) of the
largest of `--sizes` images, the smaller sizes as subsets of it (symbolic links), under
`--folder`. Then, for each folder size, network (`--archs name:input_size`) and path —
memory: `data.placement=device`, every image decoded to `--image-size`² before training
(from scratch: no cache); stream: `data.placement=stream`, decoded by `--workers`
DataLoader workers as training goes — it runs, `--rounds` times, one training job of
`--batches` batches through cnn_study's own path (`train.build`, `Trainer.fit`) in a child
process, and reports
  peak memory: the largest sum of PSS (proportional set size: pages shared between
    processes are split between them, so workers are not counted twice) over the job and
    its workers, sampled every 0.2 s; on a GPU also the peak of PyTorch's allocator there
    (the memory path's images live on the GPU);
  first batch: seconds from the job's start to its first training step;
  images/s: training images per second after the first `--warmup` batches (the clock
    read after a CUDA synchronize: queued kernels are counted).
Both paths decode with the same Pillow code (`view=square`), so they train on identical
pixels. The table gives medians over the rounds; `stream/memory` is the median of the
per-round ratios of images/s, with their range. Writes `bench_stream.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from cnn_study import paths
from cnn_study.data.streaming import format_bytes
from cnn_study.provenance import environment

CLASSES = 10
RESULT = "BENCH_STREAM_RESULT "


def synthetic_photo(index: int) -> tuple[np.ndarray, int]:
    """A photo-like RGB image of 300–500 px a side (a smooth background, shapes in a class
    colour, sensor noise), JPEG-compressible as a photo is, and its class."""
    rng = np.random.default_rng(index)
    label = index % CLASSES
    height, width = (int(v) for v in rng.integers(300, 501, size=2))
    corners = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    rows = np.linspace(0, 0.5, height, dtype=np.float32)[:, None, None]
    cols = np.linspace(0, 0.5, width, dtype=np.float32)[None, :, None]
    image = corners[0] + (corners[1] - corners[0]) * (rows + cols)
    colour = np.array([(label * 73) % 256, (label * 151) % 256, (label * 37) % 256], np.float32)
    for _ in range(int(rng.integers(3, 8))):
        top, left = rng.integers(0, height - 40), rng.integers(0, width - 40)
        size = int(rng.integers(30, 160))
        image[top : top + size, left : left + size] = colour
    image += 12 * rng.standard_normal(image.shape, dtype=np.float32)
    return image.clip(0, 255).astype(np.uint8), label


def _write_photo(job: tuple[Path, int]) -> None:
    root, index = job
    pixels, label = synthetic_photo(index)
    Image.fromarray(pixels).save(root / f"class{label}" / f"{index:06d}.jpg", quality=90)


def photo_folder(base: Path, count: int, largest: int) -> Path:
    """`base/photos-<count>`: generated once for the largest size, linked for the others."""
    full = base / f"photos-{largest}"
    if not (full / ".complete").exists():
        for label in range(CLASSES):
            (full / f"class{label}").mkdir(parents=True, exist_ok=True)
        print(f"writing {largest} synthetic JPEG photos to {full} (once)")
        with Pool(os.cpu_count()) as pool:
            pool.map(_write_photo, [(full, i) for i in range(largest)], chunksize=256)
        (full / ".complete").write_text(f"{largest}\n")
    if count == largest:
        return full
    subset = base / f"photos-{count}"
    if not (subset / ".complete").exists():
        for label in range(CLASSES):
            folder = subset / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for source in sorted((full / f"class{label}").iterdir())[: count // CLASSES]:
                link = folder / source.name
                if not link.exists():
                    link.symlink_to(source)
        (subset / ".complete").write_text(f"{count}\n")
    return subset


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """In the child process: build and train one job, return its timings."""
    import lightning as L
    from omegaconf import open_dict

    from cnn_study.bench.training import bench_config
    from cnn_study.train import build

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.times.append(device_clock(pl_module.device))

        def on_train_end(self, trainer, pl_module) -> None:
            self.times.append(device_clock(pl_module.device))

    started = psutil.Process().create_time()
    arch, input_size = job["arch"].split(":")
    overrides = [
        "data=image_folder", f"data.root={job['root']}", f"data.image_size={job['image_size']}",
        f"data.placement={'device' if job['path'] == 'memory' else 'stream'}",
        f"data.num_workers={job['workers'] if job['path'] == 'stream' else 0}",
        f"data.batch_size={job['batch_size']}", f"data.cache_dir={job['cache_dir']}",
        f"arch={arch}", f"arch.input_size={input_size}",
    ]  # fmt: skip
    cfg = bench_config(None, job["device"], 1, job["batches"], Path(job["out"]), overrides)
    if "weights" in cfg.arch:
        with open_dict(cfg):
            cfg.arch.weights = "none"
    L.seed_everything(0, workers=True)
    parts = build(cfg)
    clock = StepClock()
    parts.trainer.callbacks.append(clock)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    warmup = job["warmup"]
    timed = len(clock.times) - 1 - warmup
    seconds = clock.times[-1] - clock.times[warmup]
    first_batch_at = time.time() - (time.perf_counter() - clock.times[0])
    return {
        "first_batch_s": round(first_batch_at - started, 2),
        "images_per_s": round(timed * job["batch_size"] / seconds, 2),
        "timed_batches": timed,
        "streaming": bool(parts.datamodule.streaming),
        "peak_rss_main_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        # The trainer's device: after fit, Lightning's teardown has moved the module to
        # the CPU, where no GPU peak is kept.
        "peak_gpu_bytes": peak_gpu_bytes(parts.trainer.strategy.root_device),
    }


def device_clock(device: Any) -> float:
    """Now, once the device's queued work is done: CUDA runs kernels asynchronously, so
    an unsynchronised clock times the queueing, not the training (images/s overstated)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_gpu_bytes(device: Any) -> int | None:
    """The most GPU memory PyTorch's allocator held for tensors during the job (None on
    CPU): the memory path keeps the decoded images on the GPU, which PSS does not see."""
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run `measure` in a child process, sampling the PSS of its process tree."""
    with tempfile.TemporaryDirectory(prefix="bench-stream-cache-") as cache:
        job = {**job, "cache_dir": cache}
        child = subprocess.Popen(
            [sys.executable, "-m", "cnn_study.bench.stream", "--child", json.dumps(job)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        peak = 0
        process = psutil.Process(child.pid)
        lines: list[str] = []
        assert child.stdout is not None
        os.set_blocking(child.stdout.fileno(), False)
        while child.poll() is None:
            peak = max(peak, tree_pss(process))
            lines += child.stdout.readlines()
            time.sleep(0.2)
        lines += child.stdout.readlines()
    found = [line[len(RESULT) :] for line in lines if line.startswith(RESULT)]
    if child.returncode != 0 or not found:
        raise SystemExit(f"job {job} failed:\n{''.join(lines[-40:])}")
    return {**json.loads(found[-1]), "peak_pss_bytes": peak}


def tree_pss(process: psutil.Process) -> int:
    """Sum of PSS of a process and its descendants (those still alive)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (folder size, network, path): medians over rounds, and the stream/memory ratio of
    images/s as the median of the per-round ratios with their range."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["images"], row["arch"], row["path"]), []).append(row)
    summary = []
    for (count, arch, path), members in groups.items():
        entry = {"images": count, "arch": arch, "path": path, "rounds": len(members)}
        for key in ("peak_pss_bytes", "first_batch_s", "images_per_s"):
            values = [m[key] for m in members]
            entry[key] = statistics.median(values)
            entry[f"{key}_range"] = [min(values), max(values)]
        gpu = [m["peak_gpu_bytes"] for m in members if m.get("peak_gpu_bytes") is not None]
        entry["peak_gpu_bytes"] = statistics.median(gpu) if gpu else None
        if path == "stream":
            memory = {m["round"]: m["images_per_s"] for m in groups[(count, arch, "memory")]}
            ratios = [m["images_per_s"] / memory[m["round"]] for m in members]
            entry["stream_over_memory"] = round(statistics.median(ratios), 3)
            entry["stream_over_memory_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        summary.append(entry)
    return summary


def print_table(summary: list[dict[str, Any]]) -> None:
    header = ("images", "network", "path", "peak memory", "peak GPU memory", "first batch",
              "images/s (range)", "stream/memory (range)")  # fmt: skip
    print(" | ".join(header))
    for r in summary:
        low, high = r["images_per_s_range"]
        ratio = ""
        if r["path"] == "stream":
            ratio_low, ratio_high = r["stream_over_memory_range"]
            ratio = f"{r['stream_over_memory']:.2f} ({ratio_low:.2f}–{ratio_high:.2f})"
        print(" | ".join([
            f"{r['images']:,}", r["arch"], r["path"], format_bytes(r["peak_pss_bytes"]),
            format_bytes(r["peak_gpu_bytes"]) if r.get("peak_gpu_bytes") is not None else "—",
            f"{r['first_batch_s']:.1f} s", f"{r['images_per_s']:.1f} ({low:.1f}–{high:.1f})",
            ratio,
        ]))  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.bench.stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000],
                        help="folder sizes in images (default: 5000 20000)")  # fmt: skip
    parser.add_argument(
        "--archs",
        nargs="+",
        default=["resnet18:112", "cnn3:32"],
        help="networks as arch:input_size (default: resnet18:112 cnn3:32)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="side the images are decoded to, on both paths (default: 224)",
    )
    parser.add_argument("--batches", type=int, default=40, help="training batches per job")
    parser.add_argument("--warmup", type=int, default=5, help="batches not timed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (stream)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of every job, alternated memory, stream, … (default: 2)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="where the photos are written (default: <cache root>/bench-photos)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <output root>/bench-stream/<time>)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}; give at least 1")
    if args.warmup < 0 or args.batches <= args.warmup:
        parser.error(f"--batches={args.batches} must exceed --warmup={args.warmup}")
    if min(args.sizes) < 10 * CLASSES:
        parser.error(f"--sizes: at least {10 * CLASSES} images")
    for arch in args.archs:
        name, _, size = arch.partition(":")
        if not name or not size.isdigit():
            parser.error(f"--archs {arch!r}: give arch:input_size, e.g. resnet18:112")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        print(RESULT + json.dumps(measure(json.loads(args.child))), flush=True)
        return {}
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = (args.out or paths.output_root() / "bench-stream" / stamp).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    base = (args.folder or paths.cache_root() / "bench-photos").expanduser()
    roots = {count: photo_folder(base, count, max(args.sizes)) for count in sorted(args.sizes)}
    rows = []
    for round_number in range(1, args.rounds + 1):
        for count, root in roots.items():
            for arch in args.archs:
                for path in ("memory", "stream"):
                    print(f"round {round_number}: {count} images, {arch}, {path} …", flush=True)
                    job = {"root": str(root), "path": path, "arch": arch, "device": args.device,
                           "image_size": args.image_size, "batches": args.batches,
                           "warmup": args.warmup, "batch_size": args.batch_size,
                           "workers": args.workers,
                           "out": str(out / f"{round_number}-{count}-{arch}-{path}")}  # fmt: skip
                    result = run_job(job)
                    rows.append({"round": round_number, "images": count, "arch": arch,
                                 "path": path, **result})  # fmt: skip
                    print(f"  {rows[-1]}", flush=True)
    summary = summarize(rows)
    print_table(summary)
    report = {
        "command": [sys.executable, "-m", "cnn_study.bench.stream", *(argv or sys.argv[1:])],
        "machine": environment(),
        "image_size": args.image_size,
        "workers": args.workers,
        "rounds": args.rounds,
        "summary": summary,
        "rows": rows,
    }
    (out / "bench_stream.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench_stream.json: {out / 'bench_stream.json'}")
    return report


if __name__ == "__main__":
    main()
