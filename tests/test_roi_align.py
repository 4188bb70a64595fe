"""RoIAlign from token tables against torchvision's `roi_align` (aligned=False, adaptive sampling)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

import model.roi_align as roi_module
from model.roi_align import TokenMap, roi_align_tokens


def channels_last(pooled: torch.Tensor) -> torch.Tensor:
    """torchvision's (R, C, 7, 7) → (R, 49, C)."""
    return pooled.flatten(2).transpose(1, 2)


def token_map(feature: torch.Tensor, scale: float) -> TokenMap:
    return TokenMap(feature.flatten(2).transpose(1, 2).contiguous(), tuple(feature.shape[-2:]), scale)


def random_rois(generator: torch.Generator, count: int, images: int, extent: float) -> torch.Tensor:
    """Boxes of every kind: inside, across and outside the image, thinner than a pixel, inverted."""
    corners = torch.rand(count, 2, generator=generator) * 1.4 * extent - 0.2 * extent
    sides = (
        torch.rand(count, 2, generator=generator) ** 3
        * extent
        * torch.randn(count, 1, generator=generator).sign()
    )
    image = torch.randint(images, (count, 1), generator=generator).float()
    return torch.cat([image, corners, corners + sides], 1)


@pytest.mark.parametrize("size", [(20, 20), (40, 40), (56, 48), (7, 6), (1, 3)])
@pytest.mark.parametrize("scale", [1 / 32, 1 / 8, 0.25])
def test_pooled_bins_equal_torchvision(size, scale):
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 16, *size, generator=generator)
    rois = random_rois(generator, 300, 2, max(size) / scale)
    rois[:3, 1:] = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [1e4, 1e4, 2e4, 2e4]])
    expected = roi_align(feature, rois, 7, spatial_scale=scale, sampling_ratio=-1, aligned=False)
    (pooled,) = roi_align_tokens([token_map(feature, scale)], rois, 7)
    torch.testing.assert_close(pooled, channels_last(expected), atol=1e-5, rtol=1e-5)


def test_a_bin_reads_each_pixel_its_samples_touch_once(monkeypatch):
    """A box of 70×35 map pixels has 10×5 samples per bin, one map pixel apart: torchvision reads 4 pixels
    per sample (200 per bin); the table route reads the 11×6 (or fewer) pixels they touch, once each."""
    generator = torch.Generator().manual_seed(4)
    feature = torch.randn(1, 8, 80, 80, generator=generator)
    rois = torch.tensor([[0.0, 12.3, 20.7, 292.3, 160.7], [0.0, -30.0, 250.0, 250.0, 390.0]])
    read = []
    embedding_bag = roi_module.F.embedding_bag
    monkeypatch.setattr(
        roi_module.F,
        "embedding_bag",
        lambda rows, *a, **k: read.append(rows.numel()) or embedding_bag(rows, *a, **k),
    )
    (pooled,) = roi_align_tokens([token_map(feature, 0.25)], rois, 7)
    expected = roi_align(feature, rois, 7, spatial_scale=0.25, sampling_ratio=-1, aligned=False)
    torch.testing.assert_close(pooled, channels_last(expected), atol=1e-5, rtol=1e-5)
    # The second box is 70×35 map pixels too, partly outside. torchvision reads 2·49·200 pixels.
    assert len(read) == 1 and read[0] <= 2 * 49 * 11 * 6


def test_maps_of_one_size_share_their_sampling_and_the_host_reads_once(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(1, 8, 10, 12, generator=generator) for _ in range(2)]
    coarse = torch.randn(1, 8, 5, 6, generator=generator)
    rois = random_rois(generator, 50, 1, 40.0)
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or tolist(t))
    built = []
    samples = roi_module._samples
    monkeypatch.setattr(roi_module, "_samples", lambda *a: built.append(a[2]) or samples(*a))
    maps = [token_map(features[0], 0.25), token_map(coarse, 0.125), token_map(features[1], 0.25)]
    pooled = roi_align_tokens(maps, rois, 7)
    assert len(reads) == 1 and sorted(built) == [(5, 6), (10, 12)]
    for result, feature, scale in zip(
        pooled, [features[0], coarse, features[1]], [0.25, 0.125, 0.25], strict=True
    ):
        expected = roi_align(feature, rois, 7, spatial_scale=scale, sampling_ratio=-1, aligned=False)
        torch.testing.assert_close(result, channels_last(expected), atol=1e-5, rtol=1e-5)


def test_no_boxes_go_to_torchvision(monkeypatch):
    feature = torch.randn(1, 4, 9, 9)
    rois = torch.zeros(0, 5)
    monkeypatch.setattr(roi_module, "_samples", lambda *a: pytest.fail("sampled on the table"))
    (pooled,) = roi_align_tokens([token_map(feature, 0.25)], rois, 7)
    expected = roi_align(feature, rois, 7, spatial_scale=0.25, sampling_ratio=-1, aligned=False)
    torch.testing.assert_close(pooled, channels_last(expected))


