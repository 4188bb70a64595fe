"""Overlay images: the page with translucent masks, outlines, class labels with scores, and a legend.

The page keeps its size and pixel coordinates; the legend sits on a white margin added to the right of it,
so it never hides the page, however small the page. It lists the classes drawn on this page, with their
counts, in as many columns as the page height needs (a page too short for one row gets a taller margin).
A page with nothing drawn gets no legend and no margin. Colours are fixed per class index (the prompted
class order), so a class looks the same on every page of a run and in every run with the same
`--classes`. Instances are painted largest first, so small ones stay visible on top; each label sits at its
instance's top-left corner, inside the page, or below, beside or above the labels already there. Text is
drawn with Pillow's bundled scalable font, sized to the page; class names beyond ASCII, which it lacks, with
a system font that has them (`label_fonts`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.datasets.classes import clean_name
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
FONTCONFIG_TRIES = 5  # of the fonts fontconfig ranks first for a label's letters, how many are tried
LABEL_EXTRAS = "0123456789.()"  # drawn with each class name: its score on the page, its count in the legend
LOOKUP_SIZE = 16  # px, of the fonts loaded to see which letters they draw
UNDRAWN = "\U000f0000"  # a private-use code point: no font has a glyph for it

RIGHT_TO_LEFT = frozenset({"R", "AL"})  # Unicode bidirectional classes: Hebrew, Arabic, Syriac, Thaana, ...

logger = logging.getLogger(__name__)
_font_lookup = threading.Lock()  # one lookup per class list, and one warning, however many writer threads

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
FontSource = tuple[str, int]  # a font file, and the face's index in it (a .ttc collection holds several)


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
    height or (a page shorter than one legend row) taller, wider by the legend's margin if any.

    Everything is drawn in place on one array of the overlay's size: the labels and the legend through
    Pillow on their own small areas only. (The page as a Pillow image, converted there and back with its
    channels reversed and pasted onto the margin's canvas, held five page-sized copies of a 400-dpi
    newspaper page, 1.8 GB, and took most of the overlay's time.)"""
    height, width = image.shape[:2]
    if (height, width) != (shapes.height, shapes.width):
        raise ValueError(f"page is {width}x{height} but the instances are for {shapes.width}x{shapes.height}")
    scale = max(min(height, width), 1)
    thickness = max(1, round(scale / 600))
    order = [int(index) for index in np.argsort(-shapes.areas, kind="stable")]
    painted = [index for index in order if shapes.window(index).mask.size]
    fonts = label_fonts(max(10, round(scale / 70)), shapes.class_names)
    legend = legend_layout(shapes, painted, fonts, height)
    overlay = np.empty((max(height, legend.height), width + legend.width, 3), np.uint8)
    overlay[:height, width:] = overlay[height:] = MARGIN[::-1]
    canvas = overlay[:height, :width]  # the page's part, drawn in place
    canvas[...] = image
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

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    drawn_labels = np.zeros((0, 4), np.int64)
    for index in painted:
        box = _label(canvas, measure, fonts[shapes.label(index)], shapes, index, drawn_labels)
        drawn_labels = np.vstack([drawn_labels, box])
    _draw_legend(overlay, fonts, legend)
    return overlay


@contextlib.contextmanager
def _pillow_part(canvas: np.ndarray, area: tuple[int, int, int, int]) -> Iterator[ImageDraw.ImageDraw]:
    """A Pillow drawing of the part `area` (x0, y0, x1, y1) of the BGR `canvas`, in the part's coordinates,
    copied back into `canvas` after the `with` block: Pillow draws each pixel of a part as it would on the
    whole canvas, but for what it would draw outside the part."""
    x0, y0, x1, y1 = area
    part = Image.fromarray(np.ascontiguousarray(canvas[y0:y1, x0:x1, ::-1]))
    yield ImageDraw.Draw(part)
    canvas[y0:y1, x0:x1] = np.asarray(part)[:, :, ::-1]


def label_fonts(size: int, class_names: Sequence[str]) -> list[Font]:
    """The font of each class name, at `size`: Pillow's bundled font while all names are ASCII (it draws
    nothing more); else one font for all of them, the first that draws all their letters (`_font_sources`),
    and for a name it lacks (`表格` among `Überschrift` and `جدول`), one that draws that name, so that no
    name is drawn as boxes while an installed font has its letters. New fonts per page: writer threads
    never share one."""
    with _font_lookup:
        sources = _font_sources(tuple(class_names))
    loaded = {source: _load(source, size) or _load(None, size) for source in set(sources)}
    return [loaded[source] for source in sources]


