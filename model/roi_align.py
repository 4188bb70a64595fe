"""RoIAlign as the reference calls it (torchvision `roi_align`, aligned=False, adaptive sampling), read from
channels-last token tables.

A pooled bin is the average of `grid_h × grid_w` bilinear samples, `grid = ceil(box side / bins)`, and a
sample is four table rows with bilinear weights: so every bin is one weighted sum of table rows, which
`F.embedding_bag` computes over all channels at once, on every thread. torchvision's CPU kernel instead walks
each channel plane for every sample on one thread, and was a quarter of the forward pass.

The number of samples depends on the boxes, so the host reads one number per call to size them (the
sampling weights are built on the device, without any other read). A call whose samples would not fit in
`MAX_SAMPLES` (boxes far larger than the map) or whose boxes are not finite goes to torchvision instead.

All of that is for the CPU. On an accelerator torchvision's own kernel pools a map in one launch without
the host read, where the table route takes about a hundred small operators: there every call goes to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from model import devices

MAX_SAMPLES = 1 << 24  # per level and call: 64 Mi table rows with their weights, about 0.8 GB
# Samples per bin side are counted up to this many: a box reaching it exceeds MAX_SAMPLES on its own, and the
# int64 sums of the counts cannot overflow.
_GRID_CAP = 1 << 12


class TokenMap(NamedTuple):
    """A feature map as (N, H·W, C) row-major tokens, and how box coordinates scale onto it."""

    tokens: torch.Tensor
    size: tuple[int, int]
    scale: float


class _Grid(NamedTuple):
    """Per box: first bin's corner, bin sizes and samples per bin side, in map pixels ((R,) each)."""

    start_x: torch.Tensor
    start_y: torch.Tensor
    bin_width: torch.Tensor
    bin_height: torch.Tensor
    columns: torch.Tensor  # samples per bin along x (int64)
    rows: torch.Tensor  # samples per bin along y (int64)


def roi_align_tokens(maps: Sequence[TokenMap], rois: torch.Tensor, output_size: int) -> list[torch.Tensor]:
    """`roi_align(map, rois, output_size, scale, sampling_ratio=-1, aligned=False)` for every map, up to float
    rounding, channels last: a list of (R, output_size², C), bins in row-major order. `rois` (R, 5): image
    index, x1, y1, x2, y2.

    Maps with the same size and scale share their sampling; all sample counts are read in one transfer.
    """
    rois = rois.detach()  # torchvision's RoIAlign passes no gradient to the boxes either
    if devices.launch_bound(rois.device):
        return [_torchvision(m, rois, output_size) for m in maps]
    grids = {(tuple(m.size), m.scale): _grid(rois, m.scale, output_size) for m in maps}
    bins = output_size * output_size
    counts = [bins * (grid.rows * grid.columns).sum() for grid in grids.values()]
    finite = torch.isfinite(rois).all()
    *totals, all_finite = torch.stack([*counts, finite.long()]).tolist()  # the one host read
    plans = {}
    for (key, grid), total in zip(grids.items(), totals, strict=True):
        if all_finite and 0 < total <= MAX_SAMPLES:
            plans[key] = _samples(rois, grid, key[0], output_size, total)
    pooled = []
    for m in maps:
        plan = plans.get((tuple(m.size), m.scale))
        if plan is None:
            pooled.append(_torchvision(m, rois, output_size))
            continue
        rows, weights, offsets = plan
        table = m.tokens.flatten(0, 1)
        dtype = torch.promote_types(table.dtype, weights.dtype)  # float32 at least, as torchvision's autocast
        sums = F.embedding_bag(
            rows, table.to(dtype), offsets, mode="sum", per_sample_weights=weights.to(dtype)
        )
        pooled.append(sums.to(table.dtype).view(-1, bins, table.shape[-1]))
    return pooled


