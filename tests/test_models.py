"""The CNN family: output shapes, the studies' exact parameter counts, clear size errors."""

from __future__ import annotations

from pathlib import Path

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


ARCHS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "arch").glob("*.yaml"))
BACKBONE_TARGETS = ("torchvision_backbone", "timm_backbone")


@pytest.mark.parametrize("arch", ARCHS)
def test_every_bundled_architecture_keeps_the_network_protocol(arch: str, compose_cfg) -> None:
    """Built as a run builds it (`check_network`): a module that declares its input and
    maps it to one logit per class."""
    from hydra.utils import instantiate

    from cnn_study.inputs import declared_input
    from cnn_study.models.protocol import check_network

    cfg = compose_cfg("data=fake", f"arch={arch}")
    backbone = str(cfg.arch._target_).endswith(BACKBONE_TARGETS)
    if backbone:  # random weights, a small input: the same arithmetic, offline and fast
        cfg = compose_cfg("data=fake", f"arch={arch}", "arch.weights=none", "arch.input_size=64")
    network = check_network(instantiate(cfg.arch, num_classes=7), 7, str(cfg.arch._target_))
    side = declared_input(network).size
    with torch.no_grad():
        assert network.eval()(torch.zeros(2, 3, side, side)).shape == (2, 7)


def test_a_builder_that_breaks_the_protocol_is_one_line() -> None:
    from cnn_study.errors import CnnStudyError
    from cnn_study.inputs import InputSpec, declare_input
    from cnn_study.models.protocol import check_network

    with pytest.raises(CnnStudyError, match=r"returned a dict, not a torch nn\.Module"):
        check_network({}, 10, "my.builder")
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(CnnStudyError, match=r"my\.builder declares no input size; end the builder"):
        check_network(bare, 10, "my.builder")
    declare_input(bare, InputSpec(size=8))
    with pytest.raises(CnnStudyError, match="gives 10 outputs for 4 classes"):
        check_network(bare, 4, "my.builder")
    assert check_network(bare, 10, "my.builder") is bare
