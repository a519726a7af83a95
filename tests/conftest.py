"""Shared fixtures: configs composed the way `python -m cnn_study` composes them, tiny data."""

from __future__ import annotations

import os

# No hub is reachable in tests: fail at once instead of huggingface_hub's retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist each worker (and the processes its tests start) computes on one
# thread: two workers on two cores, instead of four threads fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from cnn_study.data.fake import class_pattern_images

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

ComposeFn = Callable[..., DictConfig]

# Runs that test something else skip the test-end figures (seconds each; see test_gradcam.py).
NO_FIGURES = ("~callbacks.gradcam", "~callbacks.evaluation_figures")


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Runs and caches of every test go to temporary folders, never to $HOME or the repo."""
    monkeypatch.setenv("CNN_STUDY_OUTPUT", str(tmp_path_factory.mktemp("outputs")))
    monkeypatch.setenv("CNN_STUDY_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CNN_STUDY_DATA", raising=False)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> ComposeFn:
    """Compose the app's config with overrides, its output dir under tmp_path."""

    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_run_config(output_dir or tmp_path / "run", *overrides)

    return _compose


def write_class_tree(root: Path, classes: list[str], per_class: int, seed: int) -> None:
    """PNG files root/<class>/NNNN.png, 32×32 RGB, with a class-dependent pattern."""
    images, labels = class_pattern_images(
        per_class * len(classes), len(classes), 32, torch.Generator().manual_seed(seed)
    )
    counts = dict.fromkeys(classes, 0)
    for image, label in zip(images, labels.tolist()):
        name = classes[label]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{counts[name]:04d}.png")
        counts[name] += 1


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 folder export: train/<class>/ (8 each) and test/<class>/ (3 each)."""
    root = tmp_path_factory.mktemp("cifar10-folder")
    write_class_tree(root / "train", CIFAR_CLASSES, per_class=8, seed=1)
    write_class_tree(root / "test", CIFAR_CLASSES, per_class=3, seed=2)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class image folder (root/<class>/*.png) with 10 images a class."""
    root = tmp_path_factory.mktemp("image-folder")
    write_class_tree(root, ["cats", "dogs", "owls"], per_class=10, seed=3)
    return root


def compose_run_config(output_dir: Path, *overrides: str) -> DictConfig:
    """A run's config composed as the command line would, its outputs in `output_dir`."""
    with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def command_here(
    entry: Callable[[], object],
    argv: list[str],
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """A command (`cnn_study.__main__.cli`, a study's `main`) run in this process with
    `argv`, from `cwd`: its exit code and output. No second start of torch and Lightning
    (seconds each); signals, entry points and launchers keep their processes elsewhere."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    import cnn_study.__main__ as app
    from cnn_study import sweep

    monkeypatch.chdir(cwd)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["cnn_study", *argv])
    monkeypatch.setattr(app, "JOBS_STARTED", [])  # per process: fresh for each command
    monkeypatch.setattr(sweep, "_UNFINISHED", [])
    try:
        returned = entry()
        code = returned if isinstance(returned, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def execute_report_notebook(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """Run notebooks/study_report.ipynb on `folder`: its text output and its image count."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CNN_STUDY_SWEEP", str(folder))
    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "study_report.ipynb", 4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                   for o in outputs)  # fmt: skip
    return text, sum("image/png" in o.get("data", {}) for o in outputs)
