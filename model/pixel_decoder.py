"""Pixel decoder: multi-scale deformable-attention encoder over strides 32/16/8, an extra stride-4 FPN level,
and the CNN fusion of all four levels into the stride-4 mask features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import GROUP_NORM_GROUPS, DocSAMConfig
from model.layers import LearnablePositionEmbedding2d, conv1x1, conv_norm, resize_bilinear


class MultiscaleDeformableAttention(nn.Module):
    """Deformable attention over several flattened levels.

    Each query reads, per head, `points` bilinear samples on every level (`grid_sample`'s sampling:
    align_corners=False, zeros outside the map) and sums them with softmax weights. A sample is four value
    rows with bilinear weights, so the whole read is one weighted sum of value rows per (query, head), which
    `F.embedding_bag` computes from the token layout directly; the same sums as sampling each level and
    weighting the samples, up to float rounding.
    """

    def __init__(self, width: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(width, heads * levels * points * 2)
        self.attention_weights = nn.Linear(width, heads * levels * points)
        self.value_proj = nn.Linear(width, width)
        self.output_proj = nn.Linear(width, width)

    def forward(
        self,
        query: torch.Tensor,
        value_input: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """query/value_input (N, S, C), reference_points (S, 2) as (x, y) in [0, 1] → (N, S, C)."""
        batch, tokens, width = query.shape
        heads = self.heads
        # Row (n, s, h) of this table is head h's value of token s: channels are head-major.
        values = self.value_proj(value_input).reshape(batch * tokens * heads, width // heads)
        offsets = self.sampling_offsets(query).view(batch, tokens, heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(batch, tokens, heads, self.levels * self.points)
        weights = weights.softmax(-1).view(batch, tokens, heads, self.levels, self.points)

        heights, widths, starts = _level_constants(spatial_shapes, query)  # (levels, 1) each
        # Sample positions in level pixels (grid_sample's: pixel centres at integer + ½), (N, S, heads, L, P).
        x = (reference_points[:, None, None, None, 0] + offsets[..., 0] / widths) * widths - 0.5
        y = (reference_points[:, None, None, None, 1] + offsets[..., 1] / heights) * heights - 0.5
        columns, column_weights = _linear_taps(x, widths)  # (N, S, heads, L, P, 2)
        rows, row_weights = _linear_taps(y, heights)
        # Table row of the tap at (row, column) of a level: (image·S + start + row·W + column) · heads + head.
        device = query.device
        image = torch.arange(batch, dtype=torch.int32, device=device).view(-1, 1, 1, 1, 1, 1) * (
            tokens * heads
        )
        head = torch.arange(heads, dtype=torch.int32, device=device).view(-1, 1, 1, 1)
        row_starts = rows * (widths.int() * heads)[..., None] + (image + head + starts[..., None] * heads)
        table_rows = row_starts[..., :, None] + (columns * heads)[..., None, :]  # (N, S, heads, L, P, 2, 2)
        tap_weights = (row_weights * weights[..., None])[..., :, None] * column_weights[..., None, :]
        # At least float32 under autocast too: the reference's `grid_sample` runs in its widest input type,
        # the float32 sampling grid.
        dtype = torch.promote_types(values.dtype, tap_weights.dtype)
        mixed = F.embedding_bag(
            table_rows.view(batch * tokens * heads, -1),
            values.to(dtype),
            per_sample_weights=tap_weights.view(batch * tokens * heads, -1).to(dtype),
            mode="sum",
        )  # (N · S · heads, d)
        return self.output_proj(mixed.view(batch, tokens, width))


def _level_constants(
    spatial_shapes: list[tuple[int, int]], like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heights, widths (float) and first-token indices (int32) of the levels as (levels, 1) tensors, filled
    on `like`'s device (a host-to-device copy would wait for the device)."""
    heights, widths = like.new_empty(len(spatial_shapes), 1), like.new_empty(len(spatial_shapes), 1)
    starts = torch.empty(len(spatial_shapes), 1, dtype=torch.int32, device=like.device)
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        heights[level], widths[level], starts[level] = height, width, start
        start += height * width
    return heights, widths, starts


