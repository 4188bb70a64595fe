"""PDFs through poppler (pdf2image): page count and sizes with `pdfinfo`, one page per `pdftoppm` run.

Rendering one page per call keeps memory to one page however long the document, and lets a thread pool
render several pages at once (each call is a subprocess). Pages come out as poppler renders them for
display: the page's /Rotate (inherited from the page tree too) is applied, so a page stored sideways
with /Rotate 90 comes out upright and landscape, as every PDF viewer shows it. Annotations are drawn,
the background is white.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pdf2image import convert_from_path, pdfinfo_from_path
from pdf2image.exceptions import PDFPageCountError, PDFPopplerTimeoutError

from docsam_cli.errors import InputError
from docsam_cli.inputs.images import check_pixel_limit, to_bgr

_ALL_PAGES = 2**31 - 1  # `pdfinfo -l` past the end lists every page; poppler clamps it
_PAGE_SIZE = re.compile(r"Page\s+(\d+) size")
_POINTS = re.compile(r"([\d.]+) x ([\d.]+) pts")
_POINTS_PER_INCH = 72.0


@dataclass(frozen=True)
class PdfInfo:
    page_count: int
    page_sizes: dict[int, tuple[float, float]]  # 1-based page → (width, height) in points, before /Rotate


def read_pdf_info(path: Path, password: str | None = None, timeout: float | None = None) -> PdfInfo:
    """Page count and page sizes. Raises InputError for damaged, encrypted (no or wrong password) PDFs.

    pdf2image's `PDFInfoNotInstalledError` (no poppler) is not a per-file problem and propagates.
    """
    try:
        info = pdfinfo_from_path(
            str(path.absolute()), userpw=password, first_page=1, last_page=_ALL_PAGES, timeout=timeout
        )
    except PDFPageCountError as error:
        raise InputError(path, _pdfinfo_reason(str(error), password)) from None
    except PDFPopplerTimeoutError:
        raise InputError(path, f"pdfinfo timed out after {timeout} s") from None
    sizes: dict[int, tuple[float, float]] = {}
    for key, value in info.items():
        page, points = _PAGE_SIZE.fullmatch(key), _POINTS.match(str(value))
        if page and points:
            sizes[int(page[1])] = (float(points[1]), float(points[2]))
    page_count = int(info["Pages"])
    if page_count < 1:
        raise InputError(path, "PDF has no pages")
    return PdfInfo(page_count, sizes)


def _pdfinfo_reason(message: str, password: str | None) -> str:
    if "Incorrect password" in message:
        if password is None:
            return "encrypted PDF: a password is needed (--password)"
        return "encrypted PDF: wrong password"
    errors = [line.split(":", 1)[-1].strip() for line in message.splitlines() if "Error" in line]
    return f"damaged or not a PDF (poppler: {errors[-1]})" if errors else "damaged or not a PDF"


def render_pdf_page(
    path: Path,
    page: int,
    *,
    dpi: float,
    password: str | None = None,
    size_points: tuple[float, float] | None = None,
    timeout: float | None = None,
) -> np.ndarray:
    """Render one page (1-based) to BGR uint8. Raises InputError.

    `size_points` (from `read_pdf_info`) lets a page that would render past the pixel limit fail before
    poppler allocates it.
    """
    if size_points is not None:
        width, height = (side * dpi / _POINTS_PER_INCH for side in size_points)
        check_pixel_limit(path, width, height, page)
    try:
        images = convert_from_path(
            str(path.absolute()),
            dpi=dpi,
            first_page=page,
            last_page=page,
            userpw=password,
            timeout=timeout,
        )
    except PDFPopplerTimeoutError:
        raise InputError(path, f"poppler timed out after {timeout} s", page) from None
    if len(images) != 1:
        raise InputError(path, "poppler could not render this page (damaged PDF)", page)
    with images[0] as image:
        return to_bgr(image)
