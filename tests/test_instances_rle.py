"""Reading COCO RLEs without pycocotools' whole-page decode: the run lengths of a compressed string and a
window of the mask, checked against pycocotools on masks of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from model.instances import decode_rle_window, rle_run_lengths


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
