"""Masked attention: which memory pixels each query may attend to at each feature level.

The reference dilates the previous stage's mask logits with a (2s+1)×(2s+1) max filter, s = round(h / level
height) (8, 4, 2, 1 for a 640-px window: a 3×3 filter even at the mask's own resolution), resizes them
bilinearly to the level and lets a query attend where sigmoid ≥ 0.5; a query that would attend nowhere attends
everywhere; padded memory pixels are never attended to.

The same booleans come out of less work here, every step exact (max is exact, and the bilinear resize reads
the same values with the same weights):

* the 3×3 filter is two elementwise maxima per axis, and the 5×5 one is the 3×3 one spread by one pixel;
* when a level is exactly s times smaller, s even, bilinear resizing reads the filtered map only at two
  rows and two columns per level pixel (s·i + s/2 - 1 and s·i + s/2, weights ½). The radius-s filter is
  needed only there, and it is the maximum of the 5×5 filter at a few points 4 pixels apart;
* maps go through one image at a time in reused buffers (a batch of 640-px windows holds 160×160 logits
  for each of 900 queries per image).

Other level sizes take the reference's route (max-pool, resize).

That economy is for the CPU, where memory traffic is the cost. On an accelerator memory traffic is cheap
and every operator is a kernel launch (the loop above launches about a hundred per image and layer), so
there every image and query goes through the reference's route at once: one max-pool pair, one resize and
one threshold per level.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from model import devices
from model.layers import resize_bilinear


def attention_allowed(
    mask_logits: torch.Tensor | None,
    memories_padding: Sequence[torch.Tensor],
    level_sizes: Sequence[tuple[int, int]],
    rows: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per level, (N, 1, K, S_l) bool: query k may attend to memory pixel s (True) or not.

    `mask_logits` (N, Q, h, w) are the previous stage's mask logits, None when there are none yet (decoder
    layer 1 on the instance side: only the padding restricts). `rows` (N, K), when the queries were just
    selected, gives each query's row in `mask_logits`, -1 for batch padding: the reference's padding rows
    are zeros, whose sigmoid is 0.5, so they attend everywhere.
    """
    if mask_logits is None:
        return [~padding[:, None, None, :] for padding in memories_padding]
    logits = mask_logits.detach()  # the masks are boolean: no gradient flows through them
    if devices.launch_bound(logits.device):
        return _allowed_at_once(logits, memories_padding, level_sizes, rows)
    batch = logits.shape[0]
    queries = logits.shape[1] if rows is None else rows.shape[1]
    allowed = [
        torch.empty(batch, 1, queries, h * w, dtype=torch.bool, device=logits.device) for h, w in level_sizes
    ]
    workspace = _Workspace(logits, queries)
    for image in range(batch):
        maps = logits[image]
        padding_rows = None
        if rows is not None:
            maps = torch.index_select(maps, 0, rows[image].clamp(min=0), out=workspace.gathered)
            padding_rows = rows[image, :, None] < 0
        for level, level_logits in _level_logits(maps, level_sizes, workspace):
            level_allowed = allowed[level][image, 0]  # (K, S)
            probabilities = torch.sigmoid(level_logits, out=workspace.scratch_like(level_logits))
            torch.ge(probabilities.view(queries, -1), 0.5, out=level_allowed)
            open_rows = ~level_allowed.any(-1, keepdim=True)  # would attend nowhere
            if padding_rows is not None:
                open_rows |= padding_rows
            level_allowed |= open_rows
            level_allowed &= ~memories_padding[level][image]
    return allowed


def _allowed_at_once(
    logits: torch.Tensor,
    memories_padding: Sequence[torch.Tensor],
    level_sizes: Sequence[tuple[int, int]],
    rows: torch.Tensor | None,
) -> list[torch.Tensor]:
    """`attention_allowed` by the reference's route for all images and queries together."""
    if rows is not None:
        images = torch.arange(logits.shape[0], device=logits.device)[:, None]
        logits = logits[images, rows.clamp(min=0)]  # (N, K, h, w)
    height, width = logits.shape[-2:]
    allowed = []
    for (level_height, level_width), padding in zip(level_sizes, memories_padding, strict=True):
        dilated = _max_pool(logits, round(height / level_height))
        if (level_height, level_width) != (height, width):
            dilated = resize_bilinear(dilated, (level_height, level_width))
        level_allowed = dilated.sigmoid_().flatten(2) >= 0.5  # (N, K, S)
        open_rows = ~level_allowed.any(-1, keepdim=True)  # would attend nowhere
        if rows is not None:
            open_rows |= rows[..., None] < 0
        level_allowed |= open_rows
        level_allowed &= ~padding[:, None, :]
        allowed.append(level_allowed[:, None])
    return allowed


