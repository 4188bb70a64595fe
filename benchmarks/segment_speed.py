"""Pages per second and peak memory of the segmentation pipeline (model + post-processing + merging).

Random weights by default, as the reference's throughput figure (0.65 pages/s on one H100 for an A4 page:
7 windows, all 900 queries kept, fp32): with random weights every query passes the selection thresholds,
the heaviest case. Pages are synthetic A4 scans (200 dpi, 1654×2339) unless --pages-dir is given.

    python benchmarks/segment_speed.py --variant large --device cuda --precision bf16 --pages 20
    python benchmarks/segment_speed.py --model-config ../shared/fixtures/reference/tiny-config.json --pages 3
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from docsam_cli.inputs import LoadOptions, collect_documents, iter_page_tasks
from docsam_cli.precision import network_autocast, precision_dtype
from docsam_cli.runtime import pick_device
from model import DocSAM, DocSAMConfig, load_model, variant_config
from model.inference import Geometry, segment_pages


def synthetic_page(rng: np.random.Generator, height: int = 2339, width: int = 1654) -> np.ndarray:
    """A white page with dark text-like bands and a few grey blocks (BGR uint8)."""
    page = np.full((height, width, 3), 245, dtype=np.uint8)
    for top in range(150, height - 150, 60):
        if rng.random() < 0.85:
            right = int(rng.integers(width // 2, width - 150))
            page[top : top + 22, 150:right] = rng.integers(20, 80)
    for _ in range(3):
        y, x = int(rng.integers(0, height - 400)), int(rng.integers(0, width - 500))
        page[y : y + 300, x : x + 450] = rng.integers(100, 200)
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", choices=["base", "large"])
    parser.add_argument("--model-config", type=Path, help="JSON architecture config instead of --variant")
    parser.add_argument("--weights", type=Path, help="a checkpoint (default: random weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--pages", type=int, default=10, help="pages to time (after one warm-up page)")
    parser.add_argument("--pages-dir", type=Path, help="real pages (images/PDFs) instead of synthetic ones")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--isolate", action="store_true", help="batch windows of several pages together")
    parser.add_argument("--pages-per-batch", type=int, default=4)
    args = parser.parse_args()

    device = pick_device(args.device)
    dtype = precision_dtype(args.precision, device)
    config = DocSAMConfig.from_json(args.model_config) if args.model_config else variant_config(args.variant)
    torch.manual_seed(0)
    if args.weights:
        model = load_model(args.weights, config=config, device=device)
    else:
        model = DocSAM(config).to(device).eval()
    if args.pages_dir:
        tasks = iter_page_tasks(collect_documents([str(args.pages_dir)], recursive=True), LoadOptions())
        pages = [task.load().image for task in tasks if not isinstance(task, Exception)][: args.pages + 1]
    else:
        rng = np.random.default_rng(0)
        pages = [synthetic_page(rng) for _ in range(args.pages + 1)]
    names = ["text", "table", "list", "title", "figure"]
    group = args.pages_per_batch if args.isolate else 1

    def run(batch: list[np.ndarray]) -> list:
        with network_autocast(device, dtype):
            return segment_pages(
                model,
                batch,
                names,
                domain="Benchmark",
                geometry=Geometry(),
                batch_size=args.batch_size,
                isolate_batch=args.isolate,
            )

    run(pages[:1])  # warm-up (kernels, text-embedding cache)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    timed = pages[1:]
    started = time.perf_counter()
    instances = 0
    for start in range(0, len(timed), group):
        instances += sum(len(result) for result in run(timed[start : start + group]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started

    label = args.model_config.name if args.model_config else args.variant
    print(f"model {label}, device {device}, precision {args.precision}, isolate {args.isolate}")
    print(f"pages {len(timed)}, page size {timed[0].shape[1]}x{timed[0].shape[0]}, instances {instances}")
    print(f"pages/s {len(timed) / seconds:.3f}  ({seconds / len(timed):.2f} s/page)")
    print(f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
