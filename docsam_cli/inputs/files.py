"""Opening the files users hand us: regular files only, typed by their first bytes.

Regular files only: a named pipe (FIFO) blocks whoever opens it until a writer appears, and a device or a
socket is not a page either, so anything else is refused from its `stat`, before it is opened. The file is
then opened non-blocking and checked again on the open descriptor, so one swapped in between cannot hang
the batch either.

Typed by content: the first bytes decide whether a file is an image or a PDF, whatever its name: an image
signature (PNG, JPEG, TIFF, GIF, BMP, WebP, JPEG 2000, PNM) makes it an image, `%PDF` in the first KiB (where
PDF readers look for it) a PDF. Only a file with neither falls back on its suffix: `.pdf` goes to poppler,
which repairs some damaged headers and names the problem when it cannot; anything else to the image
decoder, which names it as not an image or PDF.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal

from docsam_cli.errors import InputError

FileKind = Literal["image", "pdf"]

PDF_SUFFIXES = frozenset({".pdf"})
PDF_SIGNATURE = b"%PDF"
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "TIFF", b"MM\x00+": "TIFF",  # and BigTIFF
    b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"BM": "BMP",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000", b"\xff\x4f\xff\x51": "JPEG 2000",  # file, codestream
    b"P1": "PNM", b"P2": "PNM", b"P3": "PNM", b"P4": "PNM", b"P5": "PNM", b"P6": "PNM",  # PBM, PGM, PPM
}  # fmt: skip
WEAK_SIGNATURE_FORMATS = frozenset({"BMP", "PNM"})  # two letters, which a text file may start with too
SNIFF_BYTES = 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # POSIX, Windows


def file_state(path: Path) -> dict[str, int] | None:
    """What tells a file from another one saved at the same path later (a rescan over the old scan): its
    size and modification time; None when it cannot be read."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def require_regular_file(path: Path) -> None:
    """Raise InputError unless `path` is (a symbolic link to) a regular file; nothing is opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(path, missing_file_reason(path)) from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise InputError(path, f"not a regular file ({file_type(mode)})")


def missing_file_reason(path: Path) -> str:
    """Why `path`, which is not there to read, is not: a symbolic link whose target is gone (a drive not
    mounted, a share moved), its target named, or no such file or directory."""
    try:
        return f"broken symbolic link (to {os.readlink(path)})"
    except OSError:  # not a link
        return "no such file or directory"


def file_type(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def open_regular_file(path: Path) -> BinaryIO:
    """Open for reading in binary, refusing anything but a regular file without blocking. Raises
    InputError."""
    require_regular_file(path)
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise InputError(path, f"not a regular file ({file_type(mode)})")
    return os.fdopen(descriptor, "rb")


def sniff_kind(path: Path) -> FileKind:
    """Image or PDF, from the first bytes (see the module docstring). Raises InputError (also for an empty
    file)."""
    with open_regular_file(path) as handle:
        try:
            head = handle.read(SNIFF_BYTES)
        except OSError as error:
            raise InputError(path, f"cannot read: {error.strerror or error}") from None
    if not head:
        raise InputError(path, "empty file (0 bytes)")
    if signature_format(head) is not None:
        return "image"
    if PDF_SIGNATURE in head or path.suffix.lower() in PDF_SUFFIXES:
        return "pdf"
    return "image"


def signature_format(head: bytes) -> str | None:
    """The image format (`"TIFF"`) whose signature the first bytes `head` start with; None if none."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":  # a RIFF container: its size comes in between
        return "WebP"
    return next((name for signature, name in IMAGE_SIGNATURES.items() if head.startswith(signature)), None)
