"""Post-processing reads device values on the host only at its few planned points.

On CUDA every such read is a synchronisation; here (CPU) a torch function mode sees the calls that would
be one: `.cpu()`, `.item()`, `.tolist()`, `bool(tensor)`, `nonzero`, boolean-mask indexing, ... The
pipeline's budget per page: two transfers in post-processing (candidate counts; survivors and walk state;
a third when a label has more candidates than the NMS's leaders and some are left over for its second part),
one in the merge (instances per patch and walk state), and in the mapping one `nonzero` plus two transfers
(RLE change positions; boxes, scores and labels).
"""

from __future__ import annotations

from collections import Counter

import torch
from reference_loops import LAYOUT, random_outputs
from torch.overrides import TorchFunctionMode

from model.inference import merge_patches, postprocess_patches, to_page_instances

_READS = {
    "cpu",
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
    "equal",
    "allclose",
}


class HostReads(TorchFunctionMode):
    """Counts the calls that synchronise on CUDA, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        if name in _READS or _boolean_index(name, args) or _sized_by_data(name, args, kwargs):
            self.counts[name] += 1
        return func(*args, **kwargs)


def _boolean_index(name: str, args: tuple) -> bool:
    if name not in ("__getitem__", "__setitem__"):
        return False
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in index)


def _sized_by_data(name: str, args: tuple, kwargs: dict) -> bool:
    """`torch.where(condition)` and `repeat_interleave` with tensor repeats and no `output_size`."""
    if name == "where":
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, torch.Tensor) and "output_size" not in kwargs
    return False


def test_a_page_reads_the_device_six_times():
    outputs = random_outputs(3, queries=16)
    counts = {}
    with torch.inference_mode():
        with HostReads() as reads:
            detections = postprocess_patches(outputs, LAYOUT)
        counts["post-processing"] = dict(reads.counts)
        with HostReads() as reads:
            result = merge_patches(detections, LAYOUT)
        counts["merge"] = dict(reads.counts)
        with HostReads() as reads:
            instances = to_page_instances(result, LAYOUT.resized, LAYOUT.original, ["a", "b", "c"])
        counts["mapping"] = dict(reads.counts)
    assert len(instances) > 0
    assert counts == {
        "post-processing": {"cpu": 2},
        "merge": {"cpu": 1},
        "mapping": {"nonzero": 1, "cpu": 2},
    }


def test_the_counter_sees_what_it_should():
    values = torch.arange(5)
    with HostReads() as reads:
        values.sum().item()
        values[values > 2]
        torch.where(values > 1)
        values.repeat_interleave(values)
        values.repeat_interleave(2)
        bool(values.any())
    assert reads.counts == {"item": 1, "__getitem__": 1, "where": 1, "repeat_interleave": 1, "__bool__": 1}
