"""Merging the patches of a page (the reference's `predict_slide_window`; docs/design.md, "patch merging").

Reference semantics: thumbnail scores ×0.75; a window instance whose tight mask box comes within 4 px of
the window border (even at the page border) ×0.5; window instances are pasted onto the page at their
offset, boxes shifted; after EVERY window a class-wise mask NMS at IoU 0.5 runs over everything kept so
far (incremental, so the result depends on the window order); semantic maps are majority-voted over the
patches covering a pixel, the thumbnail counting once everywhere; instances end sorted by mask area.

How it is done here, on the device: two instances that already survived together can never suppress each
other later (the 0.25 patch NMS and every earlier 0.5 round already compared them, and the suppression
relation is symmetric and monotone in the threshold), so only pairs from different patches matter. That
relation is computed once — mask intersections only over the overlap of the two patches' frames — and
every incremental round is a device walk (`greedy`) over the candidates of the patches seen so far.

The order of every round is the restriction of one page-wide order: labels ascending, weighted scores
descending, then earlier patches first and the patch's own NMS order (that is where a tie lands when a
round appends a window to the running list). One host transfer at the end tells how many instances the page
keeps, how many come from each patch, and whether every round's walk settled; a page whose walks did not
settle is merged again with longer walks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.inference import greedy
from model.inference.geometry import Box, PageLayout
from model.inference.greedy import Walk, earlier_suppressors, ranks, visiting_order
from model.inference.nms import box_relations, mask_areas, mask_iou_reaches, pairwise_intersections
from model.inference.postprocess import PatchDetections
from model.inference.transfer import fetch, to_device

THUMBNAIL_WEIGHT = 0.75  # multiplies the scores of the whole-page patch
BORDER_WEIGHT = 0.5  # multiplies the scores of window instances touching the border band
BORDER_MARGIN = 4  # px, width of that band
MERGE_NMS_IOU = 0.5  # the mask NMS after every window, over everything kept so far


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
class _PageCandidates:
    """Every patch's detections concatenated (patch by patch, each in its NMS order), weighted and located
    on the canvas."""

    patch: torch.Tensor  # (N,) int64 patch of each candidate
    index: torch.Tensor  # (N,) int64 position inside its patch's detections
    labels: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N,) float32 weighted scores
    boxes_xywh: torch.Tensor  # (N, 4) float32 reported boxes, shifted to the page
    canvas_boxes: torch.Tensor  # (N, 4) float32 tight mask boxes on the canvas (what the merge NMS sees)
    areas: torch.Tensor  # (N,) int64 mask areas
    starts: list[int]  # first candidate of each patch, plus N at the end


def merge_patches(detections: list[PatchDetections], layout: PageLayout) -> SlideWindowResult:
    """The reference's merge of the per-patch results of one page (thumbnail first, then `layout.windows`)."""
    candidates = _page_candidates(detections, layout)
    order = visiting_order(candidates.labels, candidates.scores)
    earlier = earlier_suppressors(_cross_patch_suppression(detections, candidates, layout), ranks(order))
    rounds = greedy.ROUNDS_PER_BURST
    while True:
        survivors, settled = _incremental_rounds(earlier, candidates, rounds)
        settled, per_patch = fetch(settled, _count_by_patch(survivors, candidates.patch, len(detections)))
        if settled:
            break
        rounds *= 4
    members = _final_members(survivors, order, detections, layout, int(per_patch.sum()))
    return _assemble(detections, candidates, members, per_patch, layout)


def _page_candidates(detections: list[PatchDetections], layout: PageLayout) -> _PageCandidates:
    """Weights and canvas positions of all candidates, computed for the whole page at once."""
    device = detections[0].masks.device
    sizes = [len(found) for found in detections]
    patch = torch.cat(
        [torch.full((size,), index, dtype=torch.int64, device=device) for index, size in enumerate(sizes)]
    )
    offsets = to_device(np.array(layout.patch_boxes, dtype=np.float32)[:, :2], device)[patch]
    tight = torch.cat([found.tight_boxes for found in detections])
    patch_h, patch_w = layout.patch
    touches = (
        (tight[:, 0] < BORDER_MARGIN)
        | (tight[:, 1] < BORDER_MARGIN)
        | (tight[:, 2] > patch_w - BORDER_MARGIN)
        | (tight[:, 3] > patch_h - BORDER_MARGIN)
    )
    raw = torch.cat([found.scores for found in detections])
    window_scores = torch.where(touches, raw * BORDER_WEIGHT, raw)
    boxes = torch.cat([found.boxes_xywh for found in detections])
    boxes[:, :2] += offsets  # the thumbnail's offset is 0
    areas = torch.cat([found.areas for found in detections])
    canvas_h, canvas_w = layout.canvas
    whole = to_device(np.array([0, 0, canvas_w - 1, canvas_h - 1], dtype=np.float32), device)
    canvas_boxes = torch.where((areas == 0)[:, None], whole, tight + offsets.repeat(1, 2))
    return _PageCandidates(
        patch=patch,
        index=torch.cat([torch.arange(size, device=device) for size in sizes]),
        labels=torch.cat([found.labels for found in detections]),
        scores=torch.where(patch == 0, raw * THUMBNAIL_WEIGHT, window_scores),
        boxes_xywh=boxes,
        canvas_boxes=canvas_boxes,
        areas=areas,
        starts=[0, *np.cumsum(sizes).tolist()],
    )


