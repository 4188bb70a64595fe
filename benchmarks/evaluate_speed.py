"""Seconds `docsam evaluate` takes on PAGE ground truth, scored against itself (the same files as PAGE
predictions, so every region is rasterised twice: once as ground truth, once as a prediction).

The pages are synthetic A4 scans at 300 dpi (2480×3508, one blank PNG linked under each name) with
`--regions` regions each, of four classes: two in three rectangles, one in three a 12-point outline
inside its box. The command runs as a user runs it, in a fresh process; its peak memory is reported too
(this script imports neither torch nor the benchmarks' common module, whose memory a forked child would
count as its own).

    python benchmarks/evaluate_speed.py --pages 500 --regions 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 2480, 3508
KINDS = (("TextRegion", "paragraph"), ("TextRegion", "heading"), ("ImageRegion", ""), ("TableRegion", ""))
PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"


def region_points(rng: np.random.Generator, index: int) -> str:
    """A rectangle, or every third region a 12-point outline inside its box, as PAGE's points."""
    x0, y0 = rng.uniform(100, WIDTH - 400), rng.uniform(100, HEIGHT - 300)
    x1, y1 = min(x0 + rng.uniform(80, 1800), WIDTH - 1), min(y0 + rng.uniform(20, 400), HEIGHT - 1)
    if index % 3:
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        points = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
    return " ".join(f"{int(x)},{int(y)}" for x, y in points)


def write_pages(folder: Path, pages: int, regions: int) -> None:
    blank = folder / "blank.png"
    cv2.imwrite(str(blank), np.full((HEIGHT, WIDTH), 255, dtype=np.uint8))
    split = folder / "gt"
    split.mkdir()
    rng = np.random.default_rng(0)
    for page in range(pages):
        name = f"p{page:04d}"
        body = ""
        for index in range(regions):
            element, kind = KINDS[index % len(KINDS)]
            typed = f' type="{kind}"' if kind else ""
            body += (
                f'<{element} id="r{index}"{typed}><Coords points="{region_points(rng, index)}"/></{element}>'
            )
        (split / f"{name}.xml").write_text(
            f'<?xml version="1.0" encoding="UTF-8"?><PcGts xmlns="{PAGE_NS}">'
            f'<Page imageFilename="{name}.png" imageWidth="{WIDTH}" imageHeight="{HEIGHT}">'
            f"{body}</Page></PcGts>",
            encoding="utf-8",
        )
        os.link(blank, split / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--regions", type=int, default=60, help="regions per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_pages(folder, args.pages, args.regions)
        split = folder / "gt"
        command = [sys.executable, "-m", "docsam_cli", "evaluate", str(split), "--pred", str(split)]
        command += ["--json", str(folder / "report.json")]
        log = folder / "evaluate.log"
        with log.open("w") as output:
            start = time.perf_counter()
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not this process's others'
            seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            sys.exit(log.read_text())
    peak = usage.ru_maxrss / 1024
    print(f"{args.pages} pages × {args.regions} regions: {seconds:.1f} s, peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
