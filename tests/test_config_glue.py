"""Resolvers behind the YAML files: precision per device, roots outside the repo."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from cnn_study import paths
from cnn_study.config import auto_precision
from tests.conftest import ComposeFn


@pytest.mark.parametrize(
    ("cuda", "native_bf16", "accelerator", "expected"),
    [
        (False, False, "auto", "32-true"),
        (True, True, "auto", "bf16-mixed"),  # A100, H100: bf16 in hardware
        (True, False, "auto", "16-mixed"),  # V100, T4: bf16 only emulated, slow
        (True, True, "gpu", "bf16-mixed"),
        (True, True, "cpu", "32-true"),
    ],
)
def test_auto_precision(cuda, native_bf16, accelerator, expected, monkeypatch: pytest.MonkeyPatch):
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native_bf16 or including_emulation  # every CUDA GPU emulates bf16

    # the stand-in has torch's own signature: a call torch would refuse fails here too
    def parameters(function) -> list[tuple]:
        return [
            (p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()
        ]

    assert parameters(is_bf16_supported) == parameters(torch.cuda.is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert auto_precision(accelerator) == expected


def test_trainer_precision_follows_the_accelerator(compose_cfg: ComposeFn) -> None:
    assert compose_cfg("trainer=cpu").trainer.precision == "32-true"


def test_roots_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_STUDY_OUTPUT", str(tmp_path / "o"))
    monkeypatch.setenv("CNN_STUDY_CACHE", str(tmp_path / "c"))
    assert paths.output_root() == tmp_path / "o"
    assert paths.cache_root() == tmp_path / "c"
    monkeypatch.delenv("CNN_STUDY_OUTPUT")
    monkeypatch.delenv("CNN_STUDY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.output_root() == tmp_path / "home" / "cnn_study" / "outputs"
    assert paths.cache_root() == tmp_path / "home" / ".cache" / "cnn_study"


def test_data_root_defaults_to_env_then_local(compose_cfg: ComposeFn, monkeypatch, tmp_path):
    assert compose_cfg().data.root == "./data"
    monkeypatch.setenv("CNN_STUDY_DATA", str(tmp_path))
    assert compose_cfg().data.root == str(tmp_path)
