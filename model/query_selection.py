"""Query selection between decoder stages (ARCHITECTURE §3.7).

Per image: score = best non-background class probability (softmax over the image's own class columns);
keep scores above the stage threshold, or the top `min_keep` when too few pass; class-wise box NMS with
labels in ascending order; at most `max_keep` by score. The surviving rows are grouped by label, score
descending inside a label (the threshold branch keeps index order before NMS, which then reorders).

The reference zero-pads every image to the batch's largest count, and those padding rows stay live: they
are candidates at the next selection. `candidates` lets a caller exclude them (batch-isolated mode).
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms


def query_scores(class_logits: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, C_max) logits of one image → (score, label) over its first `num_classes - 1` (non-background)."""
    probabilities = class_logits[:, :num_classes].softmax(-1)
    return probabilities[:, : num_classes - 1].max(-1)


def select_rows(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    num_classes: int,
    threshold: float,
    min_keep: int,
    max_keep: int,
    nms_iou: float,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row indices kept for one image, in the reference's order. `candidates` (Q,) bool restricts the pool."""
    scores, labels = query_scores(class_logits, num_classes)
    pool = torch.arange(scores.shape[0], device=scores.device)
    if candidates is not None:
        pool = pool[candidates]
    pool_scores = scores[pool]
    above = pool[pool_scores > threshold]
    if above.numel() < min_keep:
        above = pool[pool_scores.topk(min(min_keep, pool.numel())).indices]
    kept = batched_nms(boxes[above], scores[above], labels[above], nms_iou)
    kept = above[kept]
    # batched_nms returns the right set in global score order; regroup by ascending label, keeping the
    # descending score order inside each label (stable sort), as the reference's per-label loop does.
    kept = kept[scores[kept].argsort(descending=True, stable=True)]
    kept = kept[labels[kept].argsort(stable=True)]
    if kept.numel() > max_keep:
        kept = kept[scores[kept].topk(max_keep).indices]
    return kept


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image row lists → (kept_index (N, K) with -1 for padding, padding_mask (N, K) bool)."""
    count = max(int(r.numel()) for r in rows)
    device = rows[0].device
    kept_index = torch.full((len(rows), count), -1, dtype=torch.long, device=device)
    for image, r in enumerate(rows):
        kept_index[image, : r.numel()] = r
    return kept_index, kept_index < 0


def gather_rows(values: torch.Tensor, kept_index: torch.Tensor) -> torch.Tensor:
    """values (N, Q, ...) → (N, K, ...) rows by `kept_index`, zeros where the index is -1 (padding)."""
    index = kept_index.clamp(min=0).view(*kept_index.shape, *([1] * (values.ndim - 2)))
    gathered = values.gather(1, index.expand(-1, -1, *values.shape[2:]))
    valid = (kept_index >= 0).view(*kept_index.shape, *([1] * (values.ndim - 2)))
    return gathered * valid.to(gathered.dtype)
