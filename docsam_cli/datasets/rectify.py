"""Bring instances onto the image: scale foreign units, clamp, drop degenerate shapes, repair crossings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from docsam_cli.datasets import geometry
from docsam_cli.datasets.records import Instance, Note
from docsam_cli.polygons import drop_repeats


def scale(instances: list[Instance], sx: float, sy: float) -> list[Instance]:
    """Instances with every coordinate multiplied by (sx, sy)."""
    factor = np.array([sx, sy])
    scaled = []
    for instance in instances:
        bbox = instance.bbox
        if bbox is not None:
            bbox = (bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy)
        scaled.append(replace(instance, polygons=[p * factor for p in instance.polygons], bbox=bbox))
    return scaled


def rectify(instances: list[Instance], width: int, height: int) -> tuple[list[Instance], list[Note]]:
    """Clean instances for a `width` x `height` page.

    Per polygon: drop repeated points, clamp into the page as the reference loader does, drop what has fewer
    than 3 points or no area, split self-intersecting outlines into simple ones. Polygons of one instance
    that overlap are merged into the outline of their union (drawn together by `cv2.fillPoly`, as the
    reference draws an instance, the overlap would be a hole). An instance left with no
    polygon is dropped; a stated bbox is clamped like the reference loader does, otherwise derived.
    """
    kept: list[Instance] = []
    notes: list[Note] = []
    for instance in instances:
        polygons: list[np.ndarray] = []
        off_page = repaired = degenerate = False
        for polygon in instance.polygons:
            points = drop_repeats(polygon)
            if len(points) >= 3:
                points, outside = geometry.clamp(points, width, height)
                off_page |= outside
                points = drop_repeats(points)
            # Crossings first: the signed lobes of a figure-eight cancel out in the shoelace area.
            parts = (
                geometry.repair([points]) if len(points) >= 4 and geometry.self_intersects(points) else None
            )
            if parts:
                repaired = True
                polygons.extend(parts)
            elif parts is None and len(points) >= 3 and geometry.area(points) > 0:
                polygons.append(points)
            else:
                degenerate = True
        overlapping = len(polygons) > 1 and geometry.overlap(polygons)
        if overlapping:
            polygons = geometry.repair(polygons)
        where = instance.where
        if not polygons:
            reason = "outside the page" if off_page else "fewer than 3 points or no area"
            notes.append(Note("dropped", reason, where))
            continue
        if off_page:
            notes.append(Note("fixed", "clamped to the page", where))
        if repaired:
            notes.append(Note("fixed", "self-intersecting polygon repaired", where))
        if overlapping:
            notes.append(Note("fixed", "overlapping polygons merged", where))
        if degenerate:
            notes.append(Note("fixed", "degenerate polygon part removed", where))
        bbox = clamp_box(instance.bbox, width, height) if instance.bbox is not None else None
        if bbox is None:
            bbox = geometry.polygons_bbox(polygons)
        kept.append(replace(instance, polygons=polygons, bbox=bbox))
    return kept, notes


def clamp_box(
    bbox: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """The xywh box with its corners clamped into [0, W-1] x [0, H-1] as the reference loader clamps them;
    None for a negative width or height."""
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return None
    left = min(max(x, 0.0), width - 1.0)
    top = min(max(y, 0.0), height - 1.0)
    right = min(max(x + w, left), width - 1.0)
    bottom = min(max(y + h, top), height - 1.0)
    return left, top, right - left, bottom - top
