"""A reading order for regions from their boxes: recursive XY-cut, columns first.

A group of boxes is split at a vertical gap that runs through the whole group (columns, read left to
right) if there is one. Otherwise it is split into bands at horizontal gaps (read top to bottom), but only
where something spanning the columns sits: neighbouring rows stay in one band while their boxes together
still leave a vertical gap. A full-width title or figure therefore splits a two-column page into bands,
and within a band the left column is read before the right one, even where a paragraph break in the left
column lines up with one in the right (a gap across the whole page that a plain XY-cut would cut at,
reading across the gutter). Each part is ordered the same way, recursively; a group that no gap separates
is read by top edge, then left edge. Boxes that overlap across the gutter (a region straddling two
columns) leave no gap: that band falls back to top-to-bottom. Left-to-right scripts only.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Interval = tuple[float, float]


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """Indices of `boxes` in reading order."""
    return _order(list(range(len(boxes))), boxes)


def _order(indices: list[int], boxes: Sequence[Box]) -> list[int]:
    if len(indices) <= 1:
        return indices
    groups = _split(indices, boxes, axis=0)  # columns
    if len(groups) == 1:
        groups = _bands(_split(indices, boxes, axis=1), boxes)
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


def _bands(rows: list[list[int]], boxes: Sequence[Box]) -> list[list[int]]:
    """Consecutive `rows` (top to bottom) joined into bands that each keep a column gap.

    A row joins the band above it while the band's boxes and its own together still leave a vertical gap,
    so a band ends only where a row would close every gap: at an element spanning the columns. The whole
    group has no vertical gap (else it would have been cut into columns), so this never returns one band
    for several rows, and the recursion ends.
    """
    bands = [rows[0]]
    covered = _cover(rows[0], boxes, [])
    for row in rows[1:]:
        joined = _cover(row, boxes, covered)
        if len(joined) > 1:
            bands[-1] = bands[-1] + row
            covered = joined
        else:
            bands.append(row)
            covered = _cover(row, boxes, [])
    return bands


def _cover(indices: list[int], boxes: Sequence[Box], covered: list[Interval]) -> list[Interval]:
    """The x intervals `covered` and the boxes' x extents cover together, as disjoint sorted intervals.

    Boxes that only touch stay apart, as in `_split`.
    """
    extents = sorted([*covered, *((boxes[index][0], boxes[index][2]) for index in indices)])
    merged = [extents[0]]
    for start, end in extents[1:]:
        if start >= merged[-1][1]:
            merged.append((start, end))
        else:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
    return merged
