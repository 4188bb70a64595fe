"""Instances of OCR-D's derived (cropped, deskewed) page image moved back into the page's pixels: where
OCR-D's own `coordinates_for_segment` puts the same points, cut to the page and its Border."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from instances_factory import make_instances, rect_mask
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

pytest.importorskip("ocrd_utils", reason="the OCR-D processor needs the `ocrd` extra")

from ocrd_utils import coordinates_for_segment, rotate_coordinates, shift_coordinates

from docsam_cli.ocrd.frame import ReadingFrame, to_page_frame
from docsam_cli.writers.shapes import PageShapes

PAGE_SIZE = (300, 400)  # width, height


def raster(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32)], 1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_the_page_itself_is_left_as_it_is():
    instances = make_instances([rect_mask(400, 300, 10, 20, 50, 60)], [0], ["text"])
    assert to_page_frame(instances, np.eye(3), PAGE_SIZE) is instances


def test_a_crop_shifts_every_pixel_by_its_offset():
    """A Border-cropped image starting at page pixel (40, 70): derived (x, y) is page (x + 40, y + 70)."""
    transform = shift_coordinates(np.eye(3), np.array([-40, -70]))
    derived = [rect_mask(200, 150, 10, 20, 60, 90), rect_mask(200, 150, 0, 0, 150, 5)]
    instances = make_instances(derived, [0, 1], ["text", "table"], scores=[0.8, 0.6])
    moved = to_page_frame(instances, transform, PAGE_SIZE)
    assert (moved.width, moved.height) == PAGE_SIZE
    assert moved.decode_mask(0).tolist() == rect_mask(400, 300, 50, 90, 100, 160).tolist()
    assert moved.decode_mask(1).tolist() == rect_mask(400, 300, 40, 70, 190, 75).tolist()
    np.testing.assert_allclose(moved.boxes, instances.boxes + np.array([40, 70, 40, 70]))
    assert moved.scores.tolist() == [0.8, 0.6] and moved.labels.tolist() == [0, 1]
    assert [moved.class_name(index) for index in range(2)] == ["text", "table"]
    semantic = [mask_utils.decode(rle).astype(bool) for rle in moved.semantic_masks]
    assert semantic[0].tolist() == moved.decode_mask(0).tolist()


def test_a_deskewed_crop_maps_back_as_ocrd_maps_points():
    """Crop, then rotate by 7° (the canvas grows, as OCR-D's deskewing does): the moved mask covers the
    polygon `coordinates_for_segment` gives for the rectangle's corners."""
    offset = np.array([30, 50])
    crop_size = np.array([220, 300])  # width, height of the crop before rotation
    transform = rotate_coordinates(shift_coordinates(np.eye(3), -offset), 7.0, orig=crop_size / 2)
    derived_height, derived_width = 340, 270  # holds the rotated crop
    x0, y0, x1, y1 = 60, 80, 160, 200
    instances = make_instances([rect_mask(derived_height, derived_width, x0, y0, x1, y1)], [0], ["text"])
    moved = to_page_frame(instances, transform, PAGE_SIZE)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    expected = raster(coordinates_for_segment(corners, None, {"transform": transform}), *PAGE_SIZE)
    assert iou(moved.decode_mask(0), expected) > 0.95
    box = moved.boxes[0]
    page_corners = coordinates_for_segment(corners, None, {"transform": transform})
    np.testing.assert_allclose(box, [*page_corners.min(axis=0), *page_corners.max(axis=0)], atol=1)


def test_masks_are_cut_to_the_page_and_its_border():
    border = np.array([[20, 20], [280, 40], [150, 380]])
    everything = make_instances([np.ones((400, 300), dtype=bool)], [0], ["text"])
    moved = to_page_frame(everything, np.eye(3), PAGE_SIZE, border)
    assert moved.decode_mask(0).tolist() == raster(border, *PAGE_SIZE).tolist()
    # A derived image reaching past the page (a rotated canvas) gives nothing outside the page.
    shifted = shift_coordinates(np.eye(3), np.array([50, 50]))  # derived (x, y) is page (x - 50, y - 50)
    larger = make_instances([np.ones((500, 400), dtype=bool)], [0], ["text"])
    moved = to_page_frame(larger, shifted, PAGE_SIZE)
    assert moved.decode_mask(0).shape == (400, 300) and moved.decode_mask(0).all()


def test_outlines_cut_to_a_skewed_border_stay_inside_it_as_ocrds_validator_checks():
    """A frame-shaped mask cut by a Border skewed by 6 degrees leaves a one-pixel strip along its edge,
    joined to the rest at a pixel corner; the outline widened there to stay one polygon reached 1.57 px
    past the Border, more than the 1.5 px OCR-D's validator allows. Cut to the Border, it stays inside."""
    width, height = 30, 108
    border = np.array([[0, 21], [17, 19], [25, 92], [8, 94]])
    frame = np.ones((height, width), dtype=bool)
    frame[27:81, 7:22] = False
    moved = to_page_frame(make_instances([frame], [0], ["text"]), np.eye(3), (width, height), border)
    limit = Polygon(border).simplify(1.0).buffer(1.5)  # as OCR-D's validator (POLY_TOLERANCE, PARENT_SLACK)
    outline = PageShapes(moved, within=border).outline(0)
    assert Polygon(outline).is_valid and Polygon(outline).simplify(1.0).within(limit)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_a_reading_frame_turns_pixels_exactly_and_back(turns):
    """Every page pixel lands on a frame pixel (corners on corners) and comes back unchanged; the frame is
    the one of the transform's rotation, whatever small deskew comes with it."""
    width, height = 7, 4
    angle = np.radians(90 * turns + 2.5)
    transform = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    frame = ReadingFrame.of(transform, (width, height))
    assert frame.quarter_turns == turns
    pixels = np.array([[x, y] for x in range(width) for y in range(height)])
    moved = frame.from_page(pixels)
    frame_width, frame_height = frame.size
    assert moved.min() == 0 and moved[:, 0].max() == frame_width - 1 and moved[:, 1].max() == frame_height - 1
    assert len({tuple(point) for point in moved.tolist()}) == len(pixels)
    assert (frame.to_page(moved) == pixels).all()
