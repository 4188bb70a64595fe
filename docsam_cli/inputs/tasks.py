"""Documents → lightweight page tasks (nothing decoded) → `Page`s, one `load()` per task.

A task is cheap to create and to hold: its id is known before anything is decoded, so a caller can skip
finished pages, and `load()` can run in a worker thread (see `prefetch`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from docsam_cli.errors import InputError
from docsam_cli.inputs.files import FileKind, file_state, sniff_kind
from docsam_cli.inputs.images import (
    Frame,
    TiffPages,
    check_pixel_limit,
    decode_frame,
    ignored_frames,
    open_image,
    tiff_pages,
)
from docsam_cli.inputs.page_ranges import PageRanges
from docsam_cli.inputs.pdf import read_pdf_info, render_pdf_page
from docsam_cli.inputs.sources import Document
from docsam_cli.names import display_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """How documents become pages. `pages` applies to PDFs and multi-page TIFFs, not to single images."""

    dpi: float = 200.0
    pages: PageRanges | None = None
    password: str | None = None
    poppler_timeout: float | None = 300.0  # seconds per poppler call; a pathological page fails, not hangs


@dataclass(frozen=True)
class Page:
    """A decoded page, ready for the model.

    `image` is (H, W, 3) BGR uint8, upright; `width`/`height` are its size, the page's original size that
    all outputs refer to. `page` is 1-based within a PDF or multi-page TIFF, None for a single image.
    `unlike_file`: a single image that is not the first image its file stores, as readers and viewers open
    it: its EXIF or TIFF orientation was applied (`images.exif_orientation`), or it is a TIFF's page after a
    thumbnail (`images.tiff_pages`). `dpi`: the resolution (x, y) of `image`: a PDF page's `--dpi`, an
    image's as its file states it, None if unstated.
    """

    source: Path
    page: int | None
    page_id: str
    image: np.ndarray
    file_state: dict[str, int] | None = None  # the source file's `files.file_state` before it was read
    unlike_file: bool = False
    dpi: tuple[float, float] | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class PageTask:
    """One page to decode. `page_id` names its outputs: the document stem, `_p0003` added for a page of
    a PDF or multi-page TIFF."""

    source: Path
    page: int | None
    page_id: str
    kind: FileKind
    options: LoadOptions
    size_points: tuple[float, float] | None = None  # PDF page as displayed (points): its pixel size
    frame: int = 0  # an image's frame (0-based) that is this page: TIFF thumbnails are no pages

    def load(self) -> Page:
        """Decode or render. Raises InputError for any failure (Pillow and poppler raise many types on
        damaged files; none of them must stop a batch)."""
        state = file_state(self.source)
        try:
            frame = self._decode()
        except InputError:
            raise
        except Exception as error:  # a damaged file may trip anything in a decoder
            reason = f"cannot decode: {type(error).__name__}: {error}"
            raise InputError(self.source, reason, self.page) from None
        unlike_file = self.page is None and (frame.turned or self.frame != 0)
        return Page(self.source, self.page, self.page_id, frame.pixels, state, unlike_file, frame.dpi)

    def _decode(self) -> Frame:
        if self.kind == "pdf":
            assert self.page is not None
            pixels = render_pdf_page(
                self.source,
                self.page,
                dpi=self.options.dpi,
                password=self.options.password,
                size_points=self.size_points,
                timeout=self.options.poppler_timeout,
            )
            return Frame(pixels, turned=False, dpi=(self.options.dpi, self.options.dpi))
        return decode_frame(self.source, self.frame, self.page)


def page_id(stem: str, page: int | None) -> str:
    return stem if page is None else stem + page_id_suffix(page)


def page_id_suffix(page: int) -> str:
    """What a page of a PDF or multi-page TIFF adds to its document's stem: `_p0003`."""
    return f"_p{page:04d}"


def iter_page_tasks(
    documents: Iterable[Document | InputError], options: LoadOptions | None = None
) -> Iterator[PageTask | InputError]:
    """Page tasks in document order, an InputError in place of a document that cannot be opened.

    Lazy: each document is opened (PDF: one `pdfinfo`; image: its header) only when reached.
    """
    options = options or LoadOptions()
    for document in documents:
        if isinstance(document, InputError):
            yield document
            continue
        try:
            yield from _document_tasks(document, options)
        except InputError as error:
            yield error


def _document_tasks(document: Document, options: LoadOptions) -> list[PageTask | InputError]:
    path = document.path
    if sniff_kind(path) == "pdf":
        info = read_pdf_info(path, options.password, options.poppler_timeout)
        pages = _selected(path, info.page_count, options.pages)
        options = replace(options, password=info.password)  # only where the file needs it (see `pdf`)
        return [
            PageTask(path, page, page_id(document.stem, page), "pdf", options, info.page_sizes.get(page))
            for page in pages
        ]
    try:
        with open_image(path) as image:
            listing = tiff_pages(path, image) if image.format == "TIFF" else TiffPages([0])
            single = len(listing.frames) == 1 and listing.broken is None
            if single:  # refused now; a multi-page TIFF's pages are checked one by one
                check_pixel_limit(path, *image.size)
                _warn_of_ignored_frames(path, image.format, ignored_frames(image))
    except InputError:
        raise
    except Exception as error:  # see PageTask.load
        raise InputError(path, f"cannot read image header: {type(error).__name__}: {error}") from None
    if single:
        return [PageTask(path, None, document.stem, "image", options, frame=listing.frames[0])]
    try:
        pages = _selected(path, len(listing.frames), options.pages)
    except InputError:
        if listing.broken is None:
            raise
        pages = []  # the pages selected lie in the damaged part: its error says so
    tasks: list[PageTask | InputError] = [
        PageTask(path, page, page_id(document.stem, page), "image", options, frame=listing.frames[page - 1])
        for page in pages
    ]
    return tasks if listing.broken is None else [*tasks, listing.broken]


def _warn_of_ignored_frames(path: Path, image_format: str | None, ignored: int) -> None:
    """Say that an animated image gives its first frame only (`images.ignored_frames`)."""
    if ignored:
        frames = "frame" if ignored == 1 else "frames"
        logger.warning(
            "%s: an animated %s of %d frames: only its first is read (%d %s left out)",
            display_path(path),
            "PNG (APNG)" if image_format == "PNG" else image_format,
            ignored + 1,
            ignored,
            frames,
        )


def _selected(path: Path, page_count: int, ranges: PageRanges | None) -> list[int]:
    if ranges is None:
        return list(range(1, page_count + 1))
    pages = ranges.select(page_count)
    if not pages:
        raise InputError(path, f"none of the selected pages exists (the document has {page_count})")
    return pages
