"""Post-processing on CUDA: the same results as on the CPU, exact mask counts from tensor-core products, and
only the planned synchronisations. Run with `pytest -m gpu` on a machine with a GPU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from reference_loops import LAYOUT, random_outputs

from model.inference import merge_patches, postprocess_patches, to_page_instances
from model.inference.forward import PatchOutputs
from model.inference.nms import packed_intersections, pairwise_intersections
from model.inference.packed import PackedMasks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CLASSES = ["a", "b", "c"]


def _on(outputs: PatchOutputs, device: str) -> PatchOutputs:
    return PatchOutputs(*(getattr(outputs, name).to(device) for name in PatchOutputs.__dataclass_fields__))


def _page(outputs: PatchOutputs):
    with torch.inference_mode():
        result = merge_patches(postprocess_patches(outputs, LAYOUT), LAYOUT)
        return to_page_instances(result, LAYOUT.resized, LAYOUT.original, CLASSES)


def test_intersections_on_cuda_are_exact_for_large_counts():
    """Counts beyond bfloat16's and float16's integer range, and across several product chunks."""
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(20, 3_000_001, generator=generator) < 0.6
    second = torch.rand(9, 3_000_001, generator=generator) < 0.3
    first[0] = True  # 3,000,001 pixels: odd, above 2**21
    expected = first.double() @ second.double().T
    found = pairwise_intersections(first.cuda(), second.cuda())
    assert torch.equal(found.cpu(), expected)
    assert torch.equal(
        pairwise_intersections(first.cuda(), first.cuda()).diagonal().cpu(), first.sum(1).double()
    )


def test_masks_packed_on_cuda_are_the_cpu_s_bytes():
    """The packing's wrapping int64 products give the same bytes on CUDA, and unpack back to the masks."""
    masks = torch.rand(30, 37, 29, generator=torch.Generator().manual_seed(1)) < 0.5
    on_cpu, on_cuda = PackedMasks.of(masks), PackedMasks.of(masks.cuda())
    assert torch.equal(on_cuda.bits.cpu(), on_cpu.bits)
    assert torch.equal(on_cuda.unpack(slice(0, 30)).cpu(), masks)
    everything = slice(0, 30)
    assert torch.equal(
        packed_intersections(on_cuda, everything, everything).cpu(),
        pairwise_intersections(masks.flatten(1), masks.flatten(1)),
    )


@pytest.mark.parametrize("seed", range(3))
def test_a_page_on_cuda_equals_the_page_on_the_cpu(seed):
    outputs = random_outputs(seed, queries=24)
    on_cpu, on_cuda = _page(outputs), _page(_on(outputs, "cuda"))
    assert [rle["counts"] for rle in on_cuda.masks] == [rle["counts"] for rle in on_cpu.masks]
    assert [rle["counts"] for rle in on_cuda.semantic_masks] == [
        rle["counts"] for rle in on_cpu.semantic_masks
    ]
    np.testing.assert_array_equal(on_cuda.labels, on_cpu.labels)
    np.testing.assert_allclose(on_cuda.scores, on_cpu.scores, rtol=1e-5)
    np.testing.assert_allclose(on_cuda.boxes, on_cpu.boxes, rtol=1e-5, atol=1e-4)


def test_a_page_synchronises_six_times_on_cuda():
    outputs = _on(random_outputs(1, queries=24), "cuda")
    _page(outputs)  # warm-up: pinned buffers, kernels
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _page(outputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [warning for warning in caught if "synchroniz" in str(warning.message)]
    assert len(syncs) == 6, "\n".join(f"{warning.filename}:{warning.lineno}" for warning in syncs)
