"""Device-side mask NMS and patch merging against a literal transcription of the reference loops.

`reference_nms` (reference_loops.py) and `reference_merge` below follow test.py (`non_max_suppression`,
`non_max_suppression_multiclass`, `predict_slide_window`) step by step: one kept mask at a time, box-IoU
prefilter, pairwise mask IoU, masks pasted onto the page, NMS after every window.
Random masks (overlapping boxes, one-pixel lines, empty masks) and adversarial cases (ties, one label, no
candidates, thin masks, a padded canvas, walks needing a second burst) exercise every branch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_loops import random_masks, reference_mask_bbox, reference_nms

from model.inference import greedy, merge
from model.inference.geometry import Geometry, plan_page
from model.inference.merge import merge_patches
from model.inference.nms import mask_nms, pairwise_intersections, tight_boxes
from model.inference.postprocess import PatchDetections


def test_tight_boxes_match_the_reference_mask_bbox():
    masks = random_masks(np.random.default_rng(0), 60, 17, 23)
    np.testing.assert_array_equal(tight_boxes(torch.from_numpy(masks)).numpy(), reference_mask_bbox(masks))


def test_pairwise_intersections_are_exact():
    rng = np.random.default_rng(1)
    for rows in [(7, 5), (1, 1), (0, 3), (3, 0)]:
        first, second = rng.random((rows[0], 1000)) < 0.5, rng.random((rows[1], 1000)) < 0.3
        found = pairwise_intersections(torch.from_numpy(first), torch.from_numpy(second))
        np.testing.assert_array_equal(found.numpy(), first.astype(np.int64) @ second.T.astype(np.int64))
    masks = torch.from_numpy(rng.random((4, 3, 50, 40)) < 0.5)[:, 1].flatten(1)  # a strided view
    assert torch.equal(pairwise_intersections(masks, masks).diagonal(), masks.sum(1).double())


def test_pairwise_intersections_over_one_pixel_are_exact():
    """Windows can share a single pixel (below); the CPU's int8 product returns uninitialised memory for
    products over one column."""
    first, second = torch.ones(64, 1, dtype=torch.bool), torch.ones(48, 1, dtype=torch.bool)
    second[::2] = False
    expected = torch.ones(64, 48, dtype=torch.float64)
    expected[:, ::2] = 0
    assert torch.equal(pairwise_intersections(first, second), expected)


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


def _one_pixel_masks(count: int) -> np.ndarray:
    """Single pixels and one-pixel lines: zero-area tight boxes, the NaN box IoU case among each other."""
    masks = np.zeros((count, 9, 11), dtype=bool)
    for index, mask in enumerate(masks):
        if index % 2:
            mask[index % 9, 2 : 2 + index % 7] = True
        else:
            mask[index % 9, index % 11] = True
    return masks


def _adversarial_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    if name == "no candidates":
        return np.zeros((0, 6, 5), dtype=bool), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if name == "one candidate":
        return random_masks(rng, 1, 6, 5), np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.float32)
    if name == "all empty":
        return np.zeros((6, 6, 5), dtype=bool), np.array([0, 0, 1, 1, 0, 1]), rng.random(6).astype(np.float32)
    if name == "one-pixel masks":
        return _one_pixel_masks(12), rng.integers(0, 2, 12), rng.random(12).astype(np.float32)
    masks = random_masks(rng, 30, 12, 10)
    if name == "tied scores":  # duplicates with equal scores: the earlier one in the input wins
        masks = np.concatenate([masks, masks[:10]])
        labels = rng.integers(0, 2, 40)
        labels[30:] = labels[:10]
        return masks, labels, np.round(rng.random(40), 1).astype(np.float32)
    assert name == "one label"
    return masks, np.full(30, 3, dtype=np.int64), rng.random(30).astype(np.float32)


@pytest.mark.parametrize(
    "case", ["no candidates", "one candidate", "all empty", "one-pixel masks", "tied scores", "one label"]
)
@pytest.mark.parametrize("threshold", [0.25, 0.5])
def test_mask_nms_on_adversarial_inputs(case, threshold):
    masks, labels, scores = _adversarial_case(case)
    found = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels), threshold)
    assert found.tolist() == reference_nms(masks, labels, scores, threshold)


def reference_merge(detections: list[PatchDetections], layout) -> tuple[np.ndarray, ...]:
    """`predict_slide_window` after the per-patch step, transcribed; with a padded small page (a canvas
    larger than the resized page) the thumbnail is pasted at the origin and everything is cut to the page at
    the end."""
    height, width = layout.canvas
    patch_h, patch_w = layout.patch
    thumbnail = detections[0]
    masks = np.zeros((len(thumbnail.masks), height, width), dtype=bool)
    masks[:, : layout.resized[0], : layout.resized[1]] = thumbnail.masks.numpy()
    boxes = thumbnail.boxes_xywh.numpy()
    labels = thumbnail.labels.numpy()
    scores = thumbnail.scores.numpy() * np.float32(0.75)
    semantic = np.zeros((thumbnail.semantic.shape[0], height, width), dtype=np.float32)
    semantic[:, : layout.resized[0], : layout.resized[1]] = thumbnail.semantic.numpy()
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
    masks = masks[:, : layout.resized[0], : layout.resized[1]]
    order = sorted(range(len(masks)), key=lambda index: masks[index].sum(), reverse=True)
    voted = (semantic / count > 0.5)[:-1, : layout.resized[0], : layout.resized[1]]
    return masks[order], boxes[order], labels[order], scores[order], voted


def random_patch(
    rng: np.random.Generator,
    size: tuple[int, int],
    classes: int,
    *,
    score_levels: int | None = None,
    thin: bool = False,
) -> PatchDetections:
    """Random candidates of one patch reduced by the reference's 0.25 NMS, as post-processing hands them over.
    `score_levels` rounds the scores to that many values (ties within and across patches); `thin` makes
    every mask a one-pixel line or an empty mask."""
    masks = random_masks(rng, int(rng.integers(1, 25)), *size)
    if thin:
        masks &= np.cumsum(masks, axis=1) == 1  # the first set row of every column: lines, or nothing
        masks &= np.cumsum(masks.any(axis=2), axis=1)[:, :, None] == 1
    labels = rng.integers(0, classes - 1, len(masks))
    scores = rng.random(len(masks)).astype(np.float32)
    if score_levels:
        scores = (np.ceil(scores * score_levels) / score_levels).astype(np.float32)
    kept = reference_nms(masks, labels, scores, 0.25)
    return PatchDetections(
        masks=torch.from_numpy(masks[kept]),
        boxes_xywh=torch.from_numpy(rng.normal(0, 20, (len(kept), 4)).astype(np.float32)),
        scores=torch.from_numpy(scores[kept]),
        labels=torch.from_numpy(labels[kept]),
        semantic=torch.from_numpy(rng.random((classes, *size)) < 0.5),
        areas=torch.from_numpy(masks[kept].sum(axis=(1, 2))),
        tight_boxes=torch.from_numpy(reference_mask_bbox(masks[kept])),
    )


def _assert_merge_matches(detections: list[PatchDetections], layout) -> None:
    result = merge_patches(detections, layout)
    masks, boxes, labels, scores, semantic = reference_merge(detections, layout)
    np.testing.assert_array_equal(result.masks.numpy(), masks)
    np.testing.assert_array_equal(result.boxes_xywh.numpy(), boxes)
    np.testing.assert_array_equal(result.labels.numpy(), labels)
    np.testing.assert_array_equal(result.scores.numpy(), scores)
    np.testing.assert_array_equal(result.semantic.numpy(), semantic)


SMALL_PAGE = ((60, 80), Geometry(short_range=(48, 48), patch=(32, 32)))  # resized 48x64, 6 windows
PADDED_PAGE = ((40, 100), Geometry(short_range=(20, 20), patch=(32, 32)))  # resized 20x50, canvas 32x50
# Narrow pages padded on the right; non-square windows whose other side fits inside the page.
NARROW_PAGE = ((100, 40), Geometry(short_range=(20, 20), patch=(32, 32)))  # resized 40x20, canvas 40x32
NARROW_PAGE_FLAT_WINDOWS = ((100, 40), Geometry(short_range=(20, 20), patch=(16, 32)))  # 4 windows 16x32
WIDE_PAGE_TALL_WINDOWS = ((40, 100), Geometry(short_range=(20, 20), patch=(32, 16)))  # 4 windows 32x16


def test_merge_matches_the_reference_incremental_nms():
    rng = np.random.default_rng(3)
    layout = plan_page(*SMALL_PAGE)
    assert layout.resized == (48, 64) and len(layout.windows) == 6
    for _ in range(10):
        detections = [random_patch(rng, layout.resized, 3)]
        detections += [random_patch(rng, layout.patch, 3) for _ in layout.windows]
        _assert_merge_matches(detections, layout)


@pytest.mark.parametrize(
    ("page", "options"),
    [
        (SMALL_PAGE, {"classes": 2}),  # one label everywhere
        (SMALL_PAGE, {"classes": 3, "score_levels": 2}),  # ties, also between weighted scores
        (SMALL_PAGE, {"classes": 3, "thin": True}),  # one-pixel lines (NaN box IoU), empty masks
        (PADDED_PAGE, {"classes": 3}),  # a page smaller than a window: windows reach below it
        (NARROW_PAGE, {"classes": 3}),  # windows reach right of the page: areas counted inside it
        (NARROW_PAGE_FLAT_WINDOWS, {"classes": 3}),
        (WIDE_PAGE_TALL_WINDOWS, {"classes": 3}),
    ],
    ids=["one label", "tied scores", "thin masks", "padded canvas", "narrow", "narrow, flat", "wide, tall"],
)
def test_merge_on_adversarial_inputs(page, options):
    rng = np.random.default_rng(4)
    layout = plan_page(*page)
    for _ in range(6):
        detections = [random_patch(rng, layout.resized, **options)]
        detections += [random_patch(rng, layout.patch, **options) for _ in layout.windows]
        _assert_merge_matches(detections, layout)


def test_windows_sharing_one_pixel_are_merged_like_the_reference():
    """A side of 2·stride + window − 1 pixels (1279 in 640-px windows at stride 320, a page the keep-size
    model keeps at its size, or any page with an odd `--window`) puts its last window one pixel short of two
    strides after the first: diagonal windows share one pixel. Empty masks there (IoU 0) were suppressed by
    a window's instance through garbage intersection counts."""
    layout = plan_page((31, 31), Geometry(short_range=(31, 31), patch=(16, 16)))
    first, last = layout.windows[0], layout.windows[8]
    assert (first[2] - last[0], first[3] - last[1]) == (1, 1)
    big = np.zeros((1, *layout.patch), dtype=bool)
    big[0, 2:, 2:] = True  # reaches the shared corner pixel
    empty = np.zeros((40, *layout.patch), dtype=bool)  # tight box: the whole page, IoU 0 with everything
    nothing = np.zeros((0, *layout.patch), dtype=bool)
    detections = [_detections(np.zeros((0, *layout.resized), dtype=bool), [], layout.resized)]
    detections += [_detections(big, [0.9], layout.patch)]
    detections += [_detections(nothing, [], layout.patch) for _ in layout.windows[1:8]]
    detections += [_detections(empty, [0.5] * 40, layout.patch)]
    assert len(merge_patches(detections, layout)) == 41
    _assert_merge_matches(detections, layout)


