"""Masked attention: which memory pixels each query may attend to at each feature level.

The reference dilates the previous stage's mask logits with a (2s+1)×(2s+1) max filter, s = round(h / level
height) (8, 4, 2, 1 for a 640-px window: a 3×3 filter even at the mask's own resolution), resizes them
bilinearly to the level and lets a query attend where sigmoid ≥ 0.5; a query that would attend nowhere attends
everywhere; padded memory pixels are never attended to.

Here the dilations of all levels come from one chain: a filter of radius 2r is the maximum of two radius-r
filters r pixels apart, so radii 1, 2, 4, 8 cost two elementwise maxima per axis each, where a max-pool of
radius 8 reads 17 values per output. Max is exact, so every mask is bit-identical to the reference's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from model.layers import resize_bilinear


def _spread(x: torch.Tensor, offset: int, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out = max(x[c - offset], x[c + offset]) along `dim`, positions clamped into the axis (`out` ≠ x).

    Clamping computes a window max exactly: near the edge the clamped window lies inside the clipped target
    window and covers the part the out-of-range one would have.
    """
    size = x.shape[dim]
    if size <= 2 * offset:
        positions = torch.arange(size, device=x.device)
        low = x.index_select(dim, (positions - offset).clamp(min=0))
        return torch.maximum(low, x.index_select(dim, (positions + offset).clamp(max=size - 1)), out=out)
    inner = size - 2 * offset
    torch.maximum(
        x.narrow(dim, 0, inner), x.narrow(dim, 2 * offset, inner), out=out.narrow(dim, offset, inner)
    )
    torch.maximum(x.narrow(dim, 0, 1), x.narrow(dim, offset, offset), out=out.narrow(dim, 0, offset))
    torch.maximum(
        x.narrow(dim, inner, offset), x.narrow(dim, size - 1, 1), out=out.narrow(dim, size - offset, offset)
    )
    return out


def dilations(logits: torch.Tensor, radii: Sequence[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (r, logits max-filtered over (2r+1)×(2r+1), 'same' size) for every requested r, increasing.

    Powers of two come from the doubling chain, which works in two buffers: a yielded map is overwritten
    when the generator resumes. Other radii (maps whose levels are not power-of-two reductions) come from a
    separable max-pool.
    """
    rows, columns = logits.ndim - 2, logits.ndim - 1
    scratch: torch.Tensor | None = None
    chain: torch.Tensor | None = None
    chain_radius = 0
    for radius in sorted(set(radii)):
        if radius & (radius - 1):
            size = 2 * radius + 1
            pooled = F.max_pool2d(logits, kernel_size=(1, size), stride=1, padding=(0, radius))
            yield radius, F.max_pool2d(pooled, kernel_size=(size, 1), stride=1, padding=(radius, 0))
            continue
        if chain is None:
            scratch, chain = torch.empty_like(logits), torch.empty_like(logits)
            torch.maximum(logits, _spread(logits, 1, rows, out=scratch), out=scratch)
            torch.maximum(scratch, _spread(scratch, 1, columns, out=chain), out=chain)
            chain_radius = 1
        while chain_radius < radius:
            # Radius 2r = the max of two radius-r windows r apart, along each axis.
            _spread(_spread(chain, chain_radius, rows, out=scratch), chain_radius, columns, out=chain)
            chain_radius *= 2
        yield radius, chain


def attention_allowed(
    mask_logits: torch.Tensor | None,
    memories_padding: Sequence[torch.Tensor],
    level_sizes: Sequence[tuple[int, int]],
    query_padding: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per level, (N, 1, K, S_l) bool: query k may attend to memory pixel s (True) or not.

    `mask_logits` (N, K, h, w) are the queries' previous mask logits, None when there are none yet (decoder
    layer 1 on the instance side: only the padding restricts). `query_padding` (N, K) marks batch-padding
    rows; the reference's are zeros, whose sigmoid is 0.5: they attend everywhere, whatever `mask_logits`
    holds there.
    """
    if mask_logits is None:
        return [~padding[:, None, None, :] for padding in memories_padding]
    batch, queries, height, width = mask_logits.shape
    mask_logits = mask_logits.detach()  # the masks are boolean: no gradient flows through them
    # One map per query: image kernels run far faster on (N·K, 1, h, w) than on K channels.
    maps = mask_logits.reshape(batch * queries, 1, height, width)
    radii = [round(height / level_height) for level_height, _ in level_sizes]
    allowed: list[torch.Tensor | None] = [None] * len(level_sizes)
    for radius, dilated in dilations(maps, radii):
        for level in (level for level, level_radius in enumerate(radii) if level_radius == radius):
            size = level_sizes[level]
            # Resizing to the same size is the identity (bilinear weights 1 and 0), so it is skipped.
            logits = dilated if size == (height, width) else resize_bilinear(dilated, size)
            level_allowed = (logits.sigmoid() >= 0.5).view(batch, queries, -1)
            level_allowed |= ~level_allowed.any(-1, keepdim=True)
            if query_padding is not None:
                level_allowed |= query_padding[..., None]
            level_allowed &= ~memories_padding[level][:, None, :]
            allowed[level] = level_allowed[:, None]
    return allowed  # type: ignore[return-value]
