"""Decode image files with Pillow into upright 8-bit BGR arrays, whatever their mode.

Orientation: the EXIF Orientation tag (cameras, phone scans, some TIFF scanners) is applied, so a page
comes out as an image viewer shows it and every output (PAGE coordinates, `imageWidth`/`imageHeight`,
overlays) refers to that upright image. For a file with a non-trivial orientation tag this differs from
its raw pixel grid; tools that ignore EXIF would see the page rotated.

Size limit: Pillow's `Image.MAX_IMAGE_PIXELS` is the decompression-bomb limit for every input, PDFs
included; `set_max_image_pixels` changes it. An image above it is an `InputError` (Pillow itself only
warns below twice the limit; `set_max_image_pixels` silences that warning, the error replaces it).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from docsam_cli.errors import InputError

PIXEL_LIMIT_HINT = "raise the limit with --max-image-pixels if the file is trusted"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)


def set_max_image_pixels(limit: int | None) -> None:
    """Set the decompression-bomb limit (pixels per image or rendered PDF page); None disables it.

    Process-wide, for the CLI to call once at start-up: it sets Pillow's limit and silences Pillow's
    warning for images between the limit and twice it, which the loaders report as InputErrors instead.
    """
    Image.MAX_IMAGE_PIXELS = limit
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_pixel_limit(path: Path, width: float, height: float, page: int | None = None) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    pixels = int(width) * int(height)
    if limit is not None and pixels > limit:
        raise InputError(
            path,
            f"{int(width)}x{int(height)} = {pixels} pixels exceeds the decompression-bomb limit of "
            f"{limit} pixels ({PIXEL_LIMIT_HINT})",
            page,
        )


def open_image(path: Path) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit. Raises InputError."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        reason = f"image exceeds twice the decompression-bomb limit of {limit} pixels ({PIXEL_LIMIT_HINT})"
        raise InputError(path, reason) from None
    except UnidentifiedImageError:
        raise InputError(path, "not an image or PDF (or an unsupported image format)") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    try:
        check_pixel_limit(path, *image.size)
    except InputError:
        image.close()
        raise
    return image


def frame_count(image: Image.Image) -> int:
    """Pages of a multi-page TIFF; 1 for anything else (animated GIF/WebP frames are not pages)."""
    return int(getattr(image, "n_frames", 1)) if image.format == "TIFF" else 1


def load_frame(path: Path, frame: int = 0, page: int | None = None) -> np.ndarray:
    """Decode one frame (0-based) as an upright BGR uint8 array. Raises InputError."""
    with open_image(path) as image:
        try:
            if frame:
                image.seek(frame)
                check_pixel_limit(path, *image.size, page)
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(path, f"truncated or corrupt image data ({error})", page) from None
        return to_bgr(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than failing the page."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return image


def to_bgr(image: Image.Image) -> np.ndarray:
    """(H, W, 3) contiguous BGR uint8 from any Pillow mode.

    1-bit, grayscale and palette images become gray/colour BGR; any alpha (RGBA, LA, PA, palette or
    grayscale transparency) is composited on white, as a page on paper; 16-bit samples keep their top 8
    bits (as Pillow does for 16-bit RGB); float images are read as 0..1 if they fit, else clipped to
    0..255; CMYK, YCbCr, LAB and HSV go through Pillow's RGB conversion (embedded ICC profiles ignored).
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    elif mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    elif mode in ("1", "L"):
        gray = np.asarray(image.convert("L"))
    else:
        rgb = np.asarray(image.convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return np.repeat(gray[:, :, None], 3, axis=2)
