"""`docsam convert-dataset`: annotation sets in PAGE, ALTO, COCO, ... → the unified training layout.

Only the format registry and option parsers are imported here; the readers, the geometry (OpenCV,
pycocotools) and the writer are imported when the command runs.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from docsam_cli.commands.options import (
    checked,
    max_image_pixels_option,
    parse_output_folder,
    path_arguments,
    typed,
)
from docsam_cli.console import message_options, print_error, print_plain, shows_progress, stderr_console
from docsam_cli.datasets.classes import ClassFilter, parse_mapping, parse_names
from docsam_cli.datasets.convert import FORMATS
from docsam_cli.datasets.convert.base import PDF_PAGE_DPI, Format
from docsam_cli.datasets.records import DEFAULT_LEVELS, LEVELS, parse_levels
from docsam_cli.datasets.report import ConversionReport
from docsam_cli.datasets.split import parse_split
from docsam_cli.errors import ExitCode
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS
from docsam_cli.interruption import terminate_as_interrupt
from docsam_cli.names import display_path, output_text
from docsam_cli.presets import refuse_undecodable

if TYPE_CHECKING:
    from docsam_cli.datasets.pipeline import ConvertOptions

SourceFormat = enum.Enum("SourceFormat", {name: name for name in FORMATS}, type=str)

_INPUT = "Input"
_CLASSES = "Classes"
_OUTPUT = "Output"
_PAGES = "Page images"
MaxImagePixels = max_image_pixels_option("images and PDF pages (ICDAR 2013)", _PAGES)
_NONE: list[str] = []
_FORMAT_HELP = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items())


def main(
    ctx: typer.Context,
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Annotation files, or folders to search recursively.",
            show_default=False,
            metavar="SOURCE",
        ),
    ],
    source_format: Annotated[
        SourceFormat,
        typer.Option(
            "--from", case_sensitive=False, help=f"Source format. {_FORMAT_HELP}.", rich_help_panel=_INPUT
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            parser=checked(parse_output_folder),
            metavar="FOLDER",
            help="Output folder (the unified layout).",
            rich_help_panel=_OUTPUT,
        ),
    ],
    level: Annotated[
        list[str],
        typer.Option(
            metavar="[" + "|".join(LEVELS) + "]",
            help="What becomes an instance (repeat or comma-list); the formats support different levels.",
            rich_help_panel=_INPUT,
        ),
    ] = DEFAULT_LEVELS,
    images: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Folder of the images (ICDAR 2013: of the PDFs) when they are not where the annotations "
            "say; searched first, by path and by file name. YOLO: the images are walked here and SRC "
            "holds the labels.",
            rich_help_panel=_INPUT,
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Class list file (YOLO).", rich_help_panel=_INPUT),
    ] = None,
    dpi: Annotated[
        float,
        typer.Option(
            min=10,
            max=1200,
            help="Rendering resolution of PDF pages (ICDAR 2013).",
            rich_help_panel=_PAGES,
        ),
    ] = PDF_PAGE_DPI,
    max_image_pixels: MaxImagePixels = DEFAULT_MAX_IMAGE_PIXELS,
    mapping: Annotated[
        list[str],
        typer.Option(
            "--map",
            help=r"Rename or merge classes: old=new (repeatable; \, and \= inside a name).",
            rich_help_panel=_CLASSES,
        ),
    ] = _NONE,
    drop: Annotated[
        list[str],
        typer.Option(
            help=r"Leave out these classes (after --map; \, inside a name).", rich_help_panel=_CLASSES
        ),
    ] = _NONE,
    keep: Annotated[
        list[str],
        typer.Option(
            help=r"Keep only these classes (after --map; \, inside a name).", rich_help_panel=_CLASSES
        ),
    ] = _NONE,
    dataset_name: Annotated[
        str | None,
        typer.Option(
            help="Domain token of the background prompt '<name> _background_' (default: --out's name, "
            "or its parent's where --out is a split: train, val, valid, validation, test).",
            rich_help_panel=_CLASSES,
        ),
    ] = None,
    split_spec: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Split into sub-folders, e.g. train=0.8,val=0.1,test=0.1.",
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split.", rich_help_panel=_OUTPUT)] = 0,
    symlink: Annotated[
        bool,
        typer.Option("--symlink/--copy", help="Link images instead of copying.", rich_help_panel=_OUTPUT),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a non-empty --out folder.", rich_help_panel=_OUTPUT)
    ] = False,
) -> None:
    """Convert annotated pages into the unified layout read by `docsam train` and `docsam evaluate`."""
    fmt = FORMATS[source_format.value]
    try:
        levels = parse_levels(level)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--level") from None
    _check_format_options(fmt, levels, classes, typed(ctx, "dpi"))
    try:
        fractions = parse_split(split_spec) if split_spec else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--split") from None
    try:
        class_filter = _class_filter(mapping, drop, keep, dataset_name)
        sources = path_arguments(sources, "SOURCE")
        if dataset_name is not None and not dataset_name.strip():
            raise ValueError("--dataset-name: an empty name (it leads every background prompt)")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    from docsam_cli.datasets.layout import default_dataset_name
    from docsam_cli.datasets.pipeline import ConvertOptions

    console = stderr_console()
    options = ConvertOptions(
        fmt=fmt,
        sources=[Path(source) for source in sources],
        out=out,
        levels=levels,
        classes=class_filter,
        dataset_name=dataset_name if dataset_name is not None else output_text(default_dataset_name(out)),
        split=fractions,
        seed=seed,
        symlink=symlink,
        overwrite=overwrite,
        images=images,
        class_list=classes,
        dpi=dpi,
        max_image_pixels=max_image_pixels or None,
    )
    quiet = message_options().quiet
    report = _convert(console, options, quiet)
    for line in report.errors:
        print_error(console, line)
    if not quiet:
        _summary(console, report, out)
    for warning in report.warnings:
        print_plain(console, f"warning: {warning}")
    if report.errors:
        raise typer.Exit(ExitCode.FAILED)


def _check_format_options(fmt: Format, levels: frozenset[str], classes: Path | None, dpi_given: bool) -> None:
    """Refuse levels the format does not support, and `--classes` and `--dpi` (`dpi_given`) where the
    format has no use for them. Raises typer.BadParameter."""
    if not levels <= fmt.levels:
        supported = ", ".join(sorted(fmt.levels))
        raise typer.BadParameter(f"{fmt.name} supports {supported}", param_hint="--level")
    if classes is not None and fmt.name != "yolo":  # YOLO's class list, not a choice of classes
        raise typer.BadParameter(
            f"the class list of YOLO labels, not for {fmt.name} (to convert some classes only: --keep)",
            param_hint="--classes",
        )
    if dpi_given and fmt.name != "icdar2013":  # the other formats' pages are images already
        raise typer.BadParameter(
            f"renders the PDF pages of icdar2013, not for {fmt.name}, whose pages are images",
            param_hint="--dpi",
        )


def _class_filter(
    mapping: list[str], drop: list[str], keep: list[str], dataset_name: str | None
) -> ClassFilter:
    """The classes to rename, drop and keep, once every name given (and `--dataset-name`) is known to be
    text: the names go into UTF-8 files, and the model is trained and prompted with them. Raises
    ValueError naming the option, also for a class both kept and dropped and for a --keep that names none
    (an empty value, which would keep every class); typer.BadParameter for a malformed --map."""
    for option, values in (("--map", mapping), ("--drop", drop), ("--keep", keep)):
        for value in values:
            refuse_undecodable(value, option)
    refuse_undecodable(dataset_name, "--dataset-name")
    try:
        renames = parse_mapping(mapping)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--map") from None
    kept = parse_names(keep)
    if keep and not kept:  # `--keep "$CLASSES"` with the variable unset: not every class
        raise ValueError("--keep needs at least one class name (leave it out to keep every class)")
    class_filter = ClassFilter(renames, frozenset(parse_names(drop)), frozenset(kept) or None)
    if both := sorted(class_filter.drop & (class_filter.keep or frozenset())):
        raise ValueError(f"--keep and --drop both name {', '.join(map(repr, both))}: give each class to one")
    return class_filter


def _convert(console: Console, options: ConvertOptions, quiet: bool) -> ConversionReport:
    """Run the conversion (a spinner on a terminal unless `quiet`), ending the command where it is
    interrupted, where --out may not be replaced and where nothing was converted."""
    from docsam_cli.datasets.pipeline import (
        InterruptedAfterPublishing,
        NothingConverted,
        OutputExists,
        convert,
    )

    try:
        # SIGTERM (`timeout`, a scheduler's time limit) as Ctrl-C: the staged copy is removed, not left.
        with terminate_as_interrupt():
            if not shows_progress(console, quiet):  # the spinner is redrawn as the bar is: on a terminal only
                return convert(options)
            with console.status("converting...") as status:
                return convert(options, progress=lambda name: status.update(Text(f"converted {name}")))
    except InterruptedAfterPublishing as interrupted:
        _interrupted_after_publishing(console, options.out, interrupted.report, interrupted.previous)
    except KeyboardInterrupt:
        # The app's own line says that what was finished stays: a conversion publishes nothing unfinished.
        print_error(console, f"interrupted; nothing written to {display_path(options.out)}")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except OutputExists as error:
        print_error(console, f"--out: {error}")
        raise typer.Exit(ExitCode.USAGE) from None
    except NothingConverted as error:
        _nothing_converted(console, error.report, str(error))


def _interrupted_after_publishing(
    console: Console, out: Path, report: ConversionReport, previous: Path | None
) -> NoReturn:
    """Interrupted with the new dataset in place: it is complete, and what is left of the previous one goes
    with the next conversion into `out`."""
    complete = f"{display_path(out)} ({report.images} images)"
    if previous is None:
        print_error(console, f"interrupted once the dataset was complete: it is in {complete}")
    else:
        print_error(
            console,
            f"interrupted while removing the previous dataset: the new one is complete in {complete}; what "
            f"is left of the previous one, {display_path(previous)}, goes with the next conversion into "
            f"{display_path(out)}",
        )
    raise typer.Exit(ExitCode.INTERRUPTED)


def _nothing_converted(console: Console, report: ConversionReport, message: str) -> NoReturn:
    """No image read, nothing published: the files that failed (each its `error:` line) and then why, a
    plain line; or, when none failed (the sources hold nothing of the format), one `error:` line, a usage
    error."""
    if not report.errors:
        print_error(console, message)
        raise typer.Exit(ExitCode.USAGE)
    for line in report.errors:
        print_error(console, line)
    print_plain(console, message)
    raise typer.Exit(ExitCode.FAILED)


def _summary(console: Console, report: ConversionReport, out: Path) -> None:
    from docsam_cli.datasets.report import REPORT_FILE

    table = Table(title=Text(f"{report.images} images → {display_path(out)}"), title_justify="left")
    table.add_column("class")
    table.add_column("instances", justify="right")
    for name, count in sorted(report.instances.items()):
        table.add_row(Text(name), str(count))
    console.print(table)
    for title, tally in (("fixed", report.fixed), ("dropped", report.dropped)):
        for reason, count in sorted(tally.items()):
            print_plain(console, f"{title}: {count} × {reason}")
    if report.splits:
        print_plain(
            console, "splits: " + ", ".join(f"{name} {count}" for name, count in report.splits.items())
        )
    if report.empty_images:
        print_plain(console, f"{report.empty_images} images have no instance (kept as negatives)")
    if report.errors:
        print_plain(console, f"{len(report.errors)} files or pages failed (listed above)")
    print_plain(console, f"details: {display_path(out / REPORT_FILE)}")
