"""Per-patch post-processing (the reference's `post_process_instance_segmentation`; docs/design.md, "patch
scoring").

Per patch: class score = softmax over ALL prompt columns, max over the non-background ones; keep queries
scoring ≥ 0.01 (else query 0) whose 1/4-resolution mask has a pixel with σ > 0.5 (else the first kept one);
upsample the kept mask logits bilinearly straight to the target size (the resized page for the thumbnail,
the patch for a window); final score = class score × mean mask probability inside the mask; boxes are the
regressed ones scaled to the target; semantic maps σ > 0.5; class-wise mask NMS at IoU 0.25.

Device work without host round trips: the query filters run for all patches at once; the host learns how
many candidates of each label every patch has (one transfer), then upsamples, builds each patch's
suppression relation and runs all patches' NMS walks as one batch; a second transfer tells how many
survive and whether the walks settled (a third, when the NMS needs its second part: `_patch_nms`).
Upsampling goes in chunks of queries, and the candidates' masks are held packed eight pixels to a byte until
their NMS has run (`PatchCandidates`), so that memory stays small however many survive the filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.inference.forward import PatchOutputs
from model.inference.geometry import PageLayout, Size
from model.inference.greedy import Walk, earlier_suppressors, ranks, visiting_order
from model.inference.memory import chunk_elements
from model.inference.nms import Candidates, mask_areas, suppression, tight_boxes
from model.inference.packed import PackedMasks
from model.inference.transfer import fetch, to_device

SCORE_THRESHOLD = 0.01  # the reference's threshold_prob: the class score a query needs to be kept
PATCH_NMS_IOU = 0.25  # the reference's threshold_nms: the mask NMS inside one patch
NMS_LEADERS = 64  # per label, the best-scored candidates the patch NMS compares with all others first


@dataclass
class PatchDetections:
    """One patch's instances after post-processing, in the reference's order (labels ascending, scores
    descending).

    Coordinates are the patch's target frame: the resized page for the thumbnail, the window otherwise.
    """

    masks: torch.Tensor  # (K, th, tw) bool
    boxes_xywh: torch.Tensor  # (K, 4) float32 regressed boxes [x, y, w, h] (w, h may be negative)
    scores: torch.Tensor  # (K,) float32
    labels: torch.Tensor  # (K,) int64, 0-based into the prompted names (background excluded)
    semantic: torch.Tensor  # (C, th, tw) bool, one map per prompt, background last
    areas: torch.Tensor  # (K,) int64 pixels of each mask
    tight_boxes: torch.Tensor  # (K, 4) float32 `tight_boxes(masks)`, the boxes the NMS compares

    def __len__(self) -> int:
        return self.masks.shape[0]


@dataclass
class PatchCandidates:
    """One patch's selected queries before its NMS: the fields of `PatchDetections`, the masks packed eight
    pixels to a byte until the NMS has decided which are kept (all 900 queries of every patch survive
    selection with random DocSAM-Base weights: about 3 GB of masks per A4 page unpacked, 0.4 GB packed)."""

    masks: PackedMasks
    boxes_xywh: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    semantic: torch.Tensor
    areas: torch.Tensor
    tight_boxes: torch.Tensor

    def __len__(self) -> int:
        return len(self.masks)

    def take(self, index: torch.Tensor) -> PatchDetections:
        """The candidates at `index`, their masks unpacked."""
        return PatchDetections(
            masks=self.masks.unpack(index),
            boxes_xywh=self.boxes_xywh[index],
            scores=self.scores[index],
            labels=self.labels[index],
            semantic=self.semantic,
            areas=self.areas[index],
            tight_boxes=self.tight_boxes[index],
        )


def class_scores(class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and 0-based label per query: softmax over all columns, max over all but the background (the
    last column, docs/design.md, "background prompt last")."""
    return class_logits.softmax(dim=-1)[..., :-1].max(dim=-1)


