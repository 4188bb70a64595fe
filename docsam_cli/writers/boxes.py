"""Model boxes → valid boxes for output formats.

The box head regresses boxes freely: corners can lie outside the page or come inverted (x2 < x1). Every
writer that emits a box (COCO `bbox`, JSON lines `box`) sorts the corners and clips them to the page
rectangle [0, W] x [0, H] (a box edge may sit on W or H: boxes are continuous, pixel (W-1) ends at W).
A box entirely off the page collapses to a zero-width or zero-height box on its edge. The masks, not the
boxes, are what PAGE polygons and overlays are drawn from. A non-finite number (box coordinate or score)
counts as 0 (`finite_or_zero`).
"""

from __future__ import annotations

import math

import numpy as np


def finite_or_zero(value: float) -> float:
    """`value` as a float; NaN or infinite (a diverged half-precision output) counts as 0, so that every
    writer gets a number its format can hold (JSON has no NaN, XML schemas ask for a confidence)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def clip_box(box: np.ndarray | list[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Sorted, clipped xyxy; a non-finite coordinate counts as 0 (`finite_or_zero`)."""
    x1, y1, x2, y2 = (finite_or_zero(value) for value in box)
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return x1, y1, x2, y2


def xyxy_to_xywh(box: tuple[float, float, float, float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]
