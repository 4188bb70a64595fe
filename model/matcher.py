"""Hungarian matcher of the DocSAM training criterion, as the reference computes it.

One image at a time: a (Q, G) cost matrix between the image's query rows (batch-padding rows included,
as the reference does) and its ground-truth instances, solved with scipy's `linear_sum_assignment`. Every
cost component is min–max normalised over the whole matrix before the components are mixed, so the weights
(`DocSAMConfig.class_cost`, `mask_cost`, `box_cost`: 1, 2, 2 in the reference) act on comparable [0, 1]
ranges rather than on the raw scales of the individual terms.

Mask costs need point-sampled logits and labels; the caller (`model.loss.DocSAMCriterion`) samples them, so
that the order in which point grids are drawn stays in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import distance_box_iou_loss, sigmoid_focal_loss

from model.config import DocSAMConfig

# Clamp range of the final cost matrix; NaN and ±inf are mapped onto it before the assignment.
COST_LIMIT = 1e10


@dataclass
class Match:
    """Assignment of one image at one stage.

    `query_idx[k]` (a row of the stage's padded query list) is matched to GT row `gt_idx[k]`; pairs are in
    ascending query order, as scipy returns them. `cost` is the (Q, G) matrix handed to the solver and
    `components` the min–max-normalised parts it was mixed from (`class`, `dice`, `focal`, `sml1`, `diou`;
    the mask parts only when the stage predicts instance masks).
    """

    query_idx: torch.Tensor  # (K,) int64
    gt_idx: torch.Tensor  # (K,) int64
    cost: torch.Tensor  # (Q, G)
    components: dict[str, torch.Tensor] = field(default_factory=dict)


def min_max_normalise(cost: torch.Tensor) -> torch.Tensor:
    """Rescale a whole cost matrix to [0, 1]; a constant matrix becomes all zeros."""
    low = cost.min()
    return (cost - low) / (cost.max() - low).clamp(min=1e-10)


def pairwise_dice_cost(point_logits: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """Soft dice loss between every predicted mask (Q, P) and every (soft) GT mask (G, P) → (Q, G)."""
    probs = point_logits.sigmoid()
    numerator = 2 * probs @ point_labels.T
    denominator = probs.sum(-1)[:, None] + point_labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_focal_cost(point_logits: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid focal loss (α 0.25, γ 2) over the points for every (query, GT) pair → (Q, G).

    The focal loss of a soft label y is linear in y only through the two hard-label losses, so the pairwise
    matrix is two matrix products instead of a (Q, G, P) tensor. Dividing by P before the products (rather
    than after) is what the reference does; it keeps the normalised matrix bit-identical to its.
    """
    num_points = point_logits.shape[1]
    positive = sigmoid_focal_loss(point_logits, torch.ones_like(point_logits)) / num_points
    negative = sigmoid_focal_loss(point_logits, torch.zeros_like(point_logits)) / num_points
    return positive @ point_labels.T + negative @ (1 - point_labels).T


def pairwise_box_costs(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-L1 (β 1, mean over the 4 coordinates) and Distance-IoU loss for every (query, GT) pair.

    Both on raw xyxy pixel coordinates (the loss divides by 100 before smooth-L1, the matcher does not).
    """
    shape = (boxes.shape[0], gt_boxes.shape[0], 4)
    pred = boxes[:, None, :].expand(shape)
    target = gt_boxes[None, :, :].expand(shape)
    smooth_l1 = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0).mean(-1)
    return smooth_l1, distance_box_iou_loss(pred, target)


class HungarianMatcher:
    """Per-image one-to-one assignment of query rows to GT instances (no gradient).

    `cost = class_cost·class + mask_cost·(dice + focal)/2 + box_cost·(sml1 + diou)/2`, every part min–max
    normalised; build it with `from_config` so that the weights are the model configuration's.
    """

    def __init__(self, class_cost: float, mask_cost: float, box_cost: float) -> None:
        self.class_cost = class_cost
        self.mask_cost = mask_cost
        self.box_cost = box_cost

    @classmethod
    def from_config(cls, config: DocSAMConfig) -> HungarianMatcher:
        return cls(config.class_cost, config.mask_cost, config.box_cost)

    @torch.no_grad()
    def __call__(
        self,
        class_logits: torch.Tensor,
        boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        point_logits: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> Match:
        """Match one image.

        Args:
            class_logits: (Q, C_i) logits over the image's own class names (background last).
            boxes: (Q, 4) predicted xyxy pixel boxes.
            gt_labels: (G,) indices into the image's class names.
            gt_boxes: (G, 4) xyxy pixel boxes.
            point_logits: (Q, P) instance-mask logits at the sampled points, None at stage 0 (no masks).
            point_labels: (G, P) GT masks (float) at the same points.
        """
        num_queries, num_gt = class_logits.shape[0], gt_labels.shape[0]
        if num_gt == 0:
            empty = torch.empty(0, dtype=torch.long, device=class_logits.device)
            return Match(empty, empty.clone(), class_logits.new_zeros(num_queries, 0))

        components = {"class": min_max_normalise(1 - class_logits.softmax(-1)[:, gt_labels])}
        if point_logits is not None:
            if point_labels is None:
                raise ValueError("point_labels are required with point_logits")
            components["dice"] = min_max_normalise(pairwise_dice_cost(point_logits, point_labels))
            components["focal"] = min_max_normalise(pairwise_focal_cost(point_logits, point_labels))
        smooth_l1, diou = pairwise_box_costs(boxes, gt_boxes)
        components["sml1"] = min_max_normalise(smooth_l1)
        components["diou"] = min_max_normalise(diou)

        cost = self.class_cost * components["class"]
        if point_logits is not None:
            cost = cost + self.mask_cost * (components["dice"] + components["focal"]) / 2
        cost = cost + self.box_cost * (components["sml1"] + components["diou"]) / 2
        cost = cost.nan_to_num(nan=COST_LIMIT).clamp(-COST_LIMIT, COST_LIMIT)

        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        device = class_logits.device
        return Match(
            query_idx=torch.as_tensor(rows.astype(np.int64), device=device),
            gt_idx=torch.as_tensor(cols.astype(np.int64), device=device),
            cost=cost,
            components=components,
        )