def select_queries(outputs: PatchOutputs) -> torch.Tensor:
    """`(P, Q)` boolean: the queries the reference keeps in each patch, with both fallbacks (query 0 when
    none scores enough, the first kept one when no mask is left), without host syncs."""
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
    """Post-processing of every patch of a page; patch 0 is the thumbnail. Two host transfers per page (one
    more when the NMS needs its second part, and one per extra walk burst in the rare walk that needs
    more than one)."""
    selected = select_queries(outputs)
    scores, labels = class_scores(outputs.class_logits)
    classes = outputs.class_logits.shape[-1] - 1
    grouped, label_counts = _group_by_label(selected, labels, classes)
    (label_counts,) = fetch(label_counts)
    candidates = []
    for patch, counts in enumerate(label_counts):
        rows = grouped[patch, : counts.sum()]
        target = layout.resized if patch == 0 else layout.patch
        candidates.append(patch_candidates(outputs, patch, rows, (scores, labels), target, layout.patch))
    orders = [visiting_order(found.labels, found.scores) for found in candidates]
    kept, kept_counts = _patch_nms(candidates, orders, [_blocks(counts) for counts in label_counts])
    return [
        found.take(_kept_in_order(order, kept[patch, : len(order)], int(kept_counts[patch])))
        for patch, (found, order) in enumerate(zip(candidates, orders, strict=True))
    ]


def _patch_nms(
    candidates: Sequence[PatchCandidates],
    orders: Sequence[torch.Tensor],
    blocks: Sequence[list[slice]],
) -> tuple[torch.Tensor, np.ndarray]:
    """The class-wise mask NMS of every patch, its walks batched: `(P, K)` kept flags (K the largest
    patch's candidate count) and the kept count of each patch, on the host. `orders` are the patches'
    visiting orders, `blocks` their label blocks.

    Counting mask intersections is the NMS's cost, quadratic in a label's candidates, while few of them are
    usually kept. So the walk goes in two parts. First the `NMS_LEADERS` best-scored candidates of each label
    are compared with all of their label and walked (nothing visited before them is missing). Their kept
    ones drop every later candidate they suppress; only the candidates left over are then compared with one
    another, and the walk goes on over them (`Walk.admit`). A label's candidates cost `leaders × all +
    left over²` products instead of `all²`: on pages where a few masks suppress many, a small fraction.
    """
    positions = [ranks(order) for order in orders]
    largest = max(len(order) for order in orders)
    device = orders[0].device
    earlier = torch.zeros(len(orders), largest, largest, device=device)
    leaders = torch.zeros(len(orders), largest, dtype=torch.bool, device=device)
    followers = torch.zeros_like(leaders)
    relations = []
    for patch, (found, order, label_blocks) in enumerate(zip(candidates, orders, blocks, strict=True)):
        pairs = []
        for block in label_blocks:
            if block.stop - block.start <= NMS_LEADERS:
                leaders[patch, block] = True
                pairs.append((block, block))
            else:
                heads = order[block.start : block.start + NMS_LEADERS]
                # index_fill_, not `leaders[patch, heads] = True`: on CUDA, Python item assignment through
                # an index tensor copies the scalar from the host, a synchronisation.
                leaders[patch].index_fill_(0, heads, True)
                pairs.append((heads, block))
        relations.append(_patch_suppression(found, pairs))
        earlier[patch, : len(order), : len(order)] = earlier_suppressors(relations[patch], positions[patch])
        followers[patch, : len(order)] = True
    followers &= ~leaders

    walk, left_over, kept_counts = _settle(
        Walk.start(leaders), earlier, lambda walk: walk.admit(followers, earlier)
    )
    if not left_over.any():
        return walk.kept, kept_counts

    for patch, (found, label_blocks) in enumerate(zip(candidates, blocks, strict=True)):
        members = np.flatnonzero(left_over[patch])
        pairs = []
        for block in label_blocks:
            group = members[(members >= block.start) & (members < block.stop)]
            if group.size > 1:
                index = to_device(group, device)
                pairs.append((index, index))
        if pairs:
            relation = relations[patch] | _patch_suppression(found, pairs)
            count = len(orders[patch])
            earlier[patch, :count, :count] = earlier_suppressors(relation, positions[patch])
    walk, _, kept_counts = _settle(walk, earlier)
    return walk.kept, kept_counts


def _settle(
    walk: Walk, earlier: torch.Tensor, then: Callable[[Walk], Walk] = lambda walk: walk
) -> tuple[Walk, np.ndarray, np.ndarray]:
    """`walk` advanced in bursts until it settles, then passed through `then`: that walk, and its undecided
    flags and kept counts on the host, read in the same transfer as the settledness, so that a walk settled
    by its first burst costs one transfer."""
    while True:
        walk = walk.advance(earlier)
        following = then(walk)
        settled, undecided, kept_counts = fetch(
            walk.settled(), following.undecided, following.kept.sum(dim=1)
        )
        if settled:
            return following, undecided, kept_counts


