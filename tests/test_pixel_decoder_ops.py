"""The batched position embedding and the deformable sampling, against their straightforward formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.layers import LearnablePositionEmbedding2d
from model.pixel_decoder import MultiscaleDeformableAttention, reference_points


def positions_per_region(module, batch, height, width, regions):
    """The reference's recipe: per image, resize the table to its rectangle and paste it (clipped)."""
    x_table, y_table = module.position_embed_x.weight, module.position_embed_y.weight

    def resized(table, length):
        return F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)[0]

    out = x_table.new_zeros(batch, 2 * x_table.shape[1], height, width)
    for image, (left, top, right, bottom) in enumerate(regions.tolist()):
        right, bottom = max(left + 1, right), max(top + 1, bottom)
        x = resized(x_table, right - left)[:, None, :].expand(-1, bottom - top, -1)
        y = resized(y_table, bottom - top)[:, :, None].expand(-1, -1, right - left)
        target = out[image, :, top:bottom, left:right]
        target.copy_(torch.cat([x, y])[:, : target.shape[1], : target.shape[2]])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_position_embedding_equals_per_region_paste(dtype):
    torch.manual_seed(0)
    module = LearnablePositionEmbedding2d(256, 32).to(dtype)
    regions = torch.tensor(
        [[0, 0, 48, 40], [0, 0, 44, 40], [3, 5, 30, 30], [10, 10, 10, 10], [0, 0, 90, 20], [5, 7, 300, 33]]
    )
    with torch.no_grad():
        expected = positions_per_region(module, 6, 40, 48, regions)
        got = module(6, 40, 48, regions)
    # The same interpolation in torch arithmetic; F.interpolate's kernel rounds the source coordinate (up to
    # 256 table cells, float32 ulp 3e-5) differently, which moves a float32 value by up to ulp · its slope.
    tolerance = 5e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)
    assert not got[2, :, :5].any() and not got[2, :, :, :3].any() and not got[2, :, 30:].any()
    whole_map = regions[:1].expand(2, -1)
    with torch.no_grad():
        assert torch.equal(module(2, 40, 48, None), positions_per_region(module, 2, 40, 48, whole_map))


def deformable_by_grid_sample(module, query, value_input, points, shapes):
    """The reference's recipe: grid_sample each level per head, weight the samples, sum."""
    batch, tokens, width = query.shape
    heads, levels, count = module.heads, module.levels, module.points
    value = module.value_proj(value_input).view(batch, tokens, heads, width // heads)
    offsets = module.sampling_offsets(query).view(batch, tokens, heads, levels, count, 2)
    weights = module.attention_weights(query).view(batch, tokens, heads, levels * count).softmax(-1)
    normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype)
    grids = 2 * (points[None, :, None, None, None, :] + offsets / normaliser[:, None]) - 1
    sampled, start = [], 0
    for level, (height, level_width) in enumerate(shapes):
        level_value = value[:, start : start + height * level_width].permute(0, 2, 3, 1)
        level_value = level_value.reshape(batch * heads, -1, height, level_width)
        start += height * level_width
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, tokens, levels * count)
    out = (stacked * weights).sum(-1).view(batch, width, tokens).transpose(1, 2)
    return module.output_proj(out)


def test_deformable_attention_equals_grid_sample_recipe():
    torch.manual_seed(0)
    module = MultiscaleDeformableAttention(64, heads=4, levels=3, points=4).double()
    with torch.no_grad():
        module.sampling_offsets.weight.mul_(40)  # reach well past the map borders too
        shapes = [(3, 5), (6, 10), (12, 19)]
        tokens = sum(h * w for h, w in shapes)
        query, value_input = torch.randn(2, tokens, 64).double(), torch.randn(2, tokens, 64).double()
        points = reference_points(shapes, torch.device("cpu")).double()
        expected = deformable_by_grid_sample(module, query, value_input, points, shapes)
        got = module(query, value_input, points, shapes)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("with_regions", [True, False])
def test_projected_position_maps_equal_convolved_maps(with_regions):
    torch.manual_seed(0)
    module = LearnablePositionEmbedding2d(256, 32).double()
    projection = torch.nn.Conv2d(32, 24, 1, bias=False).double()
    regions = torch.tensor([[0, 0, 48, 40], [3, 5, 30, 30]]) if with_regions else None
    with torch.no_grad():
        expected = projection(module(2, 40, 48, regions))
        got = module(2, 40, 48, regions, projection)
    assert got.shape == (2, 24, 40, 48)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
