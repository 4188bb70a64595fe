"""Criterion behaviour outside the parity fixture: weighting rule and weights from the config, empty targets,
autocast dtypes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F

from model.config import DocSAMConfig
from model.loss import CellCentreSampler, DocSAMCriterion, ImageTargets, loss_weight, loss_weights

CONFIG = DocSAMConfig()  # the reference's loss weights and matcher costs


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
    weights = loss_weights(CONFIG)
    assert loss_weight("loss_focal_semantic_2", weights) == 5.0
    assert loss_weight("loss_dice_semantic", weights) == 5.0
    assert loss_weight("loss_dice_1", weights) == 5.0
    assert loss_weight("loss_class_0", weights) == 1.0
    assert loss_weight("loss_sml1", weights) == 1.0


def test_key_order_for_three_stages() -> None:
    output = DocSAMCriterion(CONFIG, sampler=CellCentreSampler())(_stages(), [_targets(2), _targets(1)])
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
    output = DocSAMCriterion(CONFIG, sampler=CellCentreSampler())(stages, [_targets(0), _targets(0)])
    assert torch.isfinite(output.total)
    assert output.unweighted["loss_sml1"].item() == 0.0 and output.unweighted["loss_dice"].item() == 0.0
    assert output.unweighted["loss_class"].item() > 0.0
    output.total.backward()
    assert stages[-1].boxes.grad is not None and not stages[-1].boxes.grad.any()


def test_low_precision_predictions_are_upcast() -> None:
    output = DocSAMCriterion(CONFIG, sampler=CellCentreSampler())(
        _stages(dtype=torch.bfloat16), [_targets(2), _targets(1)]
    )
    assert output.total.dtype == torch.float32
    assert torch.isfinite(output.total)


def test_default_sampler_is_jittered() -> None:
    """Two default runs draw different grids: mask terms differ, stage-0 box terms (no points) do not."""
    torch.manual_seed(0)
    first = DocSAMCriterion(CONFIG)(_stages(), [_targets(2), _targets(1)])
    second = DocSAMCriterion(CONFIG)(_stages(), [_targets(2), _targets(1)])
    assert first.unweighted["loss_focal_semantic"].item() != second.unweighted["loss_focal_semantic"].item()
    assert first.unweighted["loss_sml1_0"].item() == second.unweighted["loss_sml1_0"].item()


@pytest.mark.parametrize(
    ("weight", "substring"),
    [
        ("class_weight", "loss_class"),
        ("sml1_weight", "loss_sml1"),
        ("diou_weight", "loss_diou"),
        ("dice_weight", "loss_dice"),
        ("focal_weight", "loss_focal"),
    ],
)
def test_loss_weights_come_from_the_config(weight: str, substring: str) -> None:
    """Tripling one weight of the config triples exactly the terms whose key contains its substring."""
    stages, targets = _stages(), [_targets(2), _targets(1)]
    base = DocSAMCriterion(CONFIG, sampler=CellCentreSampler())(stages, targets)
    config = replace(CONFIG, **{weight: 3 * getattr(CONFIG, weight)})
    changed = DocSAMCriterion(config, sampler=CellCentreSampler())(stages, targets)

    affected = [key for key in base.losses if substring in key]
    assert affected and len(affected) < len(base.losses)
    for key, value in base.losses.items():
        assert torch.equal(changed.unweighted[key], base.unweighted[key]), key
        factor = 3.0 if key in affected else 1.0
        assert changed.losses[key].item() == pytest.approx(factor * value.item(), rel=1e-6), key
    expected_total = base.total.item() + 2 * sum(base.losses[key].item() for key in affected)
    assert changed.total.item() == pytest.approx(expected_total, rel=1e-6)


def test_no_object_weight_comes_from_the_config() -> None:
    """With `no_object_weight` 1 the class term is the plain cross-entropy of the matched labels."""
    stages, targets = _stages(), [_targets(2), _targets(1)]
    output = DocSAMCriterion(replace(CONFIG, no_object_weight=1.0), sampler=CellCentreSampler())(
        stages, targets
    )
    logits = stages[-1].class_logits
    expected = 0.0
    for n, (target, match) in enumerate(zip(targets, output.matches[-1], strict=True)):
        labels = torch.full((logits.shape[1],), target.num_classes - 1)
        labels[match.query_idx] = target.instance_labels[match.gt_idx]
        expected += F.cross_entropy(logits[n, :, : target.num_classes], labels).item() / len(targets)
    assert output.unweighted["loss_class"].item() == pytest.approx(expected, rel=1e-6)
    default = DocSAMCriterion(CONFIG, sampler=CellCentreSampler())(stages, targets)
    assert default.unweighted["loss_class"].item() != pytest.approx(expected, rel=1e-3)
