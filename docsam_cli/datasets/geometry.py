"""Polygon arithmetic for annotations: parse, clamp, detect and repair self-intersections, masks."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_utils

_REPAIR_CANVAS_PIXELS = 4_000_000  # upper bound of the raster used to repair one polygon
_PAIR_BUDGET = 2_000_000  # edge pairs compared per chunk when looking for crossings
ELLIPSE_VERTICES = 64  # a circle of radius 500 px is then within 0.6 px of its polygon


def parse_points(text: str) -> np.ndarray:
    """`"x,y x,y ..."` (PAGE), `"x y x y ..."` or `"x,y,x,y"` (ALTO, text-detection sets) → (N, 2) floats.

    Raises ValueError when the text holds anything but an even count of numbers.
    """
    tokens = text.replace(",", " ").split()
    if len(tokens) % 2:
        raise ValueError(f"odd number of coordinates in {_excerpt(text)!r}")
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        raise ValueError(f"not a number in {_excerpt(text)!r}") from None
    if not all(np.isfinite(values)):
        raise ValueError(f"non-finite coordinate in {_excerpt(text)!r}")
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _excerpt(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The 4-corner polygon of a box given by two corners in any order."""
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    return np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float64)


def turned_box(x: float, y: float, width: float, height: float, degrees: float) -> np.ndarray:
    """The 4-corner polygon of the box `x, y, width, height` turned `degrees` clockwise (on the page, y
    pointing down) about its centre, as CVAT turns a rotated rectangle."""
    centre = np.array([x + width / 2, y + height / 2])
    angle = np.radians(degrees)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (box_polygon(x, y, x + width, y + height) - centre) @ turn.T + centre


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """The ellipse of centre (cx, cy) and radii (rx, ry) as a polygon of `ELLIPSE_VERTICES` points on it."""
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def clamp(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, bool]:
    """Clamp into [0, W-1] x [0, H-1] as the reference loader does.

    The flag says whether a point lay off the page, i.e. outside [0, W] x [0, H]: a point on the far edge
    (x = W, normal in continuous coordinates) is moved by the clamp but is not an annotation error.
    """
    off_page = bool(
        (points[:, 0] < 0).any()
        or (points[:, 1] < 0).any()
        or (points[:, 0] > width).any()
        or (points[:, 1] > height).any()
    )
    clamped = np.empty_like(points)
    np.clip(points[:, 0], 0, width - 1, out=clamped[:, 0])
    np.clip(points[:, 1], 0, height - 1, out=clamped[:, 1])
    return clamped, off_page


