"""Masks → polygons: the one module behind the writers' polygons and the datasets' traced masks.

A binary mask has two useful outlines, each with its own function:

* `mask_contours` (datasets): the exact outer contour of every connected component, as OpenCV traces it
  through the centres of the boundary pixels, in float, optionally shifted. Rasterised again with boundary
  pixels included (`cv2.fillPoly`) it gives back the component without its holes, which is what training
  and evaluation need. It is not always a valid polygon: a one-pixel-wide spur is walked out and back, and
  two parts meeting at a pixel corner (a pinch) share a vertex.
* `mask_polygons` (PAGE, ALTO, COCO polygon mode, JSON lines): one *valid* integer polygon per part, as
  OCR-D's validator requires — a simple ring (no self-intersection or self-touching, shapely's `is_valid`)
  of at least 4 distinct points, inside the page. How a component becomes one:

  1. Its contour is simplified with `cv2.approxPolyDP` (tolerance `epsilon`, 1 px by default: removes the
     staircase of the pixel grid, keeps the shape) and repeated points are dropped; a component too thin to
     span an area becomes, if a one-pixel rule or a lone pixel, its bounding rectangle widened to two pixels
     inside the page, and if a slanted one-pixel line (whose bounding rectangle would be nearly all area),
     the line widened by its right-hand neighbours, simplified likewise. If that is valid, it is the polygon
     (almost always).
  2. Otherwise the outline touches itself — two parts meeting at a pixel corner (a pinch), a one-pixel
     neck or spur — or simplification made it cross itself. Every pixel the exact contour passes twice
     gets its 3 x 3 neighbourhood added to the component (within the page; up to three rounds), so that
     the component stays one polygon covering all of it, at most a pixel wider at its thinnest. Its
     outline is then simplified as in 1 if that is valid, else by shapely's topology-preserving simplifier
     (same tolerance, a subset of its points), else kept exact (corners only, or every outline pixel where
     it has only three corners: a right triangle with a 45° side).
     Should the component still touch itself, its contour is split at every pixel it passes twice into
     simple rings, one part each (rings without area, a spur walked out and back, are dropped).

  Parts are ordered largest first (contour area plus contour length, so that thin parts still rank), holes
  are ignored. Writers that want one polygon per instance (PAGE, ALTO) take the first: the outline of the
  mask's largest connected part; specks beside it are left out.
* `mask_edge_polygons` (COCO polygon mode): polygons along the pixel *edges*, as COCO reads polygons
  (pixel i spans [i, i + 1), and pycocotools rasterises a pixel when its centre is inside). Outlines
  through the pixel centres lose half a pixel all round there: a 10 x 20 block comes back as 171 pixels,
  a 4 px high line with IoU 0.75. The mask is doubled (nearest neighbour) and traced: the contour of the
  doubled mask runs through the centres of its boundary pixels, 2i on the left or top of pixel i, 2i + 1
  on the right or bottom, so ceil(c / 2) maps it onto the edges of the original pixels. The contour is
  simplified by `epsilon` (half a pixel: COCO compares areas) before the mapping; a simplified ring that
  is not valid, or whose pixels (as pycocotools rasterises it) have an IoU below `EDGE_MIN_IOU` with the
  exact ring's (a part one or two pixels wide loses half a pixel each side, so all of it), is replaced by
  the exact one, and an exact one that touches itself (parts meeting at a pixel corner) is split there
  into valid rings. Integer points in [0, width] x [0, height].

OpenCV and shapely are imported where they are used: `docsam --help` must not load them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import shapely

DEFAULT_EPSILON = 1.0
EDGE_EPSILON = 0.5  # edge polygons: at 1 px, irregular and ragged masks came back with IoU 0.97-0.98
# A simplified edge ring rasterising further than this from the exact one is replaced by it: half a pixel
# off each side of a part one or two pixels wide (a rule, an arm) would drop the part.
EDGE_MIN_IOU = 0.99
MIN_POINTS = 4  # OCR-D's validator rejects polygons with fewer points ("has too few points")
THICKENING_ROUNDS = 3  # one round resolves the pinches, necks and spurs of every test mask so far


def drop_repeats(points: np.ndarray) -> np.ndarray:
    """Remove consecutive duplicate points, including a closing point equal to the first."""
    if len(points) < 2:
        return points
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)
    if not keep.any():  # every point identical
        return points[:1]
    return points[keep]


def mask_contours(mask: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> list[np.ndarray]:
    """Exact outer contours (float, shifted by `offset`) of a binary mask's components with 3+ points."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shift = np.asarray(offset, dtype=np.float64)
    outlines = (contour.reshape(-1, 2).astype(np.float64) + shift for contour in contours)
    return [outline for outline in outlines if len(outline) >= 3]


