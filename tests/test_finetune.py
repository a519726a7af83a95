"""Freeze policies freeze exactly what they name, on torchvision, timm and cnn_study CNNs."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from cnn_study.callbacks.safeguards import FrozenBatchNorm
from cnn_study.errors import CnnStudyError
from cnn_study.finetune import Finetune, head, last_block, linear, partial, structure, train_all
from cnn_study.models.backbones import torchvision_backbone
from cnn_study.models.cnn import build_cnn
from cnn_study.module import ImageClassifier


def gap4_bn() -> nn.Module:
    return build_cnn(10, [32, 64, 128, 256], 512, 64, padding=0, batch_norm=True,
                     pooling="global_avg")  # fmt: skip


NETWORKS = {
    "resnet18": lambda: torchvision_backbone("resnet18", 10, weights="none"),
    "timm_efficientnet_lite0": lambda: timm.create_model("efficientnet_lite0", num_classes=10),
    "gap4_bn": gap4_bn,
}


def parameter_ids(modules: list[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def trainable_ids(network: nn.Module) -> set[int]:
    return {id(p) for p in network.parameters() if p.requires_grad}


def expected_trainable(policy: str, network: nn.Module) -> set[int]:
    parts = structure(network)
    named = {
        "linear": [parts.classifier],
        "head": parts.top,
        "last_block": [*parts.stages[-1], *parts.top],
        "partial": [m for stage in parts.stages[2:] for m in stage] + parts.top,
    }[policy]
    return parameter_ids(named)


POLICIES = {"linear": linear, "head": head, "last_block": last_block, "partial": partial}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(NETWORKS))
def test_policy_trains_exactly_what_it_names(policy: str, name: str) -> None:
    network = NETWORKS[name]()
    POLICIES[policy](network)
    trainable = trainable_ids(network)
    assert trainable == expected_trainable(policy, network)
    assert trainable and trainable != {id(p) for p in network.parameters()}
    # Frozen BatchNorm layers keep their running statistics: eval mode in training epochs.
    module = ImageClassifier(network, optimizer=None, class_names=[str(i) for i in range(10)])
    module.train()
    FrozenBatchNorm().on_train_epoch_start(None, module)
    for layer in network.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            frozen = not any(p.requires_grad for p in layer.parameters())
            assert layer.training != frozen


def test_structure_of_known_networks() -> None:
    resnet = structure(NETWORKS["resnet18"]())
    assert len(resnet.stages) == 4 and len(resnet.stem) == 2
    assert isinstance(resnet.classifier, nn.Linear) and resnet.top == [resnet.classifier]
    cnn = structure(gap4_bn())
    assert len(cnn.stages) == 4 and cnn.stem == []
    assert len(cnn.top) == 2  # both fully connected layers
    effnet = structure(NETWORKS["timm_efficientnet_lite0"]())
    assert len(effnet.stages) == 7


def test_resnet18_linear_probe_has_5130_trainable_parameters() -> None:
    network = torchvision_backbone("resnet18", 10, weights="none")
    linear(network)
    assert sum(p.numel() for p in network.parameters() if p.requires_grad) == 5_130


def test_optimizer_receives_only_trainable_parameters() -> None:
    network = torchvision_backbone("resnet18", 10, weights="none")
    partial(network, frozen_stages=3)
    module = ImageClassifier(
        network,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        class_names=[str(i) for i in range(10)],
    )
    optimizer = module.configure_optimizers()
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == trainable_ids(network)


def test_backbone_learning_rate_scale() -> None:
    from functools import partial as bind

    network = torchvision_backbone("resnet18", 10, weights="none")
    module = ImageClassifier(
        network,
        optimizer=bind(torch.optim.Adam, lr=1e-3),
        class_names=[str(i) for i in range(10)],
        backbone_lr_scale=0.1,
    )
    head_group, backbone_group = module.configure_optimizers().param_groups
    assert {id(p) for p in head_group["params"]} == parameter_ids([network.fc])
    assert head_group["lr"] == 1e-3 and backbone_group["lr"] == pytest.approx(1e-4)


def test_partial_rejects_too_many_stages() -> None:
    with pytest.raises(CnnStudyError, match=r"frozen_stages=9.*choose 0 to 3"):
        partial(NETWORKS["resnet18"](), frozen_stages=9)


def test_unknown_structure_is_a_clear_error() -> None:
    with pytest.raises(CnnStudyError, match="do not know the stages of Sequential"):
        linear(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)))


def test_full_finetuning_needs_trained_weights() -> None:
    with pytest.raises(CnnStudyError, match="from_checkpoint"):
        Finetune(train_all, needs_weights=True)(gap4_bn())
