"""Small building blocks shared by the pixel decoder, the query decoder and the heads.

Naming follows the reference fork's helpers: its "bn" is LayerNorm (linear) or GroupNorm(32) (conv), its
"relu" is SiLU, and its linear layers carry no bias. Sequential indices are part of the checkpoint keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        nn.GroupNorm(32, out_channels),
    ]
    if activation:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def conv1x1(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False))


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LearnablePositionEmbedding2d(nn.Module):
    """A learned 2-D position table, resized to each image's valid rectangle (ARCHITECTURE §3.2(a)).

    The table is separable: channel c < D/2 holds `x_table[column, c]`, channel c ≥ D/2 holds
    `y_table[row, c - D/2]`, over a `grid × grid` lattice. Resizing it bilinearly is therefore the same as
    resizing each 1-D table linearly, which is what this module does (no 256×256 map is ever built).
    Pixels outside the rectangle stay zero. The `norm` parameters exist in the checkpoints but the
    reference never applies them.
    """

    def __init__(self, grid: int, channels: int) -> None:
        super().__init__()
        self.position_embed_x = nn.Embedding(grid, channels // 2)
        self.position_embed_y = nn.Embedding(grid, channels // 2)
        self.norm = nn.LayerNorm(channels)  # unused at run time, kept for checkpoint compatibility

    def _axis(self, table: torch.Tensor, length: int) -> torch.Tensor:
        """(grid, C) → (C, length): linear resize along the grid axis, align_corners=False."""
        return F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)[0]

    def forward(self, batch: int, height: int, width: int, regions: torch.Tensor | None) -> torch.Tensor:
        """Position maps (batch, C, height, width); `regions` (batch, 4) int [l, t, r, b] in map pixels."""
        x_table, y_table = self.position_embed_x.weight, self.position_embed_y.weight
        if regions is None:
            full = self._full(x_table, y_table, height, width)
            return full[None].expand(batch, -1, -1, -1)
        out = x_table.new_zeros(batch, 2 * x_table.shape[1], height, width)
        for index, (left, top, right, bottom) in enumerate(regions.tolist()):
            right, bottom = max(left + 1, right), max(top + 1, bottom)
            patch = self._full(x_table, y_table, bottom - top, right - left)
            # Slicing clips regions that reach past the map, exactly as the reference's assignment does.
            target = out[index, :, top:bottom, left:right]
            target.copy_(patch[:, : target.shape[1], : target.shape[2]])
        return out

    def _full(self, x_table: torch.Tensor, y_table: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self._axis(x_table, width)[:, None, :].expand(-1, height, -1)
        y = self._axis(y_table, height)[:, :, None].expand(-1, -1, width)
        return torch.cat([x, y], dim=0)
