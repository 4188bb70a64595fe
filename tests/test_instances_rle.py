"""Reading COCO RLEs without pycocotools' whole-page decode: the run lengths of a compressed string and a
window of the mask, checked against pycocotools on masks of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from model.instances import PageInstances, decode_rle_window, rle_areas, rle_run_lengths


def encode(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def masks(seed: int = 0):
    rng = np.random.default_rng(seed)
    for trial in range(120):
        height, width = (int(side) for side in rng.integers(1, 40, 2))
        kind = trial % 4
        if kind == 0:
            yield rng.random((height, width)) < 0.5
        elif kind == 1:
            yield np.zeros((height, width), bool)
        elif kind == 2:
            yield np.ones((height, width), bool)
        else:
            mask = np.zeros((height, width), bool)
            mask[rng.integers(0, height) :, rng.integers(0, width) :] = True
            yield mask


@pytest.mark.parametrize("as_text", [False, True])
def test_run_lengths_are_pycocotools_counts(as_text):
    for mask in masks():
        rle = encode(mask)
        counts = rle["counts"].decode("ascii") if as_text else rle["counts"]
        lengths = rle_run_lengths(counts)
        assert lengths.sum() == mask.size
        again = mask_utils.frPyObjects({"size": rle["size"], "counts": lengths.tolist()}, *rle["size"])
        assert again["counts"] == rle["counts"]


def test_run_lengths_of_large_pages_with_negative_differences():
    mask = np.zeros((3508, 2480), bool)
    mask[100:3000, 50:60] = True
    mask[5:7, 2000:2470] = True  # short runs after long ones: stored as negative differences
    rle = encode(mask)
    assert (decode_rle_window(rle, 0, 0, 2480, 3508) == mask).all()
    assert rle_run_lengths([3, 4]).tolist() == [3, 4]  # uncompressed counts pass through


def test_windows_are_the_decoded_masks_cut():
    rng = np.random.default_rng(1)
    for mask in masks(seed=2):
        rle = encode(mask)
        height, width = mask.shape
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(0, width - x + 1)), int(rng.integers(0, height - y + 1))
        window = decode_rle_window(rle, x, y, w, h)
        assert window.shape == (h, w) and window.dtype == bool and window.flags.c_contiguous
        assert (window == mask_utils.decode(rle).astype(bool)[y : y + h, x : x + w]).all()


def test_a_run_ending_where_the_window_starts_stays_outside_it():
    """The last run of ones before the window ends exactly on its first pixel: nothing of it is inside."""
    mask = np.zeros((4, 4), bool)
    mask[:, 0] = True
    assert not decode_rle_window(encode(mask), 1, 0, 3, 4).any()
    mask[:2, 1] = True
    np.testing.assert_array_equal(decode_rle_window(encode(mask), 1, 2, 2, 2), np.zeros((2, 2), bool))


def test_empty_counts_have_no_runs():
    for counts in (b"", ""):
        assert rle_run_lengths(counts).tolist() == []


def test_areas_are_pixel_counts_beyond_256_masks():
    rng = np.random.default_rng(3)
    stack = rng.random((300, 6, 5)) < 0.5
    rles = [encode(mask) for mask in stack]
    areas = rle_areas(rles)
    assert areas.dtype == np.int64
    np.testing.assert_array_equal(areas, stack.sum(axis=(1, 2)))


def test_a_window_of_a_tall_page_allocates_about_the_window():
    """A region's window is filled without its columns' full height: a paragraph of a 400-dpi newspaper
    page (12000 rows) took 40 times its box in memory and time before."""
    import tracemalloc

    mask = np.zeros((20000, 40), bool)
    mask[100:120, 5:25] = True
    rle = encode(mask)
    tracemalloc.start()
    try:
        window = decode_rle_window(rle, 5, 100, 20, 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.all()
    assert peak < 20_000  # the window's columns over the page's height: 400,000 bytes


def test_page_instances_give_their_masks_areas_and_class_names():
    first, second = np.zeros((2, 6, 5), bool)
    first[1:4, 2:5] = True
    second[5, 0] = True
    page = PageInstances(
        height=6,
        width=5,
        class_names=["text", "table"],
        masks=[encode(first), encode(second)],
        boxes=np.zeros((2, 4)),
        scores=np.array([0.9, 0.5]),
        labels=np.array([1, 0]),
        semantic_masks=[],
    )
    assert len(page) == 2
    np.testing.assert_array_equal(page.decode_mask(0), first)
    np.testing.assert_array_equal(page.decode_mask_window(0, 2, 1, 2, 3), first[1:4, 2:4])
    assert page.areas().tolist() == [9, 1]
    assert [page.class_name(0), page.class_name(1)] == ["table", "text"]
