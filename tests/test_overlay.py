"""Overlay images: page-sized, masks tinted in stable class colours, labels, legend, atomic PNG/JPEG."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from instances_factory import empty_instances, make_instances, rect_mask

from docsam_cli.writers.overlay import class_colour, render_overlay, write_overlay
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


def test_overlay_has_the_page_size_and_tints_masks_in_their_class_colour(page, shapes):
    overlay = render_overlay(page, shapes)
    assert overlay.shape == page.shape and overlay.dtype == np.uint8
    inner = (slice(300, 370), slice(40, 120))  # inside the text mask, away from its label and outline
    assert tint_towards(page[inner].astype(float), overlay[inner].astype(float), class_colour(0)[::-1])
    inner = (slice(300, 370), slice(180, 280))
    assert tint_towards(page[inner].astype(float), overlay[inner].astype(float), class_colour(1)[::-1])
    assert (overlay[390:, :10] == page[390:, :10]).all()  # outside every mask and the legend: untouched


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


def test_legend_sits_in_the_top_right_corner(page, shapes):
    blank = render_overlay(page, PageShapes(empty_instances(HEIGHT, WIDTH, CLASSES)))
    changed = np.abs(blank.astype(int) - page).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert ys.max() < HEIGHT / 2 and xs.min() > WIDTH / 3  # only the legend changed the page
    for label in range(len(CLASSES)):  # one colour swatch per class
        assert (np.abs(blank.astype(int) - class_colour(label)[::-1]).sum(-1) == 0).sum() >= 16


def test_written_png_matches_the_rendering_and_jpeg_decodes(tmp_path, page, shapes):
    write_overlay(tmp_path / "out" / "page.png", page, shapes)
    assert (cv2.imread(str(tmp_path / "out" / "page.png")) == render_overlay(page, shapes)).all()
    write_overlay(tmp_path / "out" / "page.jpg", page, shapes)
    assert cv2.imread(str(tmp_path / "out" / "page.jpg")).shape == page.shape
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["page.jpg", "page.png"]


def test_bad_suffix_or_size_is_refused(tmp_path, page, shapes):
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.jpeg"):
        write_overlay(tmp_path / "page.gif", page, shapes)
    with pytest.raises(ValueError, match="instances are for 300x400"):
        render_overlay(page[:100], shapes)
    assert not list(tmp_path.iterdir())
