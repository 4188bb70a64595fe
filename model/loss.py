"""DocSAM training criterion: point sampling, the 33 deep-supervision loss terms and their total.

Numerical parity with the reference is tested against `shared/fixtures/reference/tiny-loss.*`. The loss
weights and the matcher's cost weights are read from the model's `DocSAMConfig` (`DocSAMCriterion(config)`).

Reference behaviours kept on purpose (they shape the training signal of the released weights):

* Masks are compared on a grid of h·w points at the prediction resolution, optionally jittered inside each
  cell; GT masks are sampled bilinearly at full resolution, so labels are soft. A fresh grid is drawn for
  every matcher call (per image) and every mask-loss call, in a fixed order that the injectable
  `PointSampler` sees.
* Every stage is matched and supervised on its own; the last stage's keys have no suffix, stage s < last gets
  `_s`. Stage 0 predicts no instance masks and so has no `loss_dice_0` / `loss_focal_0`.
* Weights are applied by substring of the key, so `loss_dice_semantic` / `loss_focal_semantic` are weighted
  like the instance terms, and every focal term is ×10 inside the term and ×5 by the weight.
* Batch-padding query rows (from query selection) are ordinary matcher candidates and, unmatched,
  background targets.
* The whole canvas is supervised, collate padding included (all GT channels are 0 there).
* An annotation-free image's dummy instance (label 0, empty mask, zero box), when the dataset passes one in,
  is matched and supervised like any other instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torchvision.ops import distance_box_iou_loss, sigmoid_focal_loss

from model.config import DocSAMConfig
from model.matcher import HungarianMatcher, Match

FOCAL_SCALE = 10.0  # the reference multiplies every focal term by 10 inside the term, before its weight
BOX_SCALE = 100.0  # pixels per unit of the smooth-L1 box loss (β = 1 unit)

PointCaller = Literal["matcher", "instance_mask_loss", "semantic_mask_loss"]


@dataclass
class ImageTargets:
    """Ground truth of one image of a collated batch.

    Masks live on the batch canvas (zero-padded right/bottom like the pixels). An image without annotations
    carries whatever the dataset gives it; the reference's dummy instance is computed like a real one.
    """

    instance_masks: torch.Tensor  # (G, H, W) bool
    instance_boxes: torch.Tensor  # (G, 4) float xyxy input pixels
    instance_labels: torch.Tensor  # (G,) int64 indices into class_names
    semantic_masks: torch.Tensor  # (C_i, H, W) bool, background last
    class_names: list[str]  # background prompt last

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class StagePredictions(Protocol):
    """What the criterion reads from one decoder stage; `model.outputs.StageOutput` provides it."""

    class_logits: torch.Tensor  # (N, Q, C_max); columns >= C_i of image i are padding
    boxes: torch.Tensor  # (N, Q, 4) xyxy input pixels
    semantic_mask_logits: torch.Tensor  # (N, C_max, h, w)
    instance_mask_logits: torch.Tensor | None  # (N, Q, h, w); None at stage 0


@dataclass(frozen=True)
class PointCall:
    """Why a point grid is requested: the stage, the consumer and (matcher only) the image."""

    stage: int
    caller: PointCaller
    image: int | None = None


class PointSampler(Protocol):
    """Returns (h·w, 2) normalised (x, y) points in [0, 1]² for a (height, width) prediction map."""

    def __call__(self, height: int, width: int, call: PointCall, device: torch.device) -> torch.Tensor: ...


def _cell_centres(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre coordinates in cell units, (height, width) each, row-major (y outer) like the reference."""
    ys = torch.linspace(0.5, height - 0.5, height, device=device)
    xs = torch.linspace(0.5, width - 0.5, width, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x, grid_y


class JitteredGridSampler:
    """The reference's sampler: every cell centre moved by independent U[-0.5, 0.5) cells in x and y.

    Like the reference, draws on the CPU (y offsets, then x offsets, each a (height, width) `torch.rand`) with
    the same arithmetic, then moves the points to `device`: a CPU generator (default: torch's global one)
    seeded like the reference's reproduces its points bit for bit, whatever device the model runs on.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(self, height: int, width: int, call: PointCall, device: torch.device) -> torch.Tensor:
        grid_x, grid_y = _cell_centres(height, width, torch.device("cpu"))
        jitter_y = torch.rand(grid_y.shape, generator=self.generator)
        jitter_x = torch.rand(grid_x.shape, generator=self.generator)
        points = torch.stack([(grid_x + jitter_x - 0.5) / width, (grid_y + jitter_y - 0.5) / height], dim=-1)
        return points.reshape(-1, 2).to(device)


class CellCentreSampler:
    """Zero jitter: the exact cell centres ((j + 0.5)/w, (i + 0.5)/h), deterministic."""

    def __call__(self, height: int, width: int, call: PointCall, device: torch.device) -> torch.Tensor:
        grid_x, grid_y = _cell_centres(height, width, device)
        return torch.stack([grid_x / width, grid_y / height], dim=-1).reshape(-1, 2)


class ReplayPointSampler:
    """Hands out stored point sets in call order (e.g. the reference's recorded jittered grids).

    `calls` records every request, so a test can check the call order as well.
    """

    def __init__(self, points: Sequence[torch.Tensor]) -> None:
        self.points = list(points)
        self.calls: list[PointCall] = []

    def __call__(self, height: int, width: int, call: PointCall, device: torch.device) -> torch.Tensor:
        index = len(self.calls)
        if index >= len(self.points):
            raise IndexError(f"point call {index} ({call}) but only {len(self.points)} point sets are stored")
        points = self.points[index].reshape(-1, 2)
        if points.shape[0] != height * width:
            raise ValueError(
                f"point set {index} has {points.shape[0]} points, the {height}x{width} map needs "
                f"{height * width}"
            )
        self.calls.append(call)
        return points.to(device)


def sample_points(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample (K, H, W) maps at (P, 2) normalised (x, y) points → (K, P).

    Zero padding outside the map and `align_corners=False`: a point's value does not depend on the map's
    resolution, so full-resolution GT masks and stride-4 logits are read at the same places.
    """
    grid = (2.0 * points - 1.0).reshape(1, -1, 1, 2)
    sampled = F.grid_sample(
        maps.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled[0, :, :, 0]


def _mean(values: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (still attached to the graph) instead of NaN when nothing was matched."""
    return values.mean() if values.numel() else values.sum()


def loss_weights(config: DocSAMConfig) -> dict[str, float]:
    """The configuration's loss weights under the key substrings they apply to."""
    return {
        "loss_class": config.class_weight,
        "loss_sml1": config.sml1_weight,
        "loss_diou": config.diou_weight,
        "loss_dice": config.dice_weight,
        "loss_focal": config.focal_weight,
    }


def loss_weight(key: str, weights: Mapping[str, float]) -> float:
    """Weight of a loss key by the reference's substring rule (every matching substring multiplies)."""
    factor = 1.0
    for name, weight in weights.items():
        if name in key:
            factor *= weight
    return factor


@dataclass
class CriterionOutput:
    """Weighted terms in the reference's key order, their sum, and the matching of every stage."""

    losses: dict[str, torch.Tensor]  # weighted, 33 keys for 5 stages
    unweighted: dict[str, torch.Tensor]
    total: torch.Tensor
    matches: list[list[Match]]  # [stage][image], stage 0 first


class DocSAMCriterion:
    """Hungarian matching + deep-supervision losses over all decoder stages.

    Args:
        config: the model's configuration; its loss weights (`class_weight`, `sml1_weight`, `diou_weight`,
            `dice_weight`, `focal_weight`, `no_object_weight` for the background class's cross-entropy
            weight) and matcher costs (`class_cost`, `mask_cost`, `box_cost`) are used.
        sampler: point-grid source (default: the reference's jittered grid on the global RNG).
    """

    def __init__(self, config: DocSAMConfig, sampler: PointSampler | None = None) -> None:
        self.matcher = HungarianMatcher.from_config(config)
        self.sampler: PointSampler = sampler or JitteredGridSampler()
        self.weights = loss_weights(config)
        self.no_object_weight = config.no_object_weight

    def __call__(
        self, stages: Sequence[StagePredictions], targets: Sequence[ImageTargets]
    ) -> CriterionOutput:
        """Loss of one batch: `stages` in stage order (0 = initial queries), `targets` one per image.

        Stages are processed last first, then 0, 1, ...: that fixes the order of the point draws and of the
        keys (and so of the float summation of the total), as in the reference.
        """
        if not stages:
            raise ValueError("no stage predictions")
        last = len(stages) - 1
        unweighted: dict[str, torch.Tensor] = {}
        matches: list[list[Match]] = [[] for _ in stages]
        for stage in (last, *range(last)):
            suffix = "" if stage == last else f"_{stage}"
            terms, matches[stage] = self.stage_losses(stage, stages[stage], targets)
            unweighted.update({f"loss_{name}{suffix}": value for name, value in terms.items()})
        losses = {key: value * loss_weight(key, self.weights) for key, value in unweighted.items()}
        total = sum(losses.values(), torch.zeros((), device=stages[last].class_logits.device))
        return CriterionOutput(losses=losses, unweighted=unweighted, total=total, matches=matches)

    def stage_losses(
        self, stage: int, pred: StagePredictions, targets: Sequence[ImageTargets]
    ) -> tuple[dict[str, torch.Tensor], list[Match]]:
        """Unweighted terms of one stage (sml1, diou, [dice, focal,] dice_semantic, focal_semantic, class)."""
        class_logits = pred.class_logits.float()
        boxes = pred.boxes.float()
        semantic_logits = pred.semantic_mask_logits.float()
        instance_logits = None if pred.instance_mask_logits is None else pred.instance_mask_logits.float()
        device = class_logits.device

        matches = [
            self._match_image(stage, n, class_logits[n], boxes[n], instance_logits, target)
            for n, target in enumerate(targets)
        ]
        image_idx = torch.cat([torch.full_like(m.query_idx, n) for n, m in enumerate(matches)])
        query_idx = torch.cat([m.query_idx for m in matches])

        matched_boxes = boxes[image_idx, query_idx]
        gt_boxes = torch.cat(
            [t.instance_boxes[m.gt_idx] for t, m in zip(targets, matches, strict=True)]
        ).float()
        terms = {
            "sml1": _mean(
                F.smooth_l1_loss(matched_boxes / BOX_SCALE, gt_boxes / BOX_SCALE, reduction="none", beta=1.0)
            ),
            "diou": _mean(distance_box_iou_loss(matched_boxes, gt_boxes)),
        }
        if instance_logits is not None:
            height, width = instance_logits.shape[-2:]
            points = self.sampler(height, width, PointCall(stage, "instance_mask_loss"), device)
            gt_masks = torch.cat(
                [t.instance_masks[m.gt_idx] for t, m in zip(targets, matches, strict=True)]
            ).float()
            terms["dice"], terms["focal"] = self._mask_losses(
                instance_logits[image_idx, query_idx], gt_masks, points
            )

        height, width = semantic_logits.shape[-2:]
        points = self.sampler(height, width, PointCall(stage, "semantic_mask_loss"), device)
        # No matching for semantics: predicted map c is paired with GT channel c of the image's own classes.
        semantic_pred = torch.cat([semantic_logits[n, : t.num_classes] for n, t in enumerate(targets)])
        semantic_gt = torch.cat([t.semantic_masks for t in targets]).float()
        terms["dice_semantic"], terms["focal_semantic"] = self._mask_losses(
            semantic_pred, semantic_gt, points
        )

        terms["class"] = self._class_loss(class_logits, targets, matches)
        return terms, matches

    def _match_image(
        self,
        stage: int,
        image: int,
        class_logits: torch.Tensor,
        boxes: torch.Tensor,
        instance_logits: torch.Tensor | None,
        target: ImageTargets,
    ) -> Match:
        point_logits = point_labels = None
        if instance_logits is not None:
            height, width = instance_logits.shape[-2:]
            points = self.sampler(height, width, PointCall(stage, "matcher", image), instance_logits.device)
            point_logits = sample_points(instance_logits[image].detach(), points)
            point_labels = sample_points(target.instance_masks.float(), points)
        return self.matcher(
            class_logits[:, : target.num_classes].detach(),
            boxes.detach(),
            target.instance_labels,
            target.instance_boxes.float(),
            point_logits,
            point_labels,
        )

    def _mask_losses(
        self, logits: torch.Tensor, gt_masks: torch.Tensor, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dice (mean over masks) and scaled focal loss (mean over masks × points) of paired masks."""
        point_logits = sample_points(logits, points)
        point_labels = sample_points(gt_masks, points)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_labels).sum(-1) + 1) / (probs.sum(-1) + point_labels.sum(-1) + 1)
        focal = sigmoid_focal_loss(point_logits, point_labels)
        return _mean(dice), FOCAL_SCALE * _mean(focal)

    def _class_loss(
        self, class_logits: torch.Tensor, targets: Sequence[ImageTargets], matches: Sequence[Match]
    ) -> torch.Tensor:
        """Per-image weighted cross-entropy (unmatched rows → background), averaged over the images."""
        num_queries = class_logits.shape[1]
        total = class_logits.new_zeros(())
        for n, (target, match) in enumerate(zip(targets, matches, strict=True)):
            num_classes = target.num_classes
            labels = torch.full((num_queries,), num_classes - 1, dtype=torch.long, device=class_logits.device)
            labels[match.query_idx] = target.instance_labels[match.gt_idx]
            weight = class_logits.new_ones(num_classes)
            weight[-1] = self.no_object_weight
            total = total + F.cross_entropy(class_logits[n, :, :num_classes], labels, weight=weight)
        return total / len(targets)
