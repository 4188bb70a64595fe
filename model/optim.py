"""Optimiser and learning-rate schedules of the reference training (its `train.py`).

AdamW over all parameters in one group (PyTorch defaults β = (0.9, 0.999), ε = 1e-8; no backbone multiplier,
no weight-decay exclusions, no clipping). Parameters that never receive a gradient are skipped by AdamW and
keep their values. The learning rate is set *after* each optimiser step for the next one, so the first step
runs at the base rate; with a warm-up (docsam's own) the trainer sets `reference_lr(..., 0, ...)` before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

Schedule = Literal["cosine", "step", "fix"]
SCHEDULES: tuple[Schedule, ...] = ("cosine", "step", "fix")


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with a single parameter group, as train.py builds it."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def reference_lr(
    schedule: Schedule, iteration: int, total_iters: int, base_lr: float, warmup_iters: int = 0
) -> float:
    """Learning rate train.py sets after the optimiser step of 1-based `iteration` (warm-up 0 in all scripts).

    * `cosine`: restarts every `total_iters` with the peak shrunk 0.2× per completed cycle.
    * `step`: ×0.1 at each of total/2, 3·total/4 and total (integer division).
    * `fix`: the base rate until `total_iters`, then ×0.1.

    The warm-up is docsam's own (the reference has none; without one nothing here changes). It is part of
    the `total_iters`: the rates for steps 1…W (iterations 0…W−1) rise linearly from `base_lr / W` to
    `base_lr`, then the schedule runs over the remaining `total_iters − W` steps as it would over a whole
    run of that length, so it still ends at the rate a run without warm-up ends at.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if not warmup_iters:
        return _schedule_lr(schedule, iteration, total_iters, base_lr)
    _check_warmup(warmup_iters, total_iters)
    if iteration < warmup_iters:
        return (iteration + 1) / warmup_iters * base_lr
    return _schedule_lr(schedule, iteration - warmup_iters, total_iters - warmup_iters, base_lr)


def _schedule_lr(schedule: Schedule, iteration: int, total_iters: int, base_lr: float) -> float:
    """The reference's rate after step `iteration` of a schedule over `total_iters` steps."""
    if schedule == "cosine":
        lr = base_lr * pow(0.2, iteration // total_iters)
        return lr * (0.5 + 0.5 * math.cos(iteration % total_iters / total_iters * math.pi))
    milestones = (
        (0, total_iters // 2, 3 * total_iters // 4, total_iters) if schedule == "step" else (0, total_iters)
    )
    passed = sum(iteration >= milestone for milestone in milestones)
    return base_lr * pow(0.1, passed - 1)


def _check_warmup(warmup_iters: int, total_iters: int) -> None:
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(
            f"a warm-up of {warmup_iters} iterations does not fit in a run of {total_iters}: "
            "it must be shorter than the run"
        )


class ReferenceLRSchedule:
    """Applies `reference_lr` to every parameter group; call `step(iteration)` after `optimizer.step()`."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        base_lr: float,
        total_iters: int,
        warmup_iters: int = 0,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
        if warmup_iters:
            _check_warmup(warmup_iters, total_iters)
        self.optimizer = optimizer
        self.schedule: Schedule = schedule
        self.base_lr = base_lr
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters

    def step(self, iteration: int) -> float:
        """Set the rate for the step after 1-based `iteration` and return it."""
        lr = reference_lr(self.schedule, iteration, self.total_iters, self.base_lr, self.warmup_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr
