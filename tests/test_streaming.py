"""Image folders of any size: the streaming path, the memory budget, full-resolution views,
unreadable files, and disjoint shards under DDP."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from cnn_study.console import quiet_noise
from cnn_study.data import image_folder, streaming
from cnn_study.data.decode import decode_square
from cnn_study.data.image_folder import ImageFolderDataModule
from cnn_study.errors import CnnStudyError, user_error
from cnn_study.inputs import InputSpec
from cnn_study.train import build, run
from tests.conftest import NO_FIGURES, ComposeFn
from tests.test_backbones import lite0_weights_with_timm_keys
from tests.test_train import cli

DOG_EMOTION = Path(__file__).resolve().parents[2] / "shared" / "data" / "dog-emotion-mini"
REPO = Path(__file__).resolve().parents[1]
HALF = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 12 JPEG photos of different sizes and aspect ratios (40–90 px)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "owls"):
        (root / name).mkdir()
        for index in range(12):
            width, height = rng.integers(40, 91, size=2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:02d}.jpg", quality=90)
    return root


def folder(root: Path, tmp_path: Path, **options: object) -> ImageFolderDataModule:
    data = ImageFolderDataModule(
        root, tmp_path / "cache", image_size=24, batch_size=4, eval_batch_size=5, **options
    )
    data.setup()
    return data


def epoch_batches(loader, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_both_paths_serve_the_same_split_and_pixels(photos: Path, tmp_path: Path) -> None:
    memory = folder(photos, tmp_path, placement="host")
    stream = folder(photos, tmp_path, placement="stream", num_workers=2)
    assert (memory.streaming, stream.streaming) == (False, True)
    for split in ("train", "val", "test"):
        loaders = [getattr(d, f"{split}_dataloader")() for d in (memory, stream)]
        for epoch in (0, 1):
            held, streamed = (epoch_batches(loader, epoch) for loader in loaders)
            assert len(held) == len(streamed) > 0
            for (x, y), (sx, sy) in zip(held, streamed, strict=True):
                assert torch.equal(x, sx) and torch.equal(y, sy)
    # Every training image sampled (36 files < 1000): the same statistics as in memory.
    assert stream.mean == pytest.approx(memory.mean, abs=1e-9)
    assert stream.std == pytest.approx(memory.std, abs=1e-9)
    with pytest.raises(CnnStudyError, match="streaming path"):
        _ = stream.splits


def test_a_folder_above_the_memory_budget_is_streamed_and_trains(
    photos: Path, compose_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = ("data=image_folder", f"data.root={photos}", "data.image_size=24",
               "arch.input_size=24", "trainer.max_epochs=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="cnn_study.data.image_folder"):
        results = run(compose_cfg(*options, "callbacks.gradcam.num_images=2",
                                  "callbacks.evaluation_figures.grid_size=4",
                                  "data.memory_budget=10KB"))  # fmt: skip
    assert results["status"] == "completed" and 0 <= results["test/acc"] <= 1
    # The test-end figures on the streaming path (images read back from their files).
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    assert figures == ["curves.png", "test_confusion.png", "test_gradcam.png",
                       "test_predictions.png", "test_reliability.png", "test_roc.png"]  # fmt: skip
    assert (
        "data.placement=auto: streaming from the files: 36 images decoded at 24² take 60.8 KiB, "
        "above the memory budget of 9.8 KiB (data.memory_budget=10KB)"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnn_study.data.image_folder"):
        run(
            compose_cfg(
                *options, *NO_FIGURES, "data.memory_budget=1MB", output_dir=tmp_path / "fits"
            )
        )
    assert "data.placement=auto: in memory: 36 images decoded at 24² take 60.8 KiB" in caplog.text


def test_the_memory_budget_is_shared_by_the_nodes_processes(
    photos: Path, compose_cfg: ComposeFn, tmp_path: Path
) -> None:
    """Under DDP each process of a node holds its own copy: 4 processes × 60.8 KiB do not
    fit a 100KB budget that one process does."""
    single = folder(photos, tmp_path, memory_budget="100KB")
    assert single.streaming is False
    four = ImageFolderDataModule(photos, tmp_path / "cache", image_size=24,
                                 memory_budget="100KB")  # fmt: skip
    four.trainer = SimpleNamespace(num_devices=4, world_size=4)
    four.setup()
    assert four.streaming is True
    # A run's data sees its Trainer's devices when it decides (build sets it up).
    options = ("data=image_folder", f"data.root={photos}", "data.image_size=24",
               "arch.input_size=24", "data.memory_budget=100KB", *NO_FIGURES)  # fmt: skip
    ddp = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    assert build(compose_cfg(*options)).datamodule.streaming is False
    assert build(compose_cfg(*options, *ddp)).datamodule.streaming is True


def test_auto_workers_follow_the_cpus_of_this_process(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.num_workers=auto`: a SLURM job's 8 CPUs feed one GPU's process with 7 decoding
    workers (one core for the training loop), two processes with 3 each; in memory, none.
    Lightning's "few workers" hint is no longer hidden for streamed folders."""
    monkeypatch.setattr(image_folder, "available_cpus", lambda: 8)
    one = folder(photos, tmp_path, placement="stream", num_workers="auto")
    assert one.num_workers == 7
    two = ImageFolderDataModule(photos, tmp_path / "cache", image_size=24, placement="stream",
                                num_workers="auto")  # fmt: skip
    two.trainer = SimpleNamespace(num_devices=2, world_size=2)
    two.setup()
    assert two.num_workers == 3
    assert folder(photos, tmp_path, placement="host", num_workers="auto").num_workers == 0
    with pytest.raises(CnnStudyError, match=r"data.num_workers='many': an integer ≥ 0, or auto"):
        folder(photos, tmp_path, num_workers="many")
    with warnings.catch_warnings():
        warnings.resetwarnings()
        quiet_noise()
        hint = "The 'train_dataloader' does not have many workers which may be a bottleneck."
        assert not [f for f in warnings.filters if f[0] == "ignore" and f[1] and f[1].match(hint)]