def rle_contours(rle: dict) -> list[np.ndarray]:
    """`mask_contours` of a COCO RLE mask (compressed, `counts` bytes), decoding only its box and a pixel
    around it, which OpenCV's tracing reads (`model.instances.decode_rle_window`): the whole page, decoded
    and traced for each region, took 40 ms a region at 300 dpi, hours for a dataset."""
    from pycocotools import mask as mask_utils

    from model.instances import decode_rle_window

    height, width = (int(side) for side in rle["size"])
    x, y, w, h = (int(value) for value in mask_utils.toBbox(rle))
    left, top = max(x - 1, 0), max(y - 1, 0)
    right, bottom = min(x + w + 1, width), min(y + h + 1, height)
    window = decode_rle_window(rle, left, top, right - left, bottom - top)
    return mask_contours(window, offset=(float(left), float(top)))


def mask_polygons(
    mask: np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
    *,
    origin: tuple[int, int] = (0, 0),
    page_size: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Valid (N, 2) int32 polygons of a bool/0-1 mask, one per part, largest first (see the module doc).

    `mask` may be a window of the page: `origin` is the page position (x, y) of its top-left pixel and
    `page_size` the page's (width, height) (default: the mask is the whole page). Points are page pixels.
    """
    import cv2

    if not mask.any():
        return []
    height, width = mask.shape
    page_width, page_height = page_size if page_size is not None else (width, height)
    padded = np.zeros((height + 2, width + 2), dtype=np.uint8)  # contours never clipped
    padded[1:-1, 1:-1] = mask
    contours, _ = cv2.findContours(
        padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(origin[0] - 1, origin[1] - 1)
    )
    parts: list[tuple[float, np.ndarray]] = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        polygon = _simplified(points, epsilon, page_width, page_height)
        if polygon is not None and is_valid_polygon(polygon):
            parts.append((_size(points), polygon))
        else:
            parts.extend(_repaired(points, epsilon, page_width, page_height))
    parts.sort(key=lambda part: -part[0])
    return [polygon for _, polygon in parts]


def mask_edge_polygons(
    mask: np.ndarray, epsilon: float = EDGE_EPSILON, *, origin: tuple[int, int] = (0, 0)
) -> list[np.ndarray]:
    """Valid (N, 2) int32 polygons along the pixel edges of a bool/0-1 mask's parts, largest first (see
    the module doc): rasterised by pycocotools, they give the parts back up to the simplification.

    `origin` is the page position (x, y) of the mask's top-left pixel (the mask may be a window of the
    page); the points stay within the mask's extent, so within the page.
    """
    import cv2

    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    if not binary.any():
        return []
    height, width = binary.shape
    padded = np.zeros((2 * height + 2, 2 * width + 2), dtype=np.uint8)  # contours never clipped
    doubled = padded[1:-1, 1:-1]  # every pixel 2 x 2, written in place: no temporaries
    cv2.resize(binary, (2 * width, 2 * height), dst=doubled, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(-1, -1))
    rings = [ring for contour in contours for ring in _edge_rings(contour.reshape(-1, 2), epsilon)]
    rings.sort(key=lambda ring: -cv2.contourArea(ring.reshape(-1, 1, 2)))
    return [ring + np.asarray(origin, dtype=np.int32) for ring in rings]


def _edge_rings(contour: np.ndarray, epsilon: float) -> list[np.ndarray]:
    """One contour of the doubled mask as valid rings along the original pixel edges: simplified if that
    is valid and rasterises like the exact ring, else exact, split where it touches itself."""
    import cv2

    simplified = cv2.approxPolyDP(contour.reshape(-1, 1, 2), 2 * epsilon, True).reshape(-1, 2)
    ring = _to_edges(simplified)
    exact = _to_edges(contour)
    if _is_valid_ring(ring) and _raster_iou(ring, exact) >= EDGE_MIN_IOU:
        return [ring]
    return [exact] if _is_valid_ring(exact) else _valid_parts(exact)


def _raster_iou(ring: np.ndarray, exact: np.ndarray) -> float:
    """IoU of the pixels pycocotools rasterises from two pixel-edge rings, the first a subset of the
    second's points (so within its bounding box)."""
    from pycocotools import mask as mask_utils

    low = exact.min(axis=0)
    width, height = (int(side) for side in exact.max(axis=0) - low)
    flat = [(points - low).reshape(-1).astype(np.float64).tolist() for points in (ring, exact)]
    simplified, original = mask_utils.frPyObjects(flat, height, width)
    return float(mask_utils.iou([simplified], [original], [0])[0, 0])


