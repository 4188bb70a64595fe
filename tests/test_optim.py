"""Optimiser and LR schedules against the reference's recorded first training step (`tiny-loss.json`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model.optim import ReferenceLRSchedule, build_optimizer, reference_lr


@pytest.fixture(scope="module")
def train_step(reference_fixtures: Path) -> dict:
    return json.loads((reference_fixtures / "tiny-loss.json").read_text())["train_step"]


def test_first_adamw_step_matches_the_reference(train_step: dict) -> None:
    """AdamW is elementwise: a parameter made of the tracked elements steps like the full tensor."""
    settings = train_step["param_group_settings"]
    tracked = {name: p for name, p in train_step["tracked_parameters"].items() if p["grad"]}
    untracked = {name: p for name, p in train_step["tracked_parameters"].items() if not p["grad"]}
    parameters = {
        name: torch.nn.Parameter(torch.tensor(p["before"]))
        for name, p in train_step["tracked_parameters"].items()
    }
    for name, p in tracked.items():
        parameters[name].grad = torch.tensor(p["grad"])

    optimizer = build_optimizer(parameters.values(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    assert len(optimizer.param_groups) == train_step["num_param_groups"] == 1
    group = optimizer.param_groups[0]
    for key in ("lr", "eps", "weight_decay", "amsgrad", "maximize"):
        assert group[key] == settings[key], key
    assert list(group["betas"]) == settings["betas"]
    optimizer.step()

    for name, p in tracked.items():
        expected = torch.tensor(p["after"])
        torch.testing.assert_close(parameters[name].detach(), expected, rtol=1e-6, atol=1e-9, msg=name)
    assert untracked, "the fixture tracks parameters without gradient (text encoder, FPN)"
    for name, p in untracked.items():
        assert not p["changed"]
        assert parameters[name].detach().tolist() == p["before"], name


@pytest.mark.parametrize("schedule", ["cosine", "step", "fix"])
def test_lr_set_after_the_first_step(train_step: dict, schedule: str) -> None:
    recorded = train_step["lr_set_after_step_1_by_train_py"]
    key = next(k for k in recorded if k.split("(")[0] == schedule)
    base_lr = train_step["lr_used_for_this_step"]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([parameter], lr=base_lr, weight_decay=0.0)
    lr = ReferenceLRSchedule(optimizer, schedule, base_lr=base_lr, total_iters=360_000).step(1)
    assert lr == recorded[key]
    assert optimizer.param_groups[0]["lr"] == lr


def test_schedule_shapes() -> None:
    total, base = 100, 1.0
    # cosine: half-way at half the cycle, next cycle restarts at 0.2x
    assert reference_lr("cosine", 50, total, base) == pytest.approx(0.5)
    assert reference_lr("cosine", 100, total, base) == pytest.approx(0.2)
    assert reference_lr("cosine", 150, total, base) == pytest.approx(0.1)
    # step: x0.1 at total/2, 3*total/4 and total
    assert [reference_lr("step", it, total, base) for it in (49, 50, 75, 100)] == pytest.approx(
        [1, 0.1, 0.01, 0.001]
    )
    # fix: constant until total, then x0.1
    assert [reference_lr("fix", it, total, base) for it in (1, 99, 100, 101)] == pytest.approx(
        [1, 1, 0.1, 0.1]
    )
    # warm-up: linear from 0, then the schedule starts
    assert reference_lr("cosine", 5, total, base, warmup_iters=10) == pytest.approx(0.5)
    assert reference_lr("cosine", 10, total, base, warmup_iters=10) == pytest.approx(1.0)
    assert reference_lr("cosine", 60, total, base, warmup_iters=10) == pytest.approx(
        0.5 + 0.5 * math.cos(math.pi / 2)
    )
    with pytest.raises(ValueError):
        reference_lr("poly", 1, total, base)  # type: ignore[arg-type]