@functools.cache
def _font_sources(class_names: tuple[str, ...]) -> tuple[FontSource | None, ...]:
    """`label_fonts`'s choice, None for the bundled font: the same for every page of a run, and looked up
    once, as finding fonts is slow (Pillow walks the font folders for a name; fontconfig is a subprocess).
    With no font drawing all the names, the first of `FALLBACK_FONTS` installed draws those it can."""
    everything = _letters("".join(class_names))
    if all(letter.isascii() for letter in everything):
        return (None,) * len(class_names)
    shared = _font_drawing(everything) or next(iter(_installed_fallbacks()), None)
    sources = tuple(
        shared if shared is not None and _draws_all(shared, letters) else _font_drawing(letters) or shared
        for letters in map(_letters, class_names)
    )
    _warn_of_illegible(class_names, sources)
    return sources


def _warn_of_illegible(class_names: Sequence[str], sources: Sequence[FontSource | None]) -> None:
    """Warn of the class names the overlays cannot draw as written: with letters no installed font has
    (drawn as boxes), or right to left where Pillow lays text out without FriBiDi (their letters drawn in
    reverse order, Arabic's unjoined). Labels and legend showed them so without a word why."""
    boxed = [
        name
        for name, source in zip(class_names, sources, strict=True)
        if not _draws_all(source, _letters(name))
    ]
    if boxed:
        logger.warning(
            "overlays draw the class name(s) %s as boxes: no installed font has their letters (install one "
            "that has, such as Noto Sans CJK for Chinese, Japanese or Korean)",
            ", ".join(repr(clean_name(name)) for name in boxed),
        )
    if features.check_feature("raqm"):
        return
    reversed_names = [
        name for name in class_names if any(unicodedata.bidirectional(c) in RIGHT_TO_LEFT for c in name)
    ]
    if reversed_names:
        logger.warning(
            "overlays draw the class name(s) %s with their letters reversed and unjoined: Pillow lays out "
            "right-to-left text only with the FriBiDi library (install libfribidi0 or fribidi)",
            ", ".join(repr(clean_name(name)) for name in reversed_names),
        )


def _letters(text: str) -> frozenset[str]:
    """The characters a label of `text` draws: its own, but spaces, and those of a score or count."""
    return frozenset(letter for letter in text + LABEL_EXTRAS if not letter.isspace())


def _font_drawing(letters: frozenset[str]) -> FontSource | None:
    """The first of `FALLBACK_FONTS` installed, then of the fonts fontconfig ranks best for `letters`,
    that draws all of them; None if none does."""
    draws = functools.partial(_draws_all, letters=letters)
    installed = next(filter(draws, _installed_fallbacks()), None)
    return installed or next(filter(draws, _fontconfig_fonts(letters)), None)


@functools.cache
def _installed_fallbacks() -> tuple[FontSource, ...]:
    """The files of `FALLBACK_FONTS` found by Pillow in the system's font folders, in that order."""
    found = (_load((name, 0), LOOKUP_SIZE) for name in FALLBACK_FONTS)
    return tuple((font.path, font.index) for font in found if isinstance(font, ImageFont.FreeTypeFont))


def _fontconfig_fonts(letters: frozenset[str]) -> list[FontSource]:
    """The `FONTCONFIG_TRIES` fonts fontconfig ranks first for `letters` (sans-serif, those with all of
    them first): it knows every installed font, such as the CJK or Arabic one a system has instead of
    those `FALLBACK_FONTS` names. None where it is not installed (Windows, macOS mostly)."""
    charset = " ".join(f"{ord(letter):x}" for letter in sorted(letters))
    command = ["fc-match", "--sort", "--format=%{file}\\t%{index}\\n", f"sans-serif:charset={charset}"]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    sources = []
    for line in listing.splitlines():
        file, _, index = line.partition("\t")
        if file and index.isdigit():
            sources.append((file, int(index)))
    return sources[:FONTCONFIG_TRIES]


def _load(source: FontSource | None, size: int) -> Font | None:
    """The font at `size`: the bundled one for None; None if `source` cannot be loaded (not installed, or
    a bitmap font without that size)."""
    if source is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(source[0], size, index=source[1])
    except OSError:
        return None


def _draws_all(source: FontSource | None, letters: frozenset[str]) -> bool:
    """Whether the font (None: the bundled one) has a glyph of its own for each of `letters`, rather than
    the box it draws for a letter it lacks (as for a private-use code point)."""
    font = _load(source, LOOKUP_SIZE)
    if font is None:
        return False
    missing = _glyph(font, UNDRAWN)
    return all(_glyph(font, letter) != missing for letter in letters)


