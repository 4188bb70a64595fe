"""Multi-head attention with `nn.MultiheadAttention`'s parameters, and the memories the query decoder reads.

Masks follow `F.scaled_dot_product_attention`: `allowed` is a boolean tensor broadcastable to
(N, heads, L_q, L_k), True where a query may attend to a key.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MemoryLevel(NamedTuple):
    """One pixel-decoder level as the query decoder's cross-attention reads it, tokens in row-major order.

    The reference adds the image position to the level once to form the memory (the values, and what RoIAlign
    pools) and a second time for the keys.
    """

    keys: torch.Tensor  # (N, S, D): level + 2 · position
    values: torch.Tensor  # (N, S, D): level + position
    padding: torch.Tensor  # (N, S) bool, True = padded pixel
    size: tuple[int, int]  # (height, width), S = height · width


class PackedAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter layout (packed q/k/v projection).

    A query row that may attend to no key at all produces zeros before the output projection, as PyTorch
    2.14's MultiheadAttention does.
    """

    def __init__(self, width: int, heads: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, width, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention of `query` (N, L, D) over `key`/`value` (N, S, D). Passing the same tensor as query and
        key (self-attention) projects it once for both."""
        if key is query:
            queries, keys = self._project(query, 0, 2).chunk(2, dim=-1)
        else:
            queries, keys = self._project(query, 0, 1), self._project(key, 1, 2)
        mixed = F.scaled_dot_product_attention(
            self._split_heads(queries),
            self._split_heads(keys),
            self._split_heads(self._project(value, 2, 3)),
            attn_mask=allowed,
            dropout_p=self._dropout_p(),
        )
        return self.out_proj(mixed.transpose(1, 2).flatten(2))

    def attend_to_memory(
        self, query: torch.Tensor, memory: MemoryLevel, allowed: torch.Tensor
    ) -> torch.Tensor:
        """Cross-attention of `query` (N, L, D) over a memory level, in the cheaper of two equivalent orders.

        With few queries, projecting every memory token to keys and values (2·S·D² multiply-adds) costs more
        than moving the projections to the query side (2·heads·L·S·D): per head, q·(W_k m + b_k) =
        (W_kᵀ q)·m + q·b_k, and q·b_k is the same for every key of a row, which softmax ignores; and
        Σ a·(W_v m + b_v) = W_v (Σ a·m) + b_v because the attention weights of a row sum to one. Both orders
        compute the same function up to float rounding. Dropout on the attention weights breaks the second
        identity, so training with dropout always takes the direct order.
        """
        length, width = query.shape[1], query.shape[2]
        folding_is_cheaper = length * (self.heads - 1) < width
        if folding_is_cheaper and self._dropout_p() == 0.0:
            return self._attend_folded(query, memory.keys, memory.values, allowed)
        return self(query, memory.keys, memory.values, allowed)

    def _attend_folded(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        batch, length, width = query.shape
        heads, head_dim = self.heads, width // self.heads
        weight_k = self.in_proj_weight[width : 2 * width].view(heads, head_dim, width)
        weight_v = self.in_proj_weight[2 * width :].view(heads, head_dim, width)
        queries = self._project(query, 0, 1).unflatten(-1, (heads, head_dim))  # (N, L, heads, d)
        # Every head's queries become one row block of a single-head attention over the raw memory tokens.
        folded = torch.einsum("nlhd,hdc->nhlc", queries, weight_k).reshape(batch, 1, heads * length, width)
        rows_allowed = allowed
        if allowed.shape[-2] > 1:
            rows_allowed = allowed[:, :, None].expand(-1, -1, heads, -1, -1).flatten(2, 3)
        mixed = F.scaled_dot_product_attention(
            folded, key[:, None], value[:, None], attn_mask=rows_allowed, scale=head_dim**-0.5
        )  # (N, 1, heads · L, D): attention-weighted raw values
        out = torch.einsum("nhlc,hdc->nlhd", mixed.view(batch, heads, length, width), weight_v)
        if self.in_proj_bias is not None:
            attends = allowed.any(-1)[:, 0, :, None, None]  # (N, L or 1, 1, 1): rows with a key to attend to
            out = out + self.in_proj_bias[2 * width :].view(heads, head_dim) * attends
        return self.out_proj(out.flatten(2))

    def _project(self, x: torch.Tensor, first: int, end: int) -> torch.Tensor:
        """x through packed projections first..end-1 (0 = query, 1 = key, 2 = value) in one matrix product."""
        width = x.shape[-1]
        bias = None if self.in_proj_bias is None else self.in_proj_bias[first * width : end * width]
        return F.linear(x, self.in_proj_weight[first * width : end * width], bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) → (N, heads, L, D / heads)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0
