"""A baseline for each written text line, computed from the line's polygon (PAGE `Baseline`, ALTO `BASELINE`).

Kraken trains and segments in baselines mode by default and drops every line without one; eScriptorium
builds its line masks from them. DocSAM predicts line masks, not baselines, so the writers derive one
along the bottom of the line body, running left to right across the line (docsam assumes left-to-right
scripts, as the reading order does).

How (`line_baseline`): the polygon is rasterised as readers rasterise it (points are pixel centres,
boundary included); the lowest pixel of a column is the bottom of the line there. The body columns (at
least half the median column height: not the tapered ends; on a skewed line not the columns its short
sides span either, whose bottoms lie on those sides) give a least-squares straight line through their
bottoms, moved up until no body column's bottom lies above it, so it rests on the lower edge of the body.
The baseline is that line over the longest run of columns where it stays in the line (all of the body,
usually most of the width), if that run is at least half the line's width and the line stays inside the
polygon (within `_INSIDE_PX`). Otherwise (a strongly curved line, one cut by its region) the baseline is
the polygon's own lower boundary between its bottom-left and bottom-right points.

Either way OCR-D's `--check-baseline` accepts it: it wants the baseline within the TextLine's polygon
simplified by 1 px and widened by 1.5 px. Simplifying usually moves the boundary by at most 1 px, but
shapely's topology-preserving simplifier can move a ragged ring's further (1.51 px on a fuzzed line);
where the lower boundary then leaves what OCR-D checks against, the baseline is the lower boundary of the
polygon simplified as OCR-D simplifies it (a subset of its points, at most a pixel or two from the line).
"""

from __future__ import annotations

import numpy as np

_INSIDE_PX = 0.5  # how far outside the polygon a straight baseline may run (OCR-D: 1.5 slack - 1 simplify)
_BODY_SHARE = 0.5  # body columns: at least this share of the median column height (not the tapered ends)
_MIN_WIDTH_SHARE = 0.5  # a straight baseline shorter than this share of the line's width is not used
_OCRD_SIMPLIFY_PX = 1.0  # OCR-D's validator simplifies a polygon by this much (POLY_TOLERANCE) ...
_OCRD_SLACK_PX = 1.5  # ... and lets a baseline lie this far outside it (PARENT_SLACK)


def line_baseline(polygon: np.ndarray) -> np.ndarray:
    """Baseline points (M >= 2, integer page pixels, left to right) of a valid line polygon (N, 2), whose
    points span at least two columns (every polygon with an area does)."""
    polygon = np.asarray(polygon, dtype=np.int64).reshape(-1, 2)
    straight = _straight_baseline(polygon)
    if straight is not None and _within(straight, polygon, _INSIDE_PX):
        return straight
    lower, simplified = _lower_boundary(polygon), _ocrd_simplified(polygon)
    return lower if _within(lower, simplified, _OCRD_SLACK_PX) else _lower_boundary(simplified)


def _straight_baseline(polygon: np.ndarray) -> np.ndarray | None:
    """The straight line resting on the bottoms of the body columns, over the longest run of columns it
    stays in; None if that run is under half the line's width."""
    window = _raster(polygon)
    heights = window.sum(axis=0)
    bottoms = window.shape[0] - 1 - np.argmax(window[::-1], axis=0)  # lowest pixel of each column
    columns = np.arange(window.shape[1])
    body = heights >= _BODY_SHARE * np.median(heights)
    slope, _ = np.polyfit(columns[body], bottoms[body], 1)
    # The columns at either end cross the line's short sides: on a skewed line their bottoms lie on a side,
    # up to the whole line height above the lower edge. As many columns as a side spans are left out.
    side = int(np.ceil(np.median(heights) * abs(slope))) + 1
    core = body & (columns >= side) & (columns < len(columns) - side)
    if np.count_nonzero(core) >= 2:
        body = core
    slope, intercept = np.polyfit(columns[body], bottoms[body], 1)
    fitted = slope * columns + intercept
    rows = np.rint(fitted - np.max(fitted[body] - bottoms[body])).astype(np.int64)
    inside = (rows >= 0) & (rows < window.shape[0]) & window[np.clip(rows, 0, window.shape[0] - 1), columns]
    first, last = _longest_run(inside)
    if last - first + 1 < _MIN_WIDTH_SHARE * len(columns):
        return None
    return np.array([[first, rows[first]], [last, rows[last]]]) + polygon.min(axis=0)


def _raster(polygon: np.ndarray) -> np.ndarray:
    """The polygon's pixels in its bounding box, as readers draw it (cv2.fillPoly, boundary included)."""
    import cv2

    low = polygon.min(axis=0)
    size = polygon.max(axis=0) - low + 1
    window = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.fillPoly(window, [(polygon - low).astype(np.int32)], 1)
    return window.astype(bool)


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest run of True in `flags` ((0, -1) if there is none)."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return 0, -1
    longest = int(np.argmax(stops - starts))
    return int(starts[longest]), int(stops[longest]) - 1


def _within(line: np.ndarray, polygon: np.ndarray, slack: float) -> bool:
    """Whether the polyline `line` lies within `polygon` widened by `slack` pixels."""
    import shapely

    outline = shapely.polygons(polygon.astype(np.float64))
    return bool(shapely.within(shapely.linestrings(line.astype(np.float64)), outline.buffer(slack)))


def _ocrd_simplified(polygon: np.ndarray) -> np.ndarray:
    """The polygon's ring as OCR-D's validator simplifies it (`make_poly`): a subset of its points."""
    import shapely

    ring = shapely.simplify(shapely.polygons(polygon.astype(np.float64)), _OCRD_SIMPLIFY_PX).exterior
    return np.asarray(ring.coords, dtype=np.float64)[:-1].astype(np.int64)


def _lower_boundary(polygon: np.ndarray) -> np.ndarray:
    """The stretch of the polygon's ring from its bottom-left to its bottom-right point that lies lower
    (on average) of the two: on the boundary, so always inside."""
    count = len(polygon)
    start = _corner(polygon, left=True)
    end = _corner(polygon, left=False)
    forward = polygon[(start + np.arange((end - start) % count + 1)) % count]
    backward = polygon[(start - np.arange((start - end) % count + 1)) % count]
    return max(forward, backward, key=lambda chain: chain[:, 1].mean())


def _corner(polygon: np.ndarray, *, left: bool) -> int:
    """Index of the lowest of the leftmost (or rightmost) points."""
    x = polygon[:, 0] if left else -polygon[:, 0]
    return int(np.lexsort((-polygon[:, 1], x))[0])
