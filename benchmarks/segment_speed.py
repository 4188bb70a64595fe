"""Pages per second of the segmentation pipeline (network, post-processing, merging), and what limits it.

Random weights by default (seeded), as the reference's throughput figure (0.66 pages/s for DocSAM-Large on
one H100 for an A4 page: 7 patches, fp32): with random weights every query passes the selection
thresholds, the heaviest case for post-processing. Pages are synthetic A4 scans (200 dpi, 1654×2339, a
thumbnail + 6 windows) unless --pages-dir is given. Modes:

    (default)       pages/s and peak memory for one setting
    --breakdown     seconds per stage (backbone, pixel decoder, text encoder, query decoder,
                    post-processing, merging + mapping, writing) beside its FLOPs and GFLOP/s
    --count-syncs   device → host synchronisations per page, by stage
    --kernels       one page under torch.profiler: per stage the host's seconds beside its kernels'
                    seconds, and the operators that take them (on a CPU, ranked by their own CPU time)
    --sweep         (CUDA) pages/s and peak memory for fp32/bf16 × batch 8/16/32 × isolated or not
    --inputs DIR    pages/s of decoding/rendering DIR with --workers threads, beside the model's pages/s

--breakdown --gpu-paths counts operators as a GPU would run them (its seconds mean nothing), on a CPU.

Examples (run from the repository root):

    python -m benchmarks.segment_speed --variant large --device cuda --precision bf16 --pages 20
    python -m benchmarks.segment_speed --model-config ../shared/fixtures/reference/tiny-config.json \\
        --device cpu --threads 1 --pages 1 --breakdown
    python -m benchmarks.segment_speed --model-config ../shared/fixtures/reference/tiny-config.json \\
        --device cpu --pages 1 --count-syncs
    python -m benchmarks.segment_speed --variant large --device cuda --sweep --pages 8
    python -m benchmarks.segment_speed --model-config ../shared/fixtures/reference/tiny-config.json \\
        --device cpu --inputs ../shared/data/pdfs/pdf-docling-tests --workers 2 --pages 6

--json FILE appends one JSON record of the figures per run (the GPU script collects them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks import breakdown, stage_profile, syncs
from benchmarks.common import (
    add_model_arguments,
    build_model,
    check_precision,
    folder_pages,
    model_label,
    positive_int,
    synthetic_pages,
    throughput,
)
from docsam_cli.batch_ranks import Alone
from docsam_cli.inputs import iter_pages
from docsam_cli.precision import PRECISIONS

SWEEP_PRECISIONS = ("fp32", "bf16")
SWEEP_BATCH_SIZES = (8, 16, 32)


def main() -> None:
    args = _parser().parse_args()
    model, device = build_model(args)
    dtype = check_precision(args.precision, device)
    if args.inputs:
        _inputs(args, model, device, dtype)
        return
    pages = (
        folder_pages(args.pages_dir, args.pages) if args.pages_dir else synthetic_pages(args.pages, args.seed)
    )
    if not pages:
        raise SystemExit(f"no readable pages in {args.pages_dir}")
    header = f"model {model_label(args)}, device {device}, threads {torch.get_num_threads()}"
    print(f"{header}, {len(pages)} page(s) of {pages[0].shape[1]}x{pages[0].shape[0]}", flush=True)
    if args.breakdown:
        _breakdown(args, model, device, dtype, pages)
    elif args.count_syncs:
        _count_syncs(args, model, device, dtype, pages)
    elif args.kernels:
        _kernels(args, model, device, dtype, pages)
    elif args.sweep:
        _sweep(args, model, device, pages)
    else:
        _throughput(args, model, device, dtype, pages)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument(
        "--pages", type=positive_int, default=10, help="pages to measure (after a warm-up page)"
    )
    parser.add_argument("--pages-dir", type=Path, help="real pages (images/PDFs) instead of synthetic ones")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass")
    parser.add_argument("--isolate", action="store_true", help="batch windows of several pages together")
    parser.add_argument(
        "--pages-per-batch", type=positive_int, default=4, help="pages per call with --isolate"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--breakdown", action="store_true", help="seconds and FLOPs per pipeline stage")
    mode.add_argument("--count-syncs", action="store_true", help="device → host synchronisations per page")
    mode.add_argument(
        "--kernels", action="store_true", help="host vs kernel seconds per stage, top operators"
    )
    mode.add_argument("--sweep", action="store_true", help="CUDA: precisions × batch sizes × isolation")
    mode.add_argument("--inputs", type=Path, help="folder to decode: input pages/s beside model pages/s")
    parser.add_argument("--workers", type=positive_int, default=2, help="decoding threads for --inputs")
    parser.add_argument(
        "--gpu-paths",
        action="store_true",
        help="--breakdown through the code paths a GPU takes, for its operator counts on a CPU",
    )
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line to this file")
    return parser


def _throughput(args, model, device, dtype, pages) -> None:
    rate, instances, peak = _measure(args, model, device, dtype, pages)
    print(f"precision {args.precision}, batch size {args.batch_size}, isolate {args.isolate}")
    print(f"pages/s {rate:.3f}  ({1 / rate:.2f} s/page), instances {instances}")
    print(f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if peak is not None:
        print(f"peak GPU memory {peak:.2f} GiB")
    _record(
        args,
        mode="throughput",
        precision=args.precision,
        batch_size=args.batch_size,
        isolate=args.isolate,
        pages_per_s=rate,
        instances=instances,
        peak_gpu_gib=peak,
    )


def _measure(args, model, device, dtype, pages) -> tuple[float, int, float | None]:
    """`throughput` at the command line's --batch-size, --isolate and --pages-per-batch."""
    return throughput(
        model,
        pages,
        device,
        dtype,
        batch_size=args.batch_size,
        isolate=args.isolate,
        pages_per_call=args.pages_per_batch,
    )


