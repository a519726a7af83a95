"""End to end: the CLI, results.json, TensorBoard logs, sweeps, schedules, determinism."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import (
    EventAccumulator as PluginEventAccumulator,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from cnn_study.__main__ import cli as app_cli
from cnn_study.data.fake import FakeDataModule
from cnn_study.module import load_classifier
from cnn_study.rundir import Run, describe_runs
from cnn_study.train import run
from tests.conftest import NO_FIGURES, ComposeFn, command_here

REQUIRED_KEYS = {
    "test/acc", "test/precision", "test/recall", "test/f1", "test/f1_macro", "test/auroc",
    "params_total", "params_trainable", "epochs", "train_time_s", "best_val/acc", "status",
    "overrides",
}  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnn_study", *args], capture_output=True, text=True, cwd=cwd,
        timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Each scalar's values in step order (a resumed run's points are in a second file)."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {
        tag: [e.value for e in sorted(events.Scalars(tag), key=lambda e: e.step)]
        for tag in events.Tags()["scalars"]
    }


def test_cli_fast_dev_run_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    work = tmp_path / "elsewhere"  # not the repo: configs must come from the package
    work.mkdir()
    result = cli("data=fake", "trainer.fast_dev_run=true", cwd=work,
                 env={"CNN_STUDY_OUTPUT": str(out)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = out.glob("runs/*/results.json")
    results = json.loads(results_file.read_text())
    assert results.keys() >= REQUIRED_KEYS
    assert results["status"] == "completed"
    assert results["overrides"] == ["data=fake", "trainer.fast_dev_run=true"]
    config = (results_file.parent / "config.yaml").read_text()
    assert "${" not in config and "_target_: cnn_study.models.cnn.build_cnn" in config
    assert list(work.iterdir()) == []  # nothing written where the user stands
    # The run reports itself, without adverts, watcher chatter or a column of zero FLOPs.
    summary = result.stdout[result.stdout.index("cnn_study run: completed") :]
    assert f"test accuracy     │ {results['test/acc']:.4f}" in summary
    assert f"│ results           │ {results_file}" in summary
    output = result.stdout + result.stderr
    assert "Tip:" not in output and "Directory watcher" not in output
    assert "Total FLOPs: 0" not in output and "Total FLOPs:" in output


def test_cli_unknown_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = cli("arch=resnet9000", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'arch/resnet9000'" in result.stderr and "cnn3_bn" in result.stderr


def test_cli_help_lists_the_groups(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("arch", "data", "regularization", "scheduler", "finetune", "experiment"):
        assert f"\n{group}: " in result.stdout


def test_multirun_grid_runs_nine_jobs_each_with_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`python -m cnn_study -m` with a 3 × 3 grid (in this process: see command_here)."""
    grid = [
        "-m",
        "data=fake",
        "trainer.fast_dev_run=true",
        *NO_FIGURES,
        "regularization.dropout=0.3,0.4,0.5",
        "regularization.weight_decay=1e-4,1e-3,1e-2",
    ]
    code, output = command_here(app_cli, grid, tmp_path, monkeypatch, capsys,
                                env={"CNN_STUDY_OUTPUT": str(tmp_path / "out")})  # fmt: skip
    assert code == 0, output[-3000:]
    (sweep,) = (tmp_path / "out" / "multirun").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == [str(i) for i in range(9)]
    grid = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "completed"
        config = (job / "config.yaml").read_text()
        grid.add(tuple(sorted(results["overrides"])[1:]))
        assert "weight_decay" in config
        row = f"│ {job.name}   │ {' '.join(results['overrides'])}"
        assert row in output, row  # the sweep ends with a table of its jobs
    assert len(grid) == 9


