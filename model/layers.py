"""Small building blocks shared by the pixel decoder, the query decoder and the heads.

Naming follows the reference fork's helpers: its "bn" is LayerNorm (linear) or GroupNorm(32) (conv), its
"relu" is SiLU, and its linear layers carry no bias. Sequential indices are part of the checkpoint keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import GROUP_NORM_GROUPS


def linear_norm_act(in_features: int, out_features: int) -> nn.Sequential:
    """Linear (no bias) → LayerNorm → SiLU."""
    return nn.Sequential(
        nn.Linear(in_features, out_features, bias=False), nn.LayerNorm(out_features), nn.SiLU()
    )


def mlp3(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Two linear-norm-SiLU blocks and a bias-free linear output (the reference's 3-layer MLP)."""
    return nn.Sequential(
        linear_norm_act(in_features, hidden),
        linear_norm_act(hidden, hidden),
        nn.Sequential(nn.Linear(hidden, out_features, bias=False)),
    )


def conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, activation: bool = False
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) → GroupNorm(32) [→ SiLU]."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.GroupNorm(GROUP_NORM_GROUPS, out_channels),
    ]
    if activation:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def conv1x1(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False))


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LearnablePositionEmbedding2d(nn.Module):
    """A learned 2-D position table, resized to each image's valid rectangle.

    The table is separable: channel c < D/2 holds `x_table[column, c]`, channel c ≥ D/2 holds
    `y_table[row, c - D/2]`, over a `grid × grid` lattice. Resizing it bilinearly is therefore the same as
    resizing each 1-D table linearly, which is what this module does (no 256×256 map is ever built).
    Pixels outside the rectangle stay zero; a rectangle reaching past the map is clipped, its resized table
    keeping its top-left part. The `norm` parameters exist in the checkpoints but the reference never applies
    them.
    """

    def __init__(self, grid: int, channels: int) -> None:
        super().__init__()
        self.position_embed_x = nn.Embedding(grid, channels // 2)
        self.position_embed_y = nn.Embedding(grid, channels // 2)
        self.norm = nn.LayerNorm(channels)  # unused at run time, kept for checkpoint compatibility

    def forward(
        self,
        batch: int,
        height: int,
        width: int,
        regions: torch.Tensor | None,
        projection: nn.Conv2d | None = None,
    ) -> torch.Tensor:
        """Position maps (batch, C, height, width); `regions` (batch, 4) int [l, t, r, b] in map pixels.

        With `projection`, a bias-free 1×1 convolution, the projected maps (batch, C_out, height, width). A
        map pixel is [x_table row; y_table row], so the projection is applied to the resized 1-D tables and
        the two halves are added per pixel: the same sums as convolving the maps, in a different order.
        """
        x_table, y_table = self.position_embed_x.weight, self.position_embed_y.weight
        inside = None
        if regions is None:
            x = F.interpolate(x_table.t()[None], size=width, mode="linear", align_corners=False)
            y = F.interpolate(y_table.t()[None], size=height, mode="linear", align_corners=False)
        else:
            left, top, right, bottom = regions.unbind(1)
            x, inside_x = _resize_into(x_table, left, torch.maximum(right, left + 1), width)
            y, inside_y = _resize_into(y_table, top, torch.maximum(bottom, top + 1), height)
            inside = inside_y[:, None, :, None] & inside_x[:, None, None, :]
        if projection is None:
            columns = x[:, :, None, :].expand(-1, -1, height, -1)
            maps = torch.cat([columns, y[:, :, :, None].expand(-1, -1, -1, width)], 1)
        else:
            weight = projection.weight.flatten(1)
            half = x.shape[1]
            maps = (weight[:, :half] @ x)[:, :, None, :] + (weight[:, half:] @ y)[:, :, :, None]
        if inside is not None:
            maps = maps * inside
        return maps.expand(batch, -1, -1, -1)


def _resize_into(
    table: torch.Tensor, start: torch.Tensor, end: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's `table` (grid, C) linearly resized to `end - start` entries and placed at `start` on an
    axis of `size` → (N, C, size) values and (N, size) inside-the-span flags.

    The arithmetic is `F.interpolate(mode="linear", align_corners=False)`'s, done for all images at once so
    that no span length has to be read on the host.
    """
    grid = table.shape[0]
    offset = torch.arange(size, device=table.device)[None, :] - start[:, None]  # (N, size)
    length = (end - start)[:, None]
    scale = grid / length.to(table.dtype)
    source = ((offset.to(table.dtype) + 0.5) * scale - 0.5).clamp(min=0)
    low = source.long().clamp(max=grid - 1)
    high = (low + 1).clamp(max=grid - 1)
    weight_high = source - low.to(table.dtype)
    values = table[low] * (1 - weight_high)[..., None] + table[high] * weight_high[..., None]
    return values.transpose(1, 2), (offset >= 0) & (offset < length)