def _grid(rois: torch.Tensor, scale: float, output_size: int) -> _Grid:
    """torchvision's per-box arithmetic (float32, aligned=False): sides at least one pixel."""
    x1, y1, x2, y2 = (rois[:, index] * scale for index in range(1, 5))
    width = (x2 - x1).clamp(min=1.0)
    height = (y2 - y1).clamp(min=1.0)
    # Non-finite boxes are sent to torchvision; keep their counts harmless meanwhile.
    columns, rows = (
        torch.nan_to_num(torch.ceil(side / output_size), nan=1.0).clamp(max=_GRID_CAP).long()
        for side in (width, height)
    )
    return _Grid(x1, y1, width / output_size, height / output_size, columns, rows)


def _samples(
    rois: torch.Tensor, grid: _Grid, size: tuple[int, int], output_size: int, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Table rows, weights and bag offsets of every bin's samples: (4·total,), (4·total,), (R·bins,).

    Samples are numbered box by box, bin by bin (row-major), then sample row and column, like torchvision's
    loops; each contributes its four corners.
    """
    device = rois.device
    height, width = size
    bins = output_size * output_size
    per_bin = grid.rows * grid.columns  # (R,)
    per_box = per_bin * bins
    box_end = per_box.cumsum(0)
    sample = torch.arange(total, device=device)
    box = torch.searchsorted(box_end, sample, right=True)
    within = sample - (box_end - per_box)[box]
    bin_index = within.div(per_bin[box], rounding_mode="floor")
    in_bin = within - bin_index * per_bin[box]
    columns, rows = grid.columns[box], grid.rows[box]
    sample_row = in_bin.div(columns, rounding_mode="floor")
    sample_column = in_bin - sample_row * columns
    bin_row = bin_index.div(output_size, rounding_mode="floor")
    bin_column = bin_index - bin_row * output_size

    bin_height, bin_width = grid.bin_height[box], grid.bin_width[box]
    # torchvision: start + p·bin + (i + ½)·bin / grid, evaluated in this order.
    y = grid.start_y[box] + bin_row * bin_height + (sample_row + 0.5) * bin_height / rows
    x = grid.start_x[box] + bin_column * bin_width + (sample_column + 0.5) * bin_width / columns
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    row_low, row_high, row_weights = _taps(y, height)
    column_low, column_high, column_weights = _taps(x, width)

    image_start = rois[box, 0].long() * (height * width)
    corner_rows = (
        torch.stack(
            [
                row_low * width + column_low,
                row_low * width + column_high,
                row_high * width + column_low,
                row_high * width + column_high,
            ],
            -1,
        )
        + image_start[:, None]
    )
    low_y, high_y = row_weights
    low_x, high_x = column_weights
    scale = inside / per_bin[box]  # the bin's average, and zero outside the map
    corner_weights = torch.stack([low_y * low_x, low_y * high_x, high_y * low_x, high_y * high_x], -1)
    corner_weights = corner_weights * scale[:, None]
    bag_starts = (box_end - per_box)[:, None] + torch.arange(bins, device=device) * per_bin[:, None]
    return corner_rows.flatten(), corner_weights.flatten(), (4 * bag_starts).flatten()


def _taps(
    position: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """torchvision's bilinear taps along one axis: low and high index and their weights (1 - l, l), with
    positions clamped to 0 below and to the last pixel at or past it. (Positions past the map, whose samples
    weigh nothing, are clamped first so that their indices stay valid.)"""
    position = position.clamp(min=0.0, max=float(size))
    low = position.long().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    fraction = torch.where(at_edge, 0.0, position - low)
    return low, high, (1.0 - fraction, fraction)


def _torchvision(m: TokenMap, rois: torch.Tensor, output_size: int) -> torch.Tensor:
    height, width = m.size
    feature = m.tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)
    pooled = roi_align(feature, rois, output_size, spatial_scale=m.scale, sampling_ratio=-1, aligned=False)
    return pooled.flatten(2).transpose(1, 2)