def test_the_memory_left_is_read_from_this_processs_own_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SLURM job's limit sits on the job's cgroup, not on the root cgroup: cgroup v2 via
    /proc/self/cgroup and its ancestors; cgroup v1's memory controller likewise."""
    v2 = tmp_path / "v2"
    job = v2 / "system.slice" / "slurmstepd.scope" / "job_42"
    (job / "step_0").mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")  # the root: unlimited, as on most nodes
    (v2 / "memory.current").write_text("0\n")
    (job / "memory.max").write_text(f"{8 * 2**30}\n")  # the job's limit: 8 GiB
    (job / "memory.current").write_text(f"{3 * 2**30}\n")
    (job / "step_0" / "memory.max").write_text("max\n")
    (job / "step_0" / "memory.current").write_text(f"{2**30}\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/slurmstepd.scope/job_42/step_0\n")
    monkeypatch.setattr(streaming, "CGROUP_ROOT", v2)
    monkeypatch.setattr(streaming, "PROC_CGROUP", proc)
    assert streaming.cgroup_headroom() == 5 * 2**30
    assert streaming.memory_available() <= 5 * 2**30

    v1 = tmp_path / "v1"
    slurm = v1 / "memory" / "slurm" / "uid_1" / "job_7"
    slurm.mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1\n")
    (slurm / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (slurm / "memory.usage_in_bytes").write_text(f"{2**28}\n")
    proc.write_text("12:cpu,cpuacct:/slurm/uid_1/job_7\n4:memory:/slurm/uid_1/job_7\n")
    monkeypatch.setattr(streaming, "CGROUP_ROOT", v1)
    assert streaming.cgroup_headroom() == 2**30 - 2**28
    proc.write_text("4:memory:/\n")  # no limit anywhere
    assert streaming.cgroup_headroom() is None


def test_full_resolution_views_follow_the_network_input(photos: Path, tmp_path: Path) -> None:
    data = folder(photos, tmp_path, placement="stream", view="full_resolution")
    spec = data.fit_input(InputSpec(32, HALF, HALF, "bicubic"))
    assert (spec.size, spec.decoded_size, spec.crop_fraction) == (32, 32, 0.875)

    # Evaluation: the central 87.5 % square, as predict and explain decode new images.
    (first, _), *_ = epoch_batches(data.val_dataloader())
    expected = [decode_square(f, 32, 0.875) for f in data.split_files("val")[: len(first)]]
    assert torch.equal(first, torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2))

    # Training: random-resized crops at 32 px, a function of (seed, epoch, index) only.
    rng_before = torch.get_rng_state()
    epoch0 = epoch_batches(data.train_dataloader(), 0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG untouched
    assert epoch0[0][0].shape[1:] == (3, 32, 32)
    with_workers = folder(photos, tmp_path, placement="stream", view="full_resolution",
                          num_workers=2)  # fmt: skip
    with_workers.fit_input(spec)
    resumed = epoch_batches(with_workers.train_dataloader(), 1)  # a fresh process at epoch 1
    again = epoch_batches(with_workers.train_dataloader(), 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, again, strict=True))
    epoch1 = epoch_batches(data.train_dataloader(), 1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch1, resumed, strict=True))
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"view": "full_resolution", "placement": "host"},
         "data.view=full_resolution reads the full images, which data.placement=host does not "
         "hold (it holds 24² squares); use data.placement=stream (or auto)"),
        ({"view": "crops"}, "data.view='crops'; choose one of ['square', 'full_resolution']"),
        ({"memory_budget": "lots"},
         "data.memory_budget='lots': give a fraction of the available memory in (0, 1] (e.g. "
         "0.5) or a size with its unit (e.g. 500MB, 8GiB)"),
        ({"memory_budget": 2}, "data.memory_budget=2: give a fraction"),
    ],
)  # fmt: skip
def test_bad_streaming_options_name_the_value(
    photos: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(CnnStudyError) as raised:
        folder(photos, tmp_path, **options)
    assert str(raised.value).startswith(message)


def test_stream_is_an_image_folder_placement(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg("data=fake", "data.placement=stream")
    with pytest.raises(Exception) as raised:  # Hydra wraps it; user_error unwraps it
        run(cfg)
    assert str(user_error(raised.value)) == (
        "data.placement='stream'; choose one of ['auto', 'device', 'host'] "
        "(stream: data=image_folder)"
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_files_are_skipped_and_named_once_when_streaming(
    photos: Path, tmp_path: Path, capfd: pytest.CaptureFixture, workers: int
) -> None:
    """Named once over two epochs, also when DataLoader worker processes read the files
    (each worker used to name it once itself)."""
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    (root / "cats" / "broken.jpg").write_bytes(b"not an image")
    truncated = root / "dogs" / "truncated.jpg"  # its header reads; its pixels do not
    whole = (photos / "dogs" / "00.jpg").read_bytes()
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    console = logging.StreamHandler(sys.stderr)  # as Hydra's: worker processes inherit it
    logger = logging.getLogger("cnn_study")
    logger.addHandler(console)
    try:
        data = folder(root, tmp_path, placement="stream", val_fraction=0.01, test_fraction=0.01,
                      num_workers=workers)  # fmt: skip
        assert truncated in data.split_files("train")
        seen = [
            len(y) for epoch in (0, 1) for _, y in epoch_batches(data.train_dataloader(), epoch)
        ]
    finally:
        logger.removeHandler(console)
    printed = capfd.readouterr().err
    assert f"skipped 1 files under {root}: {root / 'cats' / 'broken.jpg'} (unreadable" in printed
    assert sum(seen) == 2 * (len(data.split_files("train")) - 1)
    assert printed.count(f"skipped {truncated} (unreadable") == 1


class RecordShards(L.Callback):
    """Writes the files each rank's samplers hand out, per epoch."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seen: dict[str, list[str]] = {}

    def _record(self, key: str, loader) -> None:
        files = loader.dataset.files
        self.seen[key] = [str(files[index]) for _, index in loader.sampler]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._record(f"train{trainer.current_epoch}", trainer.train_dataloader)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._record("val", trainer.val_dataloaders)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.seen["all_train"] = [str(f) for f in trainer.datamodule.split_files("train")]
        self.seen["all_val"] = [str(f) for f in trainer.datamodule.split_files("val")]
        target = self.path / f"rank{trainer.global_rank}.json"
        target.write_text(json.dumps(self.seen))


def test_ddp_ranks_stream_disjoint_shards(photos: Path, tmp_path: Path) -> None:
    """2 gloo processes, 21 training and 9 validation files: each epoch the ranks take
    10 training files each (one left out, no repeats) and 4 + 5 validation files."""
    record = tmp_path / "shards"
    record.mkdir()
    done = cli(
        "data=image_folder", f"data.root={photos}", "data.image_size=24", "arch.input_size=24",
        "data.placement=stream", "data.val_fraction=0.25", "data.batch_size=4",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2",
        "+callbacks.record._target_=tests.test_streaming.RecordShards",
        f"+callbacks.record.path={record}", *NO_FIGURES, f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    all_train, all_val = ranks[0]["all_train"], ranks[0]["all_val"]
    assert (len(all_train), len(all_val)) == (21, 9)
    for epoch in ("train0", "train1"):
        shard0, shard1 = (set(r[epoch]) for r in ranks)
        assert len(ranks[0][epoch]) == len(ranks[1][epoch]) == 10
        assert len(shard0 | shard1) == 20 and not shard0 & shard1
        assert shard0 | shard1 <= set(all_train)
    assert ranks[0]["train0"] != ranks[0]["train1"]  # a new order every epoch
    val0, val1 = (r["val"] for r in ranks)
    assert sorted(val0 + val1) == sorted(all_val) and {len(val0), len(val1)} == {4, 5}


@pytest.mark.skipif(not DOG_EMOTION.is_dir(), reason="needs ../shared/data/dog-emotion-mini")
@pytest.mark.parametrize("experiment", ["b5_pretrained", "b4_head"])
def test_transfer_configs_stream_full_resolution_photos(
    experiment: str, compose_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if experiment == "b5_pretrained":  # real ImageNet weights, offline
        weights = lite0_weights_with_timm_keys(tmp_path / "lite0.pth")
        network = ["arch=efficientnet_lite0", f"arch.weights={weights}", "arch.input_size=128"]
    else:
        from tests.test_configs import build_cnn

        b3 = build_cnn(10, [32, 64, 128, 256], 512, input_size=64, padding=0,
                       batch_norm=True, pooling="global_avg")  # fmt: skip
        weights = tmp_path / "gap4_bn.pt"
        torch.save(b3.state_dict(), weights)
        network = [f"finetune.from_checkpoint={weights}", "arch.input_size=96"]
    cfg = compose_cfg(f"experiment={experiment}", f"data.root={DOG_EMOTION}", *network,
                      "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                      "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                      *NO_FIGURES)  # fmt: skip
    assert (cfg.data.placement, cfg.data.view) == ("stream", "full_resolution")
    with caplog.at_level(logging.INFO, logger="cnn_study.data.image_folder"):
        results = run(cfg)
    assert results["status"] == "completed"
    assert "data.placement=stream: 240 images read from their files" in caplog.text
    spec = torch.load(results["checkpoint_last"], map_location="cpu", weights_only=False)[
        "hyper_parameters"
    ]["input_spec"]
    assert spec["crop_fraction"] == 0.875 and spec["decoded_size"] == spec["size"]


def test_in_memory_splits_are_slices_of_the_decoded_images(photos: Path, tmp_path: Path) -> None:
    """The in-memory path's peak is the decoded size: splits reorder the images in place
    rather than copy them (the budget of `placement=auto` assumes no second copy)."""
    data = folder(photos, tmp_path, placement="host")
    splits = data.splits
    storages = {t.untyped_storage().data_ptr() for t in
                (splits.train_images, splits.val_images, splits.test_images)}  # fmt: skip
    assert len(storages) == 1
    assert splits.train_images.data_ptr() == next(iter(storages))  # train first, then val, test
    # Which images each split holds is checked against the streaming path's files above.


def test_streaming_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """Tiny settings: the real photo folder, both paths in child processes, the table."""
    from cnn_study.bench import stream as bench_stream

    report = bench_stream.main([
        "--sizes", "100", "--archs", "cnn3:16", "--image-size", "24", "--batches", "4",
        "--warmup", "1", "--batch-size", "8", "--workers", "1", "--rounds", "1",
        "--device", "cpu", "--folder", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    photos = sorted((tmp_path / "photos" / "photos-100").rglob("*.jpg"))
    assert len(photos) == 100 and 300 <= min(Image.open(photos[0]).size) <= 500
    memory, stream = report["summary"]
    assert (memory["path"], stream["path"]) == ("memory", "stream")
    assert [r["streaming"] for r in report["rows"]] == [False, True]
    for row in report["rows"]:
        assert row["peak_pss_bytes"] > 0 and row["images_per_s"] > 0 and row["first_batch_s"] > 0
        assert row["timed_batches"] == 3
    assert stream["stream_over_memory"] == pytest.approx(
        stream["images_per_s"] / memory["images_per_s"], abs=1e-3
    )
    saved = json.loads((tmp_path / "out" / "bench_stream.json").read_text())
    assert saved["summary"] == report["summary"]
    assert all(row["peak_gpu_bytes"] is None for row in report["rows"])  # CPU: no GPU column


def test_the_benchmark_clock_waits_for_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA kernels run asynchronously: the clock is read after a synchronize on a CUDA
    device (and without one on the CPU)."""
    from cnn_study.bench import stream as bench_stream

    synchronized = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronized.append(device))
    bench_stream.device_clock(torch.device("cpu"))
    assert synchronized == []
    bench_stream.device_clock(torch.device("cuda", 0))
    assert synchronized == [torch.device("cuda", 0)]
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123)
    assert bench_stream.peak_gpu_bytes(torch.device("cuda", 0)) == 123
    assert bench_stream.peak_gpu_bytes(torch.device("cpu")) is None
