"""What readers share: the reading context and the description of a format."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from docsam_cli.datasets.images import ImageFinder
from docsam_cli.datasets.records import SourcePage
from docsam_cli.errors import InputError


@dataclass
class ReadContext:
    """What a reader needs besides the file: the folder it may read from and the user's options."""

    root: Path  # the SRC folder, or the folder of a SRC file
    levels: frozenset[str]
    images: Path | None = None  # --images: where the images (ICDAR 2013: the PDFs) are, when not beside
    classes: Path | None = None  # --classes: a YOLO class list
    dpi: float = 150.0  # rendering of PDF pages (ICDAR 2013)
    skip: Path | None = None  # a folder not to search for images (the output folder, inside a source)
    finder: ImageFinder = field(init=False)

    def __post_init__(self) -> None:
        self.finder = ImageFinder(self.root, self.images, self.skip)


@dataclass(frozen=True)
class Format:
    """A source format. Its reader module is imported on first use, so that listing the formats (the
    command line's help and choices) stays cheap.

    The module's `read(path, context)` turns one file into pages; a page that cannot be used is yielded
    as its `InputError` so that the other pages of the file still convert.
    """

    name: str
    module: str  # under docsam_cli.datasets.convert
    suffixes: tuple[str, ...]  # files a folder walk hands to `read`
    levels: frozenset[str] = frozenset({"regions"})
    description: str = ""
    walks_images: bool = False  # the walk yields images, not annotations (YOLO): `--images` is walked

    def read(self, path: Path, context: ReadContext) -> Iterable[SourcePage | InputError]:
        reader = importlib.import_module(f"docsam_cli.datasets.convert.{self.module}")
        return reader.read(path, context)