def area(points: np.ndarray) -> float:
    """Absolute shoelace area (what `cv2.contourArea` gives, and what the reference stores)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def self_intersects(points: np.ndarray) -> bool:
    """True when two edges of the closed polygon properly cross each other.

    Touching (a vertex on another edge, collinear overlaps, spikes that go out and back along one line)
    is not a crossing: such outlines rasterise to the intended region and are left alone.
    """
    n = len(points)
    if n < 4:
        return False
    start, end = points, np.roll(points, -1, axis=0)
    direction = end - start
    chunk = max(1, _PAIR_BUDGET // n)
    for first in range(0, n, chunk):
        rows = slice(first, min(first + chunk, n))
        a, d = start[rows, None, :], direction[rows, None, :]
        c, e = start[None, :, :], direction[None, :, :]
        o1 = _cross(d, c - a)
        o2 = _cross(d, c + e - a)
        o3 = _cross(e, a - c)
        o4 = _cross(e, a + d - c)
        crossing = (o1 * o2 < 0) & (o3 * o4 < 0)
        if crossing.any():
            return True
    return False


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def repair(polygons: list[np.ndarray]) -> list[np.ndarray]:
    """Replace outlines that cross themselves or overlap each other by the outer contours of the area they
    cover together.

    The polygons are rasterised (up to 4x finer than the page for small regions) and traced back, so a
    figure-eight becomes its two lobes and overlapping parts one outline. Coordinates stay within a
    fraction of a pixel of the original.
    """
    stacked = np.concatenate(polygons)
    low = np.floor(stacked.min(axis=0)) - 1
    extent = np.ceil(stacked.max(axis=0)) - low + 2
    factor = 4
    while factor > 1 and extent[0] * extent[1] * factor * factor > _REPAIR_CANVAS_PIXELS:
        factor //= 2
    canvas = np.zeros((int(extent[1] * factor), int(extent[0] * factor)), dtype=np.uint8)
    for points in polygons:  # one by one: drawn together, their overlaps would cancel out (even-odd)
        cv2.fillPoly(canvas, [np.round((points - low) * factor).astype(np.int32)], 1)
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    repaired = []
    for contour in contours:
        outline = contour.reshape(-1, 2).astype(np.float64) / factor + low
        if len(outline) >= 3 and area(outline) > 0:
            repaired.append(outline)
    return repaired


def overlap(polygons: list[np.ndarray]) -> bool:
    """Whether the polygons of one instance cover pixels in common: `cv2.fillPoly` drawing them together, as
    the reference's loader and docsam's trainer draw an instance, leaves such pixels out (even-odd rule).
    Pairs are drawn in the window where their bounding boxes meet."""
    points = [polygon.astype(np.int32) for polygon in polygons]
    lows = np.array([polygon.min(axis=0) for polygon in points])
    highs = np.array([polygon.max(axis=0) for polygon in points])
    for first, second in _meeting_boxes(lows, highs):
        low = np.maximum(lows[first], lows[second])
        high = np.minimum(highs[first], highs[second]) + 1
        pair = [points[first] - low, points[second] - low]
        together = np.zeros((high[1] - low[1], high[0] - low[0]), dtype=np.uint8)
        cv2.fillPoly(together, pair, 1)
        for polygon in pair:
            apart = np.zeros_like(together)
            cv2.fillPoly(apart, [polygon], 1)
            if (apart > together).any():
                return True
    return False


def _meeting_boxes(lows: np.ndarray, highs: np.ndarray) -> Iterator[tuple[int, int]]:
    """The pairs of boxes (corners `lows`, `highs`, inclusive) that share a pixel, by a sweep along x."""
    order = np.argsort(lows[:, 0], kind="stable")
    starts = lows[order, 0]
    for position, first in enumerate(order):
        end = np.searchsorted(starts, highs[first, 0], side="right")
        others = order[position + 1 : end]
        meet = (lows[others, 1] <= highs[first, 1]) & (lows[first, 1] <= highs[others, 1])
        for second in others[meet]:
            yield int(first), int(second)


def polygons_rle(polygons: list[np.ndarray], height: int, width: int) -> dict:
    """One COCO RLE for the union of polygons, rasterised the way pycocotools rasterises COCO GT."""
    if not polygons:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    reachable = [_within_reach(polygon, height, width) for polygon in polygons]
    flat = [polygon.reshape(-1).tolist() for polygon in reachable if len(polygon)]
    if not flat:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(flat, height, width))


_REACH = 4  # pages beyond the page's edges within which polygons are rasterised as given


def _within_reach(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """`polygon` cut to the page grown by `_REACH` times its width and height on every side (Sutherland-
    Hodgman; an empty array where nothing is left), for pycocotools, whose rasteriser walks every edge in
    fifths of a pixel: an edge of 10^8 pixels (a stranger's file) asks it for gigabytes, and a longer one
    crashes it. A polygon within that reach is returned as it is; the cut of another keeps its part on the
    page (a pixel along a cut edge may differ, as the rasteriser rounds the new corners)."""
    size = np.array([width, height], dtype=float)
    low, high = -_REACH * size, (_REACH + 1) * size
    if ((polygon >= low) & (polygon <= high)).all():
        return polygon
    points = polygon.astype(float)
    for axis in (0, 1):
        for bound, sign in ((low[axis], 1.0), (high[axis], -1.0)):
            points = _cut(points, axis, bound, sign)
    return points


def _cut(points: np.ndarray, axis: int, bound: float, sign: float) -> np.ndarray:
    """The part of a polygon on the side of `axis` = `bound` where sign * (coordinate - bound) >= 0."""
    kept: list[np.ndarray] = []
    for current, following in zip(points, np.roll(points, -1, axis=0), strict=True):
        current_in = sign * (current[axis] - bound) >= 0
        if current_in:
            kept.append(current)
        if current_in != (sign * (following[axis] - bound) >= 0):
            step = (bound - current[axis]) / (following[axis] - current[axis])
            crossing = current + step * (following - current)
            crossing[axis] = bound  # exactly: with far points (1e300) the step rounds to 0 or 1
            kept.append(crossing)
    return np.array(kept, dtype=float).reshape(-1, 2)


def resize_rle(rle: dict, height: int, width: int) -> dict:
    """The mask of a COCO RLE resampled (nearest) to `height` x `width`."""
    resized = cv2.resize(mask_utils.decode(rle), (width, height), interpolation=cv2.INTER_NEAREST)
    return mask_utils.encode(np.asfortranarray(resized))


def polygons_bbox(polygons: list[np.ndarray]) -> tuple[float, float, float, float]:
    """xywh of the points of all polygons."""
    stacked = np.concatenate(polygons)
    x0, y0 = stacked.min(axis=0)
    x1, y1 = stacked.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def fill_polygons(polygons: list[np.ndarray], height: int, width: int) -> dict:
    """COCO RLE of the union of polygons rasterised as the reference's training data is: coordinates
    truncated to int32, `cv2.fillPoly`, boundary pixels included.

    This is the right reading of PAGE/ALTO points (pixel positions) and of the unified layout (the
    reference trains and evaluates on exactly these masks); pycocotools' rasteriser (`polygons_rle`)
    treats coordinates as continuous and leaves out about half a pixel along every edge.

    The polygons are drawn, one `cv2.fillPoly` each (their union, not even-odd), in the box they cover on
    the page and the RLE is built from that box alone: a 300-dpi page holds 8.7 million pixels, a line of
    text a hundredth of them. The pixels are the page's: the box ends at the page's edge wherever a polygon
    goes past it, and OpenCV clips to that edge in either frame alike.
    """
    points = [polygon.astype(np.int32) for polygon in polygons]
    lows = [np.maximum(p.min(axis=0), 0) for p in points]
    highs = [np.minimum(p.max(axis=0) + 1, (width, height)) for p in points]
    shown = [i for i in range(len(points)) if (highs[i] > lows[i]).all()]
    if not shown:
        return _canvas_rle(np.zeros((2, 0), dtype=np.uint8), 0, 0, height, width)
    low = np.min([lows[i] for i in shown], axis=0)
    high = np.max([highs[i] for i in shown], axis=0)
    canvas = np.zeros((high[1] - low[1] + 2, high[0] - low[0]), dtype=np.uint8)  # a zero row above, below
    window = canvas[1:-1]  # whole rows of a C-ordered array: OpenCV draws into it in place
    for index in shown:
        cv2.fillPoly(window, [points[index] - low], 1)
    return _canvas_rle(canvas, int(low[0]), int(low[1]), height, width)


def _canvas_rle(canvas: np.ndarray, x: int, y: int, height: int, width: int) -> dict:
    """`mask_utils.encode` of a `height` x `width` page that is zero but for the 0/1 rows of `canvas` between
    its first and last (zero rows, drawn around the window), the window's corner at (x, y); without the
    page: the runs are where the canvas' columns change, placed in the page's columns."""
    rows = canvas.shape[0]
    columns = cv2.transpose(canvas).reshape(-1) if canvas.size else canvas.reshape(-1)
    changes = np.flatnonzero(columns[1:] != columns[:-1]) + 1  # each column starts and ends with a zero
    column, row = np.divmod(changes, rows)
    positions = (x + column.astype(np.int64)) * height + y + row - 1  # where the page's pixel changes
    # A column full to the page's bottom ends where the next one, full from the top, starts: no change.
    same = positions[1:] == positions[:-1]
    keep = np.ones(len(positions), dtype=bool)
    keep[1:][same] = keep[:-1][same] = False
    positions = positions[keep & (positions < height * width)]
    counts = np.diff(positions, prepend=0, append=height * width)  # zeros first, then ones, alternating
    return mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
