"""`docsam segment`: options → a `SegmentRequest` → `docsam_cli.batch.run_segment`, shown on the console.

The option defaults are `SegmentRequest`'s (and `ModelSpec`'s); each option is parsed once, here.
`docsam_cli.batch`, and with it torch, is imported only when the command runs. Under torchrun every process
runs this same command; `docsam_cli.batch_ranks` has them share the pages.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from docsam_cli.commands.options import (
    Device,
    KeepSize,
    ModelConfig,
    PrecisionChoice,
    ShortSide,
    Stride,
    VariantChoice,
    Window,
    checked,
    max_image_pixels_option,
    parse_output_folder,
    path_arguments,
    typed,
)
from docsam_cli.console import RUN_WIDE, ConsoleReporter, message_options, write_data
from docsam_cli.distributed import launched_rank
from docsam_cli.errors import UsageError
from docsam_cli.inputs import MAX_DPI, PageRanges, parse_page_ranges
from docsam_cli.interruption import terminate_as_interrupt
from docsam_cli.presets import (
    DEFAULT_PRESET,
    PRESETS,
    checkpoint_preset,
    describe_presets,
    resolve_prompts,
)
from docsam_cli.presets import Preset as PresetEntry
from docsam_cli.runtime import GeometryOptions, ModelSpec
from docsam_cli.segment_request import SegmentRequest
from docsam_cli.writers.alto_map import parse_alto_map
from docsam_cli.writers.class_map import ClassMap, unmatched_warning
from docsam_cli.writers.formats import FORMATS, MaskFormat, parse_formats
from docsam_cli.writers.page_map import parse_page_map

INPUT, MODEL, CLASSES, OUTPUT, BATCH = "Input", "Model", "Classes", "Output", "Batch"  # help panels
DEFAULT = SegmentRequest
DEFAULT_FORMATS = [",".join(sorted(DEFAULT.formats, key=FORMATS.index))]  # a list: --format repeats
PresetName = Literal[tuple(PRESETS)]  # the keys of PRESETS, as choices

logger = logging.getLogger(__name__)


def _list_presets(value: bool) -> None:
    if value:
        write_data(describe_presets() + "\n")
        raise typer.Exit()


Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="INPUT",
        help="Image files, PDFs, folders, globs, or - to read paths from stdin (one per line).",
        show_default=False,
    ),
]
Recursive = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into subfolders.", rich_help_panel=INPUT)
]
Dpi = Annotated[
    float, typer.Option(min=1, max=MAX_DPI, help="PDF rendering resolution.", rich_help_panel=INPUT)
]
Pages = Annotated[
    PageRanges | None,
    typer.Option(
        parser=checked(parse_page_ranges),
        metavar="RANGES",
        help="Pages of PDFs and multi-page TIFFs, e.g. 1-3,7 or 5- (default: all).",
        rich_help_panel=INPUT,
    ),
]
Password = Annotated[str | None, typer.Option(help="Password of encrypted PDFs.", rich_help_panel=INPUT)]
MaxImagePixels = max_image_pixels_option("images and PDF pages", INPUT)
Weights = Annotated[
    str,
    typer.Option(
        "--weights",
        "-w",
        help="Checkpoint file, a run's folder (its model.safetensors) or model-zoo name (see "
        "download-weights --list).",
        rich_help_panel=MODEL,
    ),
]
Classes = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated class names to find, e.g. table,figure (a comma inside a name: \\,).",
        rich_help_panel=CLASSES,
    ),
]
Preset = Annotated[
    PresetName | None,
    typer.Option(
        case_sensitive=False,
        help="A known class list and domain, see --list-presets (default without --classes: the classes "
        "and dataset name of the weights, stored by docsam train/finetune or known for a zoo model, else "
        f"{DEFAULT_PRESET}).",
        rich_help_panel=CLASSES,
    ),
]
Domain = Annotated[
    str | None,
    typer.Option(
        help="Domain, the first word(s) of the background prompt 'DOMAIN _background_' "
        "(default: the preset's or the weights' dataset name; none with --classes).",
        rich_help_panel=CLASSES,
    ),
]
ListPresets = Annotated[
    bool,
    typer.Option(
        "--list-presets",
        callback=_list_presets,
        is_eager=True,
        expose_value=False,
        help="Show the presets and exit.",
        rich_help_panel=CLASSES,
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        parser=checked(parse_output_folder),
        metavar="FOLDER",
        help="Output folder.",
        rich_help_panel=OUTPUT,
    ),
]
Formats = Annotated[
    list[str],
    typer.Option(
        "--format",
        metavar="FORMAT,...",
        help=f"Outputs to write, any of {', '.join(FORMATS)} (repeat or comma-list; JSON lines go to "
        "stdout; under torchrun, each process's to OUT/jsonl/rank-K.jsonl).",
        rich_help_panel=OUTPUT,
    ),
]
MaskFormatChoice = Annotated[
    MaskFormat, typer.Option(case_sensitive=False, help="How COCO stores masks.", rich_help_panel=OUTPUT)
]
PageMapOption = Annotated[
    ClassMap | None,
    typer.Option(
        parser=checked(parse_page_map),
        metavar="MAP",
        help="Class → PAGE region: a JSON file, inline JSON, or class=Element[:type],... "
        "(e.g. stamp=GraphicRegion:stamp).",
        rich_help_panel=OUTPUT,
    ),
]
AltoMapOption = Annotated[
    ClassMap | None,
    typer.Option(
        parser=checked(parse_alto_map),
        metavar="MAP",
        help="Class → ALTO block and tag label: a JSON file, inline JSON, or class=Element[:label],... "
        "(e.g. stamp=Illustration:StampZone).",
        rich_help_panel=OUTPUT,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo pages whose outputs already exist, also with classes other than the output folder's.",
        rich_help_panel=OUTPUT,
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        min=1,
        help="Windows per forward pass (16 as the reference; without --isolate, another size changes the "
        "results, as it would the reference's).",
        rich_help_panel=BATCH,
    ),
]
Isolate = Annotated[
    bool,
    typer.Option(
        "--isolate",
        help="Let windows of several pages share forward passes; results then never depend on batching "
        "(default: one page per batch, as the reference: exact parity).",
        rich_help_panel=BATCH,
    ),
]
PagesPerBatch = Annotated[
    int, typer.Option(min=1, help="With --isolate: pages batched together.", rich_help_panel=BATCH)
]
Workers = Annotated[
    int,
    typer.Option(
        min=1, help="Threads decoding and rendering pages ahead of the model.", rich_help_panel=BATCH
    ),
]
Writers = Annotated[
    int,
    typer.Option(
        min=1,
        help="Threads writing pages' outputs while the model segments the next pages.",
        rich_help_panel=BATCH,
    ),
]
MaxFailures = Annotated[
    int | None, typer.Option(min=0, help="Stop once more than N pages have failed.", rich_help_panel=BATCH)
]
FailFast = Annotated[
    bool, typer.Option("--fail-fast", help="Stop at the first failed page.", rich_help_panel=BATCH)
]


def segment(
    ctx: typer.Context,
    inputs: Inputs = None,
    recursive: Recursive = DEFAULT.recursive,
    dpi: Dpi = DEFAULT.dpi,
    pages: Pages = None,
    password: Password = None,
    max_image_pixels: MaxImagePixels = DEFAULT.max_image_pixels,
    weights: Weights = ModelSpec.weights,
    variant: VariantChoice = None,
    model_config: ModelConfig = None,
    device: Device = ModelSpec.device,
    precision: PrecisionChoice = ModelSpec.precision,
    classes: Classes = None,
    preset: Preset = None,
    domain: Domain = None,
    list_presets: ListPresets = False,
    short_side: ShortSide = None,
    window: Window = None,
    stride: Stride = None,
    keep_size: KeepSize = None,
    out: Out = DEFAULT.out,
    format_values: Formats = DEFAULT_FORMATS,
    mask_format: MaskFormatChoice = DEFAULT.mask_format,
    page_map: PageMapOption = None,
    alto_map: AltoMapOption = None,
    overwrite: Overwrite = DEFAULT.overwrite,
    batch_size: BatchSize = DEFAULT.batch_size,
    isolate: Isolate = DEFAULT.isolate,
    pages_per_batch: PagesPerBatch = DEFAULT.pages_per_batch,
    workers: Workers = DEFAULT.workers,
    writers: Writers = DEFAULT.writers,
    max_failures: MaxFailures = DEFAULT.max_failures,
    fail_fast: FailFast = False,
) -> None:
    """Segment pages into COCO JSON, PAGE XML, overlays and JSON lines (one line per page on stdout).

    Pages already done in --out are skipped (rerun after an interruption); --overwrite redoes them.
    Several GPUs or machines: run the same command under torchrun, the processes share the pages.
    """
    try:
        # Every --format given, not only the last; each a list of its own, so an empty one is refused.
        formats = frozenset().union(*map(parse_formats, format_values))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--format") from None
    if not inputs:
        raise UsageError("no inputs given (files, folders, globs, or - to read paths from stdin)")
    if fail_fast and max_failures is not None:  # two limits: neither would say which one stops the run
        raise UsageError("--fail-fast is --max-failures 0; give one of them")
    if typed(ctx, "pages_per_batch") and not isolate:  # one page per batch without it, whatever was asked
        raise UsageError("--pages-per-batch needs --isolate (without it each page is a batch of its own)")
    try:
        inputs = path_arguments(inputs, "INPUT")
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        stored = _stored_classes(weights) if classes is None and preset is None else None
        class_names, prompt_domain = resolve_prompts(classes, domain, preset, default=stored)
        geometry = GeometryOptions.parse(short_side, window, stride, keep_size)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for option, class_map in (("--page-map", page_map), ("--alto-map", alto_map)):
        warning = unmatched_warning(option, class_map, class_names)
        if warning and launched_rank() == 0:  # once per run, not once per process
            logger.warning(warning)
    request = SegmentRequest(
        inputs=tuple(inputs),
        class_names=tuple(class_names),
        domain=prompt_domain,
        model=ModelSpec(weights, variant, model_config, device, precision),
        geometry=geometry,
        out=out,
        formats=formats,
        recursive=recursive,
        dpi=dpi,
        pages=pages,
        password=password,
        max_image_pixels=max_image_pixels or None,
        workers=workers,
        writers=writers,
        batch_size=batch_size,
        isolate=isolate,
        pages_per_batch=pages_per_batch,
        mask_format=mask_format,
        page_map=page_map,
        alto_map=alto_map,
        overwrite=overwrite,
        max_failures=0 if fail_fast else max_failures,
    )
    from docsam_cli.batch import run_segment  # the model's dependencies, loaded only now

    with terminate_as_interrupt(), ConsoleReporter(quiet=message_options().quiet) as reporter:
        summary = run_segment(request, reporter)
    raise typer.Exit(summary.exit_code)


def _stored_classes(weights: str) -> PresetEntry | None:
    """The classes the weights were trained with (see `checkpoint_preset`), said with -v. A file that
    cannot be read raises `model.CheckpointError`, a ValueError: a usage error before any page."""
    stored = checkpoint_preset(weights)
    if stored is not None:
        logger.info(
            "no --classes or --preset: using %s (%s; dataset %r)",
            stored.description,
            ", ".join(stored.classes),
            stored.domain,
            extra=RUN_WIDE,
        )
    return stored
