"""Overlay images: the page with translucent masks, outlines, class labels with scores, and a legend.

The page keeps its size and pixel coordinates; the legend sits on a white margin added to the right of it,
so it never hides the page, however small the page. It lists the classes drawn on this page, with their
counts, in as many columns as the page height needs (a page too short for one row gets a taller margin).
A page with nothing drawn gets no legend and no margin. Colours are fixed per class index (the prompted
class order), so a class looks the same on every page of a run and in every run with the same
`--classes`. Instances are painted largest first, so small ones stay visible on top; each label sits at its
instance's top-left corner, inside the page, or below the labels already there. Text is drawn with Pillow's
bundled scalable font, sized to the page; class names beyond ASCII, which it lacks, with a system font that
has them (`label_font`).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.writers.shapes import PageShapes

# Far apart in CIELAB, for normal vision and as protanopes, deuteranopes and tritanopes see them (Machado et
# al. 2009's simulation, tests/test_overlay.py): ΔE76 at least 33 and 16.8 between the first 11 (DocLayNet's),
# 26 and 13 between all 20; none near the white of paper or the black of ink (lightness 30 to 75). The first
# five of Okabe-Ito's colour-blind-safe set, then, one at a time, the colour of a 16-level RGB grid farthest
# from those before it under all four visions (normal vision's distances halved: it tells colours apart
# best). A palette taken for normal vision alone drew Footnote and Picture alike for a protanope (ΔE 1.4).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (213, 94, 0), (136, 0, 255),
    (102, 68, 34), (255, 68, 238), (68, 51, 170), (238, 0, 85), (187, 187, 102), (153, 0, 119),
    (153, 187, 221), (136, 85, 255), (221, 170, 170), (119, 153, 255), (153, 0, 68), (119, 102, 119),
    (85, 119, 68), (153, 68, 17),
)  # fmt: skip
MARGIN = (255, 255, 255)  # the legend's background, RGB
RULE = (64, 64, 64)  # the line between the page and the margin, RGB
ENCODINGS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}
FILL_OPACITY = 0.4  # of the class colour over the page inside a mask
JPEG_QUALITY = 90
# Fonts covering far more than ASCII, found by Pillow in the system's font folders: DejaVu (Latin, Greek,
# Cyrillic, ...; installed with most Linux distributions), then Noto's CJK, Arial Unicode (macOS), Arial.
FALLBACK_FONTS = ("DejaVuSans.ttf", "NotoSansCJK-Regular.ttc", "Arial Unicode.ttf", "arial.ttf")
UNDRAWN = "\U000f0000"  # a private-use code point: no font has a glyph for it


def class_colour(label: int) -> tuple[int, int, int]:
    """RGB colour of class index `label`: `PALETTE`'s for the first 20 classes, then `_all_colours`'s."""
    colours = _all_colours()
    return colours[label % len(colours)]


@functools.cache
def _all_colours() -> tuple[tuple[int, int, int], ...]:
    """`PALETTE`, then the colours of a 6-level RGB grid (lightness 20 to 85), each the one
    farthest in CIELAB from all before it: a run of more classes than `PALETTE` holds still gives each class
    a colour of its own (the later ones closer together), not the colour of class `label - 20`."""
    levels = np.arange(0, 256, 51)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lightness = _lab(grid)[:, 0]
    candidates = grid[(lightness >= 20) & (lightness <= 85)]
    points = _lab(candidates)
    nearest = np.linalg.norm(points[:, None] - _lab(np.asarray(PALETTE))[None], axis=-1).min(axis=1)
    colours = list(PALETTE)
    while nearest.max() > 0:
        best = int(nearest.argmax())
        colours.append(tuple(int(value) for value in candidates[best]))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[best], axis=-1))
    return tuple(colours)


def _lab(colours: np.ndarray) -> np.ndarray:
    """CIELAB (L 0..100) of RGB colours (K, 3)."""
    rgb = np.asarray(colours, np.float32).reshape(-1, 1, 3) / 255
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def render_overlay(image: np.ndarray, shapes: PageShapes) -> np.ndarray:
    """The overlay as a BGR uint8 array: `image` (the page, BGR as decoded) at the top left, with the same
    height or (a page shorter than one legend row) taller, wider by the legend's margin if any."""
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
        _blend(canvas[window.y : window.y + h, window.x : window.x + w], window.mask, bgr)
        contours, _ = cv2.findContours(
            window.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(
            canvas, contours, -1, bgr, thickness, lineType=cv2.LINE_AA, offset=(window.x, window.y)
        )

    picture = Image.fromarray(canvas[:, :, ::-1])
    draw = ImageDraw.Draw(picture)
    font = label_font(max(10, round(scale / 70)), shapes.class_names)
    drawn_labels = np.zeros((0, 4), np.int64)
    for index in painted:
        box = _label(draw, font, shapes, index, drawn_labels, (width, height))
        drawn_labels = np.vstack([drawn_labels, box])
    picture = _with_legend(picture, font, legend_layout(shapes, painted, font, height))
    return np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])


