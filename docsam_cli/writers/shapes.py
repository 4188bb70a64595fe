"""One page's instances as every writer needs them, each piece computed once, on first use.

`PageWriter` builds one `PageShapes` per page and hands it to every writer, so that with all formats on,
each instance's RLE is decoded once and traced into polygons once (the JSON lines, PAGE, ALTO, COCO and
overlay writers used to do it each on their own; COCO's polygon mode traces the pixel edges instead). A
decoded mask is kept only inside its bounding box (`MaskWindow`): a page with a hundred instances then
holds a few page-sized masks' worth, not a hundred.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from docsam_cli.names import output_text
from docsam_cli.polygons import (
    DEFAULT_EPSILON,
    EDGE_EPSILON,
    clip_polygon,
    mask_edge_polygons,
    mask_polygons,
)
from docsam_cli.writers.boxes import clip_box, finite_or_zero
from model.instances import PageInstances


@dataclass(frozen=True)
class MaskWindow:
    """A decoded mask cut to its bounding box: `mask` (C-contiguous bool) covers page pixels x..x+w-1,
    y..y+h-1. An empty mask has a 0 x 0 window."""

    x: int
    y: int
    mask: np.ndarray

    def intersect(self, other: MaskWindow) -> MaskWindow:
        """The pixels set in both masks, in the overlap of the two windows."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1 = min(self.x + self.mask.shape[1], other.x + other.mask.shape[1])
        y1 = min(self.y + self.mask.shape[0], other.y + other.mask.shape[0])
        if x1 <= x0 or y1 <= y0:
            return MaskWindow.empty()
        return MaskWindow(x0, y0, self._crop(x0, y0, x1, y1) & other._crop(x0, y0, x1, y1))

    @staticmethod
    def empty() -> MaskWindow:
        return MaskWindow(0, 0, np.zeros((0, 0), dtype=bool))

    @staticmethod
    def of_polygon(polygon: np.ndarray | None) -> MaskWindow:
        """The pixels of an integer polygon as PAGE and ALTO points are read (pixel positions, boundary
        included), inside the polygon's bounding box; empty for None."""
        if polygon is None:
            return MaskWindow.empty()
        import cv2

        low = polygon.min(axis=0)
        width, height = polygon.max(axis=0) - low + 1
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(canvas, [(polygon - low).reshape(-1, 1, 2).astype(np.int32)], 1)
        return MaskWindow(int(low[0]), int(low[1]), canvas.astype(bool))

    def count(self) -> int:
        return int(np.count_nonzero(self.mask))

    def _crop(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.mask[y0 - self.y : y1 - self.y, x0 - self.x : x1 - self.x]


class PageShapes:
    """Lazily computed, cached geometry of one page's instances (see the module doc).

    `polygons(i)` are the valid polygons of instance i, largest part first (`docsam_cli.polygons`);
    `outline(i)` is the first of them, the one polygon PAGE and ALTO write, and `written(i)` its pixels.
    `within`, a valid integer polygon (the OCR-D page's Border), is what every outline is cut to
    (`polygons.clip_polygon`; an instance it leaves without one is left out): the masks are cut to its
    pixels already, but a one-pixel rule's outline is its bounding rectangle and a repaired pinch is a
    pixel wider, which along a skewed Border reached past it by more than OCR-D's validator allows.
    `edge_polygons(i)` trace the pixel edges instead (COCO's convention). Class names are as they go into
    output files (`names.output_text`).
    """

    def __init__(
        self,
        instances: PageInstances,
        polygon_epsilon: float = DEFAULT_EPSILON,
        *,
        within: np.ndarray | None = None,
    ) -> None:
        self.instances = instances
        self.polygon_epsilon = polygon_epsilon
        self.within = within
        self._windows: dict[int, MaskWindow] = {}
        self._polygons: dict[int, list[np.ndarray]] = {}
        self._outlines: dict[int, np.ndarray | None] = {}
        self._written: dict[int, MaskWindow] = {}
        self._clipped: dict[tuple[int, int], np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.instances)

    @property
    def width(self) -> int:
        return self.instances.width

    @property
    def height(self) -> int:
        return self.instances.height

    @cached_property
    def class_names(self) -> list[str]:
        return [output_text(name) for name in self.instances.class_names]

    def class_name(self, index: int) -> str:
        return self.class_names[self.label(index)]

    def label(self, index: int) -> int:
        return int(self.instances.labels[index])

    def score(self, index: int) -> float:
        """The model's score as every writer writes it; a non-finite score counts as 0 (`finite_or_zero`)."""
        return finite_or_zero(self.instances.scores[index])

    def confidence(self, index: int) -> float:
        """The score as a confidence in [0, 1] (XML schemas ask for one)."""
        return min(max(self.score(index), 0.0), 1.0)

    @cached_property
    def areas(self) -> np.ndarray:
        """Mask pixel counts (from the RLEs, without decoding)."""
        return self.instances.areas()

    @cached_property
    def mask_boxes(self) -> list[tuple[int, int, int, int]]:
        """Integer x, y, w, h of each mask (from the RLEs, without decoding); 0 x 0 for an empty mask."""
        if not len(self):
            return []
        from pycocotools import mask as mask_utils

        return [tuple(int(value) for value in box) for box in mask_utils.toBbox(self.instances.masks)]

    @cached_property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        """The model's boxes, corners sorted and clipped to the page (see `boxes`)."""
        return [clip_box(box, self.width, self.height) for box in self.instances.boxes]

    def window(self, index: int) -> MaskWindow:
        """Instance `index`'s mask inside its bounding box, decoded (that window only) on the first call."""
        if index not in self._windows:
            x, y, w, h = self.mask_boxes[index]
            mask = (
                self.instances.decode_mask_window(index, x, y, w, h)
                if w and h
                else np.zeros((0, 0), dtype=bool)
            )
            self._windows[index] = MaskWindow(x, y, mask)
        return self._windows[index]

    def polygons(self, index: int) -> list[np.ndarray]:
        if index not in self._polygons:
            self._polygons[index] = self._trace(self.window(index))
        return self._polygons[index]

    def outline(self, index: int) -> np.ndarray | None:
        if index not in self._outlines:
            polygons = self.polygons(index)
            outline = polygons[0] if polygons else None
            if outline is not None and self.within is not None:
                outline = clip_polygon(outline, self.within)
            self._outlines[index] = outline
        return self._outlines[index]

    def edge_polygons(self, index: int) -> list[np.ndarray]:
        """Polygons of instance `index` along its pixel edges, largest part first: what pycocotools
        rasterises back into the mask (`polygons.mask_edge_polygons`; for COCO, not cached)."""
        window = self.window(index)
        if not window.mask.size:
            return []
        epsilon = min(self.polygon_epsilon, EDGE_EPSILON)
        return mask_edge_polygons(window.mask, epsilon, origin=(window.x, window.y))

    def written(self, index: int) -> MaskWindow:
        """The pixels of instance `index`'s outline, the part of the mask PAGE and ALTO write (empty
        without an outline). Text lines are placed and cut against it, not against the whole mask: a
        line over a speck the outline leaves out would lie outside its region's written polygon."""
        if index not in self._written:
            self._written[index] = MaskWindow.of_polygon(self.outline(index))
        return self._written[index]

    def share_within(self, index: int, container: int) -> float:
        """The share of mask `index`'s pixels inside instance `container`'s written outline."""
        inside = self.window(index).intersect(self.written(container)).count()
        return inside / max(int(self.areas[index]), 1)

    def outline_within(self, index: int, container: int) -> np.ndarray | None:
        """The outline of the part of mask `index` that lies inside instance `container`'s written
        outline (a text line cut to its region), or None if they do not overlap or the cut leaves no valid
        polygon (`polygons.clip_polygon`)."""
        key = (index, container)
        if key not in self._clipped:
            polygons = self._trace(self.window(index).intersect(self.written(container)))
            outline = self.outline(container)
            clipped = polygons[0] if polygons and outline is not None else None
            self._clipped[key] = None if clipped is None else clip_polygon(clipped, outline)
        return self._clipped[key]

    def _trace(self, window: MaskWindow) -> list[np.ndarray]:
        if not window.mask.size:
            return []
        return mask_polygons(
            window.mask,
            self.polygon_epsilon,
            origin=(window.x, window.y),
            page_size=(self.width, self.height),
        )
