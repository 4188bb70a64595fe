"""Training-criterion parity with the reference (`tiny-loss.safetensors` / `tiny-loss.json`).

The loss-only records feed the reference's stored per-stage predictions (float16 masks upcast to float32) and
the collated targets to the criterion; we feed the same tensors and expect the same 33 terms, total, Hungarian
assignments, cost matrices and gradients w.r.t. class logits and boxes (tolerances from the fixture README).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.config import DocSAMConfig
from model.loss import (
    CellCentreSampler,
    CriterionOutput,
    DocSAMCriterion,
    ImageTargets,
    JitteredGridSampler,
    PointCall,
    ReplayPointSampler,
)
from model.outputs import StageOutput

NUM_STAGES = 5
NUM_POINT_CALLS = 17
JITTER_SEED = 20250612  # the seed the fixture generator set before the jitter-on forward

LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
COST_ATOL = 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-7
# Cost matrices recorded in the *forward* records were computed from float32 mask logits; we only have their
# float16 copies, which moves min–max-normalised mask costs by up to ~6e-4 (stage 0 has no masks: exact).
FLOAT16_COST_ATOL = 2e-3

# record name → (targets of image 1, point source, prefix of the cost tensors computed from identical inputs)
RECORDS = {
    "loss_only_stored_predictions_jitter_off": ("batch", "centres", "loss_only_off"),
    "loss_only_stored_predictions_jitter_on": ("batch", "replay", "fwd_on"),
    "dummy_loss_only_stored_predictions_jitter_off": ("dummy", "centres", "dummy_fwd_off"),
}
# matcher cost component name → fixture tensor name
COMPONENTS = {
    "dice": "cost_sigmoid_dice",
    "focal": "cost_sigmoid_focal",
    "sml1": "cost_bbox",
    "diou": "cost_diou",
}


@dataclass
class LossFixture:
    tensors: dict[str, torch.Tensor]
    meta: dict
    config: DocSAMConfig  # the parity model's: its loss weights and matcher costs are the reference's

    def record(self, name: str) -> dict:
        return self.meta["records"][name]

    def stages(self) -> list[StageOutput]:
        """Stored predictions as the network's output type; class logits and boxes are gradient leaves."""
        stages = []
        for s in range(NUM_STAGES):
            prefix = f"pred.stage{s}"
            class_logits = self.tensors[f"{prefix}.class_logits"].clone().requires_grad_(True)
            boxes = self.tensors[f"{prefix}.bboxes_xyxy"].clone().requires_grad_(True)
            instance = self.tensors.get(f"{prefix}.instance_mask_logits")
            padding = self.tensors.get(f"{prefix}.padding_mask")
            kept = self.tensors.get(f"{prefix}.kept_index")
            n, q = boxes.shape[:2]
            stages.append(
                StageOutput(
                    # The criterion does not read the states; they are not part of the fixture.
                    instance_states=torch.zeros(n, q, 0),
                    semantic_states=torch.zeros(n, class_logits.shape[2], 0),
                    instance_mask_logits=None if instance is None else instance.float(),
                    semantic_mask_logits=self.tensors[f"{prefix}.semantic_mask_logits"].float(),
                    boxes=boxes,
                    class_logits=class_logits,
                    padding_mask=torch.zeros(n, q, dtype=torch.bool) if padding is None else padding.bool(),
                    kept_index=kept,
                )
            )
        return stages

    def targets(self, image1: str) -> list[ImageTargets]:
        instances = self.meta["batch"]["instances"]
        targets = []
        for n in range(2):
            prefix = "dummy.img1" if (n == 1 and image1 == "dummy") else f"batch.img{n}"
            targets.append(
                ImageTargets(
                    instance_masks=self.tensors[f"{prefix}.instance_masks"].bool(),
                    instance_boxes=self.tensors[f"{prefix}.instance_bboxes"],
                    instance_labels=self.tensors[f"{prefix}.instance_labels"],
                    semantic_masks=self.tensors[f"{prefix}.semantic_masks"].bool(),
                    class_names=instances[n]["class_names"],
                )
            )
        return targets

    def jitter_points(self) -> list[torch.Tensor]:
        return [self.tensors[f"jitter_on.points.{k:02d}"] for k in range(NUM_POINT_CALLS)]


