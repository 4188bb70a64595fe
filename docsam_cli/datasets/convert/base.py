"""What readers share: the reading context and the description of a format."""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from docsam_cli.datasets.images import ImageFinder, ImageNotFound
from docsam_cli.datasets.records import ImageRef, Note, SourcePage
from docsam_cli.errors import InputError

PDF_PAGE_DPI = 150.0  # the resolution ICDAR 2013's PDF pages are rendered at, unless `--dpi` says otherwise


@dataclass
class ReadContext:
    """What a reader needs besides the file: the folder it may read from and the user's options."""

    root: Path  # the SRC folder, or the folder of a SRC file
    levels: frozenset[str]
    images: Path | None = None  # --images: where the images (ICDAR 2013: the PDFs) are, when not beside
    classes: Path | None = None  # --classes: a YOLO class list
    dpi: float = PDF_PAGE_DPI
    skip: Path | None = None  # a folder not to search for images (the output folder, inside a source)
    finder: ImageFinder = field(init=False)
    warnings: list[str] = field(init=False, default_factory=list)  # a file's, not one page's (the report's)

    def __post_init__(self) -> None:
        self.finder = ImageFinder(self.root, self.images, self.skip)


def referenced_image(
    finder: ImageFinder, reference: str, annotation: Path, notes: list[Note], *, label: str
) -> tuple[ImageRef, str | None]:
    """The image that `annotation`'s `reference` (its field `label`) names, and None; a lookup that had to
    guess adds a `fixed` note. Not found: a reference by the file name alone, and why (the page's
    `image_problem`)."""
    try:
        found, note = finder.find(reference, annotation, label=label)
    except ImageNotFound as problem:
        return ImageRef(Path(reference.replace("\\", "/")).name), str(problem)
    if note is not None:
        notes.append(Note("fixed", note, reference))
    return ImageRef(found.name, path=found), None


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


_MARKED_ENCODINGS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text_file(path: Path) -> str:
    """A text file of the source (a class list, labels) in UTF-8, with or without the byte order mark
    Windows editors write, or in the UTF-16 or UTF-32 its mark announces (PowerShell 5's `>` and
    `Out-File` write UTF-16). Raises OSError, or UnicodeDecodeError for text in none of them."""
    data = path.read_bytes()
    encoding = next((name for mark, name in _MARKED_ENCODINGS if data.startswith(mark)), "utf-8-sig")
    return data.decode(encoding)
