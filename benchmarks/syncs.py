"""Device → host synchronisations per page, by pipeline stage.

On CUDA, `torch.cuda.set_sync_debug_mode("warn")` makes every synchronising call (`.item()`, `.cpu()`,
`nonzero`, a blocking host → device copy, ...) warn; the warnings of a page are caught and counted by stage
and by the line of Python that caused them. On the CPU nothing synchronises; the torch profiler counts
instead the operators that would synchronise on CUDA (SYNCING_OPERATORS). The profiler cannot see
`.cpu()`, `.numpy()`, `.tolist()` or host → device copies, which synchronise on CUDA too; a torch function
mode counts the `.cpu()` and `.tolist()` calls beside it (host → device copies stay unseen on the CPU).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.stages import run_page

SYNCING_OPERATORS = (
    "aten::_local_scalar_dense",  # .item(), bool(tensor), int(tensor)
    "aten::nonzero",  # also boolean-mask indexing, torch.where(condition)
    "aten::masked_select",
    "aten::unique",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::bincount",
    "aten::equal",
)
# `repeat_interleave` is not listed: with tensor repeats and no `output_size` it reads its total and whether a
# repeat is negative (two `_local_scalar_dense` calls inside it, on CUDA as on the CPU: one code for both),
# with `output_size` or a number of repeats it reads nothing.
HOST_READS = ("cpu", "tolist")  # tensor methods that copy to the host without an aten operator
_STAGE_PREFIX = "docsam.stage."


@dataclass
class SyncCount:
    method: str
    by_stage: Counter = field(default_factory=Counter)
    by_site: Counter = field(default_factory=Counter)  # "file:line" (CUDA), operator (CPU: profiled_syncs)

    def report(self, pages: int) -> str:
        lines = [f"synchronisations per page ({self.method}): {sum(self.by_stage.values()) / pages:.1f}"]
        lines += [f"  {stage:<20}{count / pages:8.1f}" for stage, count in self.by_stage.items()]
        lines.append("  where:")
        lines += [f"    {count / pages:8.1f}  {site}" for site, count in self.by_site.most_common(15)]
        return "\n".join(lines)


class _CudaWarnings:
    """Counts sync-debug warnings per stage (they are raised synchronously, at the causing call)."""

    def __init__(self, caught: list[warnings.WarningMessage], count: SyncCount) -> None:
        self.caught, self.count = caught, count

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = len(self.caught)
        yield
        for warning in self.caught[start:]:
            if "synchroniz" in str(warning.message):
                self.count.by_stage[name] += 1
                self.count.by_site[f"{warning.filename}:{warning.lineno}"] += 1

    def network(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return self.stage("network")


class _HostReads(TorchFunctionMode):
    """Counts HOST_READS calls by stage and by the calling line outside torch."""

    def __init__(self, count: SyncCount) -> None:
        super().__init__()
        self.count = count
        self.current = "outside the stages"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_READS:
            self.count.by_stage[self.current] += 1
            self.count.by_site[f".{func.__name__}() at {_caller()}"] += 1
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


class _ProfilerRanges:
    """Marks stages as profiler ranges (to attribute the profiled operators afterwards) and tells the host
    read counter, if any, which stage runs."""

    def __init__(self, reads: _HostReads | None = None) -> None:
        self.reads = reads

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.reads is None:
            with record_function(_STAGE_PREFIX + name):
                yield
            return
        outer, self.reads.current = self.reads.current, name
        try:
            with record_function(_STAGE_PREFIX + name):
                yield
        finally:
            self.reads.current = outer

    def network(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return self.stage("network")


def count_syncs(
    model: nn.Module, pages: list[np.ndarray], device: torch.device, dtype: torch.dtype
) -> SyncCount:
    """Synchronisations while segmenting `pages` (after one untimed warm-up page), summed over the pages."""
    run_page(model, pages[0], device, dtype, _ProfilerRanges())
    if device.type == "cuda":
        count = SyncCount("CUDA sync debug mode")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for page in pages:
                    run_page(model, page, device, dtype, _CudaWarnings(caught, count))
                torch.cuda.synchronize(device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return count
    count = SyncCount(
        "operators that synchronise on CUDA: "
        + ", ".join(SYNCING_OPERATORS)
        + "; plus the host reads "
        + ", ".join(f".{name}()" for name in HOST_READS)
    )
    reads = _HostReads(count)
    with profile(activities=[ProfilerActivity.CPU]) as profiler, reads:
        for page in pages:
            run_page(model, page, device, dtype, _ProfilerRanges(reads))
    for stage, site in profiled_syncs(profiler.events()):
        count.by_stage[stage] += 1
        count.by_site[site] += 1
    return count


def profiled_syncs(events) -> Iterator[tuple[str, str]]:
    """(stage, site) of every profiled operator call that would synchronise on CUDA: its name, and the
    operator it runs inside if any (`aten::nonzero in aten::index` for boolean-mask indexing)."""
    for event in events:
        if event.name in SYNCING_OPERATORS and not _inside_syncing_operator(event):
            outermost = _outermost_operator(event)
            site = event.name if outermost is event else f"{event.name} in {outermost.name}"
            yield _stage_of(event), site


def _inside_syncing_operator(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in SYNCING_OPERATORS:
            return True
        parent = parent.cpu_parent
    return False


def _outermost_operator(event):
    """The outermost operator call `event` runs inside (`event` itself if none); stage ranges are no
    operators."""
    while event.cpu_parent is not None and "::" in event.cpu_parent.name:
        event = event.cpu_parent
    return event


def _stage_of(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(_STAGE_PREFIX):
            return parent.name.removeprefix(_STAGE_PREFIX)
        parent = parent.cpu_parent
    return "outside the stages"