def _linear_taps(position: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation at `position` along an axis of `size` pixels: the two pixels read (int32, clamped
    into the axis) and their weights, zero for a pixel outside it (zero padding), (..., 2) each."""
    low = position.floor()
    high_weight = position - low
    pixels = torch.stack([low, low + 1], -1)
    inside = (pixels >= 0) & (pixels <= size[..., None] - 1)
    weights = torch.stack([1 - high_weight, high_weight], -1) * inside
    return pixels.clamp(min=0).minimum(size[..., None] - 1).int(), weights


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + SiLU FFN (the fork replaced HF's ReLU with SiLU)."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        width = config.feature_size
        self.self_attn = MultiscaleDeformableAttention(
            width, config.num_attention_heads, config.pixel_decoder_levels, config.deformable_points
        )
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, config.encoder_feedforward_dim)
        self.fc2 = nn.Linear(config.encoder_feedforward_dim, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        position: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        attended = self.self_attn(x + position, x, reference_points, spatial_shapes)
        x = self.self_attn_layer_norm(x + self.dropout(attended))
        ffn = self.fc2(self.dropout(F.silu(self.fc1(x))))
        x = self.final_layer_norm(x + self.dropout(ffn))
        if self.training and not torch.isfinite(x).all():
            limit = torch.finfo(x.dtype).max - 1000
            x = torch.nan_to_num(x).clamp(min=-limit, max=limit)
        return x


class DeformableEncoder(nn.Module):
    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(config) for _ in range(config.encoder_layers))


def reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Cell centres of every level, (S, 2) as (x, y) normalised to [0, 1], levels concatenated."""
    points = []
    for height, width in spatial_shapes:
        ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device) / height
        xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1))
    return torch.cat(points)


class PixelDecoder(nn.Module):
    """Swin features (strides 4..32) → [O_0, O_1, O_2, O_3] at strides 32, 16, 8, 4."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        width = config.feature_size
        channels = config.backbone.stage_channels
        self.levels = config.pixel_decoder_levels
        self.position_embedding = LearnablePositionEmbedding2d(config.position_grid, width)
        self.position_projector = conv1x1(width, width)
        # Level 0 is the coarsest (stride 32) map.
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[-1 - level], width, 1), nn.GroupNorm(GROUP_NORM_GROUPS, width))
            for level in range(self.levels)
        )
        self.level_embed = nn.Parameter(torch.zeros(self.levels, width))
        self.encoder = DeformableEncoder(config)
        self.lateral_convolutions = nn.ModuleList([conv_norm(channels[0], width, 1)])
        self.output_convolutions = nn.ModuleList([conv_norm(width, width, 3)])

    def forward(self, features: list[torch.Tensor], image_boxes: torch.Tensor | None) -> list[torch.Tensor]:
        stride4 = features[0]
        batch, _, height, width = stride4.shape
        regions = None if image_boxes is None else (image_boxes * 0.25).long()
        position = self.position_embedding(batch, height, width, regions, self.position_projector[0])

        inputs, positions, shapes = [], [], []
        for level in range(self.levels):
            feature = features[-1 - level]
            size = tuple(feature.shape[-2:])
            shapes.append(size)
            inputs.append(self.input_projections[level](feature).flatten(2).transpose(1, 2))
            level_position = resize_bilinear(position, size) + self.level_embed[level][None, :, None, None]
            positions.append(level_position.flatten(2).transpose(1, 2))
        x, pos = torch.cat(inputs, 1), torch.cat(positions, 1)
        points = reference_points(shapes, x.device).to(x.dtype)
        for layer in self.encoder.layers:
            x = layer(x, pos, points, shapes)

        outputs, start = [], 0
        for size in shapes:
            count = size[0] * size[1]
            outputs.append(x[:, start : start + count].transpose(1, 2).reshape(batch, -1, *size))
            start += count
        lateral = self.lateral_convolutions[0](stride4)
        outputs.append(self.output_convolutions[0](lateral + resize_bilinear(outputs[-1], (height, width))))
        return outputs


class MaskFeatureFusion(nn.Module):
    """Fuses the four pixel-decoder levels into the stride-4 mask features (the reference's feat_merge)."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        branch_width = config.mask_feature_size // 2
        self.branches = nn.ModuleList(conv_norm(config.feature_size, branch_width, 3) for _ in range(4))
        self.fusion = conv_norm(4 * branch_width, config.mask_feature_size, 3)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        size = tuple(levels[-1].shape[-2:])
        merged = [
            resize_bilinear(branch(level), size) for branch, level in zip(self.branches, levels, strict=True)
        ]
        return self.fusion(torch.cat(merged, dim=1))


class UnusedFeaturePyramid(nn.Module):
    """torchvision-FPN-shaped parameters that the reference builds but never calls.

    They are part of every official checkpoint (`pixel_level_module.fpn.*`), so the module exists to load
    and save them one-to-one; it has no forward.
    """

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        width = config.feature_size
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, width, 1)) for channels in config.backbone.stage_channels
        )
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1)) for _ in config.backbone.stage_channels
        )
