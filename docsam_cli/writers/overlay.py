"""Overlay images: the page with translucent masks, outlines, class labels with scores, and a legend.

The overlay has the page's own size. Colours are fixed per class index (the prompted class order), so a
class looks the same on every page of a run and in every run with the same `--classes`. Instances are
painted largest first, so small ones stay visible on top; each label sits at its instance's top-left
corner, inside the page. The legend (top-right) lists every prompted class with its count on this page.
Text is drawn with Pillow's bundled scalable font, sized to the page.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.writers.shapes import PageShapes

# Distinct, colour-blind-aware colours (RGB): Okabe-Ito first, then Tableau-like extensions.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (213, 94, 0), (86, 180, 233),
    (240, 228, 66), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34),
    (23, 190, 207), (214, 39, 40), (44, 160, 44), (31, 119, 180), (255, 127, 14), (174, 199, 232),
    (152, 223, 138), (255, 152, 150),
)  # fmt: skip
ENCODINGS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def class_colour(label: int) -> tuple[int, int, int]:
    """RGB colour of class index `label`."""
    return PALETTE[label % len(PALETTE)]


def render_overlay(image: np.ndarray, shapes: PageShapes, alpha: float = 0.4) -> np.ndarray:
    """The overlay as a BGR uint8 array of `image`'s shape. `image` is the page (BGR, as decoded)."""
    height, width = image.shape[:2]
    if (height, width) != (shapes.height, shapes.width):
        raise ValueError(f"page is {width}x{height} but the instances are for {shapes.width}x{shapes.height}")
    canvas = image.copy()
    scale = max(min(height, width), 1)
    thickness = max(1, round(scale / 600))
    order = [int(index) for index in np.argsort(-shapes.areas, kind="stable")]
    painted = [index for index in order if shapes.window(index).mask.size]
    for index in painted:
        bgr = class_colour(shapes.label(index))[::-1]
        window = shapes.window(index)
        h, w = window.mask.shape
        _blend(canvas[window.y : window.y + h, window.x : window.x + w], window.mask, bgr, alpha)
        contours, _ = cv2.findContours(
            window.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(
            canvas, contours, -1, bgr, thickness, lineType=cv2.LINE_AA, offset=(window.x, window.y)
        )

    picture = Image.fromarray(canvas[:, :, ::-1])
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, round(scale / 70)))
    for index in painted:
        corner = (shapes.window(index).x, shapes.window(index).y)
        _label(draw, font, shapes, index, corner, (width, height))
    _legend(picture, draw, font, shapes)
    return np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])


def write_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    shapes: PageShapes,
    alpha: float = 0.4,
    jpeg_quality: int = 90,
) -> None:
    """Render and write atomically; the format follows the suffix (.png, .jpg, .jpeg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in ENCODINGS:
        raise ValueError(f"overlay must be .png, .jpg or .jpeg, not {Path(path).name!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ENCODINGS[suffix] == ".jpg" else []
    ok, encoded = cv2.imencode(ENCODINGS[suffix], render_overlay(image, shapes, alpha), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {Path(path).name}")
    atomic_write_bytes(path, encoded.tobytes())


def _blend(region: np.ndarray, mask: np.ndarray, bgr: tuple[int, int, int], alpha: float) -> None:
    """Mix `bgr` into the masked pixels of `region` (in place), rounding to the nearest value.

    Each output value depends only on the input value and the channel, so the mix is a per-channel lookup
    table: far faster than arithmetic on the masked pixels of a page-sized window.
    """
    colour = np.asarray(bgr, dtype=np.float32)
    values = np.arange(256, dtype=np.float64)[:, None]
    table = np.rint(values * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    cv2.copyTo(cv2.LUT(region, table.reshape(256, 1, 3)), mask.view(np.uint8), region)


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    shapes: PageShapes,
    index: int,
    corner: tuple[int, int],
    page_size: tuple[int, int],
) -> None:
    """`class score` on a box of the class colour at the mask's top-left corner, moved inside the page."""
    text = f"{shapes.class_name(index)} {shapes.score(index):.2f}"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 6)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(corner[0], max(page_size[0] - box_w, 0))
    y = min(corner[1], max(page_size[1] - box_h, 0))
    rgb = class_colour(shapes.label(index))
    draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=rgb)
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=_ink(rgb))


def _legend(
    picture: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    shapes: PageShapes,
) -> None:
    counts = Counter(shapes.label(index) for index in range(len(shapes)))
    rows = [f"{name} ({counts.get(label, 0)})" for label, name in enumerate(shapes.class_names)]
    if not rows:
        return
    boxes = [draw.textbbox((0, 0), row, font=font) for row in rows]
    line_h = max(bottom - top for _, top, _, bottom in boxes)
    pad = max(2, line_h // 3)
    swatch = line_h
    text_w = max(right - left for left, _, right, _ in boxes)
    legend_w = pad + swatch + pad + text_w + pad
    legend_h = pad + len(rows) * (line_h + pad)
    x0 = max(picture.width - legend_w - pad, 0)
    y0 = min(pad, max(picture.height - legend_h, 0))
    backdrop = Image.new("RGBA", (legend_w, legend_h), (255, 255, 255, 217))
    picture.paste(backdrop, (x0, y0), backdrop)
    draw.rectangle((x0, y0, x0 + legend_w - 1, y0 + legend_h - 1), outline=(64, 64, 64))
    for label, (row, (left, top, _, _)) in enumerate(zip(rows, boxes, strict=True)):
        y = y0 + pad + label * (line_h + pad)
        draw.rectangle((x0 + pad, y, x0 + pad + swatch - 1, y + swatch - 1), fill=class_colour(label))
        draw.text((x0 + 2 * pad + swatch - left, y - top), row, font=font, fill=(0, 0, 0))


def _ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)
