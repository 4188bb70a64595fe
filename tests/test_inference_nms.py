"""Vectorised mask NMS and patch merging against a literal transcription of the reference loops.

`reference_nms` and `reference_merge` below follow test.py (`non_max_suppression`,
`non_max_suppression_multiclass`, `predict_slide_window`, ARCHITECTURE §7.6-7.7) step by step: one kept
mask at a time, box-IoU prefilter, pairwise mask IoU, masks pasted onto the page, NMS after every window.
Random masks (overlapping boxes, one-pixel lines, empty masks) exercise every branch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from model.inference import nms
from model.inference.geometry import Geometry, plan_page
from model.inference.merge import merge_patches
from model.inference.nms import mask_nms, pairwise_intersections, tight_boxes
from model.inference.postprocess import PatchDetections


def reference_mask_bbox(masks: np.ndarray) -> np.ndarray:
    """`mask_bbox` of test.py, with numpy: first/last set column and row, `[0, 0, W-1, H-1]` when empty."""
    _, height, width = masks.shape
    columns, rows = masks.any(axis=1), masks.any(axis=2)
    x1, y1 = columns.argmax(axis=1), rows.argmax(axis=1)
    x2 = width - 1 - columns[:, ::-1].argmax(axis=1)
    y2 = height - 1 - rows[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def reference_nms(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """`non_max_suppression_multiclass`: per label ascending, greedy by score, kept indices in that order."""
    kept_all: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        group = masks[members]
        boxes = torch.from_numpy(reference_mask_bbox(group))
        box_ious = box_iou(boxes, boxes).numpy()
        order = np.argsort(-scores[members], kind="stable")
        kept = []
        while order.size:
            kept.append(order[0])
            ious = box_ious[order[0], order[1:]].copy()
            flags = ious > 0.01
            if flags.any():
                current = group[order[0]].reshape(-1).astype(np.float32)
                others = group[order[1:][flags]].reshape(int(flags.sum()), -1).astype(np.float32)
                inter = others @ current
                ious[flags] = inter / np.maximum(current.sum() + others.sum(axis=1) - inter, 1)
            order = order[1:][ious < threshold]
        kept_all += members[kept].tolist()
    return kept_all


def random_masks(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Rectangles of all sizes, some one pixel thin (zero-area tight boxes), some empty."""
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        kind = rng.random()
        if kind < 0.1:
            continue
        y1, x1 = rng.integers(0, height), rng.integers(0, width)
        if kind < 0.3:
            mask[y1, x1 : x1 + rng.integers(1, width)] = True
        else:
            mask[y1 : y1 + rng.integers(1, height), x1 : x1 + rng.integers(1, width)] = True
    return masks


def test_tight_boxes_match_the_reference_mask_bbox():
    masks = random_masks(np.random.default_rng(0), 60, 17, 23)
    np.testing.assert_array_equal(tight_boxes(torch.from_numpy(masks)).numpy(), reference_mask_bbox(masks))


def test_pairwise_intersections_are_exact_across_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    first, second = rng.random((7, 1000)) < 0.5, rng.random((5, 1000)) < 0.3
    monkeypatch.setattr(nms, "_MATMUL_BUDGET", 12 * 37)  # 37-pixel chunks
    found = pairwise_intersections(torch.from_numpy(first), torch.from_numpy(second))
    np.testing.assert_array_equal(found.numpy(), first.astype(np.int64) @ second.T.astype(np.int64))


def test_pairwise_intersections_stay_exact_under_autocast():
    """The CLI runs the pipeline inside autocast; bfloat16 products would round 1001 to 1000."""
    masks = torch.ones(2, 1001, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        found = pairwise_intersections(masks, masks)
    assert found.dtype == torch.float64 and (found == 1001).all()


@pytest.mark.parametrize("threshold", [0.25, 0.5])
def test_mask_nms_matches_the_reference_loop(threshold):
    rng = np.random.default_rng(2)
    for _ in range(20):
        masks = random_masks(rng, int(rng.integers(1, 40)), 24, 20)
        labels = rng.integers(0, 3, len(masks))
        scores = rng.random(len(masks)).astype(np.float32)
        found = mask_nms(
            torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels), threshold
        )
        assert found.tolist() == reference_nms(masks, labels, scores, threshold)


def test_zero_area_boxes_suppress_each_other_like_the_reference():
    """Two one-pixel-high masks anywhere: torchvision's box IoU is 0/0 = NaN, and the reference keeps a
    candidate only when `iou < threshold`, so the weaker one goes."""
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[0, 1, 0:3] = True
    masks[1, 8, 5:9] = True
    labels, scores = np.zeros(2, dtype=np.int64), np.array([0.9, 0.8], dtype=np.float32)
    expected = reference_nms(masks, labels, scores, 0.5)
    found = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels), 0.5)
    assert found.tolist() == expected == [0]


