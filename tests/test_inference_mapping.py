"""Mapping results from the resized page back to the original page's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from model.inference.mapping import boxes_to_original, encode_resampled, nearest_sources, resample_masks


@pytest.mark.parametrize("seed", range(4))
def test_encoded_rles_equal_pycocotools_on_the_resampled_masks(seed):
    """Enlarging, shrinking and mixed scales; full, empty and random masks."""
    rng = np.random.default_rng(seed)
    for _ in range(60):
        height, width = (int(side) for side in rng.integers(1, 14, 2))
        size = tuple(int(side) for side in rng.integers(1, 33, 2))
        masks = rng.random((int(rng.integers(0, 4)), height, width)) < rng.random()
        if len(masks):
            masks[0] = rng.random() < 0.5  # all set or all clear
        encoded = encode_resampled(torch.from_numpy(masks), size)
        resampled = resample_masks(torch.from_numpy(masks), size).numpy()
        assert len(encoded) == len(masks)
        for rle, mask in zip(encoded, resampled, strict=True):
            expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert rle == {"size": list(size), "counts": expected["counts"]}


def test_resampling_samples_pixel_centres():
    """Integer enlargement replicates pixels; any scale maps pixel centres to the pixel containing them."""
    mask = np.random.default_rng(5).random((3, 4, 5)) < 0.5
    enlarged = resample_masks(torch.from_numpy(mask), (8, 15)).numpy()
    np.testing.assert_array_equal(enlarged, mask.repeat(2, axis=1).repeat(3, axis=2))
    for source, target in [(7, 3), (3, 7), (256, 300), (1131, 3508)]:
        centres = (np.arange(target) + 0.5) * source / target
        np.testing.assert_array_equal(nearest_sources(source, target), np.floor(centres).astype(np.int64))


def test_boxes_scale_per_axis_to_xyxy():
    boxes = torch.tensor([[10.0, 20.0, 30.0, -5.0], [0.0, 0.0, 192.0, 96.0]])
    mapped = boxes_to_original(boxes, resized=(96, 192), original=(60, 300))
    scale = np.array([300 / 192, 60 / 96, 300 / 192, 60 / 96])
    np.testing.assert_allclose(mapped, np.array([[10, 20, 40, 15], [0, 0, 192, 96]]) * scale)
