"""Hungarian matcher behaviour on small hand-made cases (parity itself is in test_loss_parity.py)."""

from __future__ import annotations

from dataclasses import replace

import torch

from model.config import DocSAMConfig
from model.loss import DocSAMCriterion
from model.matcher import HungarianMatcher, min_max_normalise, pairwise_dice_cost, pairwise_focal_cost

MATCHER = HungarianMatcher.from_config(DocSAMConfig())  # the reference's costs: class 1, mask 2, box 2


def _masks_to_points(masks: torch.Tensor) -> torch.Tensor:
    return masks.flatten(1).float()


def test_one_to_one_assignment_prefers_the_matching_query() -> None:
    # GT 0: class 1, left half; GT 1: class 0, right half.
    # Query 2 fits GT 0, query 0 fits GT 1, query 1 fits none.
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    right = 1 - left
    gt_masks = _masks_to_points(torch.stack([left, right]))
    gt_boxes = torch.tensor([[0.0, 0.0, 8.0, 16.0], [8.0, 0.0, 16.0, 16.0]])
    gt_labels = torch.tensor([1, 0])
    class_logits = torch.tensor([[5.0, -5.0, 0.0], [0.0, 0.0, 5.0], [-5.0, 5.0, 0.0]])
    boxes = torch.tensor([[8.0, 0.0, 16.0, 16.0], [40.0, 40.0, 50.0, 50.0], [0.0, 0.0, 8.0, 16.0]])
    mask_logits = _masks_to_points(torch.stack([right, torch.zeros(4, 4), left])) * 20 - 10

    match = MATCHER(class_logits, boxes, gt_labels, gt_boxes, mask_logits, gt_masks)

    assert match.query_idx.tolist() == [0, 2]
    assert match.gt_idx.tolist() == [1, 0]
    assert set(match.components) == {"class", "dice", "focal", "sml1", "diou"}
    for component in match.components.values():
        assert component.min().item() == 0.0 and component.max().item() <= 1.0


def test_padding_like_row_is_a_candidate_for_an_empty_dummy_instance() -> None:
    """A batch-padding row (zero logits, zero box) is matched when it fits best, also to the reference's
    dummy instance of an annotation-free image."""
    class_logits = torch.tensor([[0.0, 0.0], [-3.0, 3.0], [-3.0, 3.0]])
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 10.0, 30.0, 30.0], [20.0, 20.0, 40.0, 40.0]])
    mask_logits = torch.zeros(3, 16)
    mask_logits[1:] = 10.0
    match = MATCHER(
        class_logits,
        boxes,
        gt_labels=torch.tensor([0]),
        gt_boxes=torch.zeros(1, 4),
        point_logits=mask_logits,
        point_labels=torch.zeros(1, 16),
    )
    assert match.query_idx.tolist() == [0]


def test_without_masks_only_class_and_box_costs_are_used() -> None:
    class_logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(5, 1) + torch.arange(5.0)[:, None] * 7
    match = MATCHER(class_logits, boxes, torch.tensor([0, 1]), boxes[[3, 1]])
    assert set(match.components) == {"class", "sml1", "diou"}
    expected = match.components["class"] + (match.components["sml1"] + match.components["diou"])
    torch.testing.assert_close(match.cost, expected)
    assert match.query_idx.tolist() == sorted(match.query_idx.tolist())


def test_constant_cost_normalises_to_zero_without_nan() -> None:
    assert torch.equal(min_max_normalise(torch.full((3, 2), 0.7)), torch.zeros(3, 2))
    class_logits = torch.zeros(3, 2)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(3, 1)
    match = MATCHER(class_logits, boxes, torch.tensor([0]), boxes[:1])
    assert torch.isfinite(match.cost).all()
    assert len(match.query_idx) == 1


def test_no_ground_truth_gives_an_empty_match() -> None:
    match = MATCHER(torch.zeros(4, 3), torch.zeros(4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert match.query_idx.numel() == match.gt_idx.numel() == 0
    assert match.cost.shape == (4, 0)


def test_pairwise_mask_costs_match_their_per_pair_definitions() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 10, generator=generator) * 3
    labels = torch.rand(2, 10, generator=generator).round()
    dice = pairwise_dice_cost(logits, labels)
    focal = pairwise_focal_cost(logits, labels)
    probs = logits.sigmoid()
    for q in range(3):
        for g in range(2):
            expected_dice = 1 - (2 * (probs[q] * labels[g]).sum() + 1) / (
                probs[q].sum() + labels[g].sum() + 1
            )
            p_t = probs[q] * labels[g] + (1 - probs[q]) * (1 - labels[g])
            alpha_t = 0.25 * labels[g] + 0.75 * (1 - labels[g])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[q], labels[g], reduction="none")
            expected_focal = (alpha_t * (1 - p_t) ** 2 * bce).mean()
            torch.testing.assert_close(dice[q, g], expected_dice)
            torch.testing.assert_close(focal[q, g], expected_focal)


def test_costs_come_from_the_config() -> None:
    """Query 0 has the right class and a distant box, query 1 the wrong class and the exact box: the
    config's class and box costs decide which one the GT gets."""
    class_logits = torch.tensor([[6.0, -6.0], [-6.0, 6.0], [0.0, 0.0]])
    boxes = torch.tensor([[60.0, 60.0, 80.0, 80.0], [0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 50.0, 50.0]])
    gt_labels, gt_boxes = torch.tensor([0]), torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    by_class = HungarianMatcher.from_config(replace(DocSAMConfig(), class_cost=5.0, box_cost=1.0))
    by_box = HungarianMatcher.from_config(replace(DocSAMConfig(), class_cost=1.0, box_cost=5.0))
    assert by_class(class_logits, boxes, gt_labels, gt_boxes).query_idx.tolist() == [0]
    assert by_box(class_logits, boxes, gt_labels, gt_boxes).query_idx.tolist() == [1]

    config = replace(DocSAMConfig(), class_cost=3.0, mask_cost=0.5, box_cost=7.0)
    points = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    match = HungarianMatcher.from_config(config)(
        class_logits, boxes, gt_labels, gt_boxes, points, (points[1:2] > 0).float()
    )
    parts = match.components
    expected = 3.0 * parts["class"] + 0.5 * (parts["dice"] + parts["focal"]) / 2
    torch.testing.assert_close(match.cost, expected + 7.0 * (parts["sml1"] + parts["diou"]) / 2)
    criterion = DocSAMCriterion(config)
    assert (criterion.matcher.class_cost, criterion.matcher.mask_cost, criterion.matcher.box_cost) == (
        3.0,
        0.5,
        7.0,
    )
