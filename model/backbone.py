"""Swin Transformer backbone with the exact run-time behaviour of transformers 4.49 `SwinBackbone`.

Implemented here rather than imported because DocSAM's checkpoints depend on details that transformers
has changed across releases (ARCHITECTURE §1.4): every block always partitions into windows of
`window_size` with a cyclic shift of `window_size // 2` on odd blocks, even when a feature map is smaller
than a window; tokens are zero-padded right/bottom to a multiple of the window after `layernorm_before`;
padded tokens are not masked as keys; the shift mask (-100 between regions) is built on the padded size.
Parameter names are transformers' own, so official checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import SwinConfig


class SwinPatchEmbeddings(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        pad_w, pad_h = -width % self.patch_size, -height % self.patch_size
        if pad_w or pad_h:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        return self.projection(pixel_values)


class SwinEmbeddings(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_embeddings = SwinPatchEmbeddings(config)
        self.norm = nn.LayerNorm(config.embed_dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, h, w, C) channels-last tokens."""
        embeddings = self.patch_embeddings(pixel_values).permute(0, 2, 3, 1)
        return self.dropout(self.norm(embeddings))


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window−1)² relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


class SwinSelfAttention(nn.Module):
    def __init__(self, config: SwinConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin width {dim} is not a multiple of its {num_heads} heads")
        self.num_heads = num_heads
        self.window = config.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * self.window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window))
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, windows: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """windows (B·nW, T, C), shift_mask (nW, T, T) or None → (B·nW, T, C)."""
        batch_windows, tokens, channels = windows.shape
        head_dim = channels // self.num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch_windows, tokens, self.num_heads, head_dim).transpose(1, 2)

        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1)  # (heads, T, T)
        if shift_mask is None:
            mask = bias[None].to(windows.dtype)
        else:
            num_windows = shift_mask.shape[0]
            mask = (bias[None, None] + shift_mask[None, :, None]).to(windows.dtype)  # (1, nW, heads, T, T)
            mask = mask.expand(batch_windows // num_windows, -1, -1, -1, -1).reshape(
                batch_windows, self.num_heads, tokens, tokens
            )
        out = F.scaled_dot_product_attention(
            heads(self.query(windows)),
            heads(self.key(windows)),
            heads(self.value(windows)),
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return out.transpose(1, 2).reshape(batch_windows, tokens, channels)


class SwinSelfOutput(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class SwinAttention(nn.Module):
    def __init__(self, config: SwinConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self = SwinSelfAttention(config, dim, num_heads)
        self.output = SwinSelfOutput(config, dim)

    def forward(self, windows: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(windows, shift_mask))


class SwinIntermediate(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, int(config.mlp_ratio * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class SwinOutput(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(int(config.mlp_ratio * dim), dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample while training."""

    def __init__(self, probability: float) -> None:
        super().__init__()
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.probability == 0.0:
            return x
        keep = 1.0 - self.probability
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device) < keep
        return x * mask / keep


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `window` → (B·nW, window², C), windows row-major."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shift_attention_mask(
    height: int, width: int, window: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(nW, window², window²) additive mask: -100 between tokens of different pre-shift regions."""
    regions = torch.zeros(height, width, device=device)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[rows, cols] = label
            label += 1
    windows = window_partition(regions[None, :, :, None], window).squeeze(-1)  # (nW, T)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


class SwinLayer(nn.Module):
    """One Swin block (the reference calls them layers.{s}.blocks.{b})."""

    def __init__(self, config: SwinConfig, dim: int, num_heads: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window = config.window_size
        self.shift = shift
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = SwinAttention(config, dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = SwinIntermediate(config, dim)
        self.output = SwinOutput(config, dim)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, H, W, C) → (B, H, W, C); `shift_mask` is for the padded size of this stage."""
        height, width = x.shape[1:3]
        shortcut = x
        x = self.layernorm_before(x)
        x = F.pad(x, (0, 0, 0, -width % self.window, 0, -height % self.window))
        padded_h, padded_w = x.shape[1:3]
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attention(window_partition(x, self.window), shift_mask if self.shift else None)
        x = window_reverse(windows, self.window, padded_h, padded_w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(x[:, :height, :width])
        return x + self.drop_path(self.output(self.intermediate(self.layernorm_after(x))))


class SwinPatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self, config: SwinConfig, dim: int, depth: int, num_heads: int, drop_paths: list[float], last: bool
    ) -> None:
        super().__init__()
        self.window = config.window_size
        self.shift = config.window_size // 2
        self.blocks = nn.ModuleList(
            SwinLayer(
                config, dim, num_heads, shift=0 if index % 2 == 0 else self.shift, drop_path=drop_paths[index]
            )
            for index in range(depth)
        )
        self.downsample = None if last else SwinPatchMerging(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (stage output before merging, merged input of the next stage or None)."""
        height, width = x.shape[1:3]
        padded_h, padded_w = height + (-height % self.window), width + (-width % self.window)
        shift_mask = (
            shift_attention_mask(padded_h, padded_w, self.window, self.shift, x.device)
            if self.shift
            else None
        )
        for block in self.blocks:
            x = block(x, shift_mask)
        return x, None if self.downsample is None else self.downsample(x)


class SwinEncoder(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        blocks = sum(config.depths)
        drop_paths = [config.drop_path_rate * index / max(blocks - 1, 1) for index in range(blocks)]
        stages, start = [], 0
        for index, (depth, heads, dim) in enumerate(
            zip(config.depths, config.num_heads, config.stage_channels, strict=True)
        ):
            last = index == len(config.depths) - 1
            stages.append(SwinStage(config, dim, depth, heads, drop_paths[start : start + depth], last))
            start += depth
        self.layers = nn.ModuleList(stages)


class SwinBackbone(nn.Module):
    """(N, 3, H, W) BGR 0..255 → four (N, C_s, ceil(H/2^(s+1)), ...) maps at strides 4, 8, 16, 32."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.embeddings = SwinEmbeddings(config)
        self.encoder = SwinEncoder(config)
        self.hidden_states_norms = nn.ModuleDict(
            {f"stage{index + 1}": nn.LayerNorm(dim) for index, dim in enumerate(config.stage_channels)}
        )

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.embeddings(pixel_values)
        features = []
        for index, stage in enumerate(self.encoder.layers):
            stage_output, x = stage(x)
            normed = self.hidden_states_norms[f"stage{index + 1}"](stage_output)
            features.append(normed.permute(0, 3, 1, 2).contiguous())
        return features