def _to_edges(doubled_points: np.ndarray) -> np.ndarray:
    """Points of the doubled mask's contour mapped onto the original pixel edges: c -> ceil(c / 2)."""
    return drop_repeats(-(-doubled_points.astype(np.int32) // 2))


def _is_valid_ring(ring: np.ndarray) -> bool:
    """What COCO needs: a simple ring of at least 3 points (OCR-D's 4 are not required)."""
    import shapely

    return len(ring) >= 3 and bool(shapely.is_valid(shapely.polygons(ring.astype(np.float64))))


def _valid_parts(ring: np.ndarray) -> list[np.ndarray]:
    """The outer rings of the valid pieces of an exact pixel-edge ring that touches itself at pixel
    corners (holes ignored). It never crosses itself, so the pieces keep its integer points."""
    import shapely

    pieces = [shapely.make_valid(shapely.polygons(ring.astype(np.float64)))]
    rings = []
    while pieces:
        piece = pieces.pop()
        if piece.geom_type == "Polygon" and piece.area > 0:
            points = np.rint(np.asarray(piece.exterior.coords)[:-1]).astype(np.int32)
            rings.append(drop_repeats(points))
        elif piece.geom_type in ("MultiPolygon", "GeometryCollection"):
            pieces.extend(piece.geoms)
    return rings


def clip_polygon(polygon: np.ndarray, container: np.ndarray) -> np.ndarray | None:
    """`polygon` cut to `container` (both valid integer polygons): itself when it lies within, else the
    largest part of their intersection with its points rounded (a rounded point moves under a pixel, well
    inside the 1.5 px OCR-D's validator allows a child beyond its parent); None when that leaves no valid
    polygon (a sliver, a triangle). Tracing a mask already cut to the container's pixels can still leave
    it: simplification cuts across the container's concave corners, and repairing a pinch widens the mask
    by a pixel. Where rounding the points one by one makes the part cross itself (two points of a ragged
    part rounded across each other), the whole intersection is snapped to whole pixels instead, which
    keeps it valid."""
    import shapely

    inner, outer = (shapely.polygons(points.astype(np.float64)) for points in (polygon, container))
    if inner.within(outer):
        return polygon
    overlap = inner.intersection(outer)
    for part in (overlap, shapely.set_precision(overlap, 1.0)):
        points = _largest_ring(part)
        if points is not None and is_valid_polygon(points):
            return points
    return None


def _largest_ring(geometry: shapely.Geometry) -> np.ndarray | None:
    """The outer ring of the largest polygon in `geometry`, its points rounded, repeats dropped."""
    parts = [part for part in getattr(geometry, "geoms", [geometry]) if part.geom_type == "Polygon"]
    parts = [part for part in parts if not part.is_empty]
    if not parts:
        return None
    largest = max(parts, key=lambda part: part.area)
    return drop_repeats(np.rint(np.asarray(largest.exterior.coords)[:-1]).astype(np.int32))


def is_valid_polygon(points: np.ndarray) -> bool:
    """What OCR-D's validator accepts: at least 4 points forming a valid (simple) shapely ring.

    A ring that passes a point twice touches itself and is not valid, so its points are distinct, provided
    consecutive repeats were dropped (`drop_repeats`).
    """
    import shapely

    if len(points) < MIN_POINTS:
        return False
    return bool(shapely.is_valid(shapely.polygons(np.asarray(points, dtype=np.float64))))


def _size(points: np.ndarray) -> float:
    import cv2

    return float(cv2.contourArea(points.reshape(-1, 1, 2))) + len(points)  # one-pixel-wide parts have area 0


def _simplified(points: np.ndarray, epsilon: float, width: int, height: int) -> np.ndarray | None:
    """The simplified outline; for one that spans no area, that of the widened line if it is slanted (its
    bounding rectangle would be nearly all area), else the widened bounding rectangle."""
    outline = _simplified_with_area(points, epsilon)
    if outline is None and np.ptp(points, axis=0).min() > 0:
        band = _widened_line(points, width)
        if band is not None:
            outline = _simplified_with_area(band, epsilon)
            outline = band if outline is None else outline
    return outline if outline is not None else _thin_box(points, width, height)


def _simplified_with_area(points: np.ndarray, epsilon: float) -> np.ndarray | None:
    """The outline simplified by `epsilon` (`cv2.approxPolyDP`), repeated points dropped; None if it spans no
    area."""
    import cv2

    simplified = drop_repeats(cv2.approxPolyDP(points.reshape(-1, 1, 2), epsilon, True).reshape(-1, 2))
    if len(simplified) >= 3 and cv2.contourArea(simplified.reshape(-1, 1, 2).astype(np.float32)) > 0:
        return simplified.astype(np.int32)
    return None


def _widened_line(points: np.ndarray, width: int) -> np.ndarray | None:
    """The outline of a one-pixel line (the contour `points`, which spans no area) once each of its pixels
    has its right-hand neighbour added (inside the page): a band two pixels wide along the line, whose
    pixels join side to side, so that its outline spans an area. None if the page leaves no room."""
    import cv2

    pixels = _pixel_walk(points)
    low = pixels.min(axis=0) - 1  # the canvas keeps a zero border
    canvas = np.zeros(tuple(np.ptp(pixels, axis=0)[::-1] + 4), np.uint8)
    canvas[pixels[:, 1] - low[1], pixels[:, 0] - low[0]] = 1
    right = pixels[pixels[:, 0] + 1 < width]
    canvas[right[:, 1] - low[1], right[:, 0] + 1 - low[0]] = 1
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=tuple(low))
    band = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return band if cv2.contourArea(band.reshape(-1, 1, 2)) > 0 else None


def _repaired(points: np.ndarray, epsilon: float, width: int, height: int) -> list[tuple[float, np.ndarray]]:
    """Valid parts of a component whose simplified outline is not valid (see step 2 of the module doc)."""
    thickened = _thickened(points, width, height)
    if thickened is not None:
        polygon = _valid_outline(thickened, epsilon, width, height)
        if polygon is not None:
            return [(_size(points), polygon)]
    parts = []
    for ring in _simple_rings(_pixel_walk(points)):
        polygon = _valid_outline(ring, epsilon, width, height)
        if polygon is not None:
            parts.append((_size(ring), polygon))
    if not parts:
        box = _thin_box(points, width, height)
        if box is not None:
            parts.append((_size(points), box))
    return parts


def _valid_outline(ring: np.ndarray, epsilon: float, width: int, height: int) -> np.ndarray | None:
    """The first valid of: the simplified ring, its topology-preserving simplification, the exact ring
    (corners only), the exact ring through every outline pixel (a right triangle with a 45° side has three
    corners, too few for OCR-D: its bounding rectangle would be twice its area), its widened bounding
    rectangle."""
    exact = _drop_collinear(ring)
    candidates = (
        _simplified(exact, epsilon, width, height),
        _simplified_keeping_validity(exact, epsilon),
        exact,
        _pixel_walk(exact),
        _thin_box(ring, width, height),
    )
    return next((c.astype(np.int32) for c in candidates if c is not None and is_valid_polygon(c)), None)


def _thickened(points: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """The component's exact outline once every pixel it passes twice has its 3 x 3 neighbourhood added
    to the component (inside the page), or None if it still touches itself after THICKENING_ROUNDS."""
    import cv2

    outline = points
    for _ in range(THICKENING_ROUNDS):
        walk = _pixel_walk(outline)
        pixels, visits = np.unique(walk, axis=0, return_counts=True)
        touching = pixels[visits > 1]
        if not len(touching):
            return outline
        low = np.maximum(outline.min(axis=0) - 2, -1)  # the canvas keeps a zero border
        high = np.minimum(outline.max(axis=0) + 2, (width, height))
        canvas = np.zeros((high[1] - low[1] + 1, high[0] - low[0] + 1), np.uint8)
        cv2.fillPoly(canvas, [(outline - low).reshape(-1, 1, 2).astype(np.int32)], 1)
        grown = np.zeros_like(canvas)
        grown[touching[:, 1] - low[1], touching[:, 0] - low[0]] = 1
        canvas |= cv2.dilate(grown, np.ones((3, 3), np.uint8))
        canvas[:, : max(0, -low[0])] = 0  # nothing off the page
        canvas[: max(0, -low[1]), :] = 0
        canvas[:, width - low[0] :] = 0
        canvas[height - low[1] :, :] = 0
        contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=tuple(low))
        outline = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return None


def _simplified_keeping_validity(ring: np.ndarray, epsilon: float) -> np.ndarray | None:
    """The ring simplified by shapely's topology-preserving simplifier: a valid ring stays valid, and its
    points are a subset of the ring's (integers stay integers). None for fewer than 3 points (no ring)."""
    import shapely

    if len(ring) < 3:
        return None
    simplified = shapely.simplify(shapely.polygons(ring.astype(np.float64)), epsilon, preserve_topology=True)
    return np.asarray(shapely.get_exterior_ring(simplified).coords, dtype=np.int32)[:-1]


def _pixel_walk(points: np.ndarray) -> np.ndarray:
    """Every pixel of a CHAIN_APPROX_SIMPLE contour: its vertices are joined by straight 8-neighbour runs."""
    deltas = np.roll(points, -1, axis=0) - points
    counts = np.abs(deltas).max(axis=1)
    moving = counts > 0
    if not moving.any():
        return points[:1]
    starts, deltas, counts = points[moving], deltas[moving], counts[moving]
    steps = deltas // counts[:, None]  # each run is horizontal, vertical or diagonal
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts, axis=0) + np.repeat(steps, counts, axis=0) * within[:, None]