def _cross_patch_suppression(
    detections: list[PatchDetections], candidates: _PageCandidates, layout: PageLayout
) -> torch.Tensor:
    """Who may suppress whom at IoU 0.5, for pairs of candidates from different patches.

    Empty masks get the reference's whole-canvas tight box (they are padded to the canvas there). Mask
    intersections are counted only over the overlap of the two patches' frames (outside it one of the masks
    is empty).
    """
    boxes, labels, starts = candidates.canvas_boxes, candidates.labels, candidates.starts
    compare, suppresses = box_relations((boxes, boxes), (labels, labels))
    different = candidates.patch[:, None] != candidates.patch[None, :]
    compare &= different
    suppresses &= different
    rects = layout.patch_boxes
    for first in range(len(detections)):
        for second in range(first + 1, len(detections)):
            overlap = _overlap(rects[first], rects[second])
            if overlap is None or not len(detections[first]) or not len(detections[second]):
                continue
            rows = slice(starts[first], starts[first + 1])
            cols = slice(starts[second], starts[second + 1])
            intersections = pairwise_intersections(
                _crop(detections[first].masks, rects[first], overlap),
                _crop(detections[second].masks, rects[second], overlap),
            )
            areas = (detections[first].areas, detections[second].areas)
            reached = compare[rows, cols] & mask_iou_reaches(intersections, areas, MERGE_NMS_IOU)
            suppresses[rows, cols] |= reached
            suppresses[cols, rows] |= reached.T
    return suppresses


def _overlap(first: Box, second: Box) -> Box | None:
    x1, y1 = max(first[0], second[0]), max(first[1], second[1])
    x2, y2 = min(first[2], second[2]), min(first[3], second[3])
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _crop(masks: torch.Tensor, rect: Box, box: Box) -> torch.Tensor:
    """`masks` located at `rect` on the canvas, cut to the canvas `box` and flattened."""
    left, top = rect[0], rect[1]
    return masks[:, box[1] - top : box[3] - top, box[0] - left : box[2] - left].flatten(1)


def _incremental_rounds(
    earlier: torch.Tensor, candidates: _PageCandidates, rounds: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running list after the NMS round of every window, as `(N,)` bool, and whether every round's walk
    settled within `rounds` (if not, the result is wrong and the caller merges again with longer walks).

    Round w only involves the patches up to w, the first `starts[w + 1]` candidates.
    """
    patch, starts = candidates.patch, candidates.starts
    running = patch == 0
    settled = torch.ones((), dtype=torch.bool, device=patch.device)
    for window in range(1, len(starts) - 1):
        end = starts[window + 1]
        alive = running[:end] | (patch[:end] == window)
        walk = Walk.start(alive).advance(earlier[:end, :end], rounds)
        settled &= walk.settled()
        running = torch.cat([walk.kept, running.new_zeros(len(running) - end)])
    return running, settled


def _count_by_patch(members: torch.Tensor, patch: torch.Tensor, patches: int) -> torch.Tensor:
    counts = torch.zeros(patches, dtype=torch.int64, device=patch.device)
    return counts.scatter_add_(0, patch, members.long())


def _final_members(
    survivors: torch.Tensor,
    order: torch.Tensor,
    detections: list[PatchDetections],
    layout: PageLayout,
    count: int,
) -> torch.Tensor:
    """Indices of the page's instances: the last round's output order (the page-wide visiting order), then
    stably sorted by mask area inside the resized page, largest first (`get_instance_segmentation_results`
    crops to the page first; only windows reaching into the padding of a page smaller than a window need a
    recount)."""
    in_nms_order = order[torch.argsort((~survivors[order]).to(torch.uint8), stable=True)[:count]]
    height, width = layout.resized
    areas = torch.cat(
        [
            found.areas
            if rect[2] <= width and rect[3] <= height
            else mask_areas(found.masks[:, : height - rect[1], : width - rect[0]])
            for found, rect in zip(detections, layout.patch_boxes, strict=True)
        ]
    )
    by_area = torch.sort(areas[in_nms_order], descending=True, stable=True).indices
    return in_nms_order[by_area]


def _assemble(
    detections: list[PatchDetections],
    candidates: _PageCandidates,
    members: torch.Tensor,
    per_patch: np.ndarray,
    layout: PageLayout,
) -> SlideWindowResult:
    """Paste the page's instances onto the canvas (one indexed copy per patch, `per_patch` of them from each)
    in member order and vote the semantic maps; crop to the resized page."""
    device = members.device
    masks = torch.zeros(len(members), *layout.canvas, dtype=torch.bool, device=device)
    by_patch = torch.argsort(candidates.patch[members], stable=True)
    start = 0
    for found, rect, count in zip(detections, layout.patch_boxes, per_patch.tolist(), strict=True):
        positions = by_patch[start : start + count]
        start += count
        x1, y1, x2, y2 = rect
        masks[positions, y1:y2, x1:x2] = found.masks[candidates.index[members[positions]]]
    height, width = layout.resized
    return SlideWindowResult(
        masks=masks[:, :height, :width],
        boxes_xywh=candidates.boxes_xywh[members],
        scores=candidates.scores[members],
        labels=candidates.labels[members],
        semantic=_vote_semantic(detections, layout),
    )


def _vote_semantic(detections: list[PatchDetections], layout: PageLayout) -> torch.Tensor:
    """`(votes / coverage) > 0.5` per class, in integers (`2·votes > coverage`), background dropped."""
    thumbnail = detections[0].semantic
    classes, device = thumbnail.shape[0], thumbnail.device
    votes = torch.zeros(classes, *layout.canvas, dtype=torch.int32, device=device)
    coverage = torch.ones(layout.canvas, dtype=torch.int32, device=device)
    for index, (found, (x1, y1, x2, y2)) in enumerate(zip(detections, layout.patch_boxes, strict=True)):
        votes[:, y1:y2, x1:x2] += found.semantic
        if index > 0:
            coverage[y1:y2, x1:x2] += 1
    height, width = layout.resized
    return (2 * votes > coverage)[: classes - 1, :height, :width]
