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
    with pytest.raises(ValueError):
        reference_lr("poly", 1, total, base)  # type: ignore[arg-type]


def rates(schedule: str, total: int, warmup: int = 0) -> list[float]:
    """The rate of each step 1..total of a run: step 1 runs at iteration 0's (the trainer sets it first
    when warming up; without a warm-up it is the base rate), step k at the rate set after step k-1."""
    return [reference_lr(schedule, iteration, total, 1.0, warmup) for iteration in range(total)]  # type: ignore[arg-type]


def test_warmup_rises_linearly_from_a_nonzero_rate_to_the_base_rate() -> None:
    assert rates("cosine", 10, warmup=5)[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rates("fix", 5, warmup=4) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert rates("step", 10, warmup=1)[0] == 1.0


@pytest.mark.parametrize("schedule", ["cosine", "step", "fix"])
@pytest.mark.parametrize(("total", "warmup"), [(10, 5), (100, 10), (360, 359)])
def test_after_the_warmup_the_whole_schedule_runs_in_the_remaining_iterations(
    schedule: str, total: int, warmup: int
) -> None:
    """The warm-up is part of --iters: what follows it is the schedule of a run of `total - warmup` steps,
    drops included, and the rate set after the last step is the one a run without warm-up ends with."""
    with_warmup = rates(schedule, total, warmup)
    assert with_warmup[warmup:] == pytest.approx(rates(schedule, total - warmup))
    assert reference_lr(schedule, total, total, 1.0, warmup) == pytest.approx(  # type: ignore[arg-type]
        reference_lr(schedule, total, total, 1.0)  # type: ignore[arg-type]
    )


def test_the_step_schedule_reaches_its_drops_with_a_warmup() -> None:
    assert rates("step", 10, warmup=2) == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert rates("cosine", 10, warmup=5)[-1] == pytest.approx(0.5 + 0.5 * math.cos(math.pi * 4 / 5))


@pytest.mark.parametrize("schedule", ["cosine", "step", "fix"])
def test_without_warmup_the_reference_schedule_is_unchanged(schedule: str) -> None:
    """Bit for bit the reference's expressions (ARCHITECTURE.md §9.2), in its order of operations."""
    total = 40
    expected = {
        "cosine": lambda it: 0.2 ** (it // total) * (0.5 + 0.5 * math.cos(it % total / total * math.pi)),
        "step": lambda it: 0.1 ** (sum(it >= m for m in (0, total // 2, 3 * total // 4, total)) - 1),
        "fix": lambda it: 1.0 if it < total else 0.1,
    }[schedule]
    for iteration in range(0, 3 * total):
        assert reference_lr(schedule, iteration, total, 1.0, 0) == expected(iteration)  # type: ignore[arg-type]


@pytest.mark.parametrize("warmup", [10, 11, -1])
def test_a_warmup_that_does_not_fit_in_the_run_is_refused(warmup: int) -> None:
    with pytest.raises(ValueError, match="warm-up"):
        reference_lr("cosine", 1, 10, 1.0, warmup)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="warm-up"):
        ReferenceLRSchedule(optimizer, "cosine", 1.0, 10, warmup)