def _patch_suppression(
    found: PatchCandidates, pairs: Sequence[tuple[Candidates, Candidates]]
) -> torch.Tensor:
    return suppression(found.masks, found.labels, found.tight_boxes, found.areas, PATCH_NMS_IOU, pairs)


def _group_by_label(
    selected: torch.Tensor, labels: torch.Tensor, classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch, the selected query indices grouped by label (ascending queries inside a label) first,
    and `(P, classes)` counts of selected queries per label."""
    key = torch.where(selected, labels, classes)
    queries = key.shape[1]
    grouped = torch.argsort(key * queries + torch.arange(queries, device=key.device), dim=1)
    counts = torch.zeros(key.shape[0], classes + 1, dtype=torch.int64, device=key.device)
    counts.scatter_add_(1, key, torch.ones_like(key))
    return grouped, counts[:, :classes]


def _blocks(counts: np.ndarray) -> list[slice]:
    """The candidates of each label present, as ranges of the label-grouped candidates."""
    ends = np.cumsum(counts)
    return [slice(int(end - count), int(end)) for count, end in zip(counts, ends, strict=True) if count]


def _kept_in_order(order: torch.Tensor, kept: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` kept candidates in visiting order (stable partition of `order` by `kept`)."""
    return order[torch.argsort((~kept[order]).to(torch.uint8), stable=True)[:count]]


def patch_candidates(
    outputs: PatchOutputs,
    patch: int,
    rows: torch.Tensor,
    classes: tuple[torch.Tensor, torch.Tensor],
    target: Size,
    patch_size: Size,
) -> PatchCandidates:
    """Masks, scores, boxes and semantic maps of the selected `rows` of one patch, before the NMS. `classes`
    are the `class_scores` of all patches' queries (computed once, so that labels agree with the label
    grouping)."""
    masks, areas, mask_scores, boxes = upsample_masks(outputs.mask_logits[patch, rows], target)
    scores, labels = (values[patch, rows] for values in classes)
    semantic = _upsample(outputs.semantic_logits[patch], target).sigmoid() > 0.5
    return PatchCandidates(
        masks=masks,
        boxes_xywh=scale_boxes(outputs.boxes[patch, rows], patch_size, target),
        scores=scores * mask_scores,
        labels=labels,
        semantic=semantic,
        areas=areas,
        tight_boxes=boxes,
    )


def upsample_masks(
    logits: torch.Tensor, target: Size
) -> tuple[PackedMasks, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary masks `σ(bilinear(logits)) > 0.5` at `target` (packed), their areas, their mean probability
    inside the mask (0 for an empty mask) and their tight boxes, computed in chunks of queries
    (`chunk_elements` of upsampled logits) straight into the outputs. `threshold(p, 0.5, 0)` is
    `p · (p > 0.5)` in one pass."""
    count = logits.shape[0]
    masks = PackedMasks.empty(count, target, logits.device)
    areas = torch.empty(count, dtype=torch.int64, device=logits.device)
    scores = torch.empty(count, dtype=torch.float32, device=logits.device)
    boxes = torch.empty(count, 4, dtype=torch.float32, device=logits.device)
    chunk = max(1, chunk_elements(logits.device) // (target[0] * target[1]))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        probs = _upsample(logits[part], target).sigmoid_()
        binary = probs > 0.5
        areas[part] = mask_areas(binary)
        scores[part] = F.threshold_(probs, 0.5, 0.0).sum(dim=(1, 2)) / areas[part].clamp(min=1)
        boxes[part] = tight_boxes(binary)
        masks.put(part, binary)
    return masks, areas, scores, boxes


def _upsample(logits: torch.Tensor, target: Size) -> torch.Tensor:
    return F.interpolate(logits[None], size=target, mode="bilinear", align_corners=False)[0]


def scale_boxes(boxes: torch.Tensor, patch_size: Size, target: Size) -> torch.Tensor:
    """Regressed xyxy patch boxes → `[x, y, w, h]` in the target frame, with the reference's float32 operation
    order (`x / patch_w * target_w`, then `w = x2 - x1`)."""
    xs = boxes[:, 0::2] / patch_size[1] * target[1]
    ys = boxes[:, 1::2] / patch_size[0] * target[0]
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0]], dim=1)
