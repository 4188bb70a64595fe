"""Seconds per RoIAlign call on the CPU: torchvision's `roi_align` beside `model.roi_align.roi_align_tokens`,
for the boxes of one decoder stage of an A4 page (7 windows of 640², 900 queries each, DocSAM-Base's 256
channels) on one feature map (`--stride`, 4 by default: the largest map the decoder pools).

The box sizes are the case: `small` boxes (side 4–254 px, mostly small: what random weights give) or
`large` ones (20–520 px: pages of big regions). The first call of each is left out (it allocates); the
median of `--repeats` is reported.

    python benchmarks/roi_align_speed.py --boxes large --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torchvision.ops import roi_align

from benchmarks.common import positive_int
from docsam_cli.runtime import keep_freed_memory
from model.roi_align import TokenMap, roi_align_tokens

WINDOWS, QUERIES, CHANNELS, WINDOW_SIDE, BINS = 7, 900, 256, 640, 7


def boxes(kind: str, generator: torch.Generator) -> torch.Tensor:
    """(R, 5) rois: window index, x1, y1, x2, y2 in window pixels."""
    count = WINDOWS * QUERIES
    window = torch.arange(WINDOWS).repeat_interleave(QUERIES)[:, None].float()
    centre = torch.rand(count, 2, generator=generator) * WINDOW_SIDE
    uniform = torch.rand(count, 2, generator=generator)
    sides = uniform**2 * 250 + 4 if kind == "small" else uniform * 500 + 20
    return torch.cat([window, centre - sides / 2, centre + sides / 2], 1)


def median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boxes", choices=["small", "large"], default="large")
    parser.add_argument("--stride", type=int, default=4, choices=[4, 8, 16, 32])
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument(
        "--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `docsam` runs
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    side = WINDOW_SIDE // args.stride
    feature = torch.randn(WINDOWS, CHANNELS, side, side, generator=generator)
    table = TokenMap(feature.flatten(2).transpose(1, 2).contiguous(), (side, side), 1 / args.stride)
    rois = boxes(args.boxes, generator)
    grid = torch.ceil((rois[:, 3:] - rois[:, 1:3]).clamp(min=args.stride) / args.stride / BINS)
    print(
        f"{len(rois)} {args.boxes} boxes on a {side}×{side} map (stride {args.stride}), {CHANNELS} channels, "
        f"{torch.get_num_threads()} threads; samples per bin: mean {grid.prod(1).mean():.1f}"
    )
    scale = 1 / args.stride
    reference = median_seconds(lambda: roi_align(feature, rois, BINS, scale, -1, False), args.repeats)
    tables = median_seconds(lambda: roi_align_tokens([table], rois, BINS), args.repeats)
    print(f"torchvision roi_align   {reference:8.3f} s")
    print(f"roi_align_tokens        {tables:8.3f} s  ({reference / tables:.1f}× faster)")


if __name__ == "__main__":
    main()