def _simple_rings(walk: np.ndarray) -> Iterator[np.ndarray]:
    """Split a closed walk at every point it visits twice into loops that visit each point once.

    Each loop closes where the walk comes back to a point: the stretch since that point's first visit is
    cut out. Loops of fewer than 3 points (a spur walked out and back) are dropped.
    """
    path: list[tuple[int, int]] = []
    position: dict[tuple[int, int], int] = {}
    for point in map(tuple, walk.tolist()):
        start = position.get(point)
        if start is None:
            position[point] = len(path)
            path.append(point)
            continue
        loop = path[start:]
        for visited in loop[1:]:
            del position[visited]
        del path[start + 1 :]
        if len(loop) >= 3:
            yield np.asarray(loop, dtype=np.int32)
    if len(path) >= 3:
        yield np.asarray(path, dtype=np.int32)


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """The ring's corners: points where the direction changes."""
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return ring[turns] if turns.sum() >= 3 else ring


def _thin_box(points: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Bounding rectangle of the points, widened to >= 2 px per side inside the page."""
    x0, x1 = _widen(int(points[:, 0].min()), int(points[:, 0].max()), width)
    y0, y1 = _widen(int(points[:, 1].min()), int(points[:, 1].max()), height)
    if x0 == x1 or y0 == y1:
        return None  # the page itself is one pixel wide or high
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.int32)


def _widen(low: int, high: int, size: int) -> tuple[int, int]:
    if high > low:
        return low, high
    return (low, low + 1) if low + 1 < size else (max(low - 1, 0), low)
