"""Where the time of a page goes: seconds per stage beside the floating-point operations it does.

Two passes over the same page(s). The counting pass runs first, under
`torch.utils.flop_counter.FlopCounterMode`, which counts matrix products, convolutions and attention but
not element-wise work: stages made of interpolation, comparisons and copies show few FLOPs, and their
GFLOP/s says little. The same pass counts the ATen operators each stage calls: on a GPU each costs the host
microseconds of Python and dispatch (most also launch a kernel), which bound a page's time when kernels are
short. It also warms up (kernel selection, allocator) and fills the text encoder's embedding cache, so the
timed pass sees a steady state, in which the text encoder costs nothing: its FLOPs are those of the first
page. The timed pass measures every stage of `stages.run_page`, on CUDA with events
so that nothing synchronises inside the forward pass.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, mm_flop, sdpa_flop_count

from benchmarks.stages import NETWORK_PARTS, NETWORK_REST, STAGES, page_writer, part_hooks, run_page


class _Seconds:
    """Intervals per stage: CUDA events on a GPU (read once at the end), the host clock elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.intervals: dict[str, list[list]] = defaultdict(list)

    def _now(self) -> torch.cuda.Event | float:
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def enter(self, name: str) -> None:
        self.intervals[name].append([self._now(), None])

    def leave(self, name: str) -> None:
        self.intervals[name][-1][1] = self._now()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.enter(name)
        yield
        self.leave(name)

    @contextlib.contextmanager
    def network(self, model: nn.Module) -> Iterator[None]:
        with self.stage("network"), part_hooks(model, self.enter, self.leave):
            yield

    def totals(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            span = lambda start, end: start.elapsed_time(end) / 1000  # noqa: E731
        else:
            span = lambda start, end: end - start  # noqa: E731
        return {name: sum(span(*pair) for pair in pairs) for name, pairs in self.intervals.items()}


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _int_product_flops(first, second, *args, out_shape=None, **kwargs) -> int:
    return mm_flop(first, second)


# FlopCounterMode knows the CUDA kernels of scaled_dot_product_attention but not the CPU one, which would
# leave the decoder's attention (a quarter of its FLOPs) out of the count on the CPU; nor `torch._int_mm`, the
# int8 product of the mask NMS on the CPU (a bfloat16 `mm` on CUDA, which it counts), which would leave
# post-processing's products out of the CPU's count.
_UNCOUNTED = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._int_mm: _int_product_flops,
}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts attention and the mask NMS's int8 products on the CPU."""
    return FlopCounterMode(display=False, custom_mapping=_UNCOUNTED)


class _Operators(TorchDispatchMode):
    """ATen operator calls per stage, each counted for the innermost stage running (NETWORK_REST for the
    network outside its parts)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = defaultdict(int)
        self.running: list[str] = []

    def enter(self, name: str) -> None:
        self.running.append(NETWORK_REST if name == "network" else name)

    def leave(self, name: str) -> None:
        self.running.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.running:
            self.counts[self.running[-1]] += 1
        return func(*args, **(kwargs or {}))


class _Flops:
    """FLOPs and ATen operators per stage; the network's parts' FLOPs read from FlopCounterMode's
    per-module counts."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.operators = _Operators()

    @contextlib.contextmanager
    def _counting(self, name: str) -> Iterator[FlopCounterMode]:
        self.operators.enter(name)
        try:
            # operators inside: FlopCounterMode decomposes some operators, which must not count again
            with flop_counter() as counter, self.operators:
                yield counter
        finally:
            self.operators.leave(name)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        with self._counting(name) as counter:
            yield
        self.counts[name] += counter.get_total_flops()

    @contextlib.contextmanager
    def network(self, model: nn.Module) -> Iterator[None]:
        with (
            self._counting("network") as counter,
            part_hooks(model, self.operators.enter, self.operators.leave),
        ):
            yield
        by_module = counter.get_flop_counts()
        root = type(model).__name__
        for stage, attributes in NETWORK_PARTS.items():
            for attribute in attributes:
                self.counts[stage] += sum(by_module.get(f"{root}.{attribute}", {}).values())
        self.counts["network"] += counter.get_total_flops()


@contextlib.contextmanager
def gpu_code_paths() -> Iterator[None]:
    """The model's code as a GPU runs it (`model.devices.launch_bound` true) on whatever device: counts a
    GPU's operators on a CPU, whose seconds then mean nothing."""
    from model import devices

    original = devices.launch_bound
    devices.launch_bound = lambda device: True
    try:
        yield
    finally:
        devices.launch_bound = original


@dataclass
class Breakdown:
    seconds: dict[str, float]  # per page, every name of STAGES
    flops: dict[str, float]  # per page
    operators: dict[str, float]  # ATen operator calls per page

    def after_backbone_ratio(self) -> float:
        """(everything after the backbone) / backbone, in seconds."""
        later = STAGES[STAGES.index("backbone") + 1 :]
        return sum(self.seconds[name] for name in later) / max(self.seconds["backbone"], 1e-12)

    def table(self) -> str:
        total_seconds = sum(self.seconds.values())
        lines = [f"{'stage':<20}{'s/page':>10}{'share':>8}{'GFLOP':>12}{'GFLOP/s':>10}{'ATen ops':>10}"]
        for name in STAGES:
            seconds, gflop = self.seconds[name], self.flops[name] / 1e9
            measured = seconds > 1e-4 and gflop > 1e-3
            rate = f"{gflop / seconds:10.1f}" if measured and name != "text encoder" else f"{'-':>10}"
            share = 100 * seconds / max(total_seconds, 1e-12)
            operators = f"{self.operators[name]:10.0f}"
            lines.append(f"{name:<20}{seconds:10.3f}{share:7.1f}%{gflop:12.2f}{rate}{operators}")
        total_gflop = sum(self.flops.values()) / 1e9
        total_operators = sum(self.operators.values())
        lines.append(
            f"{'total':<20}{total_seconds:10.3f}{100:7.1f}%{total_gflop:12.2f}{'':>10}{total_operators:10.0f}"
        )
        lines.append(f"(everything after the backbone) / backbone = {self.after_backbone_ratio():.2f}")
        return "\n".join(lines)


def measure(
    model: nn.Module,
    pages: Sequence[np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    *,
    out_dir: Path,
    batch_size: int = 16,
) -> Breakdown:
    """Stage seconds, FLOPs and operators per page, averaged over `pages` (the counting pass first, see
    above)."""
    writer = page_writer(out_dir)
    flops, seconds = _Flops(), _Seconds(device)
    for recorder in (flops, seconds):
        for index, page in enumerate(pages):
            page_id = f"{type(recorder).__name__.strip('_')}{index}"
            run_page(
                model, page, device, dtype, recorder, writer=writer, page_id=page_id, batch_size=batch_size
            )
    return Breakdown(
        seconds=_per_stage(seconds.totals(), len(pages)),
        flops=_per_stage(dict(flops.counts), len(pages)),
        operators={name: flops.operators.counts.get(name, 0) / len(pages) for name in STAGES},
    )


def _per_stage(values: dict[str, float], pages: int) -> dict[str, float]:
    """Every stage of STAGES per page, NETWORK_REST being the network minus its parts."""
    parts = sum(values.get(name, 0) for name in NETWORK_PARTS)
    values = {**values, NETWORK_REST: max(values.get("network", 0) - parts, 0)}
    return {name: values.get(name, 0) / pages for name in STAGES}
