"""Query selection between decoder stages, batched over the images of a forward pass.

Per image, in the reference's order: score = best non-background class probability (softmax over the image's
own class columns, the last of which is the background); keep the scores above the stage threshold in row
order, or, when fewer than `min_keep` pass, the top `min_keep` in descending score order; class-wise box NMS,
one label at a time in ascending label order, each label's survivors in descending score order (ties in the
order above); if more than `max_keep` remain, the `max_keep` best, in descending score order.

The reference zero-pads every image to the batch's largest count, and those padding rows stay live: they are
candidates at the next selection. `candidates` lets a caller exclude them (batch-isolated mode).

No step depends on the host: the device is read once per selection, for the number of rows the batch keeps
(together with a check that NMS has settled, which it almost always has after the first rounds).
"""

from __future__ import annotations

import torch

# Greedy NMS is solved as a fixed point; this many rounds run between checks (suppression chains are short).
NMS_ROUNDS = 4


def query_scores(
    class_logits: torch.Tensor, class_padding: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, Q, C) logits → (N, Q) best non-background probability and its label.

    `class_padding` (N, C) marks the columns past an image's own class list; they take no part in the softmax.
    """
    logits = class_logits.masked_fill(class_padding[:, None, :], float("-inf"))
    probabilities = logits.softmax(-1)
    background = (~class_padding).sum(-1, keepdim=True) - 1
    columns = torch.arange(class_padding.shape[-1], device=class_padding.device)
    foreground = columns[None, :] < background  # (N, C)
    return probabilities.masked_fill(~foreground[:, None, :], -1.0).max(-1)


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, Q, 4) xyxy → (N, Q, Q) IoU, with torchvision's NMS arithmetic (inverted boxes included)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1) * (y2 - y1)
    width = (
        torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])
    ).clamp(min=0)
    height = (
        torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])
    ).clamp(min=0)
    intersection = width * height
    return intersection / (areas[:, :, None] + areas[:, None, :] - intersection)


def _nms_step(kept: torch.Tensor, suppressors: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Members that no currently kept row suppresses."""
    hits = torch.bmm(suppressors, kept.to(suppressors.dtype)[..., None])[..., 0]
    return members & (hits == 0)


def select_queries(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    class_padding: torch.Tensor,
    threshold: float,
    min_keep: int,
    max_keep: int,
    nms_iou: float,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows kept per image, in the reference's order: (N, K) source row indices, -1 after an image's last.

    class_logits (N, Q, C), boxes (N, Q, 4), class_padding (N, C); `candidates` (N, Q) bool restricts the
    pool.
    """
    scores, labels = query_scores(class_logits.detach(), class_padding)
    boxes = boxes.detach()
    batch, count = scores.shape
    device = scores.device
    rows = torch.arange(count, device=device).expand(batch, -1)
    if candidates is None:
        candidates = torch.ones_like(scores, dtype=torch.bool)

    # Candidate list and its order: rows above the threshold in row order, else the pool's top `min_keep`.
    # `rank` is a row's place in that list, `count` for rows not in it.
    passed = candidates & (scores > threshold)
    top_count = min(min_keep, count)
    top_scores, top_rows = scores.masked_fill(~candidates, -1.0).topk(top_count, dim=1)
    top_places = torch.arange(top_count, device=device).expand(batch, -1)
    top_rank = torch.full_like(rows, count).scatter(
        1, top_rows, torch.where(top_scores >= 0, top_places, count)
    )
    too_few = passed.sum(1, keepdim=True) < min_keep
    rank = torch.where(too_few, top_rank, torch.where(passed, rows, count))
    members = rank < count

    # NMS visits candidates by descending score, ties in list order (torchvision sorts stably).
    order = rank.argsort(dim=1, stable=True)
    visit_scores = torch.where(members, scores, -2.0).gather(1, order)
    order = order.gather(1, visit_scores.argsort(dim=1, descending=True, stable=True))
    members = members.gather(1, order)
    visit_labels = labels.gather(1, order)
    same_label = visit_labels[:, :, None] == visit_labels[:, None, :]
    earlier = torch.ones(count, count, dtype=torch.bool, device=device).tril(-1)  # [i, j]: j visited before i
    overlaps = pairwise_iou(boxes.gather(1, order[..., None].expand(-1, -1, 4))) > nms_iou
    suppressors = (overlaps & same_label & earlier & members[:, None, :]).to(boxes.dtype)

    # Greedy NMS keeps a row iff no kept row visited before it suppresses it: the unique fixed point of
    # `_nms_step`, reached after at most (longest suppression chain + 1) steps.
    kept = members
    while True:
        for _ in range(NMS_ROUNDS):
            kept = _nms_step(kept, suppressors, members)
        settled = (_nms_step(kept, suppressors, members) == kept).all()
        kept_count = kept.sum(1)
        # Survivors grouped by ascending label, visiting order inside a label; dropped rows last.
        sequence = order.gather(
            1, torch.where(kept, visit_labels, class_logits.shape[-1]).argsort(dim=1, stable=True)
        )
        if max_keep < count:
            sequence, kept_count = _keep_best(sequence, kept_count, scores, max_keep)
        width, done = torch.stack([kept_count.max(), settled.long()]).tolist()  # the one host read
        if done:
            break
    return torch.where(rows[:, :width] < kept_count[:, None], sequence[:, :width], -1)


def _keep_best(
    sequence: torch.Tensor, kept_count: torch.Tensor, scores: torch.Tensor, max_keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images keeping more than `max_keep` rows keep their `max_keep` best, by descending score."""
    places = torch.arange(sequence.shape[1], device=sequence.device)
    sequence_scores = torch.where(places < kept_count[:, None], scores.gather(1, sequence), -1.0)
    best = sequence.gather(1, sequence_scores.topk(max_keep, dim=1).indices)
    too_many = (kept_count > max_keep)[:, None]
    head = torch.where(too_many, best, sequence[:, :max_keep])
    return torch.cat([head, sequence[:, max_keep:]], 1), kept_count.clamp(max=max_keep)


def gather_rows(values: torch.Tensor, kept_index: torch.Tensor) -> torch.Tensor:
    """values (N, Q, ...) → (N, K, ...) rows by `kept_index`, zeros where the index is -1 (padding)."""
    batch, count = values.shape[:2]
    offsets = torch.arange(batch, device=kept_index.device)[:, None] * count
    flat = (kept_index.clamp(min=0) + offsets).flatten()
    rows = values.flatten(0, 1).index_select(0, flat).unflatten(0, kept_index.shape)
    valid = (kept_index >= 0).view(*kept_index.shape, *([1] * (values.ndim - 2)))
    return torch.where(valid, rows, 0)
