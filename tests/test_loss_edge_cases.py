"""Criterion behaviour outside the parity fixture: weighting rule, empty targets, autocast dtypes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from model.loss import CellCentreSampler, DocSAMCriterion, ImageTargets, loss_weight


@dataclass
class _Stage:
    class_logits: torch.Tensor
    boxes: torch.Tensor
    semantic_mask_logits: torch.Tensor
    instance_mask_logits: torch.Tensor | None


def _stages(num_images: int = 2, queries: int = 6, classes: int = 3, size: int = 8, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    stages = []
    for s in range(3):
        xy = torch.rand(num_images, queries, 2, generator=generator) * size * 2
        boxes = torch.cat([xy, xy + 4 + torch.rand(num_images, queries, 2, generator=generator) * 8], -1)
        instance = None if s == 0 else torch.randn(num_images, queries, size, size, generator=generator)
        stages.append(
            _Stage(
                class_logits=torch.randn(num_images, queries, classes, generator=generator).to(dtype),
                boxes=boxes.to(dtype).requires_grad_(True),
                semantic_mask_logits=torch.randn(num_images, classes, size, size, generator=generator).to(
                    dtype
                ),
                instance_mask_logits=None if instance is None else instance.to(dtype),
            )
        )
    return stages


def _targets(num_gt: int, classes: int = 3, size: int = 32) -> ImageTargets:
    masks = torch.zeros(num_gt, size, size, dtype=torch.bool)
    for g in range(num_gt):
        masks[g, 4 * g : 4 * g + 8, 2:20] = True
    semantic = torch.zeros(classes, size, size, dtype=torch.bool)
    semantic[-1] = ~masks.any(0)
    return ImageTargets(
        instance_masks=masks,
        instance_boxes=torch.tensor([[2.0, 4.0 * g, 20.0, 4.0 * g + 8] for g in range(num_gt)]).reshape(
            -1, 4
        ),
        instance_labels=torch.zeros(num_gt, dtype=torch.long),
        semantic_masks=semantic,
        class_names=[f"class {c}" for c in range(classes - 1)] + ["x _background_"],
    )


def test_substring_weights() -> None:
    assert loss_weight("loss_focal_semantic_2") == 5.0
    assert loss_weight("loss_dice_semantic") == 5.0
    assert loss_weight("loss_dice_1") == 5.0
    assert loss_weight("loss_class_0") == 1.0
    assert loss_weight("loss_sml1") == 1.0


def test_key_order_for_three_stages() -> None:
    output = DocSAMCriterion(sampler=CellCentreSampler())(_stages(), [_targets(2), _targets(1)])
    assert list(output.losses) == [
        *("loss_sml1", "loss_diou", "loss_dice", "loss_focal", "loss_dice_semantic", "loss_focal_semantic"),
        *("loss_class", "loss_sml1_0", "loss_diou_0", "loss_dice_semantic_0", "loss_focal_semantic_0"),
        *(
            "loss_class_0",
            "loss_sml1_1",
            "loss_diou_1",
            "loss_dice_1",
            "loss_focal_1",
            "loss_dice_semantic_1",
        ),
        *("loss_focal_semantic_1", "loss_class_1"),
    ]
    assert output.total.item() == pytest.approx(sum(v.item() for v in output.losses.values()), rel=1e-6)


def test_images_without_instances_are_supervised_as_background() -> None:
    stages = _stages()
    output = DocSAMCriterion(sampler=CellCentreSampler())(stages, [_targets(0), _targets(0)])
    assert torch.isfinite(output.total)
    assert output.unweighted["loss_sml1"].item() == 0.0 and output.unweighted["loss_dice"].item() == 0.0
    assert output.unweighted["loss_class"].item() > 0.0
    output.total.backward()
    assert stages[-1].boxes.grad is not None and not stages[-1].boxes.grad.any()


def test_low_precision_predictions_are_upcast() -> None:
    output = DocSAMCriterion(sampler=CellCentreSampler())(
        _stages(dtype=torch.bfloat16), [_targets(2), _targets(1)]
    )
    assert output.total.dtype == torch.float32
    assert torch.isfinite(output.total)


def test_default_sampler_is_jittered() -> None:
    """Two default runs draw different grids: mask terms differ, stage-0 box terms (no points) do not."""
    torch.manual_seed(0)
    first = DocSAMCriterion()(_stages(), [_targets(2), _targets(1)])
    second = DocSAMCriterion()(_stages(), [_targets(2), _targets(1)])
    assert first.unweighted["loss_focal_semantic"].item() != second.unweighted["loss_focal_semantic"].item()
    assert first.unweighted["loss_sml1_0"].item() == second.unweighted["loss_sml1_0"].item()
