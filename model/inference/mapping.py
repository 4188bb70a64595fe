"""From the reference's frame (the resized page) back to the original page's pixels.

The reference stops in resized coordinates (§7.2). We map back:

* Boxes: scaled per axis, `x · W0/W`, `y · H0/H` (continuous pixel coordinates; the resize may change the
  aspect ratio, Q-15).
* Masks: nearest neighbour at pixel centres — original pixel `(y0, x0)` takes resized pixel
  `(⌊(y0 + ½)·H/H0⌋, ⌊(x0 + ½)·W/W0⌋)`. Every original pixel inherits exactly the reference decision of the
  resized pixel it falls in, so mapping the reference's own mask the same way gives IoU 1, and mapping ours
  back down reproduces it up to the sub-pixel slivers of non-integer scales. (torch's legacy `nearest` would
  shift masks by up to half a resized pixel towards the top-left.) Re-thresholding upsampled logits
  would give smoother edges but different decisions than the reference's NMS and scores were based on.
* The RLE of the enlarged mask is built directly from the resized mask's row/column changes, never
  materialising the full-resolution mask: work and memory scale with the mask outline, not with the page
  area (a 300-dpi A4 scan has 8.7 Mpx per instance).
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from model.inference.geometry import Size
from model.inference.merge import SlideWindowResult
from model.instances import PageInstances

_CHUNK_BUDGET = 1 << 28  # mask pixels compared at once on the device (256 MiB of bools)


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
    """COCO RLEs (`{"size": [H0, W0], "counts": bytes}`) of `resample_masks(masks, size)`.

    Column-major RLE of the enlarged mask: original column x0 is resized column `c(x0)` with every resized
    row y repeated `n(y)` times (0 when shrinking). Its value changes where consecutive kept rows of that
    column differ, and at a column start where it differs from the previous column's end. Those changes are
    found on the device for a chunk of masks at a time; the host turns them into run lengths.
    """
    height0, width0 = size
    row_of = nearest_sources(masks.shape[-2], height0)
    col_of = nearest_sources(masks.shape[-1], width0)
    repeats = np.bincount(row_of, minlength=masks.shape[-2])
    kept_rows = np.flatnonzero(repeats)
    row_starts = np.concatenate([[0], np.cumsum(repeats[kept_rows])[:-1]])
    kept = torch.from_numpy(kept_rows).to(masks.device)
    chunk = max(1, _CHUNK_BUDGET // max(1, masks.shape[-2] * masks.shape[-1]))
    encoded: list[dict] = []
    for part in masks.split(chunk):
        columns = part[:, kept].transpose(1, 2)  # (k, W, H') kept rows of each resized column
        changes = (columns[:, :, 1:] != columns[:, :, :-1]).nonzero().cpu().numpy()  # sorted (mask, col, row)
        first = columns[:, :, 0].cpu().numpy()
        last = columns[:, :, -1].cpu().numpy()
        split = np.searchsorted(changes[:, 0], np.arange(len(part) + 1))
        for index in range(len(part)):
            found = changes[split[index] : split[index + 1], 1:]
            counts = _run_lengths(found, first[index], last[index], col_of, row_starts, height0)
            encoded.append(
                mask_utils.frPyObjects({"size": [height0, width0], "counts": counts}, height0, width0)
            )
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


def boxes_to_original(boxes_xywh: torch.Tensor, resized: Size, original: Size) -> np.ndarray:
    """The reference's `[x, y, w, h]` boxes as float64 xyxy in original pixels, scaled per axis."""
    boxes = boxes_xywh.double().cpu().numpy()
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
    masks = encode_resampled(result.masks, original)
    areas = np.asarray(mask_utils.area(masks), dtype=np.int64) if masks else np.zeros(0, dtype=np.int64)
    order = np.argsort(-areas, kind="stable")
    return PageInstances(
        height=original[0],
        width=original[1],
        class_names=list(class_names),
        masks=[masks[i] for i in order],
        boxes=boxes_to_original(result.boxes_xywh, resized, original)[order],
        scores=result.scores.double().cpu().numpy()[order],
        labels=result.labels.cpu().numpy().astype(np.int64)[order],
        semantic_masks=encode_resampled(result.semantic, original),
    )
