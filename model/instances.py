"""Instances found on one page, in the page's own pixel coordinates, as the pipeline hands them to writers.

pycocotools and cv2 are imported where used: the `segment` command's option parsers reach `PageInstances`
through the writers, and `docsam segment --help` imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts of COCO RLEs, int64, without decoding.

    One mask at a time: pycocotools' `area` of a list (2.0.11 under numpy 2) sizes its result with a uint8
    and raises OverflowError from 256 masks on.
    """
    from pycocotools import mask as mask_utils

    return np.fromiter((mask_utils.area(rle) for rle in rles), dtype=np.int64, count=len(rles))


def rle_run_lengths(counts: bytes | str | list[int]) -> np.ndarray:
    """The run lengths (zeros first, then ones, alternating) of a COCO RLE's `counts`, int64.

    A compressed string is read as pycocotools' `rleFrString` reads it, vectorised: every number is a
    little-endian run of 5-bit groups (chars offset by 48, bit 0x20 set while more follow, bit 0x10 of the
    last group the sign), and from the fourth on each is stored as the difference to the one two before.
    """
    if isinstance(counts, list):
        return np.asarray(counts, dtype=np.int64)
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if not len(chars):
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero((chars & 0x20) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.arange(len(chars)) - np.repeat(starts, ends - starts + 1)  # place inside its number
    values = np.add.reduceat((chars & 0x1F) << (5 * group), starts)  # groups never share bits: sum = or
    negative = (chars[ends] & 0x10) != 0
    values[negative] |= -1 << (5 * (group[ends][negative] + 1))
    for parity in (1, 2):  # counts[m] += counts[m - 2] from m = 3 on: running sums over every other one
        values[parity::2] = np.cumsum(values[parity::2])
    return values


def decode_rle_window(rle: dict, x: int, y: int, width: int, height: int) -> np.ndarray:
    """`mask_utils.decode(rle)[y : y + height, x : x + width]` as a C-contiguous bool array, decoding only
    the window (a region's box, not the page: a 400-dpi newspaper page holds 108 million pixels, and a
    paragraph's columns of such a page 40 times its box).

    The runs of ones are cut at the window's column edges and rows, the window is filled column by column
    (the RLE's order) and transposed by OpenCV (a tenth of NumPy's time for a page-sized bool array).
    """
    if not (width and height):
        return np.zeros((height, width), dtype=bool)
    import cv2

    page_height = int(rle["size"][0])
    ends = np.cumsum(rle_run_lengths(rle["counts"]))  # column-major: where each run ends
    first = x * page_height
    span = width * page_height
    starts = np.clip(ends[0:-1:2] - first, 0, span)  # runs of ones: [start, end) in the window's columns
    stops = np.clip(ends[1::2] - first, 0, span)
    starts, stops = starts[stops > starts], stops[stops > starts]
    begins, finishes = _window_runs(starts, stops, page_height, y, height)
    bounds = np.stack([begins, finishes], axis=1).reshape(-1)
    lengths = np.diff(bounds, prepend=0, append=width * height)  # zeros first, then ones, alternating
    values = np.arange(len(lengths)) % 2 == 1
    columns = np.repeat(values, lengths).reshape(width, height)
    return cv2.transpose(columns.view(np.uint8)).view(bool)


def _window_runs(
    starts: np.ndarray, stops: np.ndarray, page_height: int, y: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ones `[starts, stops)` (column-major, in columns of `page_height`) as runs of the window's
    rows `y .. y + height - 1`, column-major in columns of `height`; a run over several columns is split
    into one per column, a run outside the rows is left empty."""
    first_column, last_column = starts // page_height, (stops - 1) // page_height
    pieces = last_column - first_column + 1
    run = np.repeat(np.arange(len(starts)), pieces)
    column = first_column[run] + np.arange(len(run)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    top = np.maximum(starts[run] - column * page_height, 0)
    bottom = np.minimum(stops[run] - column * page_height, page_height)
    top, bottom = (np.clip(rows - y, 0, height) + column * height for rows in (top, bottom))
    return top, bottom


@dataclass
class PageInstances:
    """Detections of one page.

    Masks are COCO RLE dicts (`{"size": [H, W], "counts": bytes}`) so that a page with hundreds of instances
    stays small; `decode_mask(i)` gives a bool (H, W) array. Boxes are the model's regressed boxes (xyxy,
    page pixels, float, neither clipped nor ordered: the box head can regress past the page and give x2 < x1;
    writers clip and sort corners). Labels index `class_names`
    (the prompted names, background excluded). Instances are sorted by mask area, largest first.
    """

    height: int
    width: int
    class_names: list[str]
    masks: list[dict]  # K RLEs of (height, width)
    boxes: np.ndarray  # (K, 4) float64 xyxy
    scores: np.ndarray  # (K,) float64
    labels: np.ndarray  # (K,) int64, 0-based into class_names
    semantic_masks: list[dict]  # one RLE per class name (background excluded): majority-voted class maps

    def __len__(self) -> int:
        return len(self.masks)

    def decode_mask(self, index: int) -> np.ndarray:
        from pycocotools import mask as mask_utils

        return mask_utils.decode(self.masks[index]).astype(bool)

    def decode_mask_window(self, index: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """`decode_mask(index)[y : y + height, x : x + width]`, decoding only that window."""
        return decode_rle_window(self.masks[index], x, y, width, height)

    def areas(self) -> np.ndarray:
        return rle_areas(self.masks)

    def class_name(self, index: int) -> str:
        return self.class_names[int(self.labels[index])]