class RecordingSampler:
    """Wraps a sampler and remembers the calls, to check the reference's draw order."""

    def __init__(self, inner: CellCentreSampler) -> None:
        self.inner = inner
        self.calls: list[PointCall] = []

    def __call__(self, height: int, width: int, call: PointCall, device: torch.device) -> torch.Tensor:
        self.calls.append(call)
        return self.inner(height, width, call, device)


@pytest.fixture(scope="module")
def loss_fixture(reference_fixtures: Path, tiny_config: DocSAMConfig) -> LossFixture:
    tensors = load_file(reference_fixtures / "tiny-loss.safetensors")
    meta = json.loads((reference_fixtures / "tiny-loss.json").read_text())
    return LossFixture(tensors, meta, tiny_config)


def run_record(fixture: LossFixture, name: str) -> tuple[CriterionOutput, list[StageOutput], list[PointCall]]:
    image1, points, _ = RECORDS[name]
    sampler = (
        ReplayPointSampler(fixture.jitter_points())
        if points == "replay"
        else RecordingSampler(CellCentreSampler())
    )
    stages = fixture.stages()
    output = DocSAMCriterion(fixture.config, sampler=sampler)(stages, fixture.targets(image1))
    return output, stages, sampler.calls


@pytest.fixture(scope="module", params=list(RECORDS))
def record_run(request: pytest.FixtureRequest, loss_fixture: LossFixture):
    output, stages, calls = run_record(loss_fixture, request.param)
    return request.param, output, stages, calls


def test_loss_terms_and_total(loss_fixture: LossFixture, record_run) -> None:
    name, output, _, _ = record_run
    record = loss_fixture.record(name)
    assert list(output.losses) == record["loss_key_order"]
    assert len(output.losses) == record["num_loss_terms"] == 33
    for kind, ours in (("loss_weighted", output.losses), ("loss_unweighted", output.unweighted)):
        for key, expected in record[kind].items():
            assert ours[key].item() == pytest.approx(expected, rel=LOSS_RTOL, abs=LOSS_ATOL), (kind, key)
    assert output.total.item() == pytest.approx(record["total_loss"], rel=LOSS_RTOL, abs=LOSS_ATOL)


def test_assignments(loss_fixture: LossFixture, record_run) -> None:
    name, output, _, _ = record_run
    matching = loss_fixture.record(name)["matching"]
    for s in range(NUM_STAGES):
        for n, expected in enumerate(matching[f"stage{s}"]):
            match = output.matches[s][n]
            assert match.query_idx.tolist() == expected["query"], (s, n)
            assert match.gt_idx.tolist() == expected["gt"], (s, n)
            assert tuple(match.cost.shape) == (expected["num_queries"], expected["num_gt"])


def test_point_call_order(loss_fixture: LossFixture, record_run) -> None:
    name, _, _, calls = record_run
    expected = [(c["stage"], c["caller"]) for c in loss_fixture.record(name)["point_calls"]]
    assert [(c.stage, c.caller) for c in calls] == expected
    assert [c.image for c in calls if c.caller == "matcher"] == [0, 1] * 4


def test_cost_matrices_and_components(loss_fixture: LossFixture) -> None:
    """Jitter-off loss-only record: the final matrices and all four normalised components, every stage."""
    output, _, _ = run_record(loss_fixture, "loss_only_stored_predictions_jitter_off")
    t = loss_fixture.tensors
    for s in range(NUM_STAGES):
        for n in range(2):
            match = output.matches[s][n]
            torch.testing.assert_close(
                match.cost, t[f"loss_only_off.cost.stage{s}.img{n}"], rtol=0, atol=COST_ATOL
            )
            for ours, theirs in COMPONENTS.items():
                key = f"loss_only_off.{theirs}.stage{s}.img{n}"
                if key in t:
                    torch.testing.assert_close(match.components[ours], t[key], rtol=0, atol=COST_ATOL)
                else:  # only the mask components are missing, and only where there are no instance masks
                    assert s == 0 and ours not in match.components


