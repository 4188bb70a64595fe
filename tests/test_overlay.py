"""Overlay images: the page with masks tinted in stable, distinct class colours, labels, a legend on a margin
beside the page, atomic PNG/JPEG."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from instances_factory import empty_instances, make_instances, rect_mask
from PIL import ImageFont, features

import docsam_cli.writers.overlay as overlay_module
from docsam_cli.presets import PRESETS
from docsam_cli.writers.overlay import (
    MARGIN,
    PALETTE,
    RULE,
    class_colour,
    relative_luminance,
    render_overlay,
    write_overlay,
)
from docsam_cli.writers.shapes import PageShapes

CLASSES = ["text", "table", "figure"]
HEIGHT, WIDTH = 400, 300


@pytest.fixture
def page() -> np.ndarray:
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    image[::8] = 0  # ruled lines, so that blending shows on ink and paper alike
    return image


@pytest.fixture
def shapes():
    masks = [rect_mask(HEIGHT, WIDTH, 20, 60, 140, 380), rect_mask(HEIGHT, WIDTH, 160, 200, 290, 380)]
    return PageShapes(make_instances(masks, [0, 1], CLASSES, scores=[0.97, 0.55]))


def tint_towards(before: np.ndarray, after: np.ndarray, bgr: tuple[int, int, int]) -> bool:
    """Every pixel moved closer to `bgr`."""
    target = np.asarray(bgr, np.float64)
    return bool((np.abs(after - target).sum(-1) < np.abs(before - target).sum(-1)).all())


def test_overlay_keeps_the_page_and_tints_masks_in_their_class_colour(page, shapes):
    overlay = render_overlay(page, shapes)
    assert overlay.shape[0] == HEIGHT and overlay.shape[1] > WIDTH and overlay.dtype == np.uint8  # + margin
    inner = (slice(300, 370), slice(40, 120))  # inside the text mask, away from its label and outline
    assert tint_towards(page[inner].astype(float), overlay[inner].astype(float), class_colour(0)[::-1])
    inner = (slice(300, 370), slice(180, 280))
    assert tint_towards(page[inner].astype(float), overlay[inner].astype(float), class_colour(1)[::-1])
    assert (overlay[390:, :10] == page[390:, :10]).all()  # outside every mask and the legend: untouched


def contrast(first: tuple[int, int, int], second: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio of two RGB colours (1 to 21)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_label_text_contrasts_with_its_box_in_every_class_colour(page):
    """White on the cyan of DocLayNet's Table or the yellow-green of its Picture was 2.3:1 and 2.6:1, hard to
    read; a label's text now has WCAG's 4.5:1 at least on every class colour."""
    names = [f"class{n}" for n in range(40)]
    for label in range(len(names)):
        masks = [rect_mask(HEIGHT, WIDTH, 20, 60, 140, 380)]
        overlay = render_overlay(page, PageShapes(make_instances(masks, [label], names)))
        box = overlay[60:68, 20:60].reshape(-1, 3)[:, ::-1]  # the label's box: its fill and its text, RGB
        fill = class_colour(label)
        assert (box == fill).all(-1).mean() > 0.3, label  # mostly the box's fill
        best = max(contrast(fill, tuple(int(v) for v in pixel)) for pixel in box)
        assert best >= 4.5, f"class {label} {fill}: text at {best:.2f}:1"


def test_class_colours_are_distinct_and_the_same_on_every_page(page, shapes):
    assert len({class_colour(label) for label in range(len(CLASSES))}) == len(CLASSES)
    other_page = PageShapes(make_instances([rect_mask(HEIGHT, WIDTH, 0, 0, 50, 50)], [1], CLASSES))
    overlay = render_overlay(np.full_like(page, 255), other_page)
    assert tint_towards(
        np.full((1, 3), 255.0), overlay[40:45, 5:10].reshape(-1, 3).astype(float), class_colour(1)[::-1]
    )


def test_labels_and_outlines_are_drawn(page, shapes):
    overlay = render_overlay(page, shapes)
    label_box = overlay[60:70, 20:40]
    assert (np.abs(label_box.astype(int) - class_colour(0)[::-1]).sum(-1) == 0).mean() > 0.3  # label fill
    edge = overlay[200:380, 289]  # the table's right edge: the outline, in full colour
    assert (np.abs(edge.astype(int) - class_colour(1)[::-1]).sum(-1) < 60).mean() > 0.9


def test_labels_from_one_corner_are_stacked_not_drawn_over_each_other(page):
    """A region, a smaller one nested in it from its top-left corner, and a duplicate of the latter in a third
    class: each label was drawn over the one before, and only the last could be read."""
    masks = [rect_mask(HEIGHT, WIDTH, 20, 60, 140, 380)] + [rect_mask(HEIGHT, WIDTH, 20, 60, 130, 200)] * 2
    overlay = render_overlay(page, PageShapes(make_instances(masks, [0, 1, 2], CLASSES)))
    labels = overlay[60:120, 22:60].astype(int)  # right of the masks' left outline, below the page's rules
    tops = []
    for label in range(3):
        fill = (np.abs(labels - class_colour(label)[::-1]).sum(-1) == 0).mean(axis=1) > 0.3
        rows = np.flatnonzero(fill)
        assert len(rows) >= 4, f"{CLASSES[label]}'s label is covered"
        tops.append(rows.min())
    assert tops == sorted(tops)  # largest first, each below the one drawn before it


def test_a_nested_instance_too_low_to_stack_its_label_does_not_cover_the_label_before(page):
    """A heading one label high at the top-left corner of its text region (a paragraph's first text line,
    with a line class): its label found no room below the region's inside the heading and was drawn over
    it, so the region's label could not be seen at all; it now goes beside it, along the heading."""
    masks = [rect_mask(HEIGHT, WIDTH, 20, 60, 280, 380), rect_mask(HEIGHT, WIDTH, 20, 60, 280, 75)]
    overlay = render_overlay(page, PageShapes(make_instances(masks, [0, 1], CLASSES)))
    corner = overlay[60:75, 20:280].astype(int)
    for label in range(2):
        fill = (np.abs(corner - class_colour(label)[::-1]).sum(-1) == 0).sum()
        assert fill >= 100, f"{CLASSES[label]}'s label is covered"


