"""The region structure PAGE and ALTO share: one polygon per region, text lines nested, a reading order.

Each prompted class plays a role on the page, which the format's class mapping decides:
- `text`: a region that can hold text lines (PAGE TextRegion, ALTO TextBlock);
- `region`: any other region in the reading order (tables, figures, ...);
- `unordered`: a region outside the reading order (separators, noise), written after the others, top to
  bottom;
- `line`: a text line. It goes into the `text` region whose polygon covers at least half of its mask (the
  most, if several do), its polygon cut to that region's polygon; a line no region holds (or whose cut
  leaves no valid polygon) gets a `text` region of its own (same polygon, no class). The region's
  polygon is what counts, not its whole mask (`PageShapes.written`): a line over a part of the mask the
  polygon leaves out would lie outside its region in the file, which OCR-D's `--check-coords` rejects.
  Lines are ordered top to bottom within their region.
Every region's polygon is the outline of its mask's largest part (`PageShapes.outline`); instances without
one (an empty mask) are left out. Ordered regions follow the XY-cut reading order (`reading_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from docsam_cli.writers.reading_order import Box, reading_order
from docsam_cli.writers.shapes import PageShapes

Role = Literal["text", "region", "unordered", "line"]
PointMap = Callable[[np.ndarray], np.ndarray]  # (N, 2) points → (N, 2) points
_LINE_IN_REGION = 0.5  # share of a line's mask a text region must cover to be its parent


def polygon_bounds(polygon: np.ndarray) -> Box:
    """Half-open pixel box of a polygon, so that touching regions leave no gap for the XY-cut."""
    (x1, y1), (x2, y2) = polygon.min(axis=0), polygon.max(axis=0)
    return float(x1), float(y1), float(x2 + 1), float(y2 + 1)


@dataclass(frozen=True)
class Line:
    instance: int
    polygon: np.ndarray


@dataclass
class Region:
    instance: int | None  # None: a text region made to hold a line that no region holds
    polygon: np.ndarray
    lines: list[Line] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    ordered: list[Region]  # in reading order
    unordered: list[Region]  # top to bottom

    @property
    def regions(self) -> list[Region]:
        """Every region in the order the files list them."""
        return self.ordered + self.unordered


def page_layout(shapes: PageShapes, roles: Sequence[Role], upright: PointMap | None = None) -> Layout:
    """The layout of a page whose class i plays `roles[i]`.

    The orders (reading order, lines in a region, unordered regions) are worked out on the polygons' boxes
    where `upright` puts them, if given: the OCR-D processor's deskewed page image, on which the text runs
    level. On a page skewed by a few degrees, boxes taken on the page itself overlap across the gutter and
    between lines, and a column's or a line's tilted top lies above the one before it.
    """

    def bounds(polygon: np.ndarray) -> Box:
        return polygon_bounds(polygon if upright is None else upright(polygon))

    regions: dict[int, Region] = {}
    lines: list[int] = []
    for index in range(len(shapes)):
        if roles[shapes.label(index)] == "line":
            lines.append(index)
            continue
        polygon = shapes.outline(index)
        if polygon is not None:
            regions[index] = Region(index, polygon)
    text_regions = [index for index in regions if roles[shapes.label(index)] == "text"]
    holders = []
    for line in lines:
        parent = _parent_region(shapes, line, text_regions)
        polygon = shapes.outline_within(line, parent) if parent is not None else None
        if polygon is not None:
            regions[parent].lines.append(Line(line, polygon))
        elif (polygon := shapes.outline(line)) is not None:
            holders.append(Region(None, polygon, [Line(line, polygon)]))
    placed = [*regions.values(), *holders]
    for region in placed:
        region.lines.sort(key=lambda line: _top_left(bounds(line.polygon)))
    ordered = [region for region in placed if _role(shapes, roles, region) != "unordered"]
    ordered = [ordered[index] for index in reading_order([bounds(region.polygon) for region in ordered])]
    unordered = [region for region in placed if _role(shapes, roles, region) == "unordered"]
    unordered.sort(key=lambda region: _top_left(bounds(region.polygon)))
    return Layout(ordered, unordered)


def _top_left(box: Box) -> tuple[float, float]:
    return box[1], box[0]


def _role(shapes: PageShapes, roles: Sequence[Role], region: Region) -> Role:
    return "text" if region.instance is None else roles[shapes.label(region.instance)]


def _parent_region(shapes: PageShapes, line: int, candidates: list[int]) -> int | None:
    """The candidate whose written outline covers the largest share (at least half) of the line's mask."""
    if not candidates:
        return None
    shares = [shapes.share_within(line, index) for index in candidates]
    best = int(np.argmax(shares))
    return candidates[best] if shares[best] >= _LINE_IN_REGION else None
