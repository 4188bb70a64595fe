"""`--count-syncs` on the CPU counts the operator calls that would synchronise on CUDA, and only those."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.syncs import profiled_syncs

VALUES, REPEATS, MASK = torch.arange(5.0), torch.tensor([1, 0, 2, 3, 1]), torch.arange(5) > 2


def _sites(call) -> Counter:
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        call()
    return Counter(site for _, site in profiled_syncs(trace.events()))


@pytest.mark.parametrize(
    ("call", "sites"),
    [
        (lambda: VALUES.repeat_interleave(2), {}),
        (lambda: VALUES.repeat_interleave(REPEATS, output_size=7), {}),
        (lambda: torch.repeat_interleave(REPEATS, output_size=7), {}),
        # its total, and whether a repeat is negative: two reads, on CUDA as here
        (
            lambda: VALUES.repeat_interleave(REPEATS),
            {"aten::_local_scalar_dense in aten::repeat_interleave": 2},
        ),
        (lambda: VALUES[MASK], {"aten::nonzero in aten::index": 1}),
        (lambda: torch.where(MASK), {"aten::nonzero in aten::where": 1}),
        (lambda: VALUES.masked_select(MASK), {"aten::masked_select": 1}),
        (lambda: torch.unique(REPEATS), {"aten::_unique2": 1}),
        (lambda: VALUES.sum().item(), {"aten::_local_scalar_dense in aten::item": 1}),
        (lambda: VALUES.where(MASK, 0.0), {}),
    ],
    ids=[
        "repeat-number",
        "repeat-tensor-output-size",
        "repeat-only-output-size",
        "repeat-tensor",
        "boolean-index",
        "where-condition",
        "masked-select",
        "unique",
        "item",
        "where-three",
    ],
)
def test_operators_count_as_they_synchronise_on_cuda(call, sites) -> None:
    assert _sites(call) == sites
