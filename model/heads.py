"""Prediction heads: mask logits by query–pixel dot products, class logits by query–prompt dot products."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import conv_norm, mlp3


class PixelEncoding(NamedTuple):
    """A mask head's pixel side, computed once per forward pass: the encoded pixels (N, D, h, w), or, when
    the head's last convolution is folded into the queries, the features entering that convolution."""

    features: torch.Tensor
    last_conv_folded: bool


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

    def encode_pixels(self, pixels: torch.Tensor, queries: int, predictions: int) -> PixelEncoding:
        """The pixel side. It does not depend on the queries, so the decoder computes it once per forward and
        reuses it for each of its `predictions` of `queries` mask sets.

        The last convolution is linear and bias-free, so ⟨q, W ⊛ h⟩ = (qᵀW) ⊛ h: a 3×3 convolution of h with
        one output channel per query instead of D. Per pixel that is 9·D·K multiply-adds per prediction
        against 9·D² once plus D·K per prediction; with few queries (the semantic side: the class names) the
        folded order costs less and computes the same logits up to float rounding.
        """
        width = pixels.shape[1]
        if 8 * predictions * queries < 9 * width:
            return PixelEncoding(self.visual_feat_reducer[:-1](pixels), last_conv_folded=True)
        return PixelEncoding(self.visual_feat_reducer(pixels), last_conv_folded=False)

    def forward(self, queries: torch.Tensor, encoding: PixelEncoding) -> torch.Tensor:
        """queries (N, K, D), encoding from `encode_pixels` → (N, K, h, w)."""
        reduced = self.query_feat_reducer(queries)
        if encoding.last_conv_folded:
            return self._folded_logits(reduced, encoding.features)
        return torch.einsum("nkc,nchw->nkhw", reduced, encoding.features)

    def _folded_logits(self, reduced: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The last convolution with each image's queries folded into its weight: one grouped convolution,
        a group per image."""
        conv = self.visual_feat_reducer[-1][0]
        batch, count = reduced.shape[:2]
        weight = torch.einsum("nkc,cihw->nkihw", reduced, conv.weight).flatten(0, 1)  # (N·K, D, 3, 3)
        logits = F.conv2d(features.flatten(0, 1)[None], weight, padding=conv.padding, groups=batch)
        return logits.view(batch, count, *features.shape[-2:])


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