def label_font(size: int, class_names: Sequence[str]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font, which draws ASCII only; for class names beyond it (`Überschrift`, `表格`) the
    first of `FALLBACK_FONTS` installed that draws all their letters, so that they are not drawn as boxes,
    else the first installed (it draws more than the bundled one), else the bundled one. A new font per
    page: writer threads never share one."""
    letters = {letter for letter in "".join(class_names) if not letter.isspace()}
    if all(letter.isascii() for letter in letters):
        return ImageFont.load_default(size=size)
    installed = [font for name in FALLBACK_FONTS if (font := _system_font(name, size))]
    if not installed:
        return ImageFont.load_default(size=size)
    return next((font for font in installed if _draws_all(font, letters)), installed[0])


def _system_font(name: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        return None  # not installed


def _draws_all(font: ImageFont.FreeTypeFont, letters: set[str]) -> bool:
    """Whether `font` has a glyph of its own for each of `letters`, rather than the box it draws for a
    letter it lacks (as for a private-use code point)."""
    missing = _glyph(font, UNDRAWN)
    return all(_glyph(font, letter) != missing for letter in letters)


def _glyph(font: ImageFont.FreeTypeFont, letter: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(letter)
    return mask.size, bytes(mask)


def write_overlay(path: str | os.PathLike[str], image: np.ndarray, shapes: PageShapes) -> None:
    """Render and write atomically; the format follows the suffix (.png, .jpg, .jpeg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in ENCODINGS:
        raise ValueError(f"overlay must be .png, .jpg or .jpeg, not {Path(path).name!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ENCODINGS[suffix] == ".jpg" else []
    ok, encoded = cv2.imencode(ENCODINGS[suffix], render_overlay(image, shapes), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {Path(path).name}")
    atomic_write_bytes(path, encoded.tobytes())


def _blend(region: np.ndarray, mask: np.ndarray, bgr: tuple[int, int, int]) -> None:
    """Mix `bgr` into the masked pixels of `region` (in place), rounding to the nearest value.

    Each output value depends only on the input value and the channel, so the mix is a per-channel lookup
    table: far faster than arithmetic on the masked pixels of a page-sized window.
    """
    colour = np.asarray(bgr, dtype=np.float32)
    values = np.arange(256, dtype=np.float64)[:, None]
    table = np.rint(values * (1.0 - FILL_OPACITY) + colour * FILL_OPACITY).astype(np.uint8)
    cv2.copyTo(cv2.LUT(region, table.reshape(256, 1, 3)), mask.view(np.uint8), region)


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    shapes: PageShapes,
    index: int,
    drawn_labels: np.ndarray,
    page_size: tuple[int, int],
) -> tuple[int, int, int, int]:
    """`class score` on a box of the class colour at the mask's top-left corner, moved inside the page and
    then down, as far as the instance reaches, below the labels already drawn (`drawn_labels`, rows of
    x0, y0, x1, y1) that it would cover: instances from one corner (a region and a smaller one nested in
    it, or the same region found as two classes) showed only the last label. Returns the box drawn."""
    text = f"{shapes.class_name(index)} {shapes.score(index):.2f}"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 6)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    window = shapes.window(index)
    x = min(window.x, max(page_size[0] - box_w, 0))
    y = min(window.y, max(page_size[1] - box_h, 0))
    lowest = min(window.y + window.mask.shape[0], page_size[1]) - box_h  # the last top inside the instance
    y = _below_labels((x, y, x + box_w, y + box_h), drawn_labels, lowest)
    rgb = class_colour(shapes.label(index))
    draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=rgb)
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=_ink(rgb))
    return x, y, x + box_w, y + box_h


