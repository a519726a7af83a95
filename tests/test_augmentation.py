"""Batched augmentation keeps torchvision's semantics, per image."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cnn_study.augmentation import (
    ColorJitter,
    Pipeline,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotateScale,
)


def test_random_crop_takes_a_window_of_the_padded_image_per_image() -> None:
    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 8)
    out = RandomCrop(padding=2)(images)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for image, result in zip(padded, out):
        matches = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if torch.equal(image[:, top : top + 8, left : left + 8], result)
        ]
        assert matches, "output is not a window of the zero-padded input"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets are drawn per image, not once per batch


def test_horizontal_flip_rate_and_content() -> None:
    torch.manual_seed(0)
    images = torch.rand(4000, 1, 2, 3)
    out = RandomHorizontalFlip(p=0.3)(images)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped | kept).all())
    assert abs(flipped.float().mean().item() - 0.3) < 0.03


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("brightness", TF.adjust_brightness),
        ("contrast", TF.adjust_contrast),
        ("saturation", TF.adjust_saturation),
    ],
)
def test_color_adjustments_match_torchvision(name: str, reference) -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 3, 8, 8)
    factors = 0.5 + torch.rand(16, 1, 1, 1)
    out = ColorJitter.adjust(images, name, factors)
    expected = torch.stack([reference(img, float(f)) for img, f in zip(images, factors.flatten())])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_color_jitter_draws_a_factor_per_image_within_range() -> None:
    torch.manual_seed(0)
    images = 0.2 + 0.4 * torch.rand(256, 3, 4, 4)  # stays below 1 when brightened by 1.5
    out = ColorJitter(brightness=0.5)(images)
    ratios = (out / images).flatten(1)
    per_image = ratios[:, 0]
    torch.testing.assert_close(ratios, per_image[:, None].expand_as(ratios))
    assert per_image.min() >= 0.5 and per_image.max() <= 1.5
    assert per_image.max() - per_image.min() > 0.8  # spread over the range, per image


def test_pipeline_keeps_shape_range_and_named_steps() -> None:
    pipeline = Pipeline(
        crop=RandomCrop(4), flip=RandomHorizontalFlip(), jitter=ColorJitter(0.2, 0.2, 0.2)
    )
    assert [name for name, _ in pipeline.named_children()] == ["crop", "flip", "jitter"]
    out = pipeline(torch.rand(8, 3, 32, 32))
    assert out.shape == (8, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_rotate_scale_identity_and_zoom() -> None:
    images = torch.rand(4, 3, 16, 16)
    same = RandomRotateScale(degrees=0, scale=(1.0, 1.0))(images)
    torch.testing.assert_close(same, images, atol=1e-5, rtol=1e-5)
    # A horizontal ramp zoomed ×2 about the centre: column c shows input column
    # 8 + (c + 0.5 - 8) / 2 - 0.5 (pixel centres), exact under bilinear sampling.
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16) / 16
    zoomed = RandomRotateScale(degrees=0, scale=(2.0, 2.0))(ramp)
    columns = torch.arange(16.0)
    expected = (8 + (columns + 0.5 - 8) / 2 - 0.5) / 16
    torch.testing.assert_close(zoomed[0, 0, 8], expected, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    turned = RandomRotateScale(degrees=20, scale=(0.8, 1.2))(images)
    assert turned.shape == images.shape and not torch.allclose(turned, images)