def test_training_logs_scalars_hparams_and_checkpoints(
    compose_cfg: ComposeFn, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_cfg("data=fake", "trainer.max_epochs=2", output_dir=tmp_path / "run")
    results = run(cfg)
    run_dir = tmp_path / "run"
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in printed
    assert f"(epoch {results['best_val_epoch']})" in printed
    logged = scalars(run_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "lr",
                "train/first_conv_grad_abs_mean"):  # fmt: skip
        assert len(logged[tag]) == 2, tag  # once per epoch
    assert all(0 < g < 10 for g in logged["train/first_conv_grad_abs_mean"])
    assert logged["test/acc"] == [pytest.approx(results["test/acc"])]  # written once
    hparams = PluginEventAccumulator(str(run_dir / "tensorboard"))
    hparams.Reload()
    content = hparams.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "test/acc" in {info.name.tag for info in experiment.metric_infos}
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["arch/_target_"].string_value.endswith("build_cnn")
    assert Path(results["checkpoint_best"]).is_file()
    assert Path(results["checkpoint_last"]).is_file()
    assert results["epochs"] == 2 and results["best_val/acc"] == max(logged["val/acc"])
    for tag in ("train/acc", "train/loss", "val/acc", "val/loss"):  # the last epoch's
        assert results[tag] == pytest.approx(logged[tag][-1]), tag
    seconds = Run(run_dir, results).epoch_seconds()  # from TensorBoard's event times
    assert len(seconds) == 2 and all(t > 0 for t in seconds)
    (line,) = describe_runs([run_dir])
    assert f"completed, test acc {results['test/acc']:.4f}" in line
    assert f"max/first {max(seconds) / seconds[0]:.2f}" in line
    assert results["test/acc"] > 0.3  # the fake classes are learnable in two epochs


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("constant", [1e-3] * 6),
        ("step", [1e-3] * 5 + [5e-4]),
        ("cosine", [0.5e-3 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]),
    ],
)
def test_lr_schedules(scheduler: str, expected: list[float], compose_cfg: ComposeFn, tmp_path):
    cfg = compose_cfg(
        "data=fake", f"scheduler={scheduler}", "trainer.max_epochs=6",
        "++trainer.limit_train_batches=1", "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1", *NO_FIGURES, output_dir=tmp_path / "run",
    )  # fmt: skip
    run(cfg)
    assert scalars(tmp_path / "run")["lr"] == pytest.approx(expected)


def test_weight_decay_reaches_the_optimizer(compose_cfg: ComposeFn) -> None:
    for optimizer in ("adam", "adamw", "sgd"):
        cfg = compose_cfg(f"optimizer={optimizer}", "regularization.weight_decay=1e-3")
        built = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        assert built.param_groups[0]["weight_decay"] == 1e-3


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return checkpoint["state_dict"]


def test_same_seed_same_run_other_seed_other_run(compose_cfg: ComposeFn, tmp_path: Path):
    common = ("data=fake", "augmentation=crop_flip_jitter", "debug=limit", *NO_FIGURES)
    first = run(compose_cfg(*common, "seed=7", output_dir=tmp_path / "a"))
    second = run(compose_cfg(*common, "seed=7", output_dir=tmp_path / "b"))
    run(compose_cfg(*common, "seed=8", output_dir=tmp_path / "c"))
    metrics = [k for k in first if k.startswith("test/")]
    assert [first[k] for k in metrics] == [second[k] for k in metrics]
    a, b, c = (last_weights(tmp_path / name) for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_reloads_without_the_original_objects(compose_cfg: ComposeFn, tmp_path):
    results = run(compose_cfg("data=fake", "arch=cnn3_bn", "trainer.max_epochs=2",
                              output_dir=tmp_path / "run"))  # fmt: skip
    model = load_classifier(results["checkpoint_best"])
    data = FakeDataModule()
    data.setup()
    images, labels = data.splits.test_images, data.splits.test_labels
    with torch.no_grad():
        predictions = model(model.preprocess(images)).argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(results["test/acc"])
    assert model.class_names == data.class_names


def test_a_rejected_run_records_its_error(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    """A config error found by `run` (as in a sweep job) before any checkpoint: `rejected`,
    with the error; a run that fails while training stays `failed` (test_reliability)."""
    cfg = compose_cfg("data=fake", "arch=gap4", "arch.input_size=16", output_dir=tmp_path / "run")
    with pytest.raises(Exception, match="input_size=16"):
        run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "rejected" and "input_size=16" in results["error"]


def test_installed_package_ships_its_configs(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build from a copy: building writes build/ beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "__pycache__", "build"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert (target / "cnn_study" / "conf" / "arch" / "cnn3.yaml").is_file()
    probe = subprocess.run(
        [sys.executable, "-c", "import cnn_study, sys; print(cnn_study.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(target))
    result = cli("--help", cwd=tmp_path, env={"PYTHONPATH": str(target)})
    assert result.returncode == 0 and "cnn3_bn" in result.stdout