def _breakdown(args, model, device, dtype, pages) -> None:
    paths = breakdown.gpu_code_paths() if args.gpu_paths else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as out_dir, paths:
        result = breakdown.measure(
            model, pages, device, dtype, out_dir=Path(out_dir), batch_size=args.batch_size
        )
    print(f"precision {args.precision}; FLOPs counted by FlopCounterMode (matrix products, convolutions,")
    print("attention; no element-wise work); text encoder: cached embeddings, the FLOPs of its first call")
    print("divided by the pages measured, as every figure below is per page")
    print(result.table())
    _record(
        args,
        mode="breakdown",
        precision=args.precision,
        seconds=result.seconds,
        flops=result.flops,
        operators=result.operators,
        after_backbone_ratio=result.after_backbone_ratio(),
    )


def _count_syncs(args, model, device, dtype, pages) -> None:
    count = syncs.count_syncs(model, pages, device, dtype)
    print(count.report(len(pages)))
    _record(
        args,
        mode="count-syncs",
        method=count.method,
        per_page=sum(count.by_stage.values()) / len(pages),
        by_stage={k: v / len(pages) for k, v in count.by_stage.items()},
        by_site={k: v / len(pages) for k, v in count.by_site.most_common(30)},
    )


def _kernels(args, model, device, dtype, pages) -> None:
    with tempfile.TemporaryDirectory() as out_dir:
        report = stage_profile.profile_page(
            model, pages, device, dtype, out_dir=Path(out_dir), batch_size=args.batch_size
        )
    print(f"precision {args.precision}; one page profiled after a warm-up page")
    print(report.table())
    _record(
        args,
        mode="kernels",
        precision=args.precision,
        host_seconds=report.host_seconds,
        kernel_seconds=report.kernel_seconds,
    )


def _sweep(args, model, device, pages) -> None:
    if device.type != "cuda":
        raise SystemExit("--sweep needs a CUDA device")
    print(f"{'precision':<10}{'batch':>6}{'isolate':>9}{'pages/s':>10}{'peak GiB':>10}", flush=True)
    for precision in SWEEP_PRECISIONS:
        dtype = check_precision(precision, device)
        for batch_size in SWEEP_BATCH_SIZES:
            for isolate in (False, True):
                rate, _, peak = throughput(
                    model,
                    pages,
                    device,
                    dtype,
                    batch_size=batch_size,
                    isolate=isolate,
                    pages_per_call=max(args.pages_per_batch, batch_size // 7 + 1),
                )
                print(f"{precision:<10}{batch_size:>6}{isolate!s:>9}{rate:10.2f}{peak:10.2f}", flush=True)
                _record(
                    args,
                    mode="sweep",
                    precision=precision,
                    batch_size=batch_size,
                    isolate=isolate,
                    pages_per_s=rate,
                    peak_gpu_gib=peak,
                )
                torch.cuda.empty_cache()


def _inputs(args, model, device, dtype) -> None:
    started = time.perf_counter()
    decoded, failed = [], 0
    ahead = Alone().look_ahead(args.workers, args.pages_per_batch)  # as `docsam segment --workers` decodes
    for item in iter_pages([str(args.inputs)], recursive=True, workers=args.workers, ahead=ahead):
        if isinstance(item, Exception):
            failed += 1
            continue
        decoded.append(item.image)
        if len(decoded) >= args.pages:
            break
    input_seconds = time.perf_counter() - started
    if not decoded:
        raise SystemExit(f"nothing decodable in {args.inputs}")
    input_rate = len(decoded) / input_seconds
    sizes = {page.shape[:2] for page in decoded}
    model_rate, _, _ = _measure(args, model, device, dtype, decoded)
    print(f"inputs {args.inputs}: {len(decoded)} pages ({failed} unreadable skipped), {len(sizes)} sizes")
    print(f"decoding/rendering with {args.workers} worker(s): {input_rate:8.2f} pages/s")
    print(f"model {model_label(args)} on {device} ({args.precision}): {model_rate:8.2f} pages/s")
    verdict = "keeps up" if input_rate >= model_rate else "is the bottleneck"
    print(f"decoding {verdict} ({input_rate / model_rate:.1f}x the model's rate)")
    _record(
        args,
        mode="inputs",
        workers=args.workers,
        input_pages_per_s=input_rate,
        model_pages_per_s=model_rate,
        pages=len(decoded),
    )


def _record(args, **figures) -> None:
    if args.json is None:
        return
    record = {
        "model": model_label(args),
        "device": args.device,
        "threads": torch.get_num_threads(),
        **figures,
    }
    with args.json.open("a") as handle:
        handle.write(json.dumps(record, default=_plain) + "\n")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


if __name__ == "__main__":
    main()
