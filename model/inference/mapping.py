"""From the reference's frame (the resized page) back to the original page's pixels.

The reference stops in resized coordinates (docs/design.md, "original-pixel coordinates"). We map back:

* Boxes: scaled per axis, `x · W0/W`, `y · H0/H` (continuous pixel coordinates; the resize may change the
  aspect ratio, since each side is capped on its own).
* Masks: nearest neighbour at pixel centres — original pixel `(y0, x0)` takes resized pixel
  `(⌊(y0 + ½)·H/H0⌋, ⌊(x0 + ½)·W/W0⌋)`. Every original pixel inherits exactly the reference decision of the
  resized pixel it falls in, so mapping the reference's own mask the same way gives IoU 1, and mapping ours
  back down reproduces it up to the sub-pixel slivers of non-integer scales. (torch's legacy `nearest` would
  shift masks by up to half a resized pixel towards the top-left.) Re-thresholding upsampled logits
  would give smoother edges but different decisions than the reference's NMS and scores were based on.
* The RLE of the enlarged mask is built directly from the resized mask's row/column changes, never
  materialising the full-resolution mask: work and memory scale with the mask outline, not with the page
  area (a 300-dpi A4 scan has 8.7 Mpx per instance). The changes of all of a page's masks (instances and
  semantic maps) are located on the device and cross to the host in one transfer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_utils

from model.inference.geometry import Size
from model.inference.merge import SlideWindowResult
from model.inference.transfer import fetch, to_device
from model.instances import PageInstances, rle_areas

_CHUNK_BUDGET = 1 << 28  # mask pixels whose changes are located in one device pass (256 MiB of bools)


def nearest_sources(source: int, target: int) -> np.ndarray:
    """Source index of every target pixel, sampling at pixel centres: `⌊(t + ½)·source/target⌋`, exactly."""
    positions = np.arange(target, dtype=np.int64)
    return ((2 * positions + 1) * source) // (2 * target)


def resample_masks(masks: torch.Tensor, size: Size) -> torch.Tensor:
    """Pixel-centre nearest resampling of `(K, H, W)` boolean masks (the reference for `encode_resampled`)."""
    rows = torch.from_numpy(nearest_sources(masks.shape[-2], size[0])).to(masks.device)
    cols = torch.from_numpy(nearest_sources(masks.shape[-1], size[1])).to(masks.device)
    return masks[:, rows][:, :, cols]


def encode_resampled(masks: torch.Tensor, size: Size) -> list[dict]:
    """COCO RLEs (`{"size": [H0, W0], "counts": bytes}`) of `resample_masks(masks, size)`."""
    (encoded,) = encode_resampled_stacks([masks], size)
    return encoded


@dataclass(frozen=True)
class _Enlargement:
    """How a resized mask of `height` rows maps onto `size`: which resized rows appear in the enlarged mask
    (`kept_rows`), the first original row of each, and the resized column of every original column."""

    size: Size
    kept_rows: np.ndarray
    row_starts: np.ndarray
    col_of: np.ndarray

    @classmethod
    def plan(cls, resized: Size, size: Size) -> _Enlargement:
        repeats = np.bincount(nearest_sources(resized[0], size[0]), minlength=resized[0])
        kept_rows = np.flatnonzero(repeats)
        row_starts = np.concatenate([[0], np.cumsum(repeats[kept_rows])[:-1]])
        return cls(size, kept_rows, row_starts, nearest_sources(resized[1], size[1]))


def encode_resampled_stacks(stacks: Sequence[torch.Tensor], size: Size) -> list[list[dict]]:
    """`encode_resampled` of several `(K, H, W)` stacks of one resized size, with two synchronisations for
    all of them together (locating the changes, then their transfer) unless they exceed `_CHUNK_BUDGET`.

    Column-major RLE of the enlarged mask: original column x0 is resized column `c(x0)` with every resized
    row y repeated `n(y)` times (0 when shrinking). Its value changes where consecutive kept rows of that
    column differ, and at a column start where it differs from the previous column's end. The device marks
    those changes and every column's first and last value; the host turns them into run lengths.
    """
    height, width = stacks[0].shape[-2:]
    plan = _Enlargement.plan((height, width), size)
    kept = None if len(plan.kept_rows) == height else to_device(plan.kept_rows, stacks[0].device)
    chunk = max(1, _CHUNK_BUDGET // max(1, height * width))
    parts = [part for stack in stacks for part in stack.split(chunk) if len(part)]
    encoded: list[dict] = []
    for batch in _batches(parts, _CHUNK_BUDGET):
        encoded += _encode_batch(batch, kept, plan)
    bounds = np.cumsum([0, *(len(stack) for stack in stacks)])
    return [encoded[start:end] for start, end in itertools.pairwise(bounds)]


def _batches(parts: list[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of `parts` of at most `limit` elements each (a larger part alone)."""
    batch: list[torch.Tensor] = []
    size = 0
    for part in parts:
        if batch and size + part.numel() > limit:
            yield batch
            batch, size = [], 0
        batch.append(part)
        size += part.numel()
    if batch:
        yield batch


