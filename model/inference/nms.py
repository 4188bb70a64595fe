"""Mask NMS of the reference (`non_max_suppression`, ARCHITECTURE §7.7), vectorised.

The reference walks the candidates of each label by descending score and, for every kept mask, computes
box IoUs of the tight mask boxes against the rest and mask IoUs where the box IoU exceeds 0.01, one pair at
a time, with a host sync per step. Whether one candidate suppresses another does not depend on the walk,
so here the whole suppression relation is built on the device with matrix products over flattened masks
(exact integer counts) and only the greedy walk over that boolean matrix runs on the host.

Suppression of `b` by a kept `a` of the same label, exactly as the reference decides it:
`(box_iou > 0.01 and mask_iou >= threshold) or box_iou is NaN`. The NaN case (both tight boxes have zero
area, i.e. one-pixel-thin masks) comes from torchvision's `box_iou` dividing 0 by 0; the reference keeps a
candidate only when `iou < threshold`, which is false for NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

BOX_PREFILTER_IOU = 0.01  # pairs at or below this box IoU are never compared by mask (§7.7)
_MATMUL_BUDGET = 1 << 26  # float32 elements per intersection chunk (256 MiB)
_EXACT_FLOAT32_SUM = (1 << 24) - 1  # a float32 sum of 0/1 products is exact up to 2**24


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`mask_bbox` of the reference: inclusive `[x1, y1, x2, y2]` float32 pixel boxes of `(K, H, W)` masks.

    An empty mask gets the whole area `[0, 0, W-1, H-1]`, as the reference's argmax over all-false rows does.
    """
    height, width = masks.shape[-2:]
    columns = masks.any(dim=-2).to(torch.uint8)
    rows = masks.any(dim=-1).to(torch.uint8)
    x1 = columns.argmax(dim=-1)
    x2 = width - 1 - columns.flip(-1).argmax(dim=-1)
    y1 = rows.argmax(dim=-1)
    y2 = height - 1 - rows.flip(-1).argmax(dim=-1)
    return torch.stack([x1, y1, x2, y2], dim=-1).float()


def mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """Pixel count of each of `(K, ...)` boolean masks, int64 (counted as bytes into int32: twice as fast as
    a bool sum on CPU)."""
    return masks.flatten(1).view(torch.uint8).sum(dim=1, dtype=torch.int32).long()


def pairwise_intersections(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """`|A ∩ B|` for all pairs of flattened boolean masks `(Ka, N)` × `(Kb, N)`, exact, as float64.

    Float32 products of 0/1 values summed in chunks of fewer than 2**24 pixels are exact; the chunks are
    accumulated in float64. The chunk size also bounds the float copies to `_MATMUL_BUDGET` elements. A set
    compared with itself (`second is first`) is converted once. Autocast is switched off: a float16/bfloat16
    product would round the counts (the CLI runs the whole pipeline under autocast for the network).
    """
    total = torch.zeros(first.shape[0], second.shape[0], dtype=torch.float64, device=first.device)
    if first.shape[0] == 0 or second.shape[0] == 0:
        return total
    rows = first.shape[0] + second.shape[0]
    chunk = max(1, min(_EXACT_FLOAT32_SUM, _MATMUL_BUDGET // rows))
    with torch.autocast(first.device.type, enabled=False):
        for start in range(0, first.shape[1], chunk):
            left = first[:, start : start + chunk].float()
            right = left if second is first else second[:, start : start + chunk].float()
            total += (left @ right.T).double()
    return total


def box_relations(
    boxes: tuple[torch.Tensor, torch.Tensor], labels: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(compare, suppressed)` for all pairs of the two sets, from the tight boxes alone (§7.7).

    `compare`: same label and box IoU > 0.01, the pairs whose mask IoU decides. `suppressed`: same label and
    box IoU NaN, the pairs removed without a mask comparison.
    """
    box = box_iou(boxes[0], boxes[1])
    same_label = labels[0][:, None] == labels[1][None, :]
    return same_label & (box > BOX_PREFILTER_IOU), same_label & box.isnan()


def mask_iou_reaches(
    intersections: torch.Tensor, areas: tuple[torch.Tensor, torch.Tensor], threshold: float
) -> torch.Tensor:
    """Mask IoU ≥ `threshold`, computed like the reference: float32 `|A∩B| / max(|A| + |B| - |A∩B|, 1)`."""
    union = (areas[0][:, None] + areas[1][None, :] - intersections).clamp(min=1)
    return intersections.float() / union.float() >= threshold


def nms_order(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The reference's visiting order: labels ascending, scores descending within a label; ties keep the
    input order (the reference's `argsort` is not stable; ties only occur between degenerate candidates)."""
    return np.lexsort((-scores.astype(np.float64), labels))


def greedy_keep(order: np.ndarray, suppresses: np.ndarray) -> list[int]:
    """Walk `order`, keeping every candidate not removed by an earlier kept one (`suppresses[kept, other]`).

    The loop touches each candidate once and does vector work only for kept ones.
    """
    removed = np.zeros(suppresses.shape[0], dtype=bool)
    kept: list[int] = []
    for index in order.tolist():
        if not removed[index]:
            kept.append(index)
            removed |= suppresses[index]
    return kept


def mask_nms(
    masks: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    areas: torch.Tensor | None = None,
) -> torch.Tensor:
    """`non_max_suppression_multiclass` (§7.7) of `(K, H, W)` boolean masks: indices of the kept candidates
    in the reference's output order (labels ascending, then descending score). Pass `areas`
    (`mask_areas(masks)`) when they are known already.

    Mask intersections are counted per label, only among candidates that overlap another one by box.
    """
    boxes = tight_boxes(masks)
    compare, suppresses = box_relations((boxes, boxes), (labels, labels))
    compare.fill_diagonal_(False)
    labels_host, compare_host = labels.cpu().numpy(), compare.cpu().numpy()
    order = nms_order(labels_host, scores.cpu().numpy())
    areas = mask_areas(masks) if areas is None else areas
    flat = masks.flatten(1)
    for label in np.unique(labels_host):
        members = np.flatnonzero((labels_host == label) & compare_host.any(axis=1))
        if len(members) < 2:
            continue
        index = torch.from_numpy(members).to(masks.device)
        block = (index[:, None], index[None, :])
        members_flat = flat[index]
        intersections = pairwise_intersections(members_flat, members_flat)
        reached = mask_iou_reaches(intersections, (areas[index], areas[index]), threshold)
        suppresses[block] |= compare[block] & reached
    kept = greedy_keep(order, suppresses.cpu().numpy())
    return torch.tensor(kept, dtype=torch.int64, device=masks.device)
