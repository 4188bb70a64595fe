"""A reading order for regions from their boxes: recursive XY-cut, columns first.

A group of boxes is split at a vertical gap that runs through the whole group (columns, read left to
right) if there is one, else at horizontal gaps (rows, read top to bottom), recursively; a group that no
gap separates is read by top edge, then left edge. A full-width title or figure therefore splits a
two-column page into bands, and within a band the left column is read before the right one. Boxes that
overlap across the gutter (a region straddling two columns) leave no gap: that band falls back to
top-to-bottom. Left-to-right scripts only.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """Indices of `boxes` in reading order."""
    return _order(list(range(len(boxes))), boxes)


def _order(indices: list[int], boxes: Sequence[Box]) -> list[int]:
    if len(indices) <= 1:
        return indices
    for axis in (0, 1):  # 0: split into columns at x gaps, 1: into rows at y gaps
        groups = _split(indices, boxes, axis)
        if len(groups) > 1:
            return [index for group in groups for index in _order(group, boxes)]
    return sorted(indices, key=lambda index: (boxes[index][1], boxes[index][0]))


def _split(indices: list[int], boxes: Sequence[Box], axis: int) -> list[list[int]]:
    """Groups separated by gaps along `axis` (projection intervals that do not overlap), in order."""
    ordered = sorted(indices, key=lambda index: boxes[index][axis])
    groups: list[list[int]] = [[ordered[0]]]
    reach = boxes[ordered[0]][axis + 2]
    for index in ordered[1:]:
        start, end = boxes[index][axis], boxes[index][axis + 2]
        if start >= reach:
            groups.append([index])
        else:
            groups[-1].append(index)
        reach = max(reach, end)
    return groups