def _encode_batch(parts: list[torch.Tensor], kept: torch.Tensor | None, plan: _Enlargement) -> list[dict]:
    """RLEs of the masks in `parts`: every change and column end located on the device in one flag vector,
    whose set positions cross to the host in one transfer."""
    flags, shapes = [], []
    for part in parts:
        columns = (part if kept is None else part[:, kept]).transpose(1, 2)  # (k, W, H') kept rows per column
        flags.append((columns[:, :, 1:] != columns[:, :, :-1]).flatten())
        flags.append(torch.stack([columns[:, :, 0], columns[:, :, -1]], dim=1).flatten())
        shapes.append(columns.shape)
    flat = torch.cat(flags)
    positions = flat.nonzero()[:, 0]
    (positions,) = fetch(positions, dtype=torch.int32 if len(flat) < 2**31 else torch.int64)
    boundaries = np.cumsum([0, *(len(flag) for flag in flags)])
    found = np.split(positions.astype(np.int64), np.searchsorted(positions, boundaries[1:-1]))
    encoded = []
    for index, (count, columns, rows) in enumerate(shapes):
        changes = found[2 * index] - boundaries[2 * index]
        ends = found[2 * index + 1] - boundaries[2 * index + 1]
        encoded += _encode_part(changes, ends, (count, columns, rows), plan)
    return encoded


def _encode_part(
    changes: np.ndarray, ends: np.ndarray, shape: tuple[int, int, int], plan: _Enlargement
) -> list[dict]:
    """RLEs of one part from the flat positions of its changes (in `(k, W, H'-1)`) and set column ends (in
    `(k, 2, W)`, first row then last row)."""
    count, width, rows = shape
    gaps = max(rows - 1, 1)  # (a single kept row has no changes)
    mask_of_change, within = np.divmod(changes, width * gaps)
    change_cells = np.stack(np.divmod(within, gaps), axis=1)  # (column, kept row - 1)
    split = np.searchsorted(mask_of_change, np.arange(count + 1))
    edges = np.zeros((count, 2, width), dtype=bool)
    edges.reshape(-1)[ends] = True
    height0, width0 = plan.size
    encoded = []
    for index in range(count):
        found = change_cells[split[index] : split[index + 1]]
        counts = _run_lengths(found, edges[index, 0], edges[index, 1], plan.col_of, plan.row_starts, height0)
        encoded.append(mask_utils.frPyObjects({"size": [height0, width0], "counts": counts}, height0, width0))
    return encoded


def _run_lengths(
    changes: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    col_of: np.ndarray,
    row_starts: np.ndarray,
    height0: int,
) -> list[int]:
    """Run lengths of one enlarged mask from the `(column, kept row − 1)` changes of its resized mask."""
    per_column = np.bincount(changes[:, 0], minlength=len(first))
    column_start = np.cumsum(per_column) - per_column
    repeats = per_column[col_of]  # inner changes of every original column
    x0 = np.repeat(np.arange(len(col_of)), repeats)
    within = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    entry = column_start[col_of][x0] + within
    inner = x0 * height0 + row_starts[changes[entry, 1] + 1]
    boundary = np.flatnonzero(first[col_of[1:]] != last[col_of[:-1]]) + 1
    positions = np.sort(np.concatenate([inner, boundary * height0]))
    counts = np.diff(np.concatenate([[0], positions, [height0 * len(col_of)]]))
    if first[col_of[0]]:
        counts = np.concatenate([[0], counts])
    return counts.tolist()


def boxes_to_original(boxes_xywh: np.ndarray, resized: Size, original: Size) -> np.ndarray:
    """The reference's `[x, y, w, h]` boxes as float64 xyxy in original pixels, scaled per axis."""
    boxes = boxes_xywh.astype(np.float64)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    scale = np.array([original[1] / resized[1], original[0] / resized[0]] * 2)
    return xyxy * scale


def to_page_instances(
    result: SlideWindowResult, resized: Size, original: Size, class_names: list[str]
) -> PageInstances:
    """The merged result in the original page's pixels, sorted by (original) mask area, largest first.

    The reference order is by resized area; the stable re-sort only reorders near-ties that the mapping
    changed, so that `PageInstances.areas()` is non-increasing as documented.
    """
    masks, semantic = encode_resampled_stacks([result.masks, result.semantic], original)
    boxes, scores, labels = fetch(result.boxes_xywh, result.scores, result.labels, dtype=torch.float64)
    areas = rle_areas(masks)
    order = np.argsort(-areas, kind="stable")
    return PageInstances(
        height=original[0],
        width=original[1],
        class_names=list(class_names),
        masks=[masks[i] for i in order],
        boxes=boxes_to_original(boxes, resized, original)[order],
        scores=scores[order],
        labels=labels.astype(np.int64)[order],
        semantic_masks=semantic,
    )
