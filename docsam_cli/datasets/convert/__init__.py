"""One reader per source format, and how to find a format's files under a folder.

A reader turns one annotation file into `SourcePage`s. It raises `WrongFormat` for a file of another
format (skipped when the file was found by walking a folder) and `InputError` for a broken file; problems
with one page's image are reported on the page (`image_problem`) so that the other pages still convert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from docsam_cli.datasets.convert import coco, icdar2013, labelme, textdet, voc, yolo
from docsam_cli.datasets.convert.alto import read_alto
from docsam_cli.datasets.convert.base import Format, ReadContext
from docsam_cli.datasets.convert.page import read_page
from docsam_cli.datasets.images import IMAGE_SUFFIXES
from docsam_cli.datasets.records import SourcePage
from docsam_cli.errors import InputError, WrongFormat

_ALL_LEVELS = frozenset({"regions", "lines", "words", "cells"})

FORMATS: dict[str, Format] = {
    "page": Format(
        "page",
        lambda path, context: [read_page(path, context.root, context.levels)],
        (".xml",),
        _ALL_LEVELS,
        "PAGE XML 2009-2019 (regions by type, table cells, lines, words)",
    ),
    "alto": Format(
        "alto",
        lambda path, context: [read_alto(path, context.root, context.levels)],
        (".xml",),
        _ALL_LEVELS - {"cells"},
        "ALTO v1-v4 with SegmOnto TAGREFS",
    ),
    "coco": Format("coco", coco.read, (".json",), description="COCO json, polygons or RLE"),
    "voc": Format("voc", voc.read, (".xml",), description="Pascal VOC XML boxes"),
    "yolo": Format("yolo", yolo.read, IMAGE_SUFFIXES, description="YOLO txt boxes/polygons + class list"),
    "labelme": Format("labelme", labelme.read, (".json",), description="LabelMe JSON shapes"),
    "icdar2013": Format(
        "icdar2013",
        icdar2013.read,
        (".xml",),
        frozenset({"regions", "cells"}),
        "ICDAR 2013 table competition -reg/-str XML with their PDFs",
    ),
    "textdet": Format(
        "textdet",
        textdet.read,
        (".txt",),
        description="text polygons per image (ICDAR 2015, CTW1500, Total-Text)",
    ),
}


def source_files(source: Path, fmt: Format) -> tuple[Path, list[Path], bool]:
    """(root, files, explicit) for one SRC argument: a file is read as given, a folder is walked.

    The walk skips hidden files and folders (`.git`, macOS `._*` resource forks, our own staging).
    """
    if source.is_dir():
        files = sorted(
            path
            for path in source.rglob("*")
            if path.suffix.lower() in fmt.suffixes
            and not any(part.startswith(".") for part in path.relative_to(source).parts)
            and path.is_file()
        )
        return source, files, False
    return source.parent, [source], True


def read_sources(
    sources: Iterable[Path], fmt: Format, context_for: Callable[[Path], ReadContext]
) -> Iterator[SourcePage | InputError]:
    """Every page of every source, in a stable order, with broken files yielded as InputError.

    Files of another format found by walking a folder are skipped silently (a METS file beside PAGE
    files); given explicitly they are an error.
    """
    for source in sources:
        if not source.exists():
            yield InputError(source, "no such file or folder")
            continue
        root, files, explicit = source_files(source, fmt)
        context = context_for(root)
        for path in files:
            try:
                yield from fmt.read(path, context)
            except WrongFormat as error:
                if explicit:
                    yield error
            except InputError as error:
                yield error