class _Workspace:
    """Buffers reused for every image: the gathered rows, the filtered map and scratch, (K, h, w) each, and
    a bordered buffer for the radius-2 map that the sampled levels read."""

    def __init__(self, like: torch.Tensor, queries: int) -> None:
        height, width = like.shape[-2:]
        self.gathered, self.filtered, self.scratch = like.new_empty(3, queries, height, width).unbind(0)
        self._padded: torch.Tensor | None = None

    def scratch_like(self, x: torch.Tensor) -> torch.Tensor:
        """Scratch space shaped like `x` (free between the steps of `_level_logits`)."""
        return self.scratch.view(-1)[: x.numel()].view(x.shape)

    def bordered(self, x: torch.Tensor, border: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A buffer shaped like x (K, h, w) with `border` more pixels on every side, and its interior: write a
        map into the interior, then `replicate_borders`."""
        queries, height, width = x.shape
        shape = (queries, height + 2 * border, width + 2 * border)
        if self._padded is None or self._padded.shape != shape:
            self._padded = x.new_empty(shape)
        return self._padded, self._padded[:, border : border + height, border : border + width]

    @staticmethod
    def replicate_borders(padded: torch.Tensor, border: int) -> None:
        """Fill the border of a `bordered` buffer with its interior's edges: indexing it is then indexing the
        interior with positions clamped into the map."""
        height, width = padded.shape[1] - 2 * border, padded.shape[2] - 2 * border
        padded[:, :border, border : border + width] = padded[:, border : border + 1, border : border + width]
        bottom = border + height
        padded[:, bottom:, border : border + width] = padded[:, bottom - 1 : bottom, border : border + width]
        padded[:, :, :border] = padded[:, :, border : border + 1]
        padded[:, :, border + width :] = padded[:, :, border + width - 1 : border + width]


def _level_logits(
    maps: torch.Tensor, level_sizes: Sequence[tuple[int, int]], workspace: _Workspace
) -> Iterator[tuple[int, torch.Tensor]]:
    """(level, dilated logits resized to the level) for one image's (K, h, w) maps. A yielded tensor may
    live in the workspace: it is valid until the generator resumes."""
    height, width = maps.shape[-2:]
    filtered, scratch = workspace.filtered, workspace.scratch
    torch.maximum(maps, _spread(maps, 1, 1, out=scratch), out=scratch)
    torch.maximum(scratch, _spread(scratch, 1, 2, out=filtered), out=filtered)  # radius 1
    coarser = []
    for level, (level_height, level_width) in enumerate(level_sizes):
        if (level_height, level_width) == (height, width):
            yield level, filtered  # resizing to the same size is the identity (weights 1 and 0)
        else:
            radius = round(height / level_height)
            sampled = radius % 2 == 0 and (height, width) == (radius * level_height, radius * level_width)
            coarser.append((level, (level_height, level_width), radius, sampled))
    if not coarser:
        return
    border = max((radius for _, _, radius, sampled in coarser if sampled and radius > 2), default=0)
    padded = None
    if border:  # the radius-2 map goes straight into a bordered buffer
        padded, interior = workspace.bordered(filtered, border)
        _spread(_spread(filtered, 1, 1, out=scratch), 1, 2, out=interior)  # radius 2
        workspace.replicate_borders(padded, border)
        filtered = interior
    else:
        _spread(_spread(filtered, 1, 1, out=scratch), 1, 2, out=filtered)  # radius 2
    for level, size, radius, sampled in coarser:
        if not sampled:
            dilated = _max_pool(maps[:, None], radius)[:, 0]
        elif radius == 2:
            dilated = filtered  # every row and column is read
        else:
            dilated = _sampled_filter(padded, border, radius, size)
        yield level, resize_bilinear(dilated[:, None], size)[:, 0]


def _sampled_filter(padded: torch.Tensor, border: int, radius: int, size: tuple[int, int]) -> torch.Tensor:
    """The radius-`radius` max filter at the rows and columns that bilinear resizing by `radius` reads,
    (K, 2·level_height, 2·level_width), from the radius-2 filter with replicated borders: a window of radius
    s is the union of radius-2 windows centred 4 pixels apart at offsets -s+2 … s-2 (centres clamped into
    the map, which the borders do)."""
    offsets = range(2 - radius, radius - 1, 4)

    def window_max(x: torch.Tensor, dim: int, count: int, shift: int) -> torch.Tensor:
        """max over the offsets of x at centres radius·i + radius/2 - 1 + shift, i < count, along `dim`."""
        out = None
        for offset in offsets:
            start = border + radius // 2 - 1 + shift + offset
            index = [slice(None)] * x.ndim
            index[dim] = slice(start, start + radius * (count - 1) + 1, radius)
            view = x[tuple(index)]
            out = view.clone() if out is None else torch.maximum(out, view, out=out)
        return out

    level_height, level_width = size
    rows = [window_max(padded, 1, level_height, shift) for shift in (0, 1)]
    cells = [torch.stack([window_max(row, 2, level_width, shift) for shift in (0, 1)], -1) for row in rows]
    # cells[t][..., u] is the sample at row 2i + t, column 2j + u.
    return torch.stack(cells, -3).flatten(-4, -3).flatten(-2)


def _spread(x: torch.Tensor, offset: int, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out = max(x[c - offset], x[c + offset]) along `dim`, positions clamped into the axis (`out` ≠ x).

    Clamping keeps window maxima exact: near the edge the clamped window lies inside the clipped target
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


def _max_pool(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """The reference's (2r+1)×(2r+1) max-pool of (N, C, h, w) maps, 'same' size, as a row pass and a
    column pass."""
    size = 2 * radius + 1
    rows = F.max_pool2d(maps, kernel_size=(1, size), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, kernel_size=(size, 1), stride=1, padding=(radius, 0))