def test_a_label_with_no_room_in_its_instance_goes_above_the_label_it_would_cover(page):
    """A separator rule lower and narrower than a label, just above a footnote (a text line in its page-number
    region, too): its label found no room inside it, below or beside the footnote's, and was drawn over that
    one (two labels read 'text-line 0.89r 0.90'); it now goes above, and both can be read."""
    masks = [rect_mask(HEIGHT, WIDTH, 20, 200, 280, 380), rect_mask(HEIGHT, WIDTH, 20, 195, 60, 198)]
    overlay = render_overlay(page, PageShapes(make_instances(masks, [0, 1], CLASSES, scores=[0.97, 0.5])))
    around = overlay[150:240, 20:120].astype(int)
    for label in range(2):
        fill = (np.abs(around - class_colour(label)[::-1]).sum(-1) == 0).sum()
        assert fill >= 200, f"{CLASSES[label]}'s label is covered"


def test_a_page_with_nothing_drawn_gets_no_legend(page):
    blank = render_overlay(page, PageShapes(empty_instances(HEIGHT, WIDTH, CLASSES)))
    assert (blank == page).all()


def test_written_png_matches_the_rendering_and_jpeg_decodes(tmp_path, page, shapes):
    write_overlay(tmp_path / "out" / "page.png", page, shapes)
    assert (cv2.imread(str(tmp_path / "out" / "page.png")) == render_overlay(page, shapes)).all()
    write_overlay(tmp_path / "out" / "page.jpg", page, shapes)
    assert cv2.imread(str(tmp_path / "out" / "page.jpg")).shape == render_overlay(page, shapes).shape
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["page.jpg", "page.png"]


def test_bad_suffix_or_size_is_refused(tmp_path, page, shapes):
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.jpeg"):
        write_overlay(tmp_path / "page.gif", page, shapes)
    with pytest.raises(ValueError, match="instances are for 300x400"):
        render_overlay(page[:100], shapes)
    assert not list(tmp_path.iterdir())


