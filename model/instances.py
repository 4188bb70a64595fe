"""Instances found on one page, in the page's own pixel coordinates, as the pipeline hands them to writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts of COCO RLEs, int64, without decoding.

    One mask at a time: pycocotools' `area` of a list (2.0.11 under numpy 2) sizes its result with a uint8
    and raises OverflowError from 256 masks on.
    """
    return np.fromiter((mask_utils.area(rle) for rle in rles), dtype=np.int64, count=len(rles))


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
        return mask_utils.decode(self.masks[index]).astype(bool)

    def areas(self) -> np.ndarray:
        return rle_areas(self.masks)

    def class_name(self, index: int) -> str:
        return self.class_names[int(self.labels[index])]
