"""RoIAlign as the reference calls it (torchvision `roi_align`, aligned=False, adaptive sampling), read from
channels-last token tables.

A pooled bin is the average of `grid_h × grid_w` bilinear samples, `grid = ceil(box side / bins)`. Bilinear
weights factor into a row weight and a column weight, and so does the sample's validity (inside the map
or not), so a bin is one weighted sum of table rows whose weights are products: the column weights of
all its samples summed per map column, times the row weights summed per map row. Samples are at most one
pixel apart, so a bin reads about `(grid + 1)²` pixels instead of torchvision's four per sample (`4·grid²`):
the same sum up to float rounding, and `F.embedding_bag` computes it over all channels at once, on every
thread. torchvision's CPU kernel instead walks each channel plane for every sample on one thread, and was a
quarter of the forward pass.

The number of pixels depends on the boxes, so the host reads their counts once per call to size the tables
(the weights are built on the device, without any other read), and pools the boxes in runs of at most
`MAX_PIXELS` table rows, which bounds the temporaries however large the boxes. A call with boxes that are
not finite, or thousands of map pixels across (`_GRID_CAP`), goes to torchvision instead, as do calls without
boxes.

All of that is for the CPU. On an accelerator torchvision's own kernel pools a map in one launch without
the host read, where the table route takes about a hundred small operators: there every call goes to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from model import devices

MAX_PIXELS = 1 << 24  # table rows per pooling call: its index temporaries stay under about 1.5 GB
# A box with this many samples per bin side (thousands of map pixels) goes to torchvision, whose own count
# is not capped; the cap keeps the int64 sums of the counts from overflowing meanwhile.
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

    Maps with the same size and scale share their sampling; all counts are read in one transfer. Boxes go to
    `F.embedding_bag` in runs of at most `MAX_PIXELS` table rows.
    """
    rois = rois.detach()  # torchvision's RoIAlign passes no gradient to the boxes either
    if devices.launch_bound(rois.device) or rois.shape[0] == 0:
        return [_torchvision(m, rois, output_size) for m in maps]
    rois = rois.to(torch.promote_types(rois.dtype, torch.float32))  # as autocast runs torchvision's
    layouts = {
        (tuple(m.size), m.scale): _layout(_grid(rois, m.scale, output_size), tuple(m.size), output_size)
        for m in maps
    }
    finite = torch.isfinite(rois).all()
    counts = [layout.cumulative_counts() for layout in layouts.values()]  # (R + 1, 3) each
    largest = [
        torch.maximum(layout.columns.grid.max(), layout.rows.grid.max()) for layout in layouts.values()
    ]
    read = torch.cat([torch.stack([finite.long(), *largest]), *(c.flatten() for c in counts)]).tolist()
    all_finite, *largest_grids = read[: len(layouts) + 1]  # the one host read
    cumulative = read[len(layouts) + 1 :]
    plans = {}
    for index, (key, layout) in enumerate(layouts.items()):
        if all_finite and largest_grids[index] < _GRID_CAP:
            box_counts = cumulative[index * 3 * (rois.shape[0] + 1) :][: 3 * (rois.shape[0] + 1)]
            plans[key] = [
                (boxes, _samples(rois[boxes], layout.boxes(boxes), key[0], output_size, totals))
                for boxes, totals in _runs(box_counts)
            ]
    pooled = []
    for m in maps:
        runs = plans.get((tuple(m.size), m.scale))
        if runs is None:
            pooled.append(_torchvision(m, rois, output_size))
            continue
        table = m.tokens.flatten(0, 1)
        values = table.to(torch.promote_types(table.dtype, torch.float32))  # as torchvision's autocast
        parts = [
            F.embedding_bag(rows, values, offsets, mode="sum", per_sample_weights=weights.to(values.dtype))
            for _, (rows, weights, offsets) in runs
        ]
        sums = parts[0] if len(parts) == 1 else torch.cat(parts)
        pooled.append(sums.to(table.dtype).view(-1, output_size * output_size, table.shape[-1]))
    return pooled


def _runs(cumulative: list[int]) -> list[tuple[slice, tuple[int, int, int]]]:
    """Consecutive boxes whose table rows add up to at most `MAX_PIXELS` (a box above it on its own), from
    the per-box running totals (pixels, column samples, row samples), flattened with a leading zero row:
    each run's boxes and its totals (column samples, row samples, pixels)."""
    pixels, columns, rows = cumulative[0::3], cumulative[1::3], cumulative[2::3]
    runs, start = [], 0
    while start < len(pixels) - 1:
        end = max(start + 1, bisect.bisect_right(pixels, pixels[start] + MAX_PIXELS) - 1)
        totals = (columns[end] - columns[start], rows[end] - rows[start], pixels[end] - pixels[start])
        runs.append((slice(start, end), totals))
        start = end
    return runs


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


class _Axis(NamedTuple):
    """One axis of every box's bins: where the bins start, their size, the samples per bin, and per bin
    (R, output_size) its first pixel and how many pixels its samples touch."""

    start: torch.Tensor
    bin_size: torch.Tensor
    grid: torch.Tensor  # int64
    first: torch.Tensor
    span: torch.Tensor
    size: int


class _Layout(NamedTuple):
    columns: _Axis  # x
    rows: _Axis  # y

    def cumulative_counts(self) -> torch.Tensor:
        """(R + 1, 3): running totals over the boxes of their table rows (pixels), column samples and row
        samples, from a leading zero row."""
        bins = self.columns.first.shape[1]
        pixels = (self.rows.span[:, :, None] * self.columns.span[:, None, :]).flatten(1).sum(1)
        counts = torch.stack([pixels, bins * self.columns.grid, bins * self.rows.grid], 1)
        return F.pad(counts.cumsum(0), (0, 0, 1, 0))

    def boxes(self, index: slice) -> _Layout:
        return _Layout(*(axis._replace(**{f: getattr(axis, f)[index] for f in _PER_BOX}) for axis in self))


