"""Instances found on one page, in the page's own pixel coordinates, as the pipeline hands them to writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils


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
        if not self.masks:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(mask_utils.area(self.masks), dtype=np.int64)

    def class_name(self, index: int) -> str:
        return self.class_names[int(self.labels[index])]
