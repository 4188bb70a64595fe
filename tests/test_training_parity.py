"""Training parity with the reference (`tiny-loss.safetensors` / `tiny-loss.json`, README "Training parity").

* The data pipeline, fed the reference's source pages, COCO jsons and scripted random answers, rebuilds the
  collated batch the reference's dataset produced (pixels, masks, boxes, labels, class names).
* The training forward (train mode, dropout and stochastic depth switched off through `Regularisation`,
  zero-jitter points) reproduces the reference's predictions, query selection, matchings, all 33 loss terms
  and the gradients; one AdamW step as `docsam train` builds it reproduces the reference's parameters.

Tolerances are the fixture README's.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import ScriptedRandom, assert_close_to_reference, write_layout

from docsam_cli.training.data import MixedTrainingData, TrainingBatch, collate
from docsam_cli.training.datasets import LayoutDataset
from docsam_cli.training.settings import AugmentSettings, Regularisation
from docsam_cli.training.trainer import forward_loss, trainable_parameters
from model.checkpoint import load_weights, to_reference_keys
from model.docsam import DocSAM
from model.loss import CellCentreSampler, DocSAMCriterion, ImageTargets
from model.optim import build_optimizer

RECORD = "forward_jitter_off"
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-5
GROUP_RTOL, PARAMETER_RTOL = 1e-4, 1e-3
STEP_RTOL, STEP_ATOL = 1e-6, 1e-9
# Reference names (without `mask2former.model.`) → gradient groups of `tiny-loss.json`.
GROUP_PREFIXES = {
    "pixel_level_module.encoder.": "backbone",
    "pixel_level_module.fpn.": "fpn_unused",
    "pixel_level_module.decoder.": "pixel_decoder",
    "pixel_level_module.feat_merge.": "feat_merge",
    "transformer_module.textual_encoder.": "text_encoder",
    "transformer_module.decoder.": "transformer_decoder",
    "transformer_module.": "query_embeddings_and_projection",
}


@pytest.fixture(scope="module")
def tensors(reference_fixtures: Path) -> dict[str, torch.Tensor]:
    return load_file(reference_fixtures / "tiny-loss.safetensors")


@pytest.fixture(scope="module")
def meta(reference_fixtures: Path) -> dict:
    return json.loads((reference_fixtures / "tiny-loss.json").read_text())


def reference_name(name: str) -> str:
    (mapped,) = to_reference_keys({name: None})
    return mapped.removeprefix("mask2former.model.")


def group_of(reference: str) -> str:
    return next(group for prefix, group in GROUP_PREFIXES.items() if reference.startswith(prefix))


# --- data pipeline -----------------------------------------------------------------------------------


def test_data_pipeline_rebuilds_the_reference_batch(tmp_path: Path, tensors, meta) -> None:
    source = meta["batch"]
    datasets = [
        LayoutDataset(
            write_layout(
                tmp_path / page, {page: (tensors[f"source.{page}"].numpy(), source["source_coco_json"][page])}
            ),
            name=name,
        )
        for page, name in (("page_a", "DocLayNet"), ("page_b", "SciTSR"))
    ]
    data = MixedTrainingData(
        datasets,
        AugmentSettings(short_range=tuple(source["short_range"]), patch=tuple(source["patch_size_hw"])),
        seed=0,
    )
    assert data.probabilities(0) == source["dataset_sampling_probabilities"]
    rngs = [ScriptedRandom(source["scripted_rng"][name]) for name in ("sample_a", "sample_b")]
    batch = collate([data.sample(0, rng) for rng in rngs])
    assert all(rng.used == len(rng.script) for rng in rngs), "the reference made draws we did not"

    assert_close_to_reference("pixel_values", batch.pixel_values, tensors["batch.pixel_values"], 1e-3, 0)
    assert torch.equal(batch.pixel_mask, tensors["batch.pixel_mask"].float())
    assert torch.equal(batch.image_bboxes, tensors["batch.image_bboxes"])
    for n, (target, expected) in enumerate(zip(batch.targets, source["instances"], strict=True)):
        prefix = f"batch.img{n}"
        assert target.class_names == expected["class_names"]
        assert torch.equal(target.instance_labels, tensors[f"{prefix}.instance_labels"])
        assert_close_to_reference(
            "boxes", target.instance_boxes, tensors[f"{prefix}.instance_bboxes"], 1e-4, 0
        )
        assert torch.equal(target.instance_masks, tensors[f"{prefix}.instance_masks"].bool())
        assert torch.equal(target.semantic_masks, tensors[f"{prefix}.semantic_masks"].bool())


# --- training forward, loss, gradients, one step -----------------------------------------------------


def fixture_batch(tensors, meta) -> TrainingBatch:
    instances = meta["batch"]["instances"]
    return TrainingBatch(
        pixel_values=tensors["batch.pixel_values"],
        pixel_mask=tensors["batch.pixel_mask"].float(),
        image_bboxes=tensors["batch.image_bboxes"],
        targets=[
            ImageTargets(
                instance_masks=tensors[f"batch.img{n}.instance_masks"].bool(),
                instance_boxes=tensors[f"batch.img{n}.instance_bboxes"],
                instance_labels=tensors[f"batch.img{n}.instance_labels"],
                semantic_masks=tensors[f"batch.img{n}.semantic_masks"].bool(),
                class_names=instances[n]["class_names"],
            )
            for n in range(2)
        ],
        sources=["page_a", "page_b"],
    )


@pytest.fixture(scope="module")
def trained(tiny_config, tiny_reference_state, tensors, meta):
    """One training forward + backward of the tiny model without dropout, then one AdamW step."""
    model = DocSAM(Regularisation(0.0, 0.0, 0.0).apply(tiny_config))
    load_weights(model, tiny_reference_state)
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = build_optimizer(
        trainable_parameters(model, freeze_backbone=False), lr=1e-4, weight_decay=1e-2
    )
    output, losses = forward_loss(
        model, fixture_batch(tensors, meta), DocSAMCriterion(model.config, sampler=CellCentreSampler())
    )
    losses.total.backward()
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()
    return output, losses, grads, before, model, optimizer


def test_predictions_and_query_selection(trained, tensors) -> None:
    output = trained[0]
    for stage, result in enumerate(output.stages):
        prefix = f"pred.stage{stage}"
        if stage:
            assert torch.equal(result.kept_index, tensors[f"{prefix}.kept_index"]), f"stage {stage} selection"
            assert torch.equal(result.padding_mask, tensors[f"{prefix}.padding_mask"].bool())
            assert_close_to_reference(
                f"{prefix}.instance",
                result.instance_mask_logits.detach(),
                tensors[f"{prefix}.instance_mask_logits"],
                5e-3,
                1e-3,
            )
        assert_close_to_reference(
            f"{prefix}.semantic",
            result.semantic_mask_logits.detach(),
            tensors[f"{prefix}.semantic_mask_logits"],
            5e-4,
            1e-4,
        )
        assert_close_to_reference(
            f"{prefix}.class", result.class_logits.detach(), tensors[f"{prefix}.class_logits"], 5e-3, 1e-3
        )
        assert_close_to_reference(
            f"{prefix}.boxes", result.boxes.detach(), tensors[f"{prefix}.bboxes_xyxy"], 5e-2, 1e-4
        )


def test_matchings_and_loss_terms(trained, meta) -> None:
    losses = trained[1]
    record = meta["records"][RECORD]
    for stage, per_image in enumerate(losses.matches):
        for image, match in enumerate(per_image):
            expected = record["matching"][f"stage{stage}"][image]
            assert match.query_idx.tolist() == expected["query"], f"stage {stage} image {image}"
            assert match.gt_idx.tolist() == expected["gt"], f"stage {stage} image {image}"
    assert list(losses.losses) == record["loss_key_order"]
    for ours, reference in (
        (losses.losses, record["loss_weighted"]),
        (losses.unweighted, record["loss_unweighted"]),
    ):
        for key, value in reference.items():
            assert ours[key].item() == pytest.approx(value, rel=LOSS_RTOL, abs=LOSS_ATOL), key
    assert losses.total.item() == pytest.approx(record["total_loss"], rel=LOSS_RTOL, abs=LOSS_ATOL)


def test_gradient_norms(trained, meta) -> None:
    grads = trained[2]
    expected = meta["records"][RECORD]["grads"]
    per_parameter = expected["per_parameter_l2_norm"]
    norms = {
        reference_name(name): grad.double().norm().item() for name, grad in grads.items() if grad is not None
    }
    # Exactly the parameters the reference gives a gradient: not the text encoder (no_grad), not the unused
    # FPN, not the pixel decoder's and decoder's parameters that feed nothing the loss sees.
    assert set(norms) == set(per_parameter)

    squares: dict[str, float] = defaultdict(float)
    for name, norm in norms.items():
        squares[group_of(name)] += norm**2
    for group, values in expected["groups"].items():
        assert math.sqrt(squares[group]) == pytest.approx(values["l2_norm"], rel=GROUP_RTOL, abs=1e-12), group

    skip = set(expected["parameters_with_numerically_zero_gradient"]["parameters"])
    group_norms = {group: values["l2_norm"] for group, values in expected["groups"].items()}
    compared = 0
    for name, value in per_parameter.items():
        if name in skip or value <= 1e-4 * group_norms[group_of(name)]:
            continue
        assert norms[name] == pytest.approx(value, rel=PARAMETER_RTOL), name
        compared += 1
    assert compared > 0.9 * len(per_parameter)


def test_one_optimiser_step(trained, meta) -> None:
    _, _, grads, before, model, optimizer = trained
    step = meta["train_step"]
    assert len(optimizer.param_groups) == step["num_param_groups"] == 1
    settings = step["param_group_settings"]
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], list(group["betas"]), group["eps"]) == (
        settings["lr"],
        settings["weight_decay"],
        settings["betas"],
        settings["eps"],
    )
    by_reference = {reference_name(name): name for name in before}
    after = model.state_dict()
    for reference, tracked in step["tracked_parameters"].items():
        name = by_reference[reference]
        index = torch.tensor(tracked["flat_index"])
        assert before[name].flatten()[index].tolist() == tracked["before"]
        expected = torch.tensor(tracked["after"], dtype=torch.float64)
        actual = after[name].flatten()[index].double()
        assert torch.all((actual - expected).abs() <= STEP_ATOL + STEP_RTOL * expected.abs()), reference
    for name, value in model.named_parameters():
        changed = not torch.equal(value, before[name])
        assert changed == (grads[name] is not None), (
            f"{name}: changed {changed}, gradient {grads[name] is not None}"
        )