def lab(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """CIELAB (L 0..100) of RGB colours."""
    rgb = np.asarray(colours, np.float32).reshape(-1, 1, 3) / 255
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def closest_pair(colours: list[tuple[int, int, int]]) -> tuple[float, tuple[int, int]]:
    """The smallest ΔE76 (CIELAB distance) between two of `colours`, and their indices."""
    points = lab(colours)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    first, second = np.unravel_index(int(distances.argmin()), distances.shape)
    return float(distances.min()), (int(first), int(second))


def test_class_colours_are_far_apart_for_every_preset_and_the_whole_palette():
    largest_preset = max(len(preset.classes) for preset in PRESETS.values())
    assert len(PALETTE) >= largest_preset
    distance, pair = closest_pair([class_colour(label) for label in range(largest_preset)])
    assert distance >= 25, f"classes {pair} look alike"
    distance, pair = closest_pair(list(PALETTE))
    assert distance >= 25, f"classes {pair} look alike"  # also for --classes lists longer than the presets


def test_more_classes_than_the_palette_still_get_colours_of_their_own():
    """Class 20 no longer takes class 0's colour: beyond the palette, colours stay distinct (ΔE ≥ 20 up to
    60 classes) and as light as the palette's; the first 20 are the palette."""
    colours = [class_colour(label) for label in range(60)]
    assert colours[: len(PALETTE)] == list(PALETTE)
    distance, pair = closest_pair(colours)
    assert distance >= 20, f"classes {pair} look alike"
    lightness = lab(colours)[:, 0]
    assert lightness.min() >= 19.5 and lightness.max() <= 85.5


# Machado, Oliveira and Fernandes (2009), severity 1: how protanopes, deuteranopes, tritanopes see linear RGB.
COLOUR_BLINDNESS = {
    "protanopia": [
        [0.152286, 1.052583, -0.204868],
        [0.114503, 0.786281, 0.099216],
        [-0.003882, -0.048116, 1.051998],
    ],
    "deuteranopia": [
        [0.367322, 0.860646, -0.227968],
        [0.280085, 0.672501, 0.047413],
        [-0.01182, 0.04294, 0.968881],
    ],
    "tritanopia": [
        [1.255528, -0.076749, -0.178779],
        [-0.078411, 0.930809, 0.147602],
        [0.004733, 0.691367, 0.3039],
    ],
}


def as_seen(colours: list[tuple[int, int, int]], matrix: list[list[float]]) -> list[tuple[int, int, int]]:
    """`colours` as a colour-blind reader sees them (sRGB, by `matrix` on linear RGB)."""
    rgb = np.asarray(colours, np.float64) / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4) @ np.asarray(matrix).T
    linear = np.clip(linear, 0, 1)
    seen = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return [tuple(int(value) for value in np.rint(colour * 255)) for colour in seen]


@pytest.mark.parametrize("vision", COLOUR_BLINDNESS, ids=str)
def test_class_colours_stay_apart_for_colour_blind_readers(vision):
    """A protanope saw DocLayNet's Footnote and Picture in one colour (ΔE 1.4), and Page-footer and Picture
    close for a deuteranope (ΔE 7.8)."""
    doclaynet = as_seen([class_colour(label) for label in range(len(DOCLAYNET))], COLOUR_BLINDNESS[vision])
    distance, pair = closest_pair(doclaynet)
    assert distance >= 15, f"{DOCLAYNET[pair[0]]} and {DOCLAYNET[pair[1]]} look alike"
    distance, pair = closest_pair(as_seen(list(PALETTE), COLOUR_BLINDNESS[vision]))
    assert distance >= 12, f"classes {pair} look alike"


def test_class_colours_stay_away_from_paper_and_ink():
    lightness = lab(list(PALETTE))[:, 0]
    assert lightness.min() >= 20 and lightness.max() <= 85


DOCLAYNET = list(PRESETS["doclaynet"].classes)


def grid_instances(height: int, width: int, labels: list[int]) -> PageShapes:
    """One rectangle per label (doclaynet class index), in a grid over the page's left half."""
    side = max(1, int(np.ceil(np.sqrt(len(labels)))))
    cell_h, cell_w = height // side, width // 2 // side
    cells = [divmod(n, side) for n in range(len(labels))]
    masks = [
        rect_mask(
            height, width, col * cell_w + 1, row * cell_h + 1, (col + 1) * cell_w - 1, (row + 1) * cell_h - 1
        )
        for row, col in cells
    ]
    return PageShapes(make_instances(masks, labels, DOCLAYNET))


