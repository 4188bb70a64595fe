"""PDFs through poppler (pdf2image): page count and sizes with `pdfinfo`, one page per `pdftoppm` run.

Rendering one page per call keeps memory to one page however long the document, and lets a thread pool
render several pages at once (each call is a subprocess). Pages come out as every PDF viewer shows them:
the crop box (the visible page, the size `pdfinfo` reports), with the page's /Rotate (inherited from the
page tree too) applied, so a page stored sideways with /Rotate 90 comes out upright and landscape.
Annotations are drawn, the background is white.

Size: a page's pixel size is known before rendering, from its size in points and the resolution, and is
held to the decompression-bomb limit of `images` then, so an oversized page never reaches poppler. A
rendered page whose size is not the one asked for (poppler gives up on pages too large for it, printing
"Bogus memory allocation size" and returning a 1 x 1 image) is an error, never a page. Poppler neither
reports nor applies /UserUnit, so the crop box in points is what it renders.

Passwords: one `--password` serves a whole batch, so it is used only where a file needs one. A file is
first opened without it (unencrypted PDFs, and encrypted ones with an empty user password, would refuse a
wrong user password), then, if poppler asks for one, with it as both owner and user password (poppler
tries the owner password first, then the user password), so either password opens the file. Files
encrypted before AES-256 (RC4, AES-128: revision 4 and below) take their password as PDFDocEncoding bytes,
and poppler hands it on as given: a password with accented letters, typed (and passed) as UTF-8, would
be wrong for them, so it is also tried in Latin-1, which PDFDocEncoding agrees with for those letters.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pdf2image import pdfinfo_from_path
from pdf2image.exceptions import (
    PDFInfoNotInstalledError,
    PDFPageCountError,
    PDFPopplerTimeoutError,
    PopplerNotInstalledError,
)
from pdf2image.parsers import parse_buffer_to_ppm

from docsam_cli.errors import InputError
from docsam_cli.inputs.files import require_regular_file
from docsam_cli.inputs.images import check_pixel_limit, to_bgr

MAX_DPI = 9600.0  # `--dpi` above this (flatbed scanners' top optical resolution) is a typo, not a wish
_ALL_PAGES = 2**31 - 1  # `pdfinfo -l` past the end lists every page; poppler clamps it
_PAGE_KEY = re.compile(r"Page\s+(\d+) (size|rot)")
_POINTS = re.compile(r"([\d.]+) x ([\d.]+) pts")
_POINTS_PER_INCH = 72.0
_SIZE_TOLERANCE = 2  # pixels: poppler rounds each side up ...
_SIZE_PRECISION = 1e-5  # ... from a size pdfinfo prints to 6 significant digits
_NEEDS_PASSWORD = "encrypted PDF: a password is needed (--password)"
_WRONG_PASSWORD = "encrypted PDF: wrong password"
_NO_POPPLER = "cannot read PDFs: poppler-utils is not installed (apt-get install poppler-utils)"


@dataclass(frozen=True)
class PdfInfo:
    page_count: int
    page_sizes: dict[int, tuple[float, float]]  # 1-based page → (width, height) in points, as displayed
    password: str | None  # what opened the file, for `render_pdf_page`: None where none was needed


def read_pdf_info(path: Path, password: str | None = None, timeout: float | None = None) -> PdfInfo:
    """Page count and page sizes. Raises InputError for damaged, encrypted (no or wrong password) PDFs.

    `password` is tried only if the file cannot be opened without (see the module docstring). Without
    poppler every PDF is an error saying so, and the batch goes on with the other files.
    """
    try:
        return _read_pdf_info(path, None, timeout)
    except InputError as error:
        if password is None or error.reason != _NEEDS_PASSWORD:
            raise
    *first_forms, last_form = _password_forms(password)
    for form in first_forms:
        try:
            return _read_pdf_info(path, form, timeout)
        except InputError as error:
            if error.reason != _WRONG_PASSWORD:
                raise
    return _read_pdf_info(path, last_form, timeout)


def _password_forms(password: str) -> list[str]:
    """The password as typed, then, where that differs, its Latin-1 bytes for revision-4 files (see the
    module docstring), as a command-line argument carries them (`os.fsdecode`)."""
    try:
        latin = os.fsdecode(password.encode("latin-1"))
    except UnicodeEncodeError:  # not a password of such a file
        return [password]
    return [password] if latin == password else [password, latin]


def _read_pdf_info(path: Path, password: str | None, timeout: float | None) -> PdfInfo:
    """One `pdfinfo` run, `password` given as owner and user password."""
    try:
        info = pdfinfo_from_path(
            str(path.absolute()),
            userpw=password,
            ownerpw=password,
            first_page=1,
            last_page=_ALL_PAGES,
            timeout=timeout,
        )
    except PDFPageCountError as error:
        raise InputError(path, _pdfinfo_reason(str(error), password)) from None
    except PDFPopplerTimeoutError:
        raise InputError(path, f"pdfinfo timed out after {timeout} s") from None
    except (PDFInfoNotInstalledError, PopplerNotInstalledError):
        raise InputError(path, _NO_POPPLER) from None
    sizes: dict[int, tuple[float, float]] = {}
    turned: set[int] = set()
    for key, value in info.items():
        match = _PAGE_KEY.fullmatch(key)
        if match is None:
            continue
        page, text = int(match[1]), str(value)
        if match[2] == "rot" and text.lstrip("-").isdigit():
            if int(text) % 180 == 90:
                turned.add(page)
        elif points := _POINTS.match(text):
            sizes[page] = (float(points[1]), float(points[2]))
    page_count = int(info["Pages"])
    if page_count < 1:
        raise InputError(path, "PDF has no pages")
    displayed = {page: size[::-1] if page in turned else size for page, size in sizes.items()}
    return PdfInfo(page_count, displayed, password)


def _pdfinfo_reason(message: str, password: str | None) -> str:
    """Why pdfinfo failed, from its messages (in pdf2image's error).

    pdfinfo refuses the page range of a document in which poppler finds no page. That is an empty PDF only
    where poppler read its page count as 0; a page count missing, negative or past the file's objects is
    a damaged page tree whose pages other readers may well show, and poppler's complaint says so.
    """
    if "Incorrect password" in message:
        return _NEEDS_PASSWORD if password is None else _WRONG_PASSWORD
    errors = [line.split(":", 1)[-1].strip() for line in message.splitlines() if "Error" in line]
    if "after the last page (0)" in message:
        refusal = ("Wrong page range", "Invalid page count 0")  # the range refused, an empty page tree
        complaints = [error for error in errors if not error.startswith(refusal)]
        if not complaints:
            return "PDF has no pages"
        return f"damaged PDF: poppler finds no page in it (poppler: {complaints[-1]})"
    return f"damaged or not a PDF (poppler: {errors[-1]})" if errors else "damaged or not a PDF"


def render_pdf_page(
    path: Path,
    page: int,
    *,
    dpi: float,
    password: str | None = None,
    size_points: tuple[float, float] | None,
    timeout: float | None = None,
) -> np.ndarray:
    """Render one page (1-based) to BGR uint8. Raises InputError.

    `password` is `PdfInfo.password`, the one that opened the file (given as owner and user password).

    `size_points` (from `read_pdf_info`, as displayed) gives the pixel size before rendering: a page
    past the pixel limit fails before poppler allocates it, and one of unknown size is not rendered.
    """
    if size_points is None:
        raise InputError(path, "pdfinfo reported no size for this page", page)
    width, height = (side * dpi / _POINTS_PER_INCH for side in size_points)
    check_pixel_limit(path, math.ceil(width), math.ceil(height), page)
    require_regular_file(path)
    rendered = _pdftoppm(path, dpi=dpi, page=page, password=password, timeout=timeout)
    # Under a memory limit (`ulimit -v`) pdftoppm says so and writes a 1 x 1 image, or none.
    out_of_memory = f"poppler ran out of memory rendering this page at {dpi:g} dpi"
    images = parse_buffer_to_ppm(rendered.stdout)
    if len(images) != 1:
        no_page = "poppler could not render this page (damaged PDF)"
        raise InputError(path, out_of_memory if _said_out_of_memory(rendered) else no_page, page)
    with images[0] as image:
        if not (_about(image.width, width) and _about(image.height, height)):
            too_large = (
                f"poppler rendered {image.width}x{image.height} pixels instead of "
                f"{math.ceil(width)}x{math.ceil(height)} (a page too large for poppler at {dpi:g} dpi?)"
            )
            raise InputError(path, out_of_memory if _said_out_of_memory(rendered) else too_large, page)
        return to_bgr(image)


def _pdftoppm(
    path: Path, *, dpi: float, page: int, password: str | None, timeout: float | None
) -> subprocess.CompletedProcess[bytes]:
    """One `pdftoppm` run for `page` (its crop box, `password` given as owner and user password): its
    stdout the page as a PPM image, or nothing where poppler could not render it. Raises InputError where
    poppler is missing, timed out or was killed (by the out-of-memory killer, under a cgroup's memory limit:
    a container's, a Slurm job's)."""
    passwords = ["-upw", password, "-opw", password] if password is not None else []
    command = ["pdftoppm", "-r", str(dpi), "-cropbox", "-f", str(page), "-l", str(page), *passwords]
    try:
        rendered = subprocess.run([*command, str(path.absolute())], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(path, f"poppler timed out after {timeout} s", page) from None
    except FileNotFoundError:
        raise InputError(path, _NO_POPPLER, page) from None
    if rendered.returncode < 0:
        raise InputError(path, _poppler_signal(-rendered.returncode), page)
    return rendered


def _said_out_of_memory(rendered: subprocess.CompletedProcess[bytes]) -> bool:
    """Whether pdftoppm said it ran out of memory: only a render that failed is blamed on it, a page
    rendered whole is kept whatever poppler said on the way."""
    return b"Out of memory" in rendered.stderr


def _poppler_signal(number: int) -> str:
    """Why poppler stopped on signal `number`: killed for want of memory (SIGKILL), or a crash."""
    name = signal.strsignal(number) or "unknown signal"
    if number == signal.SIGKILL:
        return f"poppler was killed (signal {number}: {name}), most likely by the system for want of memory"
    return f"poppler crashed (signal {number}: {name}) rendering this page (damaged PDF?)"


def _about(rendered: int, expected: float) -> bool:
    return abs(rendered - expected) <= _SIZE_TOLERANCE + expected * _SIZE_PRECISION
