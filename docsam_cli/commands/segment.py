"""`docsam segment`: parse options, load the model, run the batch, report."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from docsam_cli.app import app
from docsam_cli.batch import SegmentRun, SegmentSettings
from docsam_cli.inputs import (
    LoadOptions,
    collect_documents,
    iter_page_tasks,
    parse_page_ranges,
    set_max_image_pixels,
)
from docsam_cli.precision import network_autocast, precision_dtype
from docsam_cli.presets import describe_presets, resolve_prompts
from docsam_cli.runtime import load_for_inference, page_geometry, pick_device
from docsam_cli.weights import WeightsError
from docsam_cli.writers.alto_map import parse_alto_map
from docsam_cli.writers.page_map import parse_page_map
from docsam_cli.writers.page_outputs import FORMATS, OutputSettings
from model import CheckpointError
from model.inference import segment_pages

USAGE_ERROR = 2


def _usage(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(USAGE_ERROR)


@app.command("segment")
def segment(
    inputs: list[str] = typer.Argument(
        None, help="Image files, PDFs, directories, globs, or - to read paths from stdin (one per line)."
    ),
    out: Path = typer.Option(Path("docsam-out"), "--out", "-o", help="Output directory."),
    formats: str = typer.Option("coco,page,overlay,jsonl", "--format", help=f"Any of {','.join(FORMATS)}."),
    weights: str = typer.Option(
        "docsam-large",
        "--weights",
        "-w",
        help="Checkpoint path or model-zoo name (see download-weights --list).",
    ),
    variant: str | None = typer.Option(None, help="base or large (default: from the weights)."),
    model_config: Path | None = typer.Option(None, help="JSON architecture config for other variants."),
    classes: str | None = typer.Option(None, help="Comma-separated class names to find, e.g. table,figure."),
    domain: str | None = typer.Option(
        None, help='Domain / dataset name: background prompt "DOMAIN _background_" (default: the preset\'s).'
    ),
    preset: str | None = typer.Option(None, help="A known class list: publaynet (default) or doclaynet."),
    list_presets: bool = typer.Option(False, "--list-presets", help="Show the presets and exit."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", help="fp32 (the reference), bf16 or fp16 (CUDA)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into subdirectories."),
    dpi: float = typer.Option(200.0, help="PDF rendering resolution."),
    pages: str | None = typer.Option(None, help="PDF / multi-page TIFF pages, e.g. 1-3,7."),
    password: str | None = typer.Option(None, help="Password of encrypted PDFs."),
    max_image_pixels: int | None = typer.Option(
        None, help="Refuse larger images (decompression-bomb guard; default Pillow's 178 million)."
    ),
    short_side: str | None = typer.Option(
        None, help="Resize short side: N, or LOW,HIGH (uses (LOW+HIGH)//2; default 704,896 → 800)."
    ),
    window: str | None = typer.Option(None, help="Window size N or H,W (default 640, or the model's)."),
    stride: str | None = typer.Option(None, help="Window stride N or H,W (default half the window)."),
    keep_size: bool | None = typer.Option(
        None, "--keep-size/--no-keep-size", help="Keep-size resizing (default: on for the keepsize model)."
    ),
    batch_size: int = typer.Option(16, help="Windows per forward pass (16 as the reference)."),
    isolate: bool = typer.Option(
        False,
        "--isolate",
        help="Let windows of several pages share forward passes; results then never depend on batching "
        "(default: the reference's one-page-per-batch grouping, exact parity).",
    ),
    pages_per_batch: int = typer.Option(4, help="With --isolate: pages whose windows are batched together."),
    mask_format: str = typer.Option("rle", help="COCO segmentation: rle or polygon."),
    page_map: str | None = typer.Option(
        None,
        help="Class → PAGE region: JSON file, inline JSON, or class=Element:type,... (stamp=GraphicRegion)",
    ),
    alto_map: str | None = typer.Option(
        None,
        help="Class → ALTO block and tag label: JSON file, inline JSON, or class=Element:label,... "
        "(stamp=Illustration:StampZone)",
    ),
    overwrite: bool = typer.Option(False, help="Redo pages whose outputs already exist."),
    max_failures: int | None = typer.Option(None, help="Stop after more than N failed pages."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed page."),
    workers: int = typer.Option(2, help="Threads decoding / rendering pages ahead of the model."),
) -> None:
    """Segment pages into COCO JSON, PAGE XML, overlays and JSON lines (one line per page on stdout)."""
    console = Console(stderr=True)
    if list_presets:
        typer.echo(describe_presets())
        raise typer.Exit()
    try:
        chosen = frozenset(part.strip() for part in formats.split(",") if part.strip())
        if not chosen or not chosen <= set(FORMATS):
            raise ValueError(f"--format takes any of {','.join(FORMATS)}, got {formats!r}")
        if mask_format not in ("rle", "polygon"):
            raise ValueError("--mask-format is rle or polygon")
        if batch_size < 1 or pages_per_batch < 1 or workers < 1:
            raise ValueError("--batch-size, --pages-per-batch and --workers must be at least 1")
        class_names, domain_name = resolve_prompts(classes, domain, preset)
        load_options = LoadOptions(
            dpi=dpi, pages=parse_page_ranges(pages) if pages else None, password=password
        )
        mapping = parse_page_map(page_map) if page_map else None
        alto_mapping = parse_alto_map(alto_map) if alto_map else None
        torch_device = pick_device(device)
        dtype = precision_dtype(precision, torch_device)
        page_geometry(None, short_side, window, stride, keep_size)  # option syntax, before the model loads
    except ValueError as error:
        raise _usage(console, str(error)) from None
    if not inputs:
        raise _usage(console, "no inputs given (files, directories, globs or -)")

    try:
        loaded = load_for_inference(weights, variant, model_config, torch_device)
    except (WeightsError, CheckpointError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    geometry = page_geometry(loaded.weights.entry, short_side, window, stride, keep_size)
    set_max_image_pixels(max_image_pixels)

    def segmenter(images):
        with network_autocast(torch_device, dtype):
            return segment_pages(
                loaded.model,
                images,
                class_names,
                domain=domain_name,
                geometry=geometry,
                batch_size=batch_size,
                isolate_batch=isolate,
            )

    settings = SegmentSettings(
        output=OutputSettings(
            out_dir=out,
            formats=chosen,
            class_names=tuple(class_names),
            mask_format=mask_format,
            page_map=mapping,
            alto_map=alto_mapping,
        ),
        pages_per_batch=pages_per_batch if isolate else 1,
        overwrite=overwrite,
        max_failures=0 if fail_fast else max_failures,
        workers=workers,
    )
    documents = collect_documents(inputs, recursive=recursive, stdin=sys.stdin if "-" in inputs else None)
    progress = Progress(
        TextColumn("segment"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        bar = progress.add_task("pages", total=None)

        def emit(line: str) -> None:
            sys.stdout.write(line)
            sys.stdout.flush()

        def report(message: str) -> None:
            progress.console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)

        run = SegmentRun(settings, segmenter, emit, report, on_page=lambda: progress.advance(bar))
        summary = run.run(iter_page_tasks(documents, load_options))

    console.print(
        f"{summary.done} pages segmented, {summary.skipped} skipped (already done), "
        f"{len(summary.failures)} failed in {summary.seconds:.1f} s ({summary.pages_per_second:.2f} pages/s)"
        + ("; stopped early by the failure limit" if summary.stopped_early else ""),
        highlight=False,
    )
    for message in summary.failures:
        console.print(f"  failed: {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(summary.exit_code)
