"""The CNN family: output shapes, the studies' exact parameter counts, clear size errors."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from cnn_study.errors import CnnStudyError
from cnn_study.models.cnn import build_cnn
from tests.conftest import ComposeFn

ARCHS = ["cnn2", "cnn3", "cnn4", "cnn5", "cnn3_bn", "gap4", "gap4_slim", "gap4_bn"]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_classes", [4, 10])
def test_output_shape(arch: str, num_classes: int, compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg(f"arch={arch}")
    net = instantiate(cfg.arch, num_classes=num_classes).eval()
    size = cfg.arch.input_size
    assert net(torch.rand(3, 3, size, size)).shape == (3, num_classes)


@pytest.mark.parametrize(
    ("arch", "expected"), [("gap4", 525_130), ("gap4_slim", 133_034), ("gap4_bn", 526_090)]
)
def test_study_b_parameter_counts(arch: str, expected: int, compose_cfg: ComposeFn) -> None:
    net = instantiate(compose_cfg(f"arch={arch}").arch, num_classes=10)
    assert count(net) == expected


def test_depth_and_batchnorm_follow_config(compose_cfg: ComposeFn) -> None:
    for depth, arch in [(2, "cnn2"), (3, "cnn3"), (4, "cnn4"), (5, "cnn5")]:
        net = instantiate(compose_cfg(f"arch={arch}").arch, num_classes=10)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == depth
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    bn_net = instantiate(compose_cfg("arch=cnn3_bn").arch, num_classes=10)
    norms = [m for m in bn_net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 3


def test_regularization_dropout_reaches_the_head(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg("arch=cnn3", "regularization.dropout=0.4")
    net = instantiate(cfg.arch, num_classes=10)
    dropouts = [m.p for m in net.classifier.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.4]


def test_too_small_input_names_the_smallest_size() -> None:
    with pytest.raises(CnnStudyError, match=r"input_size=32 .* >= 46"):
        build_cnn(10, [32, 64, 128, 256], fc_hidden=512, input_size=32, padding=0)


def test_no_inplace_relu() -> None:
    # In-place ReLUs break Captum's layer hooks (captum #156).
    net = build_cnn(10, [8, 16], fc_hidden=16, input_size=32, batch_norm=True)
    assert all(not m.inplace for m in net.modules() if isinstance(m, torch.nn.ReLU))
