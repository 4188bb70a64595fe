"""What the segmentation benchmarks share: the model under test, the pages, and one timed pipeline run."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from docsam_cli.errors import InputError, UsageError
from docsam_cli.inputs import LoadOptions, collect_documents, iter_page_tasks
from docsam_cli.precision import PRECISIONS, network_autocast, precision_dtype
from docsam_cli.runtime import fit_threads_to_cpus, keep_freed_memory, pick_device
from model import DocSAM, DocSAMConfig, load_model, variant_config
from model.inference import Geometry, segment_pages
from model.instances import PageInstances

CLASS_NAMES = ("text", "table", "list", "title", "figure")
DOMAIN = "Benchmark"


def positive_int(text: str) -> int:
    """An argparse type for counts (pages, threads, batch sizes): an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser, variant: str = "base") -> None:
    parser.add_argument(
        "--variant",
        choices=["base", "large"],
        help=f"architecture (default: {variant}; with --weights, what the file says, as load_model reads it)",
    )
    parser.add_argument("--model-config", type=Path, help="JSON architecture config instead of --variant")
    parser.add_argument("--weights", type=Path, help="a checkpoint (default: random weights, seeded)")
    parser.set_defaults(default_variant=variant)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and pages")


def model_label(args: argparse.Namespace) -> str:
    return str(args.weights or args.model_config or f"DocSAM-{args.variant or args.default_variant}")


def build_model(args: argparse.Namespace) -> tuple[DocSAM, torch.device]:
    """The model the arguments name, in eval mode on their device (random weights unless --weights), in a
    process set up as `docsam` sets up its own."""
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        fit_threads_to_cpus()
    try:
        device = pick_device(args.device)
    except UsageError as error:  # no such device (CUDA on a machine without one): one line, no traceback
        raise SystemExit(str(error)) from None
    config = DocSAMConfig.from_json(args.model_config) if args.model_config else None
    torch.manual_seed(args.seed)
    if args.weights:
        return load_model(args.weights, variant=args.variant, config=config, device=device), device
    config = config or variant_config(args.variant or args.default_variant)
    return DocSAM(config).to(device).eval(), device


def synthetic_page(rng: np.random.Generator, height: int = 2339, width: int = 1654) -> np.ndarray:
    """A white A4 page at 200 dpi with dark text-like bands and a few grey blocks (BGR uint8)."""
    page = np.full((height, width, 3), 245, dtype=np.uint8)
    for top in range(150, height - 150, 60):
        if rng.random() < 0.85:
            right = int(rng.integers(width // 2, width - 150))
            page[top : top + 22, 150:right] = rng.integers(20, 80)
    for _ in range(3):
        y, x = int(rng.integers(0, height - 400)), int(rng.integers(0, width - 500))
        page[y : y + 300, x : x + 450] = rng.integers(100, 200)
    return page


def synthetic_pages(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthetic_page(rng) for _ in range(count)]


def folder_pages(folder: Path, count: int | None = None) -> list[np.ndarray]:
    """Decoded pages (images, PDF pages) under `folder`, in order; unreadable ones are skipped."""
    tasks = iter_page_tasks(collect_documents([str(folder)], recursive=True), LoadOptions())
    pages = []
    for task in tasks:
        if count is not None and len(pages) >= count:
            break
        if isinstance(task, InputError):
            continue
        try:
            pages.append(task.load().image)
        except InputError:
            continue
    return pages


def check_precision(name: str, device: torch.device) -> torch.dtype:
    if name not in PRECISIONS:
        raise SystemExit(f"unknown precision {name!r}")
    return precision_dtype(name, device)


def segment(
    model: DocSAM,
    pages: Sequence[np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    *,
    batch_size: int = 16,
    isolate: bool = False,
) -> list[PageInstances]:
    """`segment_pages` as `docsam segment` runs it: the network under `dtype` autocast."""
    with network_autocast(device, dtype):
        return segment_pages(
            model,
            pages,
            list(CLASS_NAMES),
            domain=DOMAIN,
            geometry=Geometry(),
            batch_size=batch_size,
            isolate_batch=isolate,
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(
    model: DocSAM,
    pages: Sequence[np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    *,
    batch_size: int,
    isolate: bool,
    pages_per_call: int,
) -> tuple[float, int, float | None]:
    """(pages per second, instances found, peak GPU memory in GiB or None) over `pages`, after one warm-up
    call of the size timed (kernel selection, the text-embedding cache, and on a GPU the allocator's blocks
    for that many windows: a warm-up page alone would leave the first call of several pages to allocate
    anew). With `isolate`, only whole calls of `pages_per_call` pages are timed (a last smaller call would
    meet new shapes), unless there are fewer pages than that."""
    group = min(pages_per_call, len(pages)) if isolate else 1
    segment(model, pages[:group], device, dtype, batch_size=batch_size, isolate=isolate)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = pages[: len(pages) // group * group]
    started = time.perf_counter()
    instances = 0
    for start in range(0, len(timed), group):
        results = segment(
            model, timed[start : start + group], device, dtype, batch_size=batch_size, isolate=isolate
        )
        instances += sum(len(result) for result in results)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return len(timed) / seconds, instances, peak
