"""Mask NMS of the reference (`non_max_suppression`; docs/design.md, "mask NMS rule"), on the device.

The reference walks the candidates of each label by descending score and, for every kept mask, computes
box IoUs of the tight mask boxes against the rest and mask IoUs where the box IoU exceeds 0.01, one pair at
a time, with a host sync per step. Whether one candidate suppresses another does not depend on the walk, so
here the suppression relation is built with matrix products over flattened masks (exact integer counts),
for all pairs at once or for the pairs the caller names, and the walk itself runs on the device too
(`greedy`).

Suppression of `b` by a kept `a` of the same label, exactly as the reference decides it:
`(box_iou > 0.01 and mask_iou >= threshold) or box_iou is NaN`. The NaN case (both tight boxes have zero
area, i.e. one-pixel-thin masks) comes from torchvision's `box_iou` dividing 0 by 0; the reference keeps a
candidate only when `iou < threshold`, which is false for NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

from model.inference.greedy import earlier_suppressors, ranks, visiting_order, walk_to_the_end
from model.inference.memory import chunk_elements
from model.inference.packed import PackedMasks, unpack_bits

BOX_PREFILTER_IOU = 0.01  # pairs at or below this box IoU are never compared by mask
# Pixels per CUDA product chunk. Counts of 0/1 products are exact while a partial sum fits the accumulator's
# mantissa: 2**24 for float32; 2**20 leaves margin for tensor-core accumulators narrower than IEEE float32.
_EXACT_CHUNK = 1 << 20

Candidates = slice | torch.Tensor  # some candidates: a range of them, or a vector of their indices


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`mask_bbox` of the reference: inclusive `[x1, y1, x2, y2]` float32 pixel boxes of `(K, H, W)` masks.

    An empty mask gets the whole area `[0, 0, W-1, H-1]`, as the reference's argmax over all-false rows does.
    The row and column projections are byte maxima (a reduction torch vectorises, unlike `any`).
    """
    height, width = masks.shape[-2:]
    as_bytes = masks.view(torch.uint8)
    columns = as_bytes.amax(dim=-2)
    rows = as_bytes.amax(dim=-1)
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

    On the CPU an int8 product of the masks' own bytes into int32 sums (`torch._int_mm`, oneDNN): exact, and
    no converted copies. On CUDA bfloat16 operands (exact for 0/1) multiplied on tensor cores into float32,
    over chunks of at most `_EXACT_CHUNK` pixels so that every partial sum is exact, accumulated in float64;
    the converted copies stay within `chunk_elements`, and a set compared with itself (`second is first`) is
    converted once. Autocast does not reach either: a reduced-precision product would round the counts.
    Over a single pixel (two windows sharing one corner pixel) the counts are the masks' own bits:
    `torch._int_mm` on the CPU returns uninitialised memory for a product over one column.
    """
    if first.shape[1] == 1:
        return (first & second.T).double()
    if first.device.type != "cuda":
        as_bytes = [masks.contiguous().view(torch.int8) for masks in (first, second)]
        return torch._int_mm(as_bytes[0], as_bytes[1].T).double()
    total = torch.zeros(first.shape[0], second.shape[0], dtype=torch.float64, device=first.device)
    if first.shape[0] == 0 or second.shape[0] == 0:
        return total
    rows = max(first.shape[0], second.shape[0])
    chunk = max(1, min(_EXACT_CHUNK, chunk_elements(first.device) // rows))
    with torch.autocast("cuda", enabled=False):
        for start in range(0, first.shape[1], chunk):
            left = first[:, start : start + chunk].to(torch.bfloat16)
            right = left if second is first else second[:, start : start + chunk].to(torch.bfloat16)
            total += torch.mm(left, right.T, out_dtype=torch.float32)
    return total


def box_relations(
    boxes: tuple[torch.Tensor, torch.Tensor], labels: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(compare, suppressed)` for all pairs of the two sets, from the tight boxes alone.

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


def packed_intersections(masks: PackedMasks, rows: Candidates, columns: Candidates) -> torch.Tensor:
    """`pairwise_intersections` of the packed masks at `rows` and at `columns`, over chunks of pixels
    unpacked in turn (`chunk_elements` packed bytes at a time, eight times as many unpacked: fewer, larger
    products; the counts are exact integers, so the chunking changes none of them). A set compared with
    itself (`columns is rows`) is unpacked once per chunk."""
    first = masks.bits[rows]
    second = first if columns is rows else masks.bits[columns]
    unpacked_rows = first.shape[0] + (0 if second is first else second.shape[0])
    step = max(1, chunk_elements(first.device) // max(unpacked_rows, 1))
    total = torch.zeros(first.shape[0], second.shape[0], dtype=torch.float64, device=first.device)
    for start in range(0, first.shape[1], step):
        left = unpack_bits(first[:, start : start + step])
        right = left if second is first else unpack_bits(second[:, start : start + step])
        total += pairwise_intersections(left, right)
    return total


def suppression(
    masks: PackedMasks,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    areas: torch.Tensor,
    threshold: float,
    pairs: Sequence[tuple[Candidates, Candidates]],
) -> torch.Tensor:
    """`(K, K)` bool: candidate a removes b when a is visited first, for K packed masks with their tight
    `boxes` and `areas`.

    Mask intersections are counted only between the rows and the columns of each of `pairs` (the relation
    is symmetric and filled both ways); every other pair is decided by its boxes alone. Pass the label
    blocks of label-sorted candidates as `(block, block)` (pairs of different labels never suppress), or
    one block over everything, or fewer pairs where the caller knows the rest cannot matter.
    """
    compare, suppresses = box_relations((boxes, boxes), (labels, labels))
    for rows, columns in pairs:
        sizes = (_count(rows, len(masks)), _count(columns, len(masks)))
        if min(sizes) < (2 if columns is rows else 1):
            continue  # nothing to compare (a set of one is compared only with itself)
        index = _grid(rows, columns)
        reached = mask_iou_reaches(
            packed_intersections(masks, rows, columns), (areas[rows], areas[columns]), threshold
        )
        found = compare[index] & reached
        suppresses[index] |= found
        suppresses[_grid(columns, rows)] |= found.T
    return suppresses


def _count(candidates: Candidates, total: int) -> int:
    """How many of `total` candidates `candidates` names."""
    if isinstance(candidates, slice):
        return len(range(*candidates.indices(total)))
    return candidates.shape[0]


def _grid(rows: Candidates, columns: Candidates) -> tuple[Candidates | torch.Tensor, ...]:
    """The index of the `rows` × `columns` sub-matrix (a range or an index vector on each axis)."""
    if isinstance(rows, torch.Tensor) and isinstance(columns, torch.Tensor):
        return rows[:, None], columns[None, :]
    return rows, columns


def mask_nms(
    masks: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
) -> torch.Tensor:
    """The reference's `non_max_suppression_multiclass` of `(K, H, W)` boolean masks: indices of the kept
    candidates in the reference's output order (labels ascending, then descending score).

    A standalone call synchronises a few times (walk bursts, the result's length); the page pipeline runs
    the same relation and walk batched over all patches (`postprocess`).
    """
    everything = slice(0, masks.shape[0])
    packed = PackedMasks.of(masks)
    relation = suppression(
        packed, labels, tight_boxes(masks), mask_areas(masks), threshold, [(everything, everything)]
    )
    order = visiting_order(labels, scores)
    alive = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)
    kept = walk_to_the_end(earlier_suppressors(relation, ranks(order)), alive)
    return order[kept[order]]
