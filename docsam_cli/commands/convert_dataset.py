"""`docsam convert-dataset`: annotation sets in PAGE, ALTO, COCO, ... → the unified training layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from docsam_cli.datasets.classes import ClassFilter, parse_mapping, parse_names
from docsam_cli.datasets.convert import FORMATS
from docsam_cli.datasets.pipeline import REPORT_FILE, ConvertOptions, OutputExists, convert
from docsam_cli.datasets.records import LEVELS
from docsam_cli.datasets.report import ConversionReport
from docsam_cli.datasets.split import parse_split

_DEFAULT_LEVELS = ["regions"]
_NONE: list[str] = []
_FORMAT_HELP = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items())


def main(
    sources: Annotated[
        list[Path], typer.Argument(help="Annotation files, or folders to search recursively.")
    ],
    source_format: Annotated[str, typer.Option("--from", help=f"Source format. {_FORMAT_HELP}.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (the unified layout).")],
    level: Annotated[
        list[str],
        typer.Option(help=f"What becomes an instance: {', '.join(LEVELS)} (repeat or comma-list)."),
    ] = _DEFAULT_LEVELS,
    mapping: Annotated[
        list[str], typer.Option("--map", help="Rename or merge classes: old=new (repeatable).")
    ] = _NONE,
    drop: Annotated[list[str], typer.Option(help="Leave out these classes (after --map).")] = _NONE,
    keep: Annotated[list[str], typer.Option(help="Keep only these classes (after --map).")] = _NONE,
    split_spec: Annotated[
        str | None, typer.Option("--split", help="Split into sub-folders, e.g. train=0.8,val=0.1,test=0.1.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    symlink: Annotated[
        bool, typer.Option("--symlink/--copy", help="Link images instead of copying.")
    ] = False,
    dataset_name: Annotated[
        str | None,
        typer.Option(help="Domain token of the background prompt '<name> _background_' [--out's name]."),
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Image folder (COCO, VOC, YOLO).")] = None,
    classes: Annotated[Path | None, typer.Option(help="Class list file (YOLO).")] = None,
    dpi: Annotated[float, typer.Option(min=10, max=1200, help="Rendering resolution of PDF pages.")] = 150.0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
) -> None:
    """Convert annotated pages into the unified layout read by `docsam train` and `docsam evaluate`."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    fmt = FORMATS.get(source_format.lower())
    if fmt is None:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--from")
    levels = frozenset(parse_names(level))
    if not levels or not levels <= fmt.levels:
        supported = ", ".join(sorted(fmt.levels))
        raise typer.BadParameter(f"{fmt.name} supports {supported}", param_hint="--level")
    try:
        class_filter = ClassFilter(
            parse_mapping(mapping), frozenset(parse_names(drop)), frozenset(parse_names(keep)) or None
        )
        fractions = parse_split(split_spec) if split_spec else None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    options = ConvertOptions(
        fmt=fmt,
        sources=sources,
        out=out,
        levels=levels,
        classes=class_filter,
        dataset_name=dataset_name if dataset_name is not None else out.absolute().name,
        split=fractions,
        seed=seed,
        symlink=symlink,
        overwrite=overwrite,
        images=images,
        class_list=classes,
        dpi=dpi,
    )
    try:
        with console.status("converting...") as status:
            report = convert(options, progress=lambda name: status.update(f"converted {name}"))
    except OutputExists as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    for line in report.errors:
        console.print(f"error: {line}", markup=False)
    _summary(console, report, out)
    if report.errors:
        raise typer.Exit(1)


def _summary(console: Console, report: ConversionReport, out: Path) -> None:
    table = Table(title=f"{report.images} images → {out}", title_justify="left")
    table.add_column("class")
    table.add_column("instances", justify="right")
    for name, count in sorted(report.instances.items()):
        table.add_row(name, str(count))
    console.print(table)
    for title, tally in (("fixed", report.fixed), ("dropped", report.dropped)):
        for reason, count in sorted(tally.items()):
            console.print(f"{title}: {count} × {reason}", markup=False)
    if report.splits:
        console.print("splits: " + ", ".join(f"{name} {count}" for name, count in report.splits.items()))
    if report.empty_images:
        console.print(f"{report.empty_images} images have no instance (kept as negatives)")
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False)
    if report.errors:
        console.print(f"{len(report.errors)} files or pages failed (listed above)", markup=False)
    console.print(f"details: {out / REPORT_FILE}", markup=False)
