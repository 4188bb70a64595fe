"""Swin Transformer backbone: transformers' own `SwinBackbone`, returning DocSAM's list of feature maps.

DocSAM's checkpoints were trained with transformers 4.49 `SwinBackbone`, whose run-time behaviour they depend
on: every block partitions into windows of `window_size` with a cyclic shift of `window_size // 2` on odd
blocks even when a feature map is smaller than a window; tokens are zero-padded right/bottom to whole windows
after `layernorm_before` and not masked as keys; the shift mask (-100 between regions) is built on the padded
size. transformers 5 `SwinBackbone` still does all of this (it always partitions): its feature maps are
bit-identical to those of the reimplementation this package used before. Its parameter names differ from
4.49's, which official checkpoints use: `model.checkpoint` renames them on load, as transformers itself does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from model.config import SwinConfig

if TYPE_CHECKING:
    import transformers


def transformers_config(config: SwinConfig) -> transformers.SwinConfig:
    """The transformers `SwinConfig` of `config`: all four stages out, no absolute position embeddings."""
    from transformers import SwinConfig as TransformersSwinConfig

    return TransformersSwinConfig(
        embed_dim=config.embed_dim,
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_size=config.window_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        drop_path_rate=config.drop_path_rate,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        hidden_act="gelu",
        use_absolute_embeddings=False,
        out_features=[f"stage{index}" for index in range(1, len(config.depths) + 1)],
        attn_implementation="sdpa",
    )


class SwinBackbone(nn.Module):
    """(N, 3, H, W) BGR 0..255 → four (N, C_s, ceil(H/2^(s+1)), ...) maps at strides 4, 8, 16, 32, each
    after its stage's LayerNorm (`hidden_states_norms`)."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        from transformers import SwinBackbone as TransformersSwinBackbone  # heavy import, only when built

        self.swin = TransformersSwinBackbone(transformers_config(config))
        # The final LayerNorm of transformers' Swin model feeds classification heads only: SwinBackbone never
        # reads it and transformers skips it when loading. Dropped, so the parameters are the reference's.
        self.swin.swin.layernorm = nn.Identity()

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        return list(self.swin(pixel_values).feature_maps)
