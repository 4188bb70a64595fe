"""The source formats (`FORMATS`), and how to find a format's files under a folder.

A reader (`docsam_cli.datasets.convert.<module>.read`) turns one annotation file into `SourcePage`s. It
raises `WrongFormat` for a file of another format (skipped when the file was found by walking a folder)
and `InputError` for a file none of whose pages can be used; a page that cannot be used is yielded as its
`InputError`, so that the other pages of the file still convert. Readers are imported when first used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from docsam_cli.datasets.convert.base import Format, ReadContext
from docsam_cli.datasets.images import IMAGE_SUFFIXES
from docsam_cli.datasets.records import LEVELS, SourcePage
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.inputs.sources import regular_file, unlisted, walk_folders

_ALL_LEVELS = frozenset(LEVELS)

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format(
            "page",
            "page",
            (".xml",),
            _ALL_LEVELS,
            "PAGE XML 2009-2019 (regions by type, table cells, lines, words)",
        ),
        Format("alto", "alto", (".xml",), _ALL_LEVELS, "ALTO v1-v4 with SegmOnto TAGREFS, table cells"),
        Format("coco", "coco", (".json",), description="COCO json, polygons or RLE"),
        Format("voc", "voc", (".xml",), description="Pascal VOC XML boxes"),
        Format(
            "yolo",
            "yolo",
            IMAGE_SUFFIXES,
            description="YOLO txt boxes/polygons + class list",
            walks_images=True,
        ),
        Format("labelme", "labelme", (".json",), description="LabelMe JSON shapes"),
        Format(
            "icdar2013",
            "icdar2013",
            (".xml",),
            frozenset({"regions", "cells"}),
            "ICDAR 2013 table competition -reg/-str XML with their PDFs",
        ),
        Format(
            "textdet",
            "textdet",
            (".txt",),
            description="text polygons per image (ICDAR 2015, CTW1500, Total-Text)",
        ),
    )
}


def source_files(
    source: Path, fmt: Format, skip: Path | None = None
) -> tuple[Path, list[Path | InputError], bool]:
    """(root, files, explicit) for one SRC argument: a file is read as given, a folder is walked.

    The walk skips hidden files and folders (`.git`, macOS `._*` resource forks, our own staging) and the
    folder `skip` (the output folder, when it lies inside the source: a rerun must not read its own
    output). What it cannot use is an InputError among the files (see `_walk`).
    """
    if source.is_dir():
        return source, _walk(source, fmt.suffixes, skip), False
    return source.parent, [source], True


def _walk(folder: Path, suffixes: tuple[str, ...], skip: Path | None = None) -> list[Path | InputError]:
    """The files of `suffixes` under `folder`, sorted, after an InputError for each folder that cannot be
    listed; a file that cannot be read as one (a broken or looping symbolic link, a named pipe) is an
    InputError in its place. Both are reported as `segment`'s walk reports them, not left out without a
    word with the pages they hold. Symbolic links to folders are followed as `walk_folders` follows them
    (each real folder once, a link loop not)."""
    unreadable: list[Path | InputError] = []
    left_out = frozenset() if skip is None else frozenset({os.path.realpath(skip)})
    files = sorted(
        Path(directory, name)
        for directory, names in walk_folders(folder, True, left_out, lambda e: unreadable.append(unlisted(e)))
        for name in names
        if Path(name).suffix.lower() in suffixes
    )
    return [*unreadable, *map(regular_file, files)]


def read_sources(
    sources: Iterable[Path],
    fmt: Format,
    context_for: Callable[[Path], ReadContext],
    *,
    skip: Path | None = None,
    skipped: Callable[[WrongFormat], None] | None = None,
) -> Iterator[SourcePage | InputError]:
    """Every page of every source, in a stable order, with what cannot be used yielded as InputError.

    Files of another format found by walking a folder are skipped, silently (a METS file beside PAGE
    files) but for the `skipped` callback; given explicitly they are an error. A format whose walk yields
    images (YOLO) walks `--images` when it is given, the SRC then being the folder of the labels. The
    folder `skip` is left out of every walk (see `source_files`).
    """
    for source in sources:
        if not source.exists():
            yield InputError(source, "no such file or folder")
            continue
        root, files, explicit = source_files(source, fmt, skip)
        context = context_for(root)
        if fmt.walks_images and context.images is not None:
            files, explicit = _walk(context.images, fmt.suffixes, skip), False
        for path in files:
            if isinstance(path, InputError):
                yield path
                continue
            try:
                yield from fmt.read(path, context)
            except WrongFormat as error:
                if explicit:
                    yield error
                elif skipped is not None:
                    skipped(error)
            except InputError as error:
                yield error