LEGEND_CASES = {
    "tiny page, every class": (120, 160, list(range(len(DOCLAYNET)))),
    "normal page, three classes": (1100, 850, [9, 9, 3, 8, 9]),
    "strip lower than one row": (12, 400, [0, 5]),
}


@pytest.mark.parametrize("case", LEGEND_CASES, ids=str)
def test_legend_lists_the_drawn_classes_beside_the_page_never_on_it(case, monkeypatch):
    height, width, labels = LEGEND_CASES[case]
    page = np.full((height, width, 3), 255, np.uint8)
    page[::4] = 0
    shapes = grid_instances(height, width, labels)
    overlay = render_overlay(page, shapes)
    monkeypatch.setattr(overlay_module, "_draw_legend", lambda overlay, fonts, legend: None)
    without_legend = render_overlay(page, shapes)
    assert overlay.shape[0] >= height and overlay.shape[1] > width
    assert (overlay[:height, :width] == without_legend[:height, :width]).all()  # no legend pixel on the page

    margin = overlay[:, width:].astype(int)
    below = overlay[height:, :width]
    assert (below == MARGIN).all()  # a page lower than one legend row: white below it
    assert (margin[:, 0] == RULE[::-1]).all()  # the line between page and legend
    edges = np.concatenate([margin[0, 1:], margin[-1, 1:], margin[:, -1]])
    assert (edges == MARGIN).all()  # nothing runs off the image
    for label in range(len(DOCLAYNET)):
        found = swatches(margin, class_colour(label))
        if label not in labels:
            assert not found, f"{DOCLAYNET[label]} has no instance but is in the legend"
            continue
        [(x, y, side, side_y)] = found
        assert side == side_y >= 8  # a whole square, as tall as legible text
        ink = (margin[y : y + side, x + side :] < 160).all(-1).any(axis=0)  # dark columns right of it
        assert ink.sum() >= 2 * side  # "Text (1)": several glyphs, not a stub


class _Shifted:
    """A Pillow drawing whose coordinates are moved by (dx, dy): a part's drawing made on the whole image."""

    def __init__(self, draw, dx: int, dy: int) -> None:
        self.draw, self.dx, self.dy = draw, dx, dy

    def _moved(self, xy):
        return tuple(value + (self.dx, self.dy)[n % 2] for n, value in enumerate(xy))

    def rectangle(self, xy, **options):
        self.draw.rectangle(self._moved(xy), **options)

    def line(self, xy, **options):
        self.draw.line(self._moved(xy), **options)

    def text(self, xy, text, **options):
        self.draw.text(self._moved(xy), text, **options)