def test_boxes_are_pooled_in_runs_of_bounded_size(monkeypatch):
    """However large the boxes, no pooling call reads more than `MAX_PIXELS` table rows (a box above it
    alone goes on its own), and the host still reads once."""
    generator = torch.Generator().manual_seed(2)
    feature = torch.randn(2, 4, 30, 30, generator=generator)
    rois = random_rois(generator, 60, 2, 120.0)
    rois[7, 1:] = torch.tensor([0.0, 0.0, 120.0, 120.0])  # 49 bins of 5×5 pixels and more
    monkeypatch.setattr(roi_module, "MAX_PIXELS", 900)
    read, reads = [], []
    embedding_bag = roi_module.F.embedding_bag
    monkeypatch.setattr(
        roi_module.F,
        "embedding_bag",
        lambda rows, *a, **k: read.append(rows.numel()) or embedding_bag(rows, *a, **k),
    )
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or tolist(t))
    (pooled,) = roi_align_tokens([token_map(feature, 0.25)], rois, 7)
    expected = roi_align(feature, rois, 7, spatial_scale=0.25, sampling_ratio=-1, aligned=False)
    torch.testing.assert_close(pooled, channels_last(expected), atol=1e-5, rtol=1e-5)
    assert len(reads) == 1 and len(read) > 2
    assert sum(rows > 900 for rows in read) == 1  # the whole-map box, alone


def test_a_box_far_larger_than_the_map_goes_to_torchvision(monkeypatch):
    """Its sample count is capped, not overflowed: it cannot sneak under MAX_SAMPLES."""
    feature = torch.randn(1, 4, 9, 9)
    rois = torch.tensor([[0.0, 1.0, 1.0, 8.0, 8.0], [0.0, -1e30, -1e30, 1e30, 1e30]])
    monkeypatch.setattr(roi_module, "_samples", lambda *a: pytest.fail("sampled on the table"))
    handed_over = []
    monkeypatch.setattr(roi_module, "_torchvision", lambda m, r, size: handed_over.append(r) or r)
    roi_align_tokens([token_map(feature, 0.25)], rois, 7)
    assert len(handed_over) == 1


def test_boxes_that_are_not_finite_fail_as_in_torchvision(monkeypatch):
    """The reference cannot pool a NaN box either; no garbage index reaches the table."""
    feature = torch.randn(1, 4, 9, 9)
    rois = torch.tensor([[0.0, 1.0, 1.0, 8.0, 8.0], [0.0, float("nan"), 1.0, 8.0, 8.0]])
    monkeypatch.setattr(roi_module, "_samples", lambda *a: pytest.fail("sampled on the table"))
    with pytest.raises(ValueError) as expected:
        roi_align(feature, rois, 7, spatial_scale=0.25, sampling_ratio=-1, aligned=False)
    with pytest.raises(ValueError, match=str(expected.value)):
        roi_align_tokens([token_map(feature, 0.25)], rois, 7)


def test_gradient_reaches_the_table_as_through_torchvision():
    generator = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 8, 12, 12, generator=generator, requires_grad=True)
    rois = random_rois(generator, 40, 2, 48.0)
    weights = torch.randn(40, 8, 7, 7, generator=generator)
    (
        roi_align(feature, rois, 7, spatial_scale=0.25, sampling_ratio=-1, aligned=False) * weights
    ).sum().backward()
    expected, feature.grad = feature.grad, None
    (pooled,) = roi_align_tokens([token_map(feature, 0.25)], rois, 7)
    (pooled * channels_last(weights)).sum().backward()
    torch.testing.assert_close(feature.grad, expected, atol=1e-5, rtol=1e-5)


def test_accelerators_pool_with_torchvision_alone(monkeypatch):
    """Where operators cost launches (`model.devices.launch_bound`), torchvision's kernel pools every map:
    no table sampling, no host read."""
    generator = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 8, 10, 12, generator=generator)
    rois = random_rois(generator, 40, 2, 40.0)
    monkeypatch.setattr(roi_module.devices, "launch_bound", lambda device: True)
    monkeypatch.setattr(roi_module, "_samples", lambda *a: pytest.fail("sampled on the table"))
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: pytest.fail("read on the host"))
    pooled = roi_align_tokens([token_map(feature, 0.25), token_map(feature, 0.125)], rois, 7)
    for result, scale in zip(pooled, [0.25, 0.125], strict=True):
        expected = roi_align(feature, rois, 7, spatial_scale=scale, sampling_ratio=-1, aligned=False)
        assert torch.equal(result, channels_last(expected))
