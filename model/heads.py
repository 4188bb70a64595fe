"""Prediction heads: mask logits by query–pixel dot products, class logits by query–prompt dot products."""

from __future__ import annotations

import torch
from torch import nn

from model.layers import conv_norm, mlp3


class MaskPredictor(nn.Module):
    """logits[n, k, y, x] = ⟨MLP(query[n, k]), CNN(pixels)[n, :, y, x]⟩ — no bias, no scale."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query_feat_reducer = mlp3(width, width, width)
        self.visual_feat_reducer = nn.Sequential(
            conv_norm(width, width, 3, activation=True),
            conv_norm(width, width, 3, activation=True),
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False)),
        )
        # Present in the checkpoints; the reference computes it and discards the result.
        self.pixel_feat_reducer = mlp3(width, width, width)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pixel side, (N, D, h, w). It does not depend on the queries, so the decoder computes it once
        per forward and reuses it at every stage."""
        return self.visual_feat_reducer(pixels)

    def forward(self, queries: torch.Tensor, encoded_pixels: torch.Tensor) -> torch.Tensor:
        """queries (N, K, D), encoded_pixels from `encode_pixels` → (N, K, h, w)."""
        return torch.einsum("nkc,nchw->nkhw", self.query_feat_reducer(queries), encoded_pixels)


class ClassPredictor(nn.Module):
    """logits[n, i, j] = ⟨MLP₁(instance i), MLP₂(semantic query j)⟩: class names act as prototypes."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.feat_reducer_one = mlp3(width, width, width)
        self.feat_reducer_two = mlp3(width, width, width)

    def forward(self, instances: torch.Tensor, semantics: torch.Tensor) -> torch.Tensor:
        return torch.einsum(
            "nqc,nkc->nqk", self.feat_reducer_one(instances), self.feat_reducer_two(semantics)
        )