def _below_labels(box: tuple[int, int, int, int], drawn_labels: np.ndarray, lowest: int) -> int:
    """The top of `box` moved down past each of `drawn_labels` it overlaps, until it overlaps none; its
    own top if that would be below `lowest`."""
    x0, y0, x1, y1 = box
    top = y0
    across = drawn_labels[(drawn_labels[:, 0] < x1) & (x0 < drawn_labels[:, 2])]
    while True:
        hit = across[(across[:, 1] < top + y1 - y0) & (top < across[:, 3])]
        if not len(hit):
            return top
        top = int(hit[:, 3].max())
        if top > lowest:
            return y0


@dataclass(frozen=True)
class LegendRow:
    label: int
    text: str
    x: int  # left edge of the swatch, on the overlay
    y: int  # top edge of the swatch and the text


@dataclass(frozen=True)
class Legend:
    rows: list[LegendRow]
    left: int  # where the margin starts: the page's width
    width: int  # of the margin
    height: int  # the legend's: its rows and the padding around them
    swatch: int  # side of a swatch, the height of a row's text
    pad: int  # between rows, and between a swatch and its text


def legend_layout(
    shapes: PageShapes,
    drawn: Sequence[int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    page_height: int,
) -> Legend:
    """Where the legend's rows go: one per class among the `drawn` instances, `name (count)`, by class
    index, top to bottom in columns no taller than the page, to the right of the page."""
    counts = Counter(shapes.label(index) for index in drawn)
    entries = [(label, f"{shapes.class_names[label]} ({counts[label]})") for label in sorted(counts)]
    if not entries:
        return Legend([], shapes.width, 0, 0, 0, 0)
    boxes = [font.getbbox(text) for _, text in entries]
    swatch = max(bottom - top for _, top, _, bottom in boxes)
    pad = max(2, swatch // 3)
    pitch = swatch + pad
    per_column = max(1, (page_height - pad) // pitch)
    columns = -(-len(entries) // per_column)
    per_column = -(-len(entries) // columns)  # balanced: the last column is at most one row shorter
    column_w = swatch + pad + max(right - left for left, _, right, _ in boxes) + 2 * pad
    rows = [
        LegendRow(
            label, text, shapes.width + 2 * pad + (n // per_column) * column_w, pad + (n % per_column) * pitch
        )
        for n, (label, text) in enumerate(entries)
    ]
    return Legend(rows, shapes.width, 2 * pad + columns * column_w, pad + per_column * pitch, swatch, pad)


def _with_legend(
    picture: Image.Image, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, legend: Legend
) -> Image.Image:
    """`picture` on a canvas with the legend's margin to its right (`picture` itself if no legend)."""
    if not legend.rows:
        return picture
    size = (picture.width + legend.width, max(picture.height, legend.height))
    canvas = Image.new("RGB", size, MARGIN)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.line((legend.left, 0, legend.left, size[1] - 1), fill=RULE)
    for row in legend.rows:
        left, top, _, _ = font.getbbox(row.text)
        draw.rectangle(
            (row.x, row.y, row.x + legend.swatch - 1, row.y + legend.swatch - 1), fill=class_colour(row.label)
        )
        draw.text(
            (row.x + legend.swatch + legend.pad - left, row.y - top),
            row.text,
            font=font,
            fill=(0, 0, 0),
        )
    return canvas


def _ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `rgb` (WCAG 2 contrast ratio, from relative luminance):
    at least 4.58:1 on any colour. A threshold on luma (Rec. 601) wrote white on cyan and yellow-green
    labels, at 2.3:1."""
    luminance = relative_luminance(rgb)
    return (0, 0, 0) if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else (255, 255, 255)


def relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2's relative luminance of an sRGB colour: 0 for black, 1 for white."""
    channels = np.asarray(rgb, np.float64) / 255
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ (0.2126, 0.7152, 0.0722))