def _glyph(font: Font, letter: str) -> tuple[tuple[int, int], bytes]:
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
    canvas: np.ndarray,
    measure: ImageDraw.ImageDraw,
    font: Font,
    shapes: PageShapes,
    index: int,
    drawn_labels: np.ndarray,
) -> tuple[int, int, int, int]:
    """`class score` on a box of the class colour at the mask's top-left corner, moved inside the page and
    then down, as far as the instance reaches, below the labels already drawn (`drawn_labels`, rows of
    x0, y0, x1, y1) that it would cover: instances from one corner (a region and a smaller one nested in
    it, or the same region found as two classes) showed only the last label. An instance too low for that
    (a heading or text line at its region's corner) has its label moved right instead, beside those
    labels, as far as the instance reaches; one with no room for either (a rule just above a footnote, a
    text line in its page-number region) up, above them, as far as the page's top: it was drawn over the
    label before: two labels read 'text-line 0.89r 0.90'. Drawn on the page `canvas` (BGR, in place),
    measured with `measure` (a drawing of an RGB image); returns the box drawn."""
    page_size = canvas.shape[1], canvas.shape[0]
    text = f"{clean_name(shapes.class_name(index))} {shapes.score(index):.2f}"
    left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 6)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    window = shapes.window(index)
    x = min(window.x, max(page_size[0] - box_w, 0))
    y = min(window.y, max(page_size[1] - box_h, 0))
    lowest = min(window.y + window.mask.shape[0], page_size[1]) - box_h  # the last top inside the instance
    rightmost = min(window.x + window.mask.shape[1], page_size[0]) - box_w  # the last left inside it
    box = (x, y, x + box_w, y + box_h)
    x, y = _free_place(box, drawn_labels, lowest, rightmost)
    rgb = class_colour(shapes.label(index))
    area = (x, y, min(x + box_w, page_size[0]), min(y + box_h, page_size[1]))  # text is inked inside its bbox
    with _pillow_part(canvas, area) as draw:
        draw.rectangle((0, 0, box_w - 1, box_h - 1), fill=rgb)
        draw.text((pad - left, pad - top), text, font=font, fill=_ink(rgb))
    return x, y, x + box_w, y + box_h


def _free_place(
    box: tuple[int, int, int, int], drawn_labels: np.ndarray, lowest: int, rightmost: int
) -> tuple[int, int]:
    """Where the label `box` goes, x0 and y0: moved down past the `drawn_labels` it would cover, no lower
    than `lowest`, else right, no further than `rightmost`, else up, no higher than the page's top; else
    where it is, over them."""
    x, y = box[:2]
    if (below := _past_labels(box, drawn_labels, 1, lowest)) is not None:
        return x, below
    if (beside := _past_labels(box, drawn_labels, 0, rightmost)) is not None:
        return beside, y
    above = _past_labels(box, drawn_labels, 1, 0, forward=False)
    return x, y if above is None else above


def _past_labels(
    box: tuple[int, int, int, int], drawn_labels: np.ndarray, axis: int, limit: int, forward: bool = True
) -> int | None:
    """The start of `box` along `axis` (0: x, 1: y) moved past each of `drawn_labels` it overlaps, until it
    overlaps none, `forward` (rightwards, downwards) or back; None if that would take it beyond `limit`."""
    across_axis = 1 - axis
    low, high = box[across_axis], box[across_axis + 2]
    across = drawn_labels[(drawn_labels[:, across_axis] < high) & (low < drawn_labels[:, across_axis + 2])]
    start, size = box[axis], box[axis + 2] - box[axis]
    while True:
        hit = across[(across[:, axis] < start + size) & (start < across[:, axis + 2])]
        if not len(hit):
            return start
        start = int(hit[:, axis + 2].max()) if forward else int(hit[:, axis].min()) - size
        if (start > limit) if forward else (start < limit):
            return None


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
    fonts: Sequence[Font],
    page_height: int,
) -> Legend:
    """Where the legend's rows go: one per class among the `drawn` instances, `name (count)`, by class
    index, top to bottom in columns no taller than the page, to the right of the page; `fonts` are the
    class names' (`label_fonts`)."""
    counts = Counter(shapes.label(index) for index in drawn)
    entries = [
        (label, f"{clean_name(shapes.class_names[label])} ({counts[label]})") for label in sorted(counts)
    ]
    if not entries:
        return Legend([], shapes.width, 0, 0, 0, 0)
    boxes = [fonts[label].getbbox(text) for label, text in entries]
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


def _draw_legend(overlay: np.ndarray, fonts: Sequence[Font], legend: Legend) -> None:
    """The legend on its margin, the part of `overlay` (BGR, drawn in place) right of the page."""
    if not legend.rows:
        return
    with _pillow_part(overlay, (legend.left, 0, overlay.shape[1], overlay.shape[0])) as draw:
        draw.line((0, 0, 0, overlay.shape[0] - 1), fill=RULE)
        for row in legend.rows:
            font = fonts[row.label]
            left, top, _, _ = font.getbbox(row.text)
            x = row.x - legend.left
            draw.rectangle(
                (x, row.y, x + legend.swatch - 1, row.y + legend.swatch - 1), fill=class_colour(row.label)
            )
            draw.text(
                (x + legend.swatch + legend.pad - left, row.y - top), row.text, font=font, fill=(0, 0, 0)
            )


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
