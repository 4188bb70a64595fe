"""Masks → polygons, shared by PAGE XML, COCO (polygon mode) and JSON lines.

A polygon is an (N, 3 <= N) int32 array of x, y pixel indices: OpenCV's outer contour of one connected
component, through the centres of its boundary pixels, holes ignored (PAGE regions have none). It is
simplified with `cv2.approxPolyDP` (default tolerance 1 px: removes the staircase of the pixel grid,
keeps the shape), has no repeated consecutive points, lies inside the page (0 <= x < W, 0 <= y < H) and
spans an area: a component too thin for that (a one-pixel rule, a lone pixel) becomes its bounding
rectangle widened to two pixels inside the page.

Which components: `mask_polygons` gives all of them, largest first (COCO and JSON lines keep the whole
mask); `largest_polygon` gives the largest only (PAGE: one region per instance; specks a mask may have
beside its body are dropped rather than made into regions of their own).
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_EPSILON = 1.0


def mask_polygons(mask: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> list[np.ndarray]:
    """One polygon per connected component of a bool/0-1 (H, W) mask, largest component first."""
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    if not binary.any():
        return []
    height, width = binary.shape
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[tuple[float, np.ndarray]] = []
    for contour in contours:
        size = float(cv2.contourArea(contour)) + len(contour)  # a one-pixel-wide component has area 0
        polygon = _simplify(contour.reshape(-1, 2), epsilon, width, height)
        if polygon is not None:
            polygons.append((size, polygon))
    polygons.sort(key=lambda item: -item[0])
    return [polygon for _, polygon in polygons]


def largest_polygon(mask: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray | None:
    polygons = mask_polygons(mask, epsilon)
    return polygons[0] if polygons else None


def _simplify(points: np.ndarray, epsilon: float, width: int, height: int) -> np.ndarray | None:
    simplified = cv2.approxPolyDP(points.reshape(-1, 1, 2), epsilon, True).reshape(-1, 2)
    simplified = _drop_repeats(simplified)
    if len(simplified) >= 3 and cv2.contourArea(simplified.reshape(-1, 1, 2).astype(np.float32)) > 0:
        return simplified.astype(np.int32)
    return _thin_box(points, width, height)


def _drop_repeats(points: np.ndarray) -> np.ndarray:
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)
    return points[keep] if keep.any() else points[:1]


def _thin_box(points: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Bounding rectangle of a degenerate contour, widened to >= 2 px per side inside the page."""
    x0, x1 = _widen(int(points[:, 0].min()), int(points[:, 0].max()), width)
    y0, y1 = _widen(int(points[:, 1].min()), int(points[:, 1].max()), height)
    if x0 == x1 or y0 == y1:
        return None  # the page itself is one pixel wide or high
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.int32)


def _widen(low: int, high: int, size: int) -> tuple[int, int]:
    if high > low:
        return low, high
    return (low, low + 1) if low + 1 < size else (max(low - 1, 0), low)
