"""Batched query selection against the reference's per-image, per-label recipe, written out literally."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from model.query_selection import gather_rows, select_queries


def reference_rows(logits, boxes, num_classes, threshold, min_keep, max_keep, iou, candidates=None):
    """One image, as the reference does it (with `candidates` restricting the pool, for isolated batches)."""
    probabilities = logits[:, :num_classes].softmax(-1)
    scores, labels = probabilities[:, : num_classes - 1].max(-1)
    pool = torch.arange(len(scores)) if candidates is None else torch.nonzero(candidates)[:, 0]
    keep = pool[scores[pool] > threshold]
    if len(keep) < min_keep:
        keep = pool[scores[pool].topk(min(min_keep, len(pool))).indices]
    kept = []
    for label in sorted(set(labels[keep].tolist())):
        rows = keep[labels[keep] == label]
        kept.append(rows[nms(boxes[rows], scores[rows], iou)])
    kept = torch.cat(kept) if kept else keep[:0]
    if len(kept) > max_keep:
        kept = kept[scores[kept].topk(max_keep).indices]
    return kept.tolist()


def random_case(seed: int, images: int = 3, queries: int = 60, classes: int = 6):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(images, queries, classes, generator=generator) * 2
    corners = torch.rand(images, queries, 2, generator=generator) * 200
    sizes = torch.rand(images, queries, 2, generator=generator) * 120 - 10  # some inverted boxes
    boxes = torch.cat([corners, corners + sizes], -1)
    # Ties: rows 10..14 are copies of row 9 (the reference's live padding rows look like this).
    logits[:, 10:15], boxes[:, 10:15] = logits[:, 9:10], boxes[:, 9:10]
    # Near-duplicates that NMS must remove: rows 20..24 are row 19 nudged, same label.
    logits[:, 20:25] = logits[:, 19:20] + 0.01 * torch.randn(images, 5, classes, generator=generator)
    boxes[:, 20:25] = boxes[:, 19:20] + torch.rand(images, 5, 4, generator=generator)
    counts = torch.tensor([classes, classes - 2, 3][:images])
    return logits, boxes, counts


def check(logits, boxes, counts, threshold, min_keep, max_keep, candidates=None):
    class_padding = torch.arange(logits.shape[-1])[None] >= counts[:, None]
    kept_index = select_queries(
        logits, boxes, class_padding, threshold, min_keep, max_keep, 0.9, candidates=candidates
    )
    expected = [
        reference_rows(
            logits[image],
            boxes[image],
            int(counts[image]),
            threshold,
            min_keep,
            max_keep,
            0.9,
            None if candidates is None else candidates[image],
        )
        for image in range(len(logits))
    ]
    assert kept_index.shape == (len(logits), max(len(rows) for rows in expected))
    for image, rows in enumerate(expected):
        assert kept_index[image, : len(rows)].tolist() == rows, f"image {image}"
        assert (kept_index[image, len(rows) :] == -1).all()
    return kept_index


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("threshold", "min_keep", "max_keep"),
    [(0.3, 5, 60), (0.4, 40, 60), (0.01, 5, 12), (0.9, 50, 50), (0.5, 60, 60)],
    ids=["threshold", "mixed branches", "max-keep", "top-k then max", "whole pool"],
)
def test_batched_selection_equals_reference_recipe(seed, threshold, min_keep, max_keep):
    logits, boxes, counts = random_case(seed)
    check(logits, boxes, counts, threshold, min_keep, max_keep)


@pytest.mark.parametrize("seed", range(4))
def test_isolated_selection_ignores_padding_rows(seed):
    logits, boxes, counts = random_case(seed)
    candidates = torch.ones(logits.shape[:2], dtype=torch.bool)
    candidates[0, 40:] = False
    candidates[2, 5:] = False  # fewer candidates than min_keep
    kept_index = check(logits, boxes, counts, 0.2, 8, 60, candidates=candidates)
    assert not (kept_index[2] >= 5).any()


def test_long_suppression_chains_settle_exactly():
    # Boxes 0..19 slide by 1 px: each overlaps its neighbour with IoU > 0.9, the next but one with less.
    # Greedy NMS keeps every other box, which needs many more rounds than one batch of fixed-point steps.
    left = torch.arange(20.0)
    boxes = torch.stack([left, torch.zeros(20), left + 25, torch.full((20,), 10.0)], -1)[None]
    logits = torch.zeros(1, 20, 2)
    logits[0, :, 0] = torch.linspace(3, 2, 20)  # descending scores along the chain, one label
    kept_index = check(logits, boxes, torch.tensor([2]), 0.0, 1, 20)
    assert kept_index[0].tolist() == list(range(0, 20, 2))


def test_no_query_survives():
    logits, boxes, counts = random_case(0, images=2)
    candidates = torch.zeros(logits.shape[:2], dtype=torch.bool)
    kept_index = check(logits, boxes, counts[:2], 0.5, 5, 60, candidates=candidates)
    assert kept_index.shape == (2, 0)


def test_gather_rows_with_zero_padding():
    values = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    kept_index = torch.tensor([[3, 0, -1], [1, -1, -1]])
    gathered = gather_rows(values, kept_index)
    assert torch.equal(gathered[0, :2], values[0, [3, 0]]) and torch.equal(gathered[1, 0], values[1, 1])
    assert not gathered[0, 2].any() and not gathered[1, 1:].any()


def test_a_score_equal_to_the_threshold_does_not_pass():
    """The threshold is strict (`score > thr`, ARCHITECTURE.md §3.7): rows scoring exactly the threshold are
    not kept when enough rows score above it."""
    logits = torch.zeros(1, 6, 2)  # softmax of equal logits: exactly 0.5 for the one foreground class
    logits[0, :3, 0] = torch.tensor([1.0, 2.0, 3.0])
    corners = torch.arange(6.0)[:, None] * 20  # disjoint boxes: the NMS removes none
    boxes = torch.cat([corners, corners, corners + 10, corners + 10], -1)[None]
    kept_index = check(logits, boxes, torch.tensor([2]), 0.5, 3, 6)
    assert kept_index[0].tolist() == [2, 1, 0]


def test_more_classes_than_queries():
    """Survivors come grouped by ascending label and the rows NMS removed come after all of them, however
    many class columns there are against queries (three queries, seven classes)."""
    logits = torch.zeros(1, 3, 8)
    logits[0, 0, 6], logits[0, 1, 6], logits[0, 2, 1] = 5.0, 4.0, 5.0
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]])
    kept_index = check(logits, boxes, torch.tensor([8]), 0.3, 1, 3)
    assert kept_index[0].tolist() == [2, 0]  # label 1, then label 6; row 1 duplicates row 0
