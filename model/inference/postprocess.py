"""Per-patch post-processing (`post_process_instance_segmentation`, ARCHITECTURE §7.5, Q-10, Q-16).

Per patch: class score = softmax over ALL prompt columns, max over the non-background ones; keep queries
scoring ≥ 0.01 (else query 0) whose 1/4-resolution mask has a pixel with σ > 0.5 (else the first kept one);
upsample the kept mask logits bilinearly straight to the target size (the resized page for the thumbnail,
the patch for a window); final score = class score × mean mask probability inside the mask; boxes are the
regressed ones scaled to the target; semantic maps σ > 0.5; class-wise mask NMS at IoU 0.25.

The query filters run for all patches at once; only the upsampling is done per patch, in chunks of queries
so that memory stays bounded however many queries survive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from model.inference.forward import PatchOutputs
from model.inference.geometry import PageLayout, Size
from model.inference.nms import mask_areas, mask_nms

SCORE_THRESHOLD = 0.01  # threshold_prob (§7.5)
PATCH_NMS_IOU = 0.25  # threshold_nms inside one patch (§7.5)
_UPSAMPLE_BUDGET = 1 << 26  # float32 elements of upsampled logits held at once (256 MiB)


@dataclass
class PatchDetections:
    """One patch's instances after §7.5, in the reference's order (labels ascending, scores descending).

    Coordinates are the patch's target frame: the resized page for the thumbnail, the window otherwise.
    """

    masks: torch.Tensor  # (K, th, tw) bool
    boxes_xywh: torch.Tensor  # (K, 4) float32 regressed boxes [x, y, w, h] (w, h may be negative)
    scores: torch.Tensor  # (K,) float32
    labels: torch.Tensor  # (K,) int64, 0-based into the prompted names (background excluded)
    semantic: torch.Tensor  # (C, th, tw) bool, one map per prompt, background last
    areas: torch.Tensor  # (K,) int64 pixels of each mask

    def take(self, index: torch.Tensor) -> PatchDetections:
        return replace(
            self,
            masks=self.masks[index],
            boxes_xywh=self.boxes_xywh[index],
            scores=self.scores[index],
            labels=self.labels[index],
            areas=self.areas[index],
        )


def class_scores(class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and 0-based label per query: softmax over all columns, max over all but the background (Q-10)."""
    return class_logits.softmax(dim=-1)[..., :-1].max(dim=-1)


def select_queries(outputs: PatchOutputs) -> torch.Tensor:
    """`(P, Q)` boolean: the queries §7.5 keeps in each patch, with both fallbacks, without host syncs."""
    scores, _ = class_scores(outputs.class_logits)
    first_query = torch.zeros(scores.shape[0], dtype=torch.int64, device=scores.device)
    confident = _or_first(scores >= SCORE_THRESHOLD, first_query)
    non_empty = torch.stack(
        [(logits.sigmoid() > 0.5).flatten(1).any(dim=1) for logits in outputs.mask_logits]
    )
    first_confident = confident.to(torch.uint8).argmax(dim=1)
    return _or_first(confident & non_empty, first_confident)


def _or_first(keep: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Rows keeping nothing keep the query `fallback[row]` instead (the reference's `indexes[0] = True`)."""
    columns = torch.arange(keep.shape[1], device=keep.device)
    return keep | (~keep.any(dim=1, keepdim=True) & (columns[None, :] == fallback[:, None]))


def postprocess_patches(outputs: PatchOutputs, layout: PageLayout) -> list[PatchDetections]:
    """§7.5 for every patch of a page; patch 0 is the thumbnail."""
    selected = select_queries(outputs).nonzero().cpu()
    device = outputs.mask_logits.device
    detections = []
    for patch in range(outputs.mask_logits.shape[0]):
        rows = selected[selected[:, 0] == patch, 1].to(device)
        target = layout.resized if patch == 0 else layout.patch
        candidates = patch_candidates(outputs, patch, rows, target, layout.patch)
        kept = mask_nms(
            candidates.masks, candidates.scores, candidates.labels, PATCH_NMS_IOU, areas=candidates.areas
        )
        detections.append(candidates.take(kept))
    return detections


def patch_candidates(
    outputs: PatchOutputs, patch: int, rows: torch.Tensor, target: Size, patch_size: Size
) -> PatchDetections:
    """Steps 3-6 of §7.5 for the selected `rows` of one patch, before the NMS."""
    masks, areas, mask_scores = upsample_masks(outputs.mask_logits[patch, rows], target)
    scores, labels = class_scores(outputs.class_logits[patch, rows])
    semantic = _upsample(outputs.semantic_logits[patch], target).sigmoid() > 0.5
    return PatchDetections(
        masks=masks,
        boxes_xywh=scale_boxes(outputs.boxes[patch, rows], patch_size, target),
        scores=scores * mask_scores,
        labels=labels,
        semantic=semantic,
        areas=areas,
    )


def upsample_masks(logits: torch.Tensor, target: Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary masks `σ(bilinear(logits)) > 0.5` at `target`, their areas and their mean probability inside
    the mask (0 for an empty mask), computed in chunks of queries straight into the outputs."""
    count = logits.shape[0]
    masks = torch.empty((count, *target), dtype=torch.bool, device=logits.device)
    areas = torch.empty(count, dtype=torch.int64, device=logits.device)
    scores = torch.empty(count, dtype=torch.float32, device=logits.device)
    chunk = max(1, _UPSAMPLE_BUDGET // (target[0] * target[1]))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        probs = _upsample(logits[part], target).sigmoid_()
        torch.gt(probs, 0.5, out=masks[part])
        areas[part] = mask_areas(masks[part])
        scores[part] = probs.mul_(masks[part]).sum(dim=(1, 2)) / areas[part].clamp(min=1)
    return masks, areas, scores


def _upsample(logits: torch.Tensor, target: Size) -> torch.Tensor:
    return F.interpolate(logits[None], size=target, mode="bilinear", align_corners=False)[0]


def scale_boxes(boxes: torch.Tensor, patch_size: Size, target: Size) -> torch.Tensor:
    """Regressed xyxy patch boxes → `[x, y, w, h]` in the target frame, with the reference's float32 operation
    order (`x / patch_w * target_w`, then `w = x2 - x1`)."""
    xs = boxes[:, [0, 2]] / patch_size[1] * target[1]
    ys = boxes[:, [1, 3]] / patch_size[0] * target[0]
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0]], dim=1)