def _detections(masks: np.ndarray, scores: list[float], semantic_size: tuple[int, int]) -> PatchDetections:
    return PatchDetections(
        masks=torch.from_numpy(masks),
        boxes_xywh=torch.zeros(len(masks), 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.zeros(len(masks), dtype=torch.int64),
        semantic=torch.zeros(2, *semantic_size, dtype=torch.bool),
        areas=torch.from_numpy(masks.sum(axis=(1, 2))),
        tight_boxes=torch.from_numpy(reference_mask_bbox(masks)),
    )


def test_a_merge_round_that_needs_a_second_burst_is_run_again(monkeypatch):
    """Window 1's best instance removes the thumbnail's, which would have removed window 1's second one:
    the round needs two walk rounds. With one round per burst the merge notices and runs again."""
    monkeypatch.setattr(greedy, "ROUNDS_PER_BURST", 1)
    bursts = []
    real_rounds = merge._incremental_rounds
    monkeypatch.setattr(
        merge, "_incremental_rounds", lambda *args: bursts.append(args[2]) or real_rounds(*args)
    )
    layout = plan_page(*SMALL_PAGE)
    thumbnail = np.zeros((1, *layout.resized), dtype=bool)
    thumbnail[0, :20, :20] = True  # weighted 0.6 × 0.75 = 0.45
    window = np.zeros((2, *layout.patch), dtype=bool)
    window[0, :20, :12] = True  # IoU 0.6 with the thumbnail's; weighted 1.0 × 0.5 (border band)
    window[1, :20, 9:20] = True  # IoU 0.55 with the thumbnail's, 0.15 with its neighbour; 0.4 × 0.5
    empty = np.zeros((0, *layout.patch), dtype=bool)
    detections = [
        _detections(thumbnail, [0.6], layout.resized),
        _detections(window, [1.0, 0.4], layout.patch),
    ]
    detections += [_detections(empty, [], layout.patch) for _ in layout.windows[1:]]
    result = merge_patches(detections, layout)
    assert bursts == [1, 4]
    assert result.scores.tolist() == pytest.approx([0.5, 0.2])  # the thumbnail instance is gone
    _assert_merge_matches(detections, layout)