def crowded_shapes(height: int, width: int) -> PageShapes:
    """Nested instances from one corner (labels stacked and moved beside each other), labels reaching past
    the page's right and bottom edges, and class names beyond ASCII."""
    masks = [
        rect_mask(height, width, 0, 0, width - 1, height - 1),
        rect_mask(height, width, 0, 0, width // 2, height // 2),
        rect_mask(height, width, 0, 0, width // 4, 8),
        rect_mask(height, width, width - 6, height - 4, width - 1, height - 1),
        rect_mask(height, width, width // 2, height // 3, width - 1, height // 3 + 3),
    ]
    return PageShapes(make_instances(masks, [0, 1, 2, 1, 0], ["text", "Überschrift", "表格 gjpq"]))


@pytest.mark.parametrize("size", [(400, 300), (30, 500), (14, 40)], ids=str)
def test_labels_and_legend_drawn_on_their_parts_are_as_drawn_on_the_whole_page(size, monkeypatch):
    """The labels and the legend are drawn through Pillow on their own areas only (`_pillow_part`): the
    overlay is the one Pillow draws on the whole of it, pixel for pixel."""
    height, width = size
    page = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    shapes = crowded_shapes(height, width)
    overlay = render_overlay(page, shapes)
    part = overlay_module._pillow_part

    @contextlib.contextmanager
    def on_the_whole(canvas, area):
        with part(canvas, (0, 0, canvas.shape[1], canvas.shape[0])) as draw:
            yield _Shifted(draw, area[0], area[1])

    monkeypatch.setattr(overlay_module, "_pillow_part", on_the_whole)
    assert (render_overlay(page, shapes) == overlay).all()


def test_the_overlay_holds_one_copy_of_the_page(page, shapes):
    """A 400-dpi newspaper page (12000 x 9000, 324 MB) was held five times over, converted to a Pillow image
    and back with its channels reversed: 1.8 GB more than the page itself."""
    import tracemalloc

    big = np.tile(page, (4, 4, 1))
    masks = [
        rect_mask(4 * HEIGHT, 4 * WIDTH, 20, 60, 140, 380),
        rect_mask(4 * HEIGHT, 4 * WIDTH, 600, 900, 1100, 1500),
    ]
    shapes = PageShapes(make_instances(masks, [0, 1], CLASSES))
    for index in range(len(shapes)):
        shapes.window(index)  # decoded beforehand: the writers share them
    tracemalloc.start()
    try:
        overlay = render_overlay(big, shapes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * overlay.nbytes


def swatches(margin: np.ndarray, rgb: tuple[int, int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of the solid rectangles, 3 x 3 px or more, of exactly `rgb` in `margin` (BGR)."""
    exact = (margin == rgb[::-1]).all(-1).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(exact, connectivity=4)
    return [
        (int(x), int(y), int(w), int(h))
        for x, y, w, h, area in stats[1:]
        if w >= 3 and h >= 3 and area == w * h
    ]


def test_class_names_beyond_ascii_are_drawn_not_boxed(page):
    """The bundled font draws ASCII only: `Überschrift` was labelled `□berschrift`, the same boxes as for a
    letter no font has."""
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        pytest.skip("needs DejaVu Sans installed")

    def rendered(name: str) -> np.ndarray:
        masks = [rect_mask(HEIGHT, WIDTH, 20, 60, 140, 380)]
        return render_overlay(page, PageShapes(make_instances(masks, [0], [f"{name}berschrift"])))

    assert not np.array_equal(rendered("Ü"), rendered("\U000f0000"))
    fonts = overlay_module.label_fonts(12, ("text", "Überschrift"))
    assert [font.getname()[0] for font in fonts] == ["DejaVu Sans"] * 2  # one font for the page
    fonts = overlay_module.label_fonts(12, ("text", "table"))
    assert [font.getname()[0] for font in fonts] == ["Aileron"] * 2  # ASCII: as before


@pytest.fixture
def fresh_font_lookup():
    """Fonts looked up anew, before and after the test: the choice is cached per class list."""
    overlay_module._font_sources.cache_clear()
    overlay_module._installed_fallbacks.cache_clear()
    yield
    overlay_module._font_sources.cache_clear()
    overlay_module._installed_fallbacks.cache_clear()


def fontconfig_has(text: str) -> bool:
    """Whether fontconfig lists an installed font with all the letters of `text`."""
    if shutil.which("fc-list") is None:
        return False
    charset = " ".join(f"{ord(letter):x}" for letter in set(text))
    listing = subprocess.run(["fc-list", f":charset={charset}", "file"], capture_output=True, text=True)
    return bool(listing.stdout.strip())


def draws(font, text: str) -> bool:
    """Whether `font` draws each letter of `text` as a glyph of its own, not as the box of a missing one."""
    missing = font.getmask("\U000f0000")
    return all(
        (mask := font.getmask(letter)).size != missing.size or bytes(mask) != bytes(missing)
        for letter in set(text)
    )


def rendered_names(page: np.ndarray, class_names: list[str]) -> np.ndarray:
    masks = [rect_mask(HEIGHT, WIDTH, 20, 60 + 100 * n, 140, 140 + 100 * n) for n in range(len(class_names))]
    return render_overlay(page, PageShapes(make_instances(masks, range(len(class_names)), class_names)))


# Scripts whose fonts this project's CI machines have (DejaVu Sans, found through fontconfig once the fixed
# list is hidden); CJK names take the same fontconfig path, checked by hand with WenQuanYi Zen Hei.
SCRIPTS = {
    "Greek": "Πίνακας",
    "Cyrillic": "Таблица",
    "Arabic": "جدول",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_class_name_is_drawn_in_a_font_fontconfig_finds_when_the_fixed_list_has_none(
    script, page, monkeypatch, fresh_font_lookup
):
    """The fonts tried were a fixed list (DejaVu Sans, Noto Sans CJK as Debian names it, Arial): with none
    of them drawing `表格` (WenQuanYi, Droid Sans Fallback, Noto Sans SC, another distribution's Noto CJK),
    the names were drawn as boxes though the system had a font for them."""
    name = SCRIPTS[script]
    if not fontconfig_has(name + "0123456789.()"):
        pytest.skip(f"fontconfig lists no font here with the {script} letters of {name!r}")
    monkeypatch.setattr(overlay_module, "FALLBACK_FONTS", ("NoSuchFont-Regular.ttf",))
    boxes = "\U000f0000" * len(name)  # drawn as boxes by any font, one per letter
    assert not np.array_equal(rendered_names(page, [name]), rendered_names(page, [boxes]))
    [font] = overlay_module.label_fonts(12, [name])
    assert draws(font, name + " 0.97")


def test_each_class_name_gets_a_font_that_draws_it_when_no_font_draws_them_all(page, fresh_font_lookup):
    """One font served the whole page, the first installed when none drew all the names: with Arabic and
    a letter DejaVu Sans lacks (here a mathematical one; a CJK name beside an Arabic one on most systems),
    that name was drawn as boxes though another installed font has it."""
    names = ["جدول", "text", "𝒜"]
    if not all(fontconfig_has(name) for name in names) or fontconfig_has("".join(names)):
        pytest.skip("needs fonts drawing each name but none drawing them all (DejaVu Sans and its Math)")
    rendered = rendered_names(page, names)
    assert not np.array_equal(rendered, rendered_names(page, [*names[:2], "\U000f0000"]))
    fonts = overlay_module.label_fonts(12, names)
    assert all(draws(font, name) for font, name in zip(fonts, names, strict=True))
    assert fonts[0].getname() == fonts[1].getname()  # the names one font draws share it


def test_fonts_are_looked_up_once_per_class_list_not_per_page(page, monkeypatch, fresh_font_lookup):
    calls = []
    lookup = overlay_module._fontconfig_fonts
    monkeypatch.setattr(
        overlay_module, "_fontconfig_fonts", lambda letters: calls.append(letters) or lookup(letters)
    )
    names = ["表格", "图片", "Überschrift"]
    first = [rendered_names(page, names) for _ in range(3)]
    assert len(calls) <= len(names) + 1  # the whole list, then each name at most: not per page or instance
    assert all(np.array_equal(first[0], other) for other in first[1:])


@pytest.mark.parametrize("other", ["text", "Überschrift"])
def test_a_class_name_with_line_breaks_is_labelled_on_one_line(page, other):
    """A name with a line break (from a training set's category names) ran its label and legend row over
    the row below, and beside a name beyond ASCII (drawn with a system font) Pillow's text layout raised,
    failing the page."""
    broken = rendered_names(page, ["Table\nHeader\t ", other])
    assert np.array_equal(broken, rendered_names(page, ["Table Header", other]))


def overlay_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == overlay_module.__name__]


def test_a_class_name_no_installed_font_draws_is_named_in_a_warning(page, caplog, fresh_font_lookup):
    """A name with letters no installed font has (`表格` where no CJK font is installed) was drawn as boxes in
    its labels and legend row, without a word why; it is now named in one warning line, not one per page."""
    undrawable = "\U000f0001\U000f0002"  # private-use code points: no font draws them
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            rendered_names(page, [undrawable, "Überschrift", "text"])
    [message] = overlay_warnings(caplog)
    assert repr(undrawable) in message and "boxes" in message
    assert "Überschrift" not in message and "text" not in message


def test_right_to_left_names_are_named_in_a_warning_where_pillow_lacks_fribidi(
    page, caplog, monkeypatch, fresh_font_lookup
):
    """Without the FriBiDi library (slim container images), Pillow lays text out left to right, letter by
    letter: `جدول` was labelled `لودج`, reversed and unjoined, without a word why."""
    names = ["جدول", "טבלה", "Überschrift"]

    def reversed_warnings() -> list[str]:
        overlay_module._font_sources.cache_clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rendered_names(page, names)
        return [message for message in overlay_warnings(caplog) if "reversed" in message]

    if features.check_feature("raqm"):
        assert not reversed_warnings()  # laid out right to left, letters joined
    monkeypatch.setattr(ImageFont.core, "HAVE_RAQM", False)
    [message] = reversed_warnings()
    assert repr("جدول") in message and repr("טבלה") in message and "Überschrift" not in message
