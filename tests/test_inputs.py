"""The input spec: declared by the builder, completed once, stored in the checkpoint and
applied by the one `Preprocess` — for fresh, pretrained and transferred weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from cnn_study.data.fake import FakeDataModule
from cnn_study.inputs import InputSpec, Preprocess, checkpoint_input, declared_input
from cnn_study.models.backbones import timm_backbone, torchvision_backbone
from cnn_study.module import load_classifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES, ComposeFn

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_preprocess_resizes_then_normalises() -> None:
    spec = InputSpec(size=4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x = Preprocess(spec, channels_last=False)(images)
    assert x.shape == (2, 3, 4, 4)
    assert x[:, 0].eq(1.0).all() and x[:, 1].eq(3.0).all() and x[:, 2].eq(1.0).all()


def test_builders_declare_size_and_only_trained_weights_declare_normalisation(
    tmp_path: Path,
) -> None:
    fresh = torchvision_backbone("resnet18", 10, weights="none", input_size=32)
    assert declared_input(fresh) == InputSpec(size=32)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    trained = torchvision_backbone("resnet18", 10, weights=str(tmp_path / "resnet18.pth"))
    assert declared_input(trained) == InputSpec(224, *IMAGENET, "bilinear")
    # Completing with the data's statistics changes only what the weights left open.
    assert declared_input(trained).completed((0.1,) * 3, (0.2,) * 3) == declared_input(trained)
    assert declared_input(fresh).completed((0.1,) * 3, (0.2,) * 3).mean == (0.1,) * 3
    torch.save(
        timm_backbone("efficientnet_b0", 10, weights="none").state_dict(), tmp_path / "b0.pth"
    )
    timm_trained = timm_backbone("efficientnet_b0", 10, weights=str(tmp_path / "b0.pth"))
    assert declared_input(timm_trained).interpolation == "bicubic"  # timm's pretrained_cfg


def test_the_checkpoint_carries_the_spec_of_the_run(compose_cfg: ComposeFn, tmp_path) -> None:
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    common = ("data=fake", "debug=limit", *NO_FIGURES)
    weights = f"arch.weights={tmp_path}/resnet18.pth"
    pretrained = run(compose_cfg(*common, "arch=resnet18", weights, "arch.input_size=40",
                                 output_dir=tmp_path / "pretrained"))  # fmt: skip
    fresh = run(compose_cfg(*common, output_dir=tmp_path / "fresh"))
    data = FakeDataModule()
    data.setup()
    loaded = torch.load(pretrained["checkpoint_last"], weights_only=False)
    # decoded_size: fake images are stored at 32 px, whatever the network's size.
    assert checkpoint_input(loaded) == InputSpec(40, *IMAGENET, "bilinear", decoded_size=32)
    assert load_classifier(fresh["checkpoint_last"]).input_spec == InputSpec(
        32, tuple(data.mean), tuple(data.std), decoded_size=32
    )


def test_checkpoints_from_before_the_spec_still_load(compose_cfg: ComposeFn, tmp_path) -> None:
    results = run(compose_cfg("data=fake", "debug=limit", *NO_FIGURES))
    checkpoint = torch.load(results["checkpoint_last"], weights_only=False)
    spec = checkpoint["hyper_parameters"].pop("input_spec")
    checkpoint["hyper_parameters"].update(
        input_size=spec["size"], mean=spec["mean"], std=spec["std"]
    )
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    model = load_classifier(old)
    assert model.input_spec == InputSpec.from_dict({**spec, "decoded_size": None})
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    current = load_classifier(results["checkpoint_last"])
    with torch.no_grad():
        assert torch.equal(model(model.preprocess(images)), current(current.preprocess(images)))


def test_an_unknown_interpolation_names_the_valid_ones() -> None:
    with pytest.raises(Exception, match=r"'area'; choose one of \['bilinear', 'bicubic'"):
        InputSpec(size=8, interpolation="area")
