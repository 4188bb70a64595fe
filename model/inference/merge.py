"""Merging the patches of a page (`predict_slide_window`, ARCHITECTURE §7.6, Q-16).

Reference semantics: thumbnail scores ×0.75; a window instance whose tight mask box comes within 4 px of
the window border (even at the page border) ×0.5; window instances are pasted onto the page at their
offset, boxes shifted; after EVERY window a class-wise mask NMS at IoU 0.5 runs over everything kept so
far (incremental, so the result depends on the window order); semantic maps are majority-voted over the
patches covering a pixel, the thumbnail counting once everywhere; instances end sorted by mask area.

How it is done here: two instances that already survived together can never suppress each other later
(the 0.25 patch NMS and every earlier 0.5 round already compared them, and the suppression relation is
symmetric and monotone in the threshold), so only pairs from different patches matter. That relation is
computed once on the device — mask intersections only for pairs the box prefilter lets through, only
over the overlap of the two patches — and the incremental rounds are replayed on the host over the boolean
matrix: a handful of host transfers per page instead of several per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from model.inference.geometry import Box, PageLayout
from model.inference.nms import (
    box_relations,
    greedy_keep,
    mask_areas,
    mask_iou_reaches,
    nms_order,
    pairwise_intersections,
    tight_boxes,
)
from model.inference.postprocess import PatchDetections

THUMBNAIL_WEIGHT = 0.75  # whole-page patch scores (§7.6)
BORDER_WEIGHT = 0.5  # window instances touching the border band (§7.6)
BORDER_MARGIN = 4  # px, width of that band
MERGE_NMS_IOU = 0.5  # incremental cross-patch NMS (§7.6)


@dataclass
class SlideWindowResult:
    """`predict_slide_window` output, in the coordinates of the resized page (the reference's frame)."""

    masks: torch.Tensor  # (K, H, W) bool
    boxes_xywh: torch.Tensor  # (K, 4) float32, the reference's reported boxes [x, y, w, h]
    scores: torch.Tensor  # (K,) float32
    labels: torch.Tensor  # (K,) int64, 0-based into the prompted names
    semantic: torch.Tensor  # (C-1, H, W) bool, background dropped

    def __len__(self) -> int:
        return self.masks.shape[0]


@dataclass
class _Placed:
    """One patch's detections with page weights applied, located on the canvas."""

    detections: PatchDetections
    rect: Box  # canvas rectangle of the detection frame
    canvas_boxes: torch.Tensor  # (K, 4) tight mask boxes in canvas pixels (what the merge NMS sees)


def merge_patches(detections: list[PatchDetections], layout: PageLayout) -> SlideWindowResult:
    """§7.6 over the per-patch results of one page (thumbnail first, then `layout.windows`)."""
    placed = [_place_thumbnail(detections[0], layout)]
    placed += [
        _place_window(det, rect, layout) for det, rect in zip(detections[1:], layout.windows, strict=True)
    ]
    patches, indices = _merged_members(placed)
    order = torch.sort(_page_areas(placed, patches, indices, layout), descending=True, stable=True).indices
    order = order.cpu().numpy()
    return _assemble(placed, (patches[order], indices[order]), layout)


def _place_thumbnail(detections: PatchDetections, layout: PageLayout) -> _Placed:
    height, width = layout.resized
    weighted = replace(detections, scores=detections.scores * THUMBNAIL_WEIGHT)
    return _located(weighted, (0, 0, width, height), tight_boxes(detections.masks), layout)


def _place_window(detections: PatchDetections, rect: Box, layout: PageLayout) -> _Placed:
    local = tight_boxes(detections.masks)
    patch_h, patch_w = layout.patch
    touches = (
        (local[:, 0] < BORDER_MARGIN)
        | (local[:, 1] < BORDER_MARGIN)
        | (local[:, 2] > patch_w - BORDER_MARGIN)
        | (local[:, 3] > patch_h - BORDER_MARGIN)
    )
    boxes = detections.boxes_xywh.clone()
    boxes[:, 0] += rect[0]
    boxes[:, 1] += rect[1]
    scores = torch.where(touches, detections.scores * BORDER_WEIGHT, detections.scores)
    weighted = replace(detections, boxes_xywh=boxes, scores=scores)
    offset = torch.tensor([rect[0], rect[1], rect[0], rect[1]], dtype=local.dtype, device=local.device)
    return _located(weighted, rect, local + offset, layout)


def _located(detections: PatchDetections, rect: Box, boxes: torch.Tensor, layout: PageLayout) -> _Placed:
    """Empty masks get the reference's whole-canvas tight box (they are padded to the canvas there)."""
    canvas_h, canvas_w = layout.canvas
    whole = boxes.new_tensor([0, 0, canvas_w - 1, canvas_h - 1])
    boxes = torch.where((detections.areas == 0)[:, None], whole, boxes)
    return _Placed(detections=detections, rect=rect, canvas_boxes=boxes)


def _merged_members(placed: list[_Placed]) -> tuple[np.ndarray, np.ndarray]:
    """(patch, index in the patch) of the instances the incremental NMS leaves, in the reference's order."""
    starts = np.cumsum([0, *(len(p.detections.scores) for p in placed)])
    suppresses = _cross_patch_suppression(placed, starts).cpu().numpy()
    labels = torch.cat([p.detections.labels for p in placed]).cpu().numpy()
    scores = torch.cat([p.detections.scores for p in placed]).cpu().numpy()
    running = np.arange(starts[0], starts[1])
    for patch in range(1, len(placed)):
        union = np.concatenate([running, np.arange(starts[patch], starts[patch + 1])])
        kept = greedy_keep(nms_order(labels[union], scores[union]), suppresses[np.ix_(union, union)])
        running = union[kept]
    patches = np.searchsorted(starts, running, side="right") - 1
    return patches, running - starts[patches]


def _cross_patch_suppression(placed: list[_Placed], starts: np.ndarray) -> torch.Tensor:
    """Who may suppress whom at IoU 0.5, for pairs of instances from different patches.

    Mask intersections are counted only for pairs that the box prefilter lets through, and only over the
    overlap of the two patches' frames (outside it one of the masks is empty).
    """
    boxes = torch.cat([p.canvas_boxes for p in placed])
    labels = torch.cat([p.detections.labels for p in placed])
    sizes = torch.tensor(np.diff(starts), device=labels.device)
    patch = torch.repeat_interleave(torch.arange(len(placed), device=labels.device), sizes)
    different = patch[:, None] != patch[None, :]
    compare, suppresses = box_relations((boxes, boxes), (labels, labels))
    compare &= different
    suppresses &= different
    compare_host = compare.cpu().numpy()
    for first in range(len(placed)):
        for second in range(first + 1, len(placed)):
            rows = slice(starts[first], starts[first + 1])
            cols = slice(starts[second], starts[second + 1])
            pairs = compare_host[rows, cols]
            overlap = _overlap(placed[first].rect, placed[second].rect)
            if overlap is None or not pairs.any():
                continue
            row_index = np.flatnonzero(pairs.any(axis=1))
            col_index = np.flatnonzero(pairs.any(axis=0))
            reached = _mask_iou_reaches(placed[first], placed[second], row_index, col_index, overlap)
            block = (
                torch.from_numpy(row_index + starts[first]).to(labels.device)[:, None],
                torch.from_numpy(col_index + starts[second]).to(labels.device)[None, :],
            )
            suppresses[block] |= compare[block] & reached
            transposed = (block[1].T, block[0].T)
            suppresses[transposed] |= compare[transposed] & reached.T
    return suppresses


def _overlap(first: Box, second: Box) -> Box | None:
    x1, y1 = max(first[0], second[0]), max(first[1], second[1])
    x2, y2 = min(first[2], second[2]), min(first[3], second[3])
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _mask_iou_reaches(
    first: _Placed, second: _Placed, rows: np.ndarray, cols: np.ndarray, overlap: Box
) -> torch.Tensor:
    """Mask IoU ≥ 0.5 between instances `rows` of one patch and `cols` of another."""
    device = first.detections.masks.device
    rows_t, cols_t = torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)
    intersections = pairwise_intersections(_crop(first, rows_t, overlap), _crop(second, cols_t, overlap))
    areas = (first.detections.areas[rows_t], second.detections.areas[cols_t])
    return mask_iou_reaches(intersections, areas, MERGE_NMS_IOU)


