"""Where a page's device time goes: per stage, the host's seconds beside the kernels' seconds, and the
operators that take them.

`--breakdown` times stages on the GPU's timeline, which cannot tell a stage whose kernels are slow from one
whose kernels wait for the host to launch them. This pass runs one page (after a warm-up page) under
`torch.profiler` with every stage of `stages.run_page` marked (`record_function`), and reports for each
stage the host's wall time and the summed duration of the kernels it launched: kernels far shorter than the
host's time mean the GPU waited for the host (launches, Python, synchronisations), kernels as long mean the
kernels themselves are the cost, and the operator table then says which. On a CPU there are no kernels;
the tables rank operators by their own CPU time instead.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.stages import NETWORK_REST, STAGES, page_writer, part_hooks, run_page

MARK = "stage: "  # prefix of the profiler ranges marking the stages


class _Marks:
    """A `stages.Recorder` that opens a profiler range per stage and network part."""

    def __init__(self) -> None:
        self.open: list[contextlib.AbstractContextManager] = []

    def enter(self, name: str) -> None:
        mark = record_function(MARK + name)
        mark.__enter__()
        self.open.append(mark)

    def leave(self, name: str) -> None:
        self.open.pop().__exit__(None, None, None)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        with record_function(MARK + name):
            yield

    @contextlib.contextmanager
    def network(self, model: nn.Module) -> Iterator[None]:
        with record_function(MARK + NETWORK_REST), part_hooks(model, self.enter, self.leave):
            yield


@dataclass
class KernelReport:
    on_device: bool  # kernels measured (CUDA); else operators ranked by their own CPU time
    host_seconds: dict[str, float]  # per stage, the host's wall time inside it (parts excluded)
    kernel_seconds: dict[str, float]  # per stage, the kernels its operators launched
    operators: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)  # stage → op → n, s

    def table(self, top: int = 12) -> str:
        cost = "kernel s" if self.on_device else "self CPU s"
        lines = [f"{'stage':<20}{'host s':>10}{'kernel s':>10}{'kernels/host':>14}"]
        for name in STAGES:
            host, kernels = self.host_seconds.get(name, 0.0), self.kernel_seconds.get(name, 0.0)
            share = f"{kernels / host:13.0%}" if host > 1e-6 and self.on_device else f"{'-':>13}"
            lines.append(f"{name:<20}{host:10.3f}{kernels:10.3f} {share}")
        lines.append(
            f"{'total':<20}{sum(self.host_seconds.values()):10.3f}{sum(self.kernel_seconds.values()):10.3f}"
        )
        for name in STAGES:
            ranked = sorted(self.operators.get(name, {}).items(), key=lambda item: -item[1][1])[:top]
            if not ranked:
                continue
            lines.append(f"\n{name}: operators by {cost}")
            lines.append(f"  {'operator':<56}{'calls':>8}{cost:>12}")
            lines += [f"  {op[:56]:<56}{calls:8d}{seconds:12.4f}" for op, (calls, seconds) in ranked]
        return "\n".join(lines)


def profile_page(
    model: nn.Module,
    pages: Sequence[np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    *,
    out_dir: Path,
    batch_size: int = 16,
) -> KernelReport:
    """Profile `pages[-1]` after running `pages[0]` once unprofiled (kernel selection, allocator, the text
    encoder's cache); every output format is written, as `--breakdown` does."""
    writer = page_writer(out_dir)
    run_page(
        model, pages[0], device, dtype, _Marks(), writer=writer, page_id="warm-up", batch_size=batch_size
    )
    on_device = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_device else [])]
    with profile(activities=activities) as profiler:
        run_page(
            model,
            pages[-1],
            device,
            dtype,
            _Marks(),
            writer=writer,
            page_id="profiled",
            batch_size=batch_size,
        )
        if on_device:
            torch.cuda.synchronize(device)
    return _report(profiler.events(), on_device)


def _report(events, on_device: bool) -> KernelReport:
    """Sum each operator's own cost into the innermost stage around it (NETWORK_REST for the network
    outside its parts), and each stage's wall time less that of the stages inside it."""
    host: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    operators: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        stage = _stage_of(event.cpu_parent)
        if event.name.startswith(MARK):
            name = event.name.removeprefix(MARK)
            host[name] += event.time_range.elapsed_us() / 1e6
            if stage is not None:
                host[stage] -= event.time_range.elapsed_us() / 1e6
            continue
        if stage is None:
            continue
        cost = event.self_device_time_total if on_device else event.self_cpu_time_total
        kernels[stage] += event.self_device_time_total / 1e6
        entry = operators[stage][event.name]
        entry[0] += 1
        entry[1] += cost / 1e6
    return KernelReport(
        on_device=on_device,
        host_seconds=dict(host),
        kernel_seconds=dict(kernels),
        operators={stage: {op: (n, s) for op, (n, s) in ops.items()} for stage, ops in operators.items()},
    )


def _stage_of(event) -> str | None:
    """The innermost stage range around a profiler event, None outside every stage."""
    while event is not None:
        if event.name.startswith(MARK):
            return event.name.removeprefix(MARK)
        event = event.cpu_parent
    return None
