"""Decode image files with Pillow into upright 8-bit BGR arrays, whatever their mode.

Orientation: the Orientation tag (274) of EXIF (cameras, phone scans) or of a TIFF (scanners, archives'
TIFFs) is applied, so a page comes out as an image viewer shows it and every output (PAGE coordinates,
`imageWidth`/`imageHeight`, overlays) refers to that upright image. For a file with a non-trivial
orientation this differs from its stored pixels, which tools that ignore the tag (OCR-D, Kraken,
Tesseract) may take as the page: such a page gets its upright image written beside its outputs, as a PDF
page does (`exif_orientation`, the one rule for every format).

Formats: only the document-image formats docsam lists (PNG, JPEG, TIFF, GIF, BMP, WebP, JPEG 2000, PNM)
are tried. Pillow knows many more, some identified by weak signatures (TGA) or decoded by running an
external program (EPS through Ghostscript); none of them is a scan, and a file they would claim is
better reported as not an image.

Size limit (decompression bombs): a page of more than `max_image_pixels()` pixels is refused from the
size its header states, before any pixel is decoded: a 20000 x 20000 PNG of a few hundred KB would need
gigabytes. Every frame of a multi-page TIFF is checked before it is decoded. Where a decoder learns the
real size only later than the header (a GIF frame larger than its logical screen, TIFF tiles), Pillow's
own check raises, at the same limit, before it allocates; that is reported in the same words. PDF pages
are held to the same limit from their page size and the resolution (see `pdf`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from docsam_cli.errors import InputError
from docsam_cli.inputs.files import (
    SNIFF_BYTES,
    WEAK_SIGNATURE_FORMATS,
    open_regular_file,
    signature_format,
)

DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)
PIXEL_LIMIT_HINT = "raise the limit with --max-image-pixels if the file is trusted"
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "DIB", "WEBP", "JPEG2000", "PPM")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_ORIENTATION = 274  # EXIF and TIFF tag: 1 = stored upright, 2-8 turned or mirrored
_PNG_TEXT_CHUNKS = frozenset({b"iTXt", b"tEXt", b"zTXt"})
_PNG_EXIF_KEYWORDS = frozenset({b"Raw profile type exif", b"XML:com.adobe.xmp", b"xmp"})  # Pillow's getexif
_PNG_KEYWORD_BYTES = 80  # a text chunk's keyword: 1-79 bytes, then a NUL
_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # the orientations that swap width and height
_TURNS = {  # what turns or mirrors a frame stored in each orientation upright, as viewers show it
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_X_RESOLUTION = 282  # EXIF and TIFF tags: XResolution, YResolution, ResolutionUnit
_Y_RESOLUTION = 283
_RESOLUTION_UNIT = 296
_DPI_PER_RESOLUTION = {2: 1.0, 3: 2.54}  # ResolutionUnit 2 inch, 3 centimetre (1: no absolute unit)
_JFIF_DENSITY_UNITS = (1, 2)  # a JFIF density in dots per inch or per centimetre (0: an aspect ratio)
_MAX_STATED_DPI = 1e6  # beyond any scanner: a larger value is damage (and overflows a PNG's pHYs)
_NEW_SUBFILE_TYPE = 254  # TIFF tag: bit 0 a reduced-resolution copy, bit 2 a transparency mask
_PHOTOMETRIC = 262  # TIFF tag: PhotometricInterpretation, 0 = WhiteIsZero (samples count from white)
_COMPRESSION = 259  # TIFF tag: 1 (the default) = uncompressed
_PLANAR_CONFIGURATION = 284  # TIFF tag: 2 = each sample (R, G, B) stored in its own plane
_YCBCR = 6  # PhotometricInterpretation: luma and chroma samples
_YCBCR_SUBSAMPLING = 530  # TIFF tag: (across, down) luma samples per chroma sample, (1, 1) = none
_NOT_A_PAGE = 0b101
_ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)
_PILLOW_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")  # "Image size (400000000 pixels) exceeds limit of ..."

_max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS


def max_image_pixels() -> int | None:
    """The decompression-bomb limit now in force: pixels per image or rendered PDF page; None = none."""
    return _max_image_pixels


def set_max_image_pixels(limit: int | None) -> None:
    """Set the decompression-bomb limit (pixels per image or rendered PDF page); 0 or None removes it.

    Process-wide, for the CLI to call once at start-up. Pillow's own check, which fires inside decoders
    that learn a size late, is aligned with it: Pillow raises above twice its `MAX_IMAGE_PIXELS` and warns
    above it, so that is set to half the limit and the warning silenced (the limit itself is checked here).
    """
    global _max_image_pixels
    if limit is not None and limit < 0:
        raise ValueError(f"the pixel limit must be 0 (no limit) or positive, got {limit}")
    _max_image_pixels = limit or None
    Image.MAX_IMAGE_PIXELS = None if _max_image_pixels is None else (_max_image_pixels + 1) // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)  # aligns Pillow's check with the default


def _silence_libtiff_errors() -> None:
    """Keep libtiff's own error messages off the console: on a damaged LZW or Deflate strip it printed
    "LZWDecode: Not enough data at scanline 0 (short 1 bytes)." straight to the process's stderr (where
    no Python filter reaches), without the file's name, beside the page's own `error:` line. Pillow
    silences libtiff's warnings but not its errors; decoding still fails as before, and the page is one
    InputError line.

    The handler is set through Pillow's extension module, whose symbol lookup reaches the libtiff it was
    linked with (a bundled copy or the system's). Where that lookup is not possible (no libtiff, another
    platform's loader), nothing changes."""
    from PIL import _imaging

    try:
        set_handler = ctypes.CDLL(_imaging.__file__).TIFFSetErrorHandler
    except (OSError, AttributeError):
        return
    set_handler.restype = ctypes.c_void_p
    set_handler.argtypes = [ctypes.c_void_p]
    set_handler(None)


_silence_libtiff_errors()


def check_pixel_limit(path: Path, width: int, height: int, page: int | None = None) -> None:
    """Raise InputError for a page with no pixels or more than the limit (see the module docstring)."""
    if width < 1 or height < 1:
        raise InputError(path, f"the image has no pixels ({width}x{height})", page)
    if _max_image_pixels is not None and width * height > _max_image_pixels:
        raise _over_limit(path, f"{width}x{height} = {width * height} pixels", page)


def _over_limit(path: Path, size: str, page: int | None) -> InputError:
    reason = f"{size} exceeds the decompression-bomb limit of {_max_image_pixels} pixels ({PIXEL_LIMIT_HINT})"
    return InputError(path, reason, page)


def bomb_error(path: Path, error: Image.DecompressionBombError, page: int | None = None) -> InputError:
    """The InputError for Pillow's own check (a size found inside a decoder); its message gives the size
    in pixels only."""
    return _over_limit(path, pillow_bomb_size(error), page)


def pillow_bomb_size(error: Exception) -> str:
    """The size Pillow's DecompressionBombError states, as "N pixels" ("the image" if it states none)."""
    pixels = _PILLOW_BOMB_SIZE.search(str(error))
    return f"{pixels[1]} pixels" if pixels else "the image"


def _silence_pillow_warnings() -> None:
    """Keep Pillow's warnings about damaged data ("Corrupt EXIF data" in a cut TIFF: two raw lines on
    stderr naming a site-packages file) off the console; a file that then fails is one InputError line.

    Installed on every open rather than once at import: whoever restores the warning filters (a test
    runner does) would drop it, and `warnings.catch_warnings` cannot be used, pages being decoded in
    threads. Re-adding an existing filter replaces it.
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """The image, opened lazily (header only); closed on exit. Its size is not checked here: each frame
    of a multi-page TIFF has its own (`check_pixel_limit`). Raises InputError."""
    with open_regular_file(path) as handle:
        image = _open_handle(path, handle)
        try:
            yield image
        finally:
            image.close()


def _open_handle(path: Path, handle: BinaryIO) -> Image.Image:
    """The image in `handle` (header only), for `open_image`. Raises InputError."""
    _silence_pillow_warnings()
    try:
        return _open(handle)
    except Image.DecompressionBombError as error:
        raise bomb_error(path, error) from None
    except UnidentifiedImageError:
        raise _unidentified(path, handle) from None
    except OSError as error:  # with an errno the disk failed, without one the decoder
        if error.errno:
            raise InputError(path, f"cannot read: {error.strerror}") from None
        raise InputError(path, f"truncated or corrupt image data ({error})") from None


def _open(handle: BinaryIO) -> Image.Image:
    """`Image.open` of the formats docsam reads, without Pillow's size check of the first frame: a
    multi-page TIFF whose first page is over the limit still has its other pages, and a refused image is
    named with its width and height. (Pillow's check still guards sizes found while decoding.)"""
    try:
        return Image.open(handle, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        Image.init()
        handle.seek(0)
        prefix = handle.read(16)
        for name in IMAGE_FORMATS:  # what `Image.open` does, less the check it ends with
            factory, accept = Image.OPEN[name]
            accepted = accept is None or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a string: a warning, not a match
                continue
            handle.seek(0)
            try:
                return factory(handle, "")  # as `Image.open` names a file object
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
        raise


def _unidentified(path: Path, handle: BinaryIO) -> InputError:
    """The error for a file Pillow cannot open (`unopened_image_reason`), else not an image."""
    handle.seek(0)
    reason = unopened_image_reason(handle.read(SNIFF_BYTES))
    return InputError(path, reason or "not an image or PDF (or an unsupported image format)")


def unopened_image_reason(head: bytes) -> str | None:
    """Why Pillow cannot open a file that starts with `head`, where that is an image signature: it is
    truncated or corrupt, or a kind Pillow does not read (Pillow only says it cannot identify it); None for
    a file that is not an image."""
    name = signature_format(head)
    if name is None or name in WEAK_SIGNATURE_FORMATS:
        return None
    return f"truncated or corrupt {name}, or a kind of {name} Pillow cannot read (its header cannot be read)"


@dataclass(frozen=True)
class TiffPages:
    """The frames of a TIFF that are pages (0-based, in file order), and the error that ended the listing
    early: a frame directory cut off or damaged after the pages before it, which stay usable."""

    frames: list[int]
    broken: InputError | None = None


def ignored_frames(image: Image.Image) -> int:
    """How many frames after its first an animated GIF, WebP or PNG (APNG) has, which docsam leaves out:
    it reads the first, the still image such a file stands for. 0 for every other file (a TIFF's frames
    are pages; a JPEG's further pictures, MPO, are a phone's previews or depth maps, no content), and where
    the count cannot be read."""
    if image.format not in _ANIMATED_FORMATS:
        return 0
    try:
        return max(0, int(getattr(image, "n_frames", 1)) - 1)
    except Exception:  # a damaged later frame (Pillow raises many types) leaves the first one good
        return 0


def tiff_pages(path: Path, image: Image.Image) -> TiffPages:
    """The pages of a TIFF, one per frame but for those TIFF 6.0 marks as a reduced-resolution copy
    (a thumbnail) or a transparency mask of another (NewSubfileType bits 0 and 2). Raises InputError when
    not even the first page's directory can be read. Leaves `image` at its first page."""
    frames: list[int] = []
    broken = None
    index = 0
    while True:
        try:
            _seek_frame(image, index)
        except EOFError:
            break
        except (*_DECODE_ERRORS, TypeError, struct.error) as error:
            page = len(frames) + 1
            broken = InputError(
                path, f"truncated or corrupt TIFF (page directory {index + 1}: {error})", page
            )
            break
        if not int(image.tag_v2.get(_NEW_SUBFILE_TYPE, 0) or 0) & _NOT_A_PAGE:
            frames.append(index)
        index += 1
    if not frames:
        raise broken or InputError(path, "no page in this TIFF (only reduced-resolution or mask frames)")
    _seek_frame(image, frames[0])
    return TiffPages(frames, broken)


def _seek_frame(image: Image.Image, frame: int) -> None:
    """`image.seek(frame)` without the size check that Pillow before 11 makes on each TIFF frame it seeks
    to, which refused a whole multi-page TIFF for one page over the limit: that page alone is refused,
    by `check_pixel_limit` before it is decoded. Pillow checks once the frame is selected (its size and
    tags read), so the frame stays selected; Pillow 11 and later check while decoding."""
    try:
        image.seek(frame)
    except Image.DecompressionBombError:
        if image.tell() != frame:
            raise


def to_first_page(path: Path, image: Image.Image) -> None:
    """Move a TIFF to its first page (past a leading thumbnail, see `tiff_pages`); other images stay.
    Raises InputError as `tiff_pages` does."""
    if image.format == "TIFF":
        tiff_pages(path, image)


def load_frame(path: Path, frame: int | None = None, page: int | None = None) -> np.ndarray:
    """Decode one frame (0-based; None: the first page's) as an upright BGR uint8 array. Raises
    InputError."""
    return decode_frame(path, frame, page).pixels


@dataclass(frozen=True)
class Frame:
    """A decoded frame: `pixels` upright BGR uint8; `turned` when its orientation (EXIF or TIFF) turned or
    mirrored them (`exif_orientation`), so that they are not the pixels the file stores; `dpi` the
    resolution (x, y) the file states for the upright pixels (`stated_dpi`), None where it states none."""

    pixels: np.ndarray
    turned: bool
    dpi: tuple[float, float] | None = None


def decode_frame(path: Path, frame: int | None = None, page: int | None = None) -> Frame:
    """`load_frame`, also saying whether an orientation was applied, and the resolution. A page of a
    multi-page TIFF (`page` given) is read from an image its earlier pages left open (`OpenTiffs`).
    Raises InputError."""
    if page is not None and frame is not None:
        return open_tiffs.decode(path, frame, page)
    with open_image(path) as image:
        return _decode_open(path, image, frame, page)


def _decode_open(path: Path, image: Image.Image, frame: int | None, page: int | None) -> Frame:
    """`decode_frame` of the opened `image`."""
    try:
        if frame is None:
            to_first_page(path, image)
        elif frame or image.tell():
            _seek_frame(image, frame)
        check_pixel_limit(path, *image.size, page)
        check_planar_layout(path, image, page)
        stored = exif_orientation(image)  # read before decoding: Pillow turns a TIFF as it decodes it
        image.load()
    except Image.DecompressionBombError as error:
        raise bomb_error(path, error, page) from None
    except _DECODE_ERRORS as error:
        raise InputError(path, f"truncated or corrupt image data ({error})", page) from None
    pixels = to_bgr(
        upright(_key_as_alpha(path, _uncovered_as_white(image))),
        sample_bits=_tiff_bits(image),
        white_is_zero=_white_is_zero(image),
    )
    return Frame(pixels, stored != 1, upright_dpi(image, stored))


class OpenTiffs:
    """Multi-page TIFFs kept open between their pages. Pillow finds a frame by reading the directories of
    all the frames before it, which an open image remembers: opening the file again for each page made
    page N read N directories, a TIFF of N pages N²/2 of them (a 1000-page TIFF: 27 ms a page at its end;
    10,000 pages: over 20 minutes). A decoding thread takes an idle open image of the file, or opens one,
    and gives it back after its page, so threads decoding pages of one TIFF never share one. At most
    `keep` images stay open while idle (the one idle longest is closed first); one whose page failed is
    closed, and so is one of a file saved anew since it was opened (`_saved_as`).
    `close` closes the idle ones (`prefetch` does, when its threads have stopped)."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple[str, tuple[int, ...]], BinaryIO, Image.Image]] = []  # longest idle first

    def decode(self, path: Path, frame: int, page: int) -> Frame:
        saved = _saved_as(path)
        if saved is None:  # unreadable: opening says why
            with open_image(path) as image:
                return _decode_open(path, image, frame, page)
        key = (os.fspath(path), saved)
        handle, image = self._take(key) or self._open(path)
        try:
            decoded = _decode_open(path, image, frame, page)
        except BaseException:
            _close(handle, image)
            raise
        self._give_back(key, handle, image)
        return decoded

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, handle, image in idle:
            _close(handle, image)

    def _take(self, key: tuple[str, tuple[int, ...]]) -> tuple[BinaryIO, Image.Image] | None:
        with self._lock:
            for index, (held, handle, image) in enumerate(self._idle):
                if held == key:
                    del self._idle[index]
                    return handle, image
        return None

    @staticmethod
    def _open(path: Path) -> tuple[BinaryIO, Image.Image]:
        handle = open_regular_file(path)
        try:
            return handle, _open_handle(path, handle)
        except BaseException:
            handle.close()
            raise

    def _give_back(self, key: tuple[str, tuple[int, ...]], handle: BinaryIO, image: Image.Image) -> None:
        with self._lock:
            saved_anew = [entry for entry in self._idle if entry[0][0] == key[0] and entry[0] != key]
            kept = [entry for entry in self._idle if entry[0][0] != key[0] or entry[0] == key]
            kept.append((key, handle, image))
            excess = max(0, len(kept) - self._keep)
            closing = saved_anew + kept[:excess]
            self._idle = kept[excess:]
        for _, old_handle, old_image in closing:
            _close(old_handle, old_image)


def _saved_as(path: Path) -> tuple[int, ...] | None:
    """What tells the file at `path` from one saved there later, for `OpenTiffs`: beyond the size
    and time, which a file moved or copied over it may share (an uncompressed rescan, times kept by
    `cp -p`, `rsync -t` or an archive), the file itself (device, inode) and the time its inode last changed,
    which nothing can set back. None when it cannot be read."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _close(handle: BinaryIO, image: Image.Image) -> None:
    image.close()
    handle.close()


open_tiffs = OpenTiffs()


def upright(image: Image.Image) -> Image.Image:
    """The loaded image turned or mirrored as its `exif_orientation` says (a TIFF, which Pillow turns as
    it decodes it, as it is); an EXIF block that cannot be read is ignored rather than failing the page.
    Not `ImageOps.exif_transpose`, which also writes the block anew and fails on some that Pillow reads (a
    tag of another type than TIFF says, as some cameras write), leaving the page as stored while its
    header size is taken turned."""
    turn = _TURNS.get(exif_orientation(image))
    return image if turn is None else image.transpose(turn)


def _uncovered_as_white(image: Image.Image) -> Image.Image:
    """A loaded GIF whose first frame covers part of its logical screen only, with the rest white (RGB), as
    `to_bgr` composites transparency on white: viewers show nothing there (the screen before any frame),
    where Pillow fills it with palette colour 0, black in most palettes. Any other image as it is."""
    box = getattr(image, "dispose_extent", None) if image.format == "GIF" else None
    if box is None or tuple(box) == (0, 0, *image.size):
        return image
    screen = Image.new("RGBA", image.size, (255, 255, 255, 255))
    screen.alpha_composite(image.crop(box).convert("RGBA"), dest=tuple(box[:2]))
    return screen.convert("RGB")


def _key_as_alpha(path: Path, image: Image.Image) -> Image.Image:
    """A loaded 16-bit RGB PNG whose tRNS names a transparent colour, as RGBA with that colour's pixels
    transparent (info, EXIF with it, kept). Pillow states the colour in 16-bit values but hands the pixels
    over in 8 bits, so it matched none of them, or wrong ones; OpenCV matches it on the 16-bit samples.
    Any other image as it is."""
    key = image.info.get("transparency")
    if image.format != "PNG" or image.mode != "RGB" or not isinstance(key, tuple):
        return image
    with open_regular_file(path) as handle:
        if handle.read(25)[24:] != b"\x10":  # the IHDR's bit depth
            return image
        handle.seek(0)
        data = handle.read()
    import cv2  # not at start: commands that read no image need not load it

    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if stored is None or stored.shape[:2] != image.size[::-1] or stored.ndim != 3 or stored.shape[2] != 4:
        return image
    keyed = image.copy()
    del keyed.info["transparency"]
    keyed.putalpha(Image.fromarray(np.where(stored[:, :, 3] == 0, 0, 255).astype(np.uint8)))
    return keyed


def exif_orientation(image: Image.Image) -> int:
    """The orientation in which the file stores this frame, from its header (to be read before decoding):
    2-8 as the EXIF or TIFF Orientation tag says (turned or mirrored; `upright` turns a JPEG, PNG or WebP,
    Pillow a TIFF as it decodes it), else 1. Readers that ignore the tag take such a file's stored pixels
    as the page. (Pillow drops a TIFF's tag once it has turned its pixels: after decoding, this is 1.)"""
    try:
        orientation = _header_exif(image).get(_ORIENTATION, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return 1
    return orientation if orientation in range(2, 9) else 1


def _header_exif(image: Image.Image) -> Image.Exif:
    """`image.getexif()`, without decoding a PNG that states no EXIF after its pixels. Pillow decodes every
    PNG whose header holds no EXIF, to look for one in the chunks after the pixel data: all of a 300-dpi
    scan, to learn that it has none. Where no such chunk follows the pixels, decoding adds nothing to what
    the header gave, so the header's is the answer."""
    if image.format == "PNG" and not _png_exif_after_pixels(image):
        return Image.Image.getexif(image)
    return image.getexif()


def _png_exif_after_pixels(image: Image.Image) -> bool:
    """Whether the opened PNG has a chunk after its first IDAT where Pillow looks for an orientation (eXIf,
    or a text chunk of EXIF or XMP), found by walking the chunk headers (nothing decoded). A file that ends
    early has none past where it ends; one decoded already (its file closed) is left to Pillow."""
    handle = image.fp
    if handle is None:
        return True
    position = handle.tell()
    try:
        handle.seek(8)  # past the signature
        seen_pixels = False
        while len(header := handle.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            start = handle.tell()
            seen_pixels = seen_pixels or kind == b"IDAT"
            if kind == b"IEND":
                return False
            if seen_pixels and _states_exif(handle, kind, length):
                return True
            handle.seek(start + length + 4)  # past the data and its CRC
        return False
    finally:
        handle.seek(position)


def _states_exif(handle: BinaryIO, kind: bytes, length: int) -> bool:
    """Whether the PNG chunk of `kind` whose data `handle` is at holds EXIF or XMP, as Pillow reads them: an
    eXIf chunk, or a text chunk of one of `_PNG_EXIF_KEYWORDS` (its keyword ends at a NUL byte)."""
    if kind == b"eXIf":
        return True
    if kind not in _PNG_TEXT_CHUNKS:
        return False
    keyword = handle.read(min(length, _PNG_KEYWORD_BYTES)).split(b"\0", 1)[0]
    return keyword in _PNG_EXIF_KEYWORDS


def stated_dpi(image: Image.Image) -> tuple[float, float] | None:
    """The resolution (x, y) in dots per inch that the file states for its stored pixels (JPEG's JFIF
    density or EXIF, PNG's pHYs, TIFF's tags, BMP's header); None where it states none. A TIFF's tags and
    a JPEG's EXIF are read here (`_tags_dpi`), the rest as Pillow reads it."""
    if image.format == "TIFF":
        values = _tags_dpi(image.tag_v2)
    elif image.format in ("JPEG", "MPO") and image.info.get("jfif_unit") not in _JFIF_DENSITY_UNITS:
        try:
            values = _tags_dpi(image.getexif())
        except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
            return None
    else:
        values = image.info.get("dpi")
    try:
        x, y = (float(value) for value in values or ())
    except (TypeError, ValueError):
        return None
    return (x, y) if 0 < x < _MAX_STATED_DPI and 0 < y < _MAX_STATED_DPI else None


def _tags_dpi(tags: Mapping[int, object]) -> tuple[float, float] | None:
    """The resolution (x, y) in dots per inch that TIFF or EXIF tags state (a TIFF frame's own, a JPEG's EXIF
    where it has no JFIF density): XResolution, YResolution (XResolution's where absent) in ResolutionUnit
    (inches where absent, as both standards have it; 1, no absolute unit, states none). None where they
    state none. Pillow reads a JPEG's EXIF as 72 dpi where the unit is absent, XResolution for both axes and
    unit 1 as inches, and keeps a TIFF frame's dpi for later frames whose tags state none."""
    try:
        if _X_RESOLUTION not in tags:
            return None
        x, unit = tags[_X_RESOLUTION], tags.get(_RESOLUTION_UNIT, 2)
        y = tags.get(_Y_RESOLUTION, x)
        scale = _DPI_PER_RESOLUTION.get(unit[0] if isinstance(unit, tuple) and unit else unit)
        return None if scale is None else (float(x) * scale, float(y) * scale)
    except (TypeError, ValueError, ZeroDivisionError, KeyError, struct.error):
        return None


def upright_dpi(image: Image.Image, orientation: int) -> tuple[float, float] | None:
    """`stated_dpi` (of the stored pixels, whoever turns them upright) for the upright pixels of an image
    stored in EXIF `orientation` (`exif_orientation`, read before decoding)."""
    dpi = stated_dpi(image)
    return (dpi[1], dpi[0]) if dpi is not None and orientation in _QUARTER_TURNS else dpi


def upright_header(image: Image.Image) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """The (width, height) and `upright_dpi` of an opened image's upright pixels, from its header alone."""
    orientation = exif_orientation(image)
    size = _stored_size(image)
    return (size[::-1] if orientation in _QUARTER_TURNS else size), upright_dpi(image, orientation)


def turned_note(path: Path, stated: tuple[int, int]) -> str:
    """Why the upright image `path` is not of the (width, height) `stated`, where that is the size of the
    pixels the file stores, which its orientation tag turns a quarter (Label Studio's COCO export states
    it, though viewers and docsam show the page upright), else ""."""
    try:
        with open_image(path) as image:
            turned = exif_orientation(image) in _QUARTER_TURNS and _stored_size(image) == stated
    except InputError:
        return ""
    size = f"{stated[0]:g}x{stated[1]:g}"
    if not turned:
        return ""
    return f" ({size} is the size of its stored pixels, before its orientation tag turns them upright)"


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """The (width, height) of the pixels as the file stores them. A TIFF's are its tags' (ImageWidth,
    ImageLength): Pillow 11 and later report a TIFF's size turned by its Orientation already, earlier
    versions as stored."""
    tags = getattr(image, "tag_v2", None)
    width, height = (tags.get(256), tags.get(257)) if tags is not None else (None, None)
    return (width, height) if isinstance(width, int) and isinstance(height, int) else image.size


def check_planar_layout(path: Path, image: Image.Image, page: int | None = None) -> None:
    """Refuse the uncompressed TIFF layouts Pillow misreads (compressed ones are decoded by libtiff,
    correctly): more than 8 bits per sample stored plane by plane (16-bit RGB scans from some archive
    workflows), whose planes Pillow reads as 8-bit samples, and YCbCr with subsampled chroma, which it
    reads as if each pixel had its own (a garbled image, or "truncated" where the file ends)."""
    tags = getattr(image, "tag_v2", None)
    bits = _tiff_bits(image)
    if tags is None or tags.get(_COMPRESSION, 1) != 1:
        return
    subsampling = tags.get(_YCBCR_SUBSAMPLING, (1, 1))
    factors = subsampling if isinstance(subsampling, tuple) else (subsampling,)
    if tags.get(_PHOTOMETRIC) == _YCBCR and any(factor != 1 for factor in factors):
        reason = (
            "an uncompressed YCbCr TIFF with subsampled chroma (YCbCrSubsampling "
            f"{'x'.join(map(str, factors))}), a kind of TIFF Pillow cannot read; "
            "re-save it as RGB or compressed"
        )
        raise InputError(path, reason, page)
    if tags.get(_PLANAR_CONFIGURATION) != 2:
        return
    if bits is not None and bits > 8:
        reason = (
            f"a {bits}-bit TIFF stored plane by plane (PlanarConfiguration 2) without compression, "
            "which Pillow misreads; re-save it with interleaved samples (tiffcp -p contig) or compressed"
        )
        raise InputError(path, reason, page)


def _tiff_bits(image: Image.Image) -> int | None:
    """A TIFF's bits per sample (tag 258), None for other formats."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) else None


def _white_is_zero(image: Image.Image) -> bool:
    """Whether a TIFF's samples count from white (PhotometricInterpretation 0, bilevel and grey scans)."""
    tags = getattr(image, "tag_v2", None)
    return tags is not None and tags.get(_PHOTOMETRIC) == 0


def _wide_integers_to_gray(values: np.ndarray) -> np.ndarray:
    """32-bit integer samples, whose range says nothing of the type: read as 8-bit when they fit (values
    0..255 written as int32 by a scientific tool), as 16-bit when those fit, else scaled from their
    maximum."""
    values = np.clip(values.astype(np.int64), 0, None)
    top = int(values.max()) if values.size else 0
    if top <= 255:
        return values.astype(np.uint8)
    if top <= 65535:
        return (values >> 8).astype(np.uint8)
    return (values * 255 // top).astype(np.uint8)


def to_bgr(image: Image.Image, sample_bits: int | None = None, white_is_zero: bool = False) -> np.ndarray:
    """(H, W, 3) contiguous BGR uint8 from any Pillow mode.

    1-bit, grayscale and palette images become gray/colour BGR; any alpha (RGBA, LA, La, PA, palette or
    grayscale transparency) is composited on white, as a page on paper; 16-bit samples keep their top 8
    bits (as Pillow does for 16-bit RGB), and so do a 12-bit TIFF's (`sample_bits`), which Pillow hands
    over in a 16-bit mode unscaled; 32-bit integer samples (`sample_bits`, the file's: Pillow gives
    16-bit PGM and 32-bit TIFF the same mode) are read by their values' range (`_wide_integers_to_gray`);
    float images are read as 0..1 if they fit, else clipped to
    0..255; CMYK, YCbCr, LAB and HSV go through Pillow's RGB conversion (embedded ICC profiles ignored).
    `white_is_zero` (a TIFF's PhotometricInterpretation 0) inverts those 16-bit, 32-bit and float samples:
    Pillow inverts 1- to 8-bit WhiteIsZero TIFFs while decoding, but hands these over as stored.
    """
    if image.mode == "La":  # grey with premultiplied alpha (a TIFF's associated alpha)
        image = image.convert("LA")  # the one conversion Pillow has from it
    gray = _samples_to_gray(image, sample_bits)
    if gray is not None:
        return _gray_to_bgr(_transparent_as_white(image, 255 - gray if white_is_zero else gray))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if image.mode in ("1", "L"):
        return _gray_to_bgr(np.asarray(image.convert("L")))
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _samples_to_gray(image: Image.Image, sample_bits: int | None) -> np.ndarray | None:
    """8-bit grey from the modes whose samples Pillow hands over as stored (32-bit integer, 16-bit,
    float; see `to_bgr`); None for every other mode."""
    mode = image.mode
    if mode == "I" and sample_bits == 32:
        return _wide_integers_to_gray(np.asarray(image))
    if mode in _SIXTEEN_BIT_MODES:
        shift = _sample_bits_in_sixteen(sample_bits) - 8
        return (np.clip(np.asarray(image), 0, (256 << shift) - 1) >> shift).astype(np.uint8)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return None


def _transparent_as_white(image: Image.Image, gray: np.ndarray) -> np.ndarray:
    """`gray` with the pixels of the image's transparent grey level (a 16-bit grey PNG's tRNS) white, as
    `to_bgr` composites every other transparency on white (Pillow's RGBA conversion does not reach these
    modes)."""
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return gray
    return np.where(np.asarray(image) == key, np.uint8(255), gray)


def _sample_bits_in_sixteen(sample_bits: int | None) -> int:
    """The significant bits of samples Pillow hands over in a 16-bit mode: a 12-bit TIFF's stay 0..4095
    (Pillow does not scale them, as it does a PGM's); 16 for every other file."""
    return sample_bits if sample_bits is not None and 8 < sample_bits < 16 else 16


def _gray_to_bgr(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)