def _crop(placed: _Placed, index: torch.Tensor, box: Box) -> torch.Tensor:
    left, top = placed.rect[0], placed.rect[1]
    masks = placed.detections.masks[index]
    return masks[:, box[1] - top : box[3] - top, box[0] - left : box[2] - left].flatten(1)


def _page_areas(
    placed: list[_Placed], patches: np.ndarray, indices: np.ndarray, layout: PageLayout
) -> torch.Tensor:
    """Mask areas inside the resized page, the key of the final sort (`get_instance_segmentation_results`
    crops to the page first; only windows reaching into B-15 padding need a recount)."""
    height, width = layout.resized
    areas = torch.zeros(len(patches), dtype=torch.int64, device=placed[0].detections.areas.device)
    for patch, where in enumerate(placed):
        positions, chosen = _members_of(patch, patches, indices, areas.device)
        x1, y1, x2, y2 = where.rect
        if x2 <= width and y2 <= height:
            areas[positions] = where.detections.areas[chosen]
        else:
            areas[positions] = mask_areas(where.detections.masks[chosen][:, : height - y1, : width - x1])
    return areas


def _members_of(
    patch: int, patches: np.ndarray, indices: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in the member list, and indices in the patch, of one patch's members."""
    positions = np.flatnonzero(patches == patch)
    return torch.from_numpy(positions).to(device), torch.from_numpy(indices[positions]).to(device)


def _assemble(
    placed: list[_Placed], members: tuple[np.ndarray, np.ndarray], layout: PageLayout
) -> SlideWindowResult:
    """Paste the kept instances onto the canvas (one indexed copy per patch) in member order and vote the
    semantic maps; crop to the resized page."""
    patches, indices = members
    device = placed[0].detections.masks.device
    count = len(patches)
    masks = torch.zeros(count, *layout.canvas, dtype=torch.bool, device=device)
    boxes = torch.zeros(count, 4, dtype=torch.float32, device=device)
    scores = torch.zeros(count, dtype=torch.float32, device=device)
    labels = torch.zeros(count, dtype=torch.int64, device=device)
    for patch, where in enumerate(placed):
        positions, chosen = _members_of(patch, patches, indices, device)
        x1, y1, x2, y2 = where.rect
        masks[positions, y1:y2, x1:x2] = where.detections.masks[chosen]
        boxes[positions] = where.detections.boxes_xywh[chosen]
        scores[positions] = where.detections.scores[chosen]
        labels[positions] = where.detections.labels[chosen]
    height, width = layout.resized
    return SlideWindowResult(
        masks=masks[:, :height, :width],
        boxes_xywh=boxes,
        scores=scores,
        labels=labels,
        semantic=_vote_semantic(placed, layout),
    )


def _vote_semantic(placed: list[_Placed], layout: PageLayout) -> torch.Tensor:
    """`(votes / coverage) > 0.5` per class, in integers (`2·votes > coverage`), background dropped."""
    thumbnail = placed[0].detections.semantic
    classes, device = thumbnail.shape[0], thumbnail.device
    votes = torch.zeros(classes, *layout.canvas, dtype=torch.int32, device=device)
    coverage = torch.ones(layout.canvas, dtype=torch.int32, device=device)
    for patch in placed:
        x1, y1, x2, y2 = patch.rect
        votes[:, y1:y2, x1:x2] += patch.detections.semantic
        if patch is not placed[0]:
            coverage[y1:y2, x1:x2] += 1
    height, width = layout.resized
    return (2 * votes > coverage)[: classes - 1, :height, :width]
