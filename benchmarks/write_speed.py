"""Seconds to write one page's outputs (`PageWriter.write`) and how many masks are decoded doing it (whole
pages, and windows: a region's box only).

The page is synthetic: an A4 scan at 300 dpi (2480×3508) with `--instances` regions in a grid, their
edges ragged as a model's masks are (pixels flipped at random along the outline). Without the model, so
the figure is the writers' alone; the median of `--repeats` runs is reported.

    python benchmarks/write_speed.py --instances 100
    python benchmarks/write_speed.py --instances 100 --formats coco,page,alto,overlay,semantic,jsonl

`--writers 1,2,4` measures instead whether writing keeps up with a fast model: `docsam segment`'s batch
runner (`SegmentRun`: decoding threads, the model, writing threads, records, run files) over `--pages`
copies of the page saved as PNG, the model replaced by a stand-in that sleeps `--model-seconds` per page
(a GPU's forward pass, which leaves the host's cores free) and returns the page's instances. Pages/s per
writer count, beside the stand-in's own bound:

    python benchmarks/write_speed.py --writers 1,2,4 --pages 16 --model-seconds 0.1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
from pycocotools import mask as mask_utils

import model.instances
from benchmarks.common import positive_int
from docsam_cli.batch import SegmentRun, prepare_output_folder
from docsam_cli.inputs import LoadOptions, collect_documents, iter_page_tasks
from docsam_cli.runtime import GeometryOptions, ModelSpec
from docsam_cli.segment_request import SegmentRequest
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter, page_folders
from model.instances import PageInstances

CLASSES = ("text", "title", "list", "table", "figure")


def synthetic_page(count: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, PageInstances]:
    rng = np.random.default_rng(seed)
    columns = max(1, int(np.ceil(np.sqrt(count * width / height))))
    rows = int(np.ceil(count / columns))
    cell_w, cell_h = width // columns, height // rows
    rles, boxes = [], []
    for index in range(count):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        mask = np.zeros((height, width), np.uint8)
        corners = np.array(
            [
                [x + 8, y + 8],
                [x + cell_w - 8, y + 12],
                [x + cell_w - 10, y + cell_h - 8],
                [x + 6, y + cell_h - 10],
            ]
        )
        cv2.fillPoly(mask, [corners.astype(np.int32)], 1)
        window = mask[y : y + cell_h, x : x + cell_w]
        edge = (
            cv2.dilate(window, np.ones((3, 3), np.uint8)) ^ cv2.erode(window, np.ones((3, 3), np.uint8))
        ).astype(bool)
        window ^= (edge & (rng.random(window.shape) < 0.04)).astype(np.uint8)
        rles.append(mask_utils.encode(np.asfortranarray(mask)))
        boxes.append([x + 6, y + 8, x + cell_w - 8, y + cell_h - 8])
    labels = rng.integers(0, len(CLASSES), count)
    order = np.argsort([-int(mask_utils.area(rle)) for rle in rles], kind="stable")
    empty = mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
    semantic = [
        mask_utils.merge([rles[i] for i in range(count) if labels[i] == label])
        if (labels == label).any()
        else empty
        for label in range(len(CLASSES))
    ]
    instances = PageInstances(
        height,
        width,
        list(CLASSES),
        [rles[i] for i in order],
        np.asarray(boxes, dtype=np.float64)[order],
        rng.uniform(0.5, 1.0, count)[order],
        labels[order].astype(np.int64),
        semantic,
    )
    page = np.full((height, width, 3), 235, np.uint8)
    return page, instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--formats", default="coco,page,overlay,jsonl")
    parser.add_argument("--size", default="3508,2480", help="page H,W")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--writers", help="comma-separated writer thread counts: measure the batch runner")
    parser.add_argument("--pages", type=int, default=16, help="pages per run, with --writers")
    parser.add_argument("--model-seconds", type=float, default=0.1, help="the stand-in model's s/page")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads, with --writers")
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split(","))
    page, instances = synthetic_page(args.instances, height, width)
    if args.writers:
        pipeline(args, page, instances)
        return

    decodes = {"page": 0, "window": 0}
    decode, decode_window = mask_utils.decode, model.instances.decode_rle_window

    def counting_decode(rle):
        decodes["page"] += 1
        return decode(rle)

    def counting_window(rle, *box):
        decodes["window"] += 1
        return decode_window(rle, *box)

    mask_utils.decode = counting_decode
    model.instances.decode_rle_window = counting_window
    seconds = []
    with tempfile.TemporaryDirectory() as out:
        settings = OutputSettings(Path(out), frozenset(args.formats.split(",")), CLASSES)
        for repeat in range(args.repeats):
            decodes.update(page=0, window=0)
            started = time.perf_counter()
            PageWriter(settings).write(
                PageSource(Path(out) / "p.png", None, f"p{repeat}", page), instances, {}
            )
            seconds.append(time.perf_counter() - started)
    print(
        f"{args.instances} instances on {width}x{height}, formats {args.formats}: "
        f"write {statistics.median(seconds):.2f} s (median of {args.repeats}); masks decoded: "
        f"{decodes['page']} whole, {decodes['window']} inside their box"
    )


class _QuietReporter:
    """A `Reporter` that keeps the failures only."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def start(self, label: str) -> None:
        pass

    def advance(self) -> None:
        pass

    def error(self, message: str) -> None:
        self.errors.append(message)

    def data(self, line: str) -> None:
        pass

    def summary(self, lines) -> None:
        pass


def pipeline(args: argparse.Namespace, page: np.ndarray, instances: PageInstances) -> None:
    """Pages/s of the batch runner with a stand-in model of `--model-seconds` per page, per writer count."""

    def segment(images):
        time.sleep(args.model_seconds * len(images))
        return [instances for _ in images]

    formats = frozenset(args.formats.split(","))
    print(
        f"{args.pages} pages of {page.shape[1]}x{page.shape[0]}, {args.instances} instances each, formats "
        f"{args.formats}; stand-in model {args.model_seconds:.2f} s/page (at most "
        f"{1 / args.model_seconds:.1f} pages/s), {args.workers} decoding threads"
    )
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "pages"
        inputs.mkdir()
        for index in range(args.pages):
            cv2.imwrite(str(inputs / f"page{index:04d}.png"), page)
        for writers in (int(count) for count in args.writers.split(",")):
            out = Path(folder) / f"out-{writers}"
            request = SegmentRequest(
                inputs=(str(inputs),),
                class_names=CLASSES,
                domain="Benchmark",
                model=ModelSpec(),
                geometry=GeometryOptions(),
                out=out,
                formats=formats,
                workers=args.workers,
                writers=writers,
            )
            prepare_output_folder(out)
            reporter = _QuietReporter()

            def work(request=request):
                documents = collect_documents(request.inputs, skip_folders=page_folders(request.out))
                return iter_page_tasks(documents, LoadOptions())

            started = time.perf_counter()
            summary = SegmentRun(request, lambda: segment, reporter).run(work)
            seconds = time.perf_counter() - started
            if reporter.errors or summary.done != args.pages:
                raise SystemExit(f"the run failed: {reporter.errors[:3]}")
            print(f"writers {writers}: {args.pages / seconds:.2f} pages/s ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