_PER_BOX = ("start", "bin_size", "grid", "first", "span")


def _layout(grid: _Grid, size: tuple[int, int], output_size: int) -> _Layout:
    height, width = size
    return _Layout(
        _axis(grid.start_x, grid.bin_width, grid.columns, width, output_size),
        _axis(grid.start_y, grid.bin_height, grid.rows, height, output_size),
    )


def _axis(
    start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, size: int, output_size: int
) -> _Axis:
    """A bin's first sample's low tap and its last sample's high tap bound the pixels it touches: positions
    only grow with the sample index, and clamping keeps that order."""
    bin_index = torch.arange(output_size, device=start.device)[None, :]
    box_start, box_bin, samples = start[:, None], bin_size[:, None], grid[:, None].to(start.dtype)
    first, _, _ = _taps(_position(box_start, box_bin, bin_index, 0, samples), size)
    _, last, _ = _taps(_position(box_start, box_bin, bin_index, samples - 1, samples), size)
    # Garbage for boxes that are not finite, which go to torchvision; keep the sums harmless meanwhile.
    span = (last - first + 1).clamp(min=1, max=size)
    return _Axis(start, bin_size, grid, first, span, size)


def _position(
    start: torch.Tensor,
    bin_size: torch.Tensor,
    bin_index: torch.Tensor,
    sample: torch.Tensor | int,
    grid: torch.Tensor,
) -> torch.Tensor:
    """torchvision's sample coordinate, in its order of operations: start + p·bin + (i + ½)·bin / grid."""
    return start + bin_index * bin_size + (sample + 0.5) * bin_size / grid


def _samples(
    rois: torch.Tensor, layout: _Layout, size: tuple[int, int], output_size: int, totals: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Table rows, weights and bag offsets of every bin: (pixels,), (pixels,), (R·bins,).

    A bin's bag is the rectangle of pixels its samples touch, row-major; each pixel weighs its summed row
    weight times its summed column weight, over the bin's sample count (zero outside the map, as in
    torchvision, where samples beyond the map's border weigh nothing).
    """
    column_samples, row_samples, pixels = totals
    height, width = size
    device = rois.device
    x_weights = _axis_weights(layout.columns, output_size, column_samples)
    y_weights = _axis_weights(layout.rows, output_size, row_samples)
    # Per bag (box, bin row, bin column), row-major: its rectangle, where its weights are, its sample count.
    count, bins = rois.shape[0], output_size * output_size
    axis_bin = torch.arange(count * output_size, device=device).view(count, output_size)
    y_bin = axis_bin[:, :, None].expand(-1, -1, output_size).flatten()
    x_bin = axis_bin[:, None, :].expand(-1, output_size, -1).flatten()
    image = rois[:, 0].long()[:, None].expand(-1, bins).flatten()
    top, left = layout.rows.first.flatten()[y_bin], layout.columns.first.flatten()[x_bin]
    corner = (image * height + top) * width + left
    bag_width = layout.columns.span.flatten()[x_bin]
    bag_size = layout.rows.span.flatten()[y_bin] * bag_width
    bag_start = bag_size.cumsum(0) - bag_size
    samples = (layout.rows.grid * layout.columns.grid)[:, None].expand(-1, bins).flatten()
    per_bag = torch.stack([bag_start, bag_width, corner, y_bin * height, x_bin * width, samples], 1)
    # Each pixel's bag is the running count of the bag starts it has passed; one gather brings its fields.
    starts = torch.zeros(pixels, dtype=torch.long, device=device).index_fill_(0, bag_start[1:], 1)
    start, bag_width, corner, y_weight_at, x_weight_at, samples = per_bag[starts.cumsum(0)].unbind(1)
    within = torch.arange(pixels, device=device) - start
    row = within.div(bag_width, rounding_mode="floor")
    column = within - row * bag_width
    weights = y_weights.flatten()[y_weight_at + row] * x_weights.flatten()[x_weight_at + column] / samples
    return corner + row * width + column, weights, bag_start


def _axis_weights(axis: _Axis, output_size: int, total: int) -> torch.Tensor:
    """(R·output_size, size): per bin, the summed tap weights of its samples on the pixels from its first
    one on (at most `span` of them are non-zero), samples outside the map weighing nothing."""
    device = axis.start.device
    per_box = output_size * axis.grid
    box_end = per_box.cumsum(0)
    sample = torch.arange(total, device=device)
    box = torch.searchsorted(box_end, sample, right=True)
    within = sample - (box_end - per_box)[box]
    bin_index = within.div(axis.grid[box], rounding_mode="floor")
    in_bin = within - bin_index * axis.grid[box]
    position = _position(
        axis.start[box], axis.bin_size[box], bin_index, in_bin, axis.grid[box].to(axis.start.dtype)
    )
    inside = (position >= -1.0) & (position <= axis.size)
    low, high, (low_weight, high_weight) = _taps(position, axis.size)
    flat_bin = box * output_size + bin_index
    first = axis.first.flatten()[flat_bin]
    weights = axis.start.new_zeros(axis.first.numel(), axis.size)
    weights.index_put_((flat_bin, low - first), low_weight * inside, accumulate=True)
    weights.index_put_((flat_bin, high - first), high_weight * inside, accumulate=True)
    return weights


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
