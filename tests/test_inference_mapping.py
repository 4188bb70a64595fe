"""Mapping results from the resized page back to the original page's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from model.inference import mapping
from model.inference.mapping import (
    boxes_to_original,
    encode_resampled,
    encode_resampled_stacks,
    nearest_sources,
    resample_masks,
    to_page_instances,
)
from model.inference.merge import SlideWindowResult
from model.instances import rle_areas


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
    boxes = np.array([[10.0, 20.0, 30.0, -5.0], [0.0, 0.0, 192.0, 96.0]], dtype=np.float32)
    mapped = boxes_to_original(boxes, resized=(96, 192), original=(60, 300))
    scale = np.array([300 / 192, 60 / 96, 300 / 192, 60 / 96])
    np.testing.assert_allclose(mapped, np.array([[10, 20, 40, 15], [0, 0, 192, 96]]) * scale)


def _expected_rles(masks: np.ndarray, size: tuple[int, int]) -> list[bytes]:
    resampled = resample_masks(torch.from_numpy(masks), size).numpy()
    return [mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"] for mask in resampled]


@pytest.mark.parametrize("budget", [1 << 28, 40, 1])
def test_stacks_are_encoded_together_in_batches_of_any_size(monkeypatch, budget):
    """Instances and semantic maps of a page share the transfers; a small budget splits them into many
    batches (a part larger than the budget goes alone), an empty stack stays empty."""
    monkeypatch.setattr(mapping, "_CHUNK_BUDGET", budget)
    rng = np.random.default_rng(9)
    stacks = [rng.random((count, 5, 7)) < 0.4 for count in (3, 0, 4)]
    for size in [(11, 13), (4, 3)]:
        encoded = encode_resampled_stacks([torch.from_numpy(stack) for stack in stacks], size)
        assert [len(rles) for rles in encoded] == [3, 0, 4]
        for rles, stack in zip(encoded, stacks, strict=True):
            assert [rle["counts"] for rle in rles] == _expected_rles(stack, size)
            assert all(rle["size"] == list(size) for rle in rles)


def test_single_row_masks_have_no_row_changes():
    masks = np.array([[[True, False, True, True]], [[False, False, False, False]]])
    for size in [(1, 4), (3, 9), (1, 2)]:
        (encoded,) = encode_resampled_stacks([torch.from_numpy(masks)], size)
        assert [rle["counts"] for rle in encoded] == _expected_rles(masks, size)


def test_page_instances_are_reordered_by_their_area_in_the_original_page():
    """Resized 3 x 3 to original 4 x 3 repeats the middle row: the second mask (2 pixels there, 4 in the
    original) overtakes the first (3 pixels, 3 in the original), and its box, score and label follow."""
    masks = torch.zeros((2, 3, 3), dtype=torch.bool)
    masks[0, 0, :] = True
    masks[1, 1, :2] = True
    result = SlideWindowResult(
        masks=masks,
        boxes_xywh=torch.tensor([[0.0, 0.0, 3.0, 1.0], [0.0, 1.0, 2.0, 1.0]]),
        scores=torch.tensor([0.9, 0.8]),
        labels=torch.tensor([0, 1]),
        semantic=masks.clone(),
    )
    page = to_page_instances(result, resized=(3, 3), original=(4, 3), class_names=["text", "table"])
    assert (page.height, page.width, page.class_names) == (4, 3, ["text", "table"])
    assert page.areas().tolist() == [4, 3]
    np.testing.assert_allclose(page.scores, [0.8, 0.9])
    assert page.labels.tolist() == [1, 0]
    np.testing.assert_allclose(page.boxes, [[0, 4 / 3, 2, 8 / 3], [0, 0, 3, 4 / 3]])
    assert [rle_areas([rle])[0] for rle in page.semantic_masks] == [3, 4]  # in class order, not re-sorted


def test_batches_stay_within_the_budget_and_a_larger_part_goes_alone():
    """The budget bounds the device memory of one pass (the output alone would not show a single batch)."""
    parts = [torch.zeros(size) for size in (10, 10, 10, 30, 5)]
    sizes = [[len(part) for part in batch] for batch in mapping._batches(parts, 25)]
    assert sizes == [[10, 10], [10], [30], [5]]
    exactly_full = [[len(part) for part in batch] for batch in mapping._batches(parts[:2], 20)]
    assert exactly_full == [[10, 10]]
    after_a_large_part = [[len(part) for part in batch] for batch in mapping._batches(parts[1:4][::-1], 20)]
    assert after_a_large_part == [[30], [10, 10]]
    assert [len(batch) for batch in mapping._batches(parts, 1 << 28)] == [5]
    assert list(mapping._batches([], 25)) == []


def test_batches_count_every_element_against_the_budget():
    """26 elements over a budget of 25 take two passes, at the start and after a part that went alone."""
    parts = [torch.zeros(size) for size in (10, 16, 30, 10, 16)]
    sizes = [[len(part) for part in batch] for batch in mapping._batches(parts, 25)]
    assert sizes == [[10], [16], [30], [10], [16]]


def test_three_stacks_share_one_transfer():
    """Every part of a batch finds its own changes and column ends among the flags of all of them."""
    rng = np.random.default_rng(11)
    stacks = [rng.random((count, 5, 7)) < 0.4 for count in (2, 1, 3)]
    encoded = encode_resampled_stacks([torch.from_numpy(stack) for stack in stacks], (9, 12))
    assert [[rle["counts"] for rle in rles] for rles in encoded] == [
        _expected_rles(s, (9, 12)) for s in stacks
    ]
