"""The model as a library: misuse of `DocSAM.forward` is refused in words, not by a torch error deep down."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model import DocSAM

NAMES = ["table", "PubLayNet _background_"]


def forward(model, pixels: torch.Tensor, class_names) -> None:
    with torch.no_grad():
        model(pixels, class_names=class_names)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (torch.rand(1, 1, 64, 64) * 255, r"\(N, 3, H, W\) BGR, got shape \(1, 1, 64, 64\)"),
        (torch.rand(3, 64, 64) * 255, r"\(N, 3, H, W\) BGR, got shape \(3, 64, 64\)"),
        (
            (torch.rand(1, 3, 64, 64) * 255).to(torch.uint8),
            r"weights' dtype \(torch.float32\).*got torch.uint8",
        ),
        (torch.rand(1, 3, 64, 64).double() * 255, r"weights' dtype \(torch.float32\).*got torch.float64"),
        (np.zeros((1, 3, 64, 64), np.float32), r"must be a tensor \(N, 3, H, W\) BGR, got ndarray"),
    ],
)
def test_pixels_of_another_shape_or_dtype_are_refused(tiny_model, pixels, message):
    with pytest.raises(ValueError, match=message):
        forward(tiny_model, pixels, [NAMES] * pixels.shape[0])


@pytest.mark.parametrize("class_names", [NAMES, "ab", [NAMES[0], NAMES], [[NAMES[0], 3]]])
def test_class_names_that_are_not_one_list_of_names_per_image_are_refused(tiny_model, class_names):
    """A flat list of two names for two images would otherwise prompt each image with its name's letters."""
    with pytest.raises(ValueError, match="one list of names per image"):
        forward(tiny_model, torch.rand(2, 3, 64, 64) * 255, class_names)


def test_pixels_of_another_float_dtype_run_under_autocast(tiny_model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        forward(tiny_model, (torch.rand(1, 3, 64, 64) * 255).bfloat16(), [NAMES])


def test_a_single_image_too_small_for_a_one_channel_per_group_decoder_is_refused(tiny_model):
    """With `feature_size` 32 (one channel per GroupNorm group, as the tiny config), a single image of at
    most 32 x 32 px leaves one value per group at the stride-32 level: GroupNorm failed deep inside the
    pixel decoder ("Expected more than 1 value per channel when training"). One side over 32 runs."""
    assert tiny_model.config.feature_size == 32
    for height, width in [(32, 32), (16, 24), (1, 1)]:
        with pytest.raises(ValueError, match=rf"side of more than 32 px .* got {height}x{width}$"):
            forward(tiny_model, torch.rand(1, 3, height, width) * 255, [NAMES])
    forward(tiny_model, torch.rand(1, 3, 32, 33) * 255, [NAMES])
    forward(tiny_model, torch.rand(2, 3, 32, 32) * 255, [NAMES] * 2)


def test_a_single_image_too_small_for_one_channel_per_group_mask_feature_branches_is_refused(tiny_config):
    """`mask_feature_size` 64 makes the mask-feature fusion's branches 32 wide, one channel per GroupNorm
    group at the stride-32 level even where `feature_size` is wider: a single image of at most 32 x 32 px
    failed there with GroupNorm's "Expected more than 1 value per channel when training"."""
    torch.manual_seed(0)
    model = DocSAM(replace(tiny_config, feature_size=64)).eval()
    assert model.config.mask_feature_size == 64
    with pytest.raises(ValueError, match=r"side of more than 32 px .* got 32x32$"):
        forward(model, torch.rand(1, 3, 32, 32) * 255, [NAMES])
    forward(model, torch.rand(1, 3, 32, 33) * 255, [NAMES])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        # transformers' Mask2Former convention, (N, H, W): failed in an interpolation deep in the decoder.
        ({"pixel_mask": torch.ones(2, 48, 40)}, r"pixel_mask .* \(2, 1, 48, 40\) .* got \(2, 48, 40\)"),
        # A mask at another size ran, its size taken as the image's: the proposals covered half the image.
        ({"pixel_mask": torch.ones(2, 1, 24, 20)}, r"pixel_mask .* \(2, 1, 48, 40\) .* got \(2, 1, 24, 20\)"),
        # One rectangle for two images ran, the second image positioned in the first's rectangle.
        ({"image_bboxes": torch.tensor([[0, 0, 40, 24]])}, r"image_bboxes .* \(2, 4\) .* got \(1, 4\)"),
        ({"image_bboxes": torch.tensor([0, 0, 40, 48])}, r"image_bboxes .* \(2, 4\) .* got \(4,\)"),
        ({"image_bboxes": [[0, 0, 40, 48]] * 2}, r"image_bboxes must be a tensor .* got list"),
    ],
)
def test_a_pixel_mask_or_rectangles_not_one_per_image_at_its_size_are_refused(tiny_model, inputs, message):
    with pytest.raises(ValueError, match=message), torch.no_grad():
        tiny_model(torch.rand(2, 3, 48, 40) * 255, class_names=[NAMES] * 2, **inputs)