def test_box_prefilter_spares_overlapping_masks_with_disjoint_looking_boxes():
    """Mask IoU ≥ threshold is ignored when the tight boxes overlap ≤ 0.01 (an L shape and its own arm)."""
    masks = np.zeros((2, 100, 100), dtype=bool)
    masks[0, 0, :] = True
    masks[0, :, 0] = True
    masks[1, 0, :70] = True
    masks[1, 1, 0] = True
    labels, scores = np.zeros(2, dtype=np.int64), np.array([0.9, 0.8], dtype=np.float32)
    expected = reference_nms(masks, labels, scores, 0.25)
    found = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels), 0.25)
    assert found.tolist() == expected == [0, 1]


def reference_merge(detections: list[PatchDetections], layout) -> tuple[np.ndarray, ...]:
    """`predict_slide_window` after the per-patch step, transcribed (no B-15 padding in these layouts)."""
    height, width = layout.resized
    patch_h, patch_w = layout.patch
    thumbnail = detections[0]
    masks = thumbnail.masks.numpy()
    boxes = thumbnail.boxes_xywh.numpy()
    labels = thumbnail.labels.numpy()
    scores = thumbnail.scores.numpy() * np.float32(0.75)
    semantic = thumbnail.semantic.numpy().astype(np.float32)
    count = np.ones((1, height, width), dtype=np.float32)
    for det, (x1, y1, x2, y2) in zip(detections[1:], layout.windows, strict=True):
        local = det.masks.numpy()
        tight = reference_mask_bbox(local)
        border = (
            (tight[:, 0] < 4) | (tight[:, 1] < 4) | (tight[:, 2] > patch_w - 4) | (tight[:, 3] > patch_h - 4)
        )
        window_scores = det.scores.numpy().copy()
        window_scores[border] = window_scores[border] * np.float32(0.5)
        pasted = np.zeros((len(local), height, width), dtype=bool)
        pasted[:, y1:y2, x1:x2] = local
        window_boxes = det.boxes_xywh.numpy().copy()
        window_boxes[:, 0] += x1
        window_boxes[:, 1] += y1
        masks = np.concatenate([masks, pasted])
        boxes = np.concatenate([boxes, window_boxes])
        labels = np.concatenate([labels, det.labels.numpy()])
        scores = np.concatenate([scores, window_scores])
        semantic[:, y1:y2, x1:x2] += det.semantic.numpy()
        count[:, y1:y2, x1:x2] += 1
        kept = reference_nms(masks, labels, scores, 0.5)
        masks, boxes, labels, scores = masks[kept], boxes[kept], labels[kept], scores[kept]
    order = sorted(range(len(masks)), key=lambda index: masks[index].sum(), reverse=True)
    voted = (semantic / count > 0.5)[:-1]
    return masks[order], boxes[order], labels[order], scores[order], voted


def random_patch(rng: np.random.Generator, size: tuple[int, int], classes: int) -> PatchDetections:
    """Random candidates of one patch reduced by the reference's 0.25 NMS, as §7.5 hands them over."""
    masks = random_masks(rng, int(rng.integers(1, 25)), *size)
    labels = rng.integers(0, classes - 1, len(masks))
    scores = rng.random(len(masks)).astype(np.float32)
    kept = reference_nms(masks, labels, scores, 0.25)
    return PatchDetections(
        masks=torch.from_numpy(masks[kept]),
        boxes_xywh=torch.from_numpy(rng.normal(0, 20, (len(kept), 4)).astype(np.float32)),
        scores=torch.from_numpy(scores[kept]),
        labels=torch.from_numpy(labels[kept]),
        semantic=torch.from_numpy(rng.random((classes, *size)) < 0.5),
        areas=torch.from_numpy(masks[kept].sum(axis=(1, 2))),
    )


def test_merge_matches_the_reference_incremental_nms():
    rng = np.random.default_rng(3)
    layout = plan_page((60, 80), Geometry(short_range=(48, 48), patch=(32, 32)))
    assert layout.resized == (48, 64) and len(layout.windows) == 6
    for _ in range(10):
        detections = [random_patch(rng, layout.resized, 3)]
        detections += [random_patch(rng, layout.patch, 3) for _ in layout.windows]
        result = merge_patches(detections, layout)
        masks, boxes, labels, scores, semantic = reference_merge(detections, layout)
        np.testing.assert_array_equal(result.masks.numpy(), masks)
        np.testing.assert_array_equal(result.boxes_xywh.numpy(), boxes)
        np.testing.assert_array_equal(result.labels.numpy(), labels)
        np.testing.assert_array_equal(result.scores.numpy(), scores)
        np.testing.assert_array_equal(result.semantic.numpy(), semantic)