@pytest.mark.parametrize(
    "name", ["loss_only_stored_predictions_jitter_on", "dummy_loss_only_stored_predictions_jitter_off"]
)
def test_cost_matrices_of_forward_records(loss_fixture: LossFixture, name: str) -> None:
    """Matrices of the forward records: exact where our inputs are (stage 0: float32 logits and boxes)."""
    output, _, _ = run_record(loss_fixture, name)
    prefix = RECORDS[name][2]
    for s in range(NUM_STAGES):
        for n in range(2):
            atol = COST_ATOL if s == 0 else FLOAT16_COST_ATOL
            expected = loss_fixture.tensors[f"{prefix}.cost.stage{s}.img{n}"]
            torch.testing.assert_close(output.matches[s][n].cost, expected, rtol=0, atol=atol)


def test_dummy_image_shares_image0_costs(loss_fixture: LossFixture) -> None:
    """The dummy batch changes only image 1: image 0's matrices equal the loss-only record's."""
    output, _, _ = run_record(loss_fixture, "dummy_loss_only_stored_predictions_jitter_off")
    for s in range(NUM_STAGES):
        expected = loss_fixture.tensors[f"loss_only_off.cost.stage{s}.img0"]
        torch.testing.assert_close(output.matches[s][0].cost, expected, rtol=0, atol=COST_ATOL)
        dummy = output.matches[s][1]
        assert dummy.cost.shape[1] == 1 and dummy.gt_idx.tolist() == [0]


def test_gradients_wrt_predictions(loss_fixture: LossFixture) -> None:
    output, stages, _ = run_record(loss_fixture, "loss_only_stored_predictions_jitter_off")
    output.total.backward()
    t = loss_fixture.tensors
    for s, stage in enumerate(stages):
        for ours, theirs in ((stage.class_logits, "class_logits"), (stage.boxes, "bboxes_xyxy")):
            assert ours.grad is not None
            expected = t[f"loss_only_off.grad.stage{s}.{theirs}"]
            torch.testing.assert_close(ours.grad, expected, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_replay_consumes_every_stored_point_set(loss_fixture: LossFixture) -> None:
    sampler = ReplayPointSampler(loss_fixture.jitter_points())
    DocSAMCriterion(loss_fixture.config, sampler=sampler)(
        loss_fixture.stages(), loss_fixture.targets("batch")
    )
    assert len(sampler.calls) == NUM_POINT_CALLS
    with pytest.raises(IndexError):
        sampler(48, 52, PointCall(0, "semantic_mask_loss"), torch.device("cpu"))


def test_jittered_sampler_reproduces_reference_draws(loss_fixture: LossFixture) -> None:
    """Seeded like the reference's global RNG, the default sampler draws the stored points exactly."""
    sampler = JitteredGridSampler(torch.Generator().manual_seed(JITTER_SEED))
    for k, expected in enumerate(loss_fixture.jitter_points()):
        points = sampler(48, 52, PointCall(4, "matcher", 0), torch.device("cpu"))
        assert torch.equal(points, expected[0]), k


def test_cell_centre_sampler_grid() -> None:
    height, width = 3, 4
    points = CellCentreSampler()(height, width, PointCall(0, "semantic_mask_loss"), torch.device("cpu"))
    assert points.shape == (height * width, 2)
    # row-major (y outer), (x, y) order, cell centres
    assert points[1].tolist() == pytest.approx([1.5 / width, 0.5 / height])
    assert points[width].tolist() == pytest.approx([0.5 / width, 1.5 / height])
    assert points[-1].tolist() == pytest.approx([(width - 0.5) / width, (height - 0.5) / height])
