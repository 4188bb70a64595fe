"""Mask → polygon conversion, box clipping and reading order, shared by the writers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from instances_factory import rect_mask

from docsam_cli.writers.boxes import clip_box, xyxy_to_xywh
from docsam_cli.writers.polygons import largest_polygon, mask_polygons
from docsam_cli.writers.reading_order import reading_order


def assert_valid(polygon: np.ndarray, height: int, width: int) -> None:
    assert polygon.dtype == np.int32 and polygon.ndim == 2 and polygon.shape[1] == 2
    assert len({tuple(point) for point in polygon.tolist()}) >= 3
    assert (polygon[:, 0] >= 0).all() and (polygon[:, 0] < width).all()
    assert (polygon[:, 1] >= 0).all() and (polygon[:, 1] < height).all()
    assert cv2.contourArea(polygon.reshape(-1, 1, 2)) > 0
    assert not (polygon == np.roll(polygon, 1, axis=0)).all(axis=1).any()  # no repeated consecutive point


def fill(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [polygon.reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_rectangle_gives_its_four_corners():
    polygon = largest_polygon(rect_mask(50, 60, 10, 5, 40, 25))
    assert sorted(map(tuple, polygon.tolist())) == [(10, 5), (10, 24), (39, 5), (39, 24)]


def test_components_become_separate_polygons_largest_first_and_holes_are_ignored():
    mask = rect_mask(100, 100, 5, 5, 15, 15) | rect_mask(100, 100, 30, 30, 90, 90)
    mask[50:60, 50:60] = False  # a hole in the big one
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    assert polygons[0][:, 0].min() == 30 and polygons[1][:, 0].max() == 14
    assert largest_polygon(mask).tolist() == polygons[0].tolist()
    for polygon in polygons:
        assert_valid(polygon, 100, 100)


def test_curved_shapes_are_simplified_but_keep_their_outline():
    mask = np.zeros((400, 400), np.uint8)
    cv2.circle(mask, (200, 200), 150, 1, -1)
    (polygon,) = mask_polygons(mask.astype(bool))
    raw, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    assert len(polygon) < len(raw[0]) / 4
    assert iou(fill(polygon, 400, 400), mask.astype(bool)) > 0.98
    assert_valid(polygon, 400, 400)


@pytest.mark.parametrize(
    ("box", "where"),
    [
        ((0, 20, 50, 21), "a one-pixel horizontal rule"),
        ((7, 0, 8, 40), "a one-pixel vertical rule"),
        ((49, 39, 50, 40), "a lone pixel in the bottom-right corner"),
        ((0, 0, 1, 1), "a lone pixel in the top-left corner"),
    ],
)
def test_thin_components_become_small_rectangles_inside_the_page(box, where):
    polygon = largest_polygon(rect_mask(40, 50, *box))
    assert polygon is not None, where
    assert_valid(polygon, 40, 50)
    x0, y0, x1, y1 = box
    assert polygon[:, 0].min() <= x0 and polygon[:, 0].max() >= x1 - 1
    assert polygon[:, 1].min() <= y0 and polygon[:, 1].max() >= y1 - 1


def test_empty_mask_and_one_pixel_wide_page_give_no_polygon():
    assert mask_polygons(np.zeros((10, 10), bool)) == []
    assert largest_polygon(np.ones((10, 1), bool)) is None


def test_boxes_are_sorted_and_clipped_to_the_page():
    assert clip_box([-5.0, 30.0, 120.0, 10.0], width=100, height=50) == (0.0, 10.0, 100.0, 30.0)
    assert clip_box([150.0, -20.0, 130.0, -10.0], width=100, height=50) == (100.0, 0.0, 100.0, 0.0)
    assert clip_box(np.array([np.nan, 1.0, np.inf, 2.0]), width=10, height=10) == (0.0, 1.0, 0.0, 2.0)
    assert xyxy_to_xywh((2.0, 3.0, 10.0, 4.5)) == [2.0, 3.0, 8.0, 1.5]


def test_reading_order_follows_columns_between_full_width_bands():
    boxes = [
        (0, 95, 100, 100),  # footer
        (55, 45, 100, 90),  # right column, lower
        (0, 0, 100, 10),  # title
        (55, 20, 100, 40),  # right column, upper
        (0, 55, 45, 90),  # left column, lower
        (0, 20, 45, 50),  # left column, upper (its paragraph break is level with nothing on the right)
    ]
    assert reading_order(boxes) == [2, 5, 4, 3, 1, 0]


def test_reading_order_falls_back_to_top_then_left_without_gaps():
    boxes = [(50, 10, 100, 30), (0, 0, 60, 20), (10, 25, 70, 50)]  # all overlap in x and y
    assert reading_order(boxes) == [1, 0, 2]
    assert reading_order([]) == []
