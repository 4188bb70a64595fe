"""Masks → polygons (`docsam_cli.polygons`), box clipping and reading order, shared by the writers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely
from instances_factory import rect_mask

import docsam_cli.polygons as polygons_module
from docsam_cli.polygons import drop_repeats, mask_contours, mask_edge_polygons, mask_polygons
from docsam_cli.writers.boxes import clip_box, xyxy_to_xywh
from docsam_cli.writers.reading_order import reading_order


def ocrd_valid(polygon: np.ndarray) -> bool:
    """OCR-D's `--check-coords` test of one polygon: 4+ points, valid, and still valid simplified by 1 px."""
    if len(polygon) < 4:
        return False
    shape = shapely.Polygon(polygon.astype(float))
    return bool(shape.is_valid and shape.simplify(1.0).is_valid and not shape.is_empty)


def assert_valid(polygon: np.ndarray, height: int, width: int) -> None:
    assert polygon.dtype == np.int32 and polygon.ndim == 2 and polygon.shape[1] == 2
    assert ocrd_valid(polygon), shapely.is_valid_reason(shapely.Polygon(polygon))
    assert (polygon[:, 0] >= 0).all() and (polygon[:, 0] < width).all()
    assert (polygon[:, 1] >= 0).all() and (polygon[:, 1] < height).all()


def fill(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [polygon.reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def plain_simplification(mask: np.ndarray) -> list[np.ndarray]:
    """What the writers wrote before validity was checked: approxPolyDP (1 px) of each outer contour."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [drop_repeats(cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)) for contour in contours]


def test_rectangle_gives_its_four_corners():
    (polygon,) = mask_polygons(rect_mask(50, 60, 10, 5, 40, 25))
    assert sorted(map(tuple, polygon.tolist())) == [(10, 5), (10, 24), (39, 5), (39, 24)]


def test_components_become_separate_polygons_largest_first_and_holes_are_ignored():
    mask = rect_mask(100, 100, 5, 5, 15, 15) | rect_mask(100, 100, 30, 30, 90, 90)
    mask[50:60, 50:60] = False  # a hole in the big one
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    assert polygons[0][:, 0].min() == 30 and polygons[1][:, 0].max() == 14
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
    (polygon,) = mask_polygons(rect_mask(40, 50, *box))
    assert_valid(polygon, 40, 50)
    x0, y0, x1, y1 = box
    assert polygon[:, 0].min() <= x0 and polygon[:, 0].max() >= x1 - 1, where
    assert polygon[:, 1].min() <= y0 and polygon[:, 1].max() >= y1 - 1, where


@pytest.mark.parametrize(
    ("box", "corners"),
    [
        ((5, 20, 30, 21), [(5, 20), (5, 21), (29, 20), (29, 21)]),  # a rule: one pixel below it
        ((7, 3, 8, 33), [(7, 3), (7, 32), (8, 3), (8, 32)]),  # one pixel right of it
        ((5, 38, 30, 39), [(5, 38), (5, 39), (29, 38), (29, 39)]),  # a pixel below: the last row
        ((49, 39, 50, 40), [(48, 38), (48, 39), (49, 38), (49, 39)]),  # in the corner: up and left
    ],
)
def test_a_component_without_area_becomes_its_bounding_rectangle_widened_to_two_pixels(box, corners):
    """Module doc, step 1: a one-pixel rule or a lone pixel becomes its bounding rectangle widened to two
    pixels inside the page (not a shape grown around it)."""
    (polygon,) = mask_polygons(rect_mask(40, 50, *box))
    assert sorted(map(tuple, polygon.tolist())) == corners


@pytest.mark.parametrize("turns", range(4))
def test_a_right_triangle_with_a_45_degree_side_is_traced_not_boxed(turns):
    """A component whose exact outline has three corners (too few for OCR-D) keeps its shape: the outline
    through its pixels, not its bounding rectangle (twice its area, as it was)."""
    mask = np.ascontiguousarray(np.rot90(np.tril(np.ones((30, 30), bool)), turns))
    (polygon,) = mask_polygons(mask)
    assert_valid(polygon, 30, 30)
    assert iou(fill(polygon, 30, 30), mask) > 0.95


@pytest.mark.parametrize("row", [0, 11], ids=["top", "bottom"])
def test_a_neck_along_the_top_or_bottom_edge_is_thickened_inside_the_page(row):
    """Module doc, step 2: a one-pixel neck gets its 3 x 3 neighbourhood added within the page; along the
    page's first or last row that neighbourhood reaches off the page, and is cut there."""
    mask = rect_mask(12, 30, 0, 0, 8, 12) | rect_mask(12, 30, 20, 0, 30, 12)
    mask[5:7] = False
    mask[row, 8:20] = True  # the neck, on the edge row (the blocks' halves stay apart elsewhere)
    polygons = mask_polygons(mask)
    for polygon in polygons:
        assert_valid(polygon, 12, 30)
    half = mask.copy()
    half[slice(5, None) if row == 0 else slice(None, 7)] = False
    assert covers(polygons[0], half)  # the neck's half, one polygon


@pytest.mark.parametrize(
    "line",
    [np.eye(30, dtype=bool), np.fliplr(np.eye(30, dtype=bool)), np.eye(15, dtype=bool).repeat(2, axis=0)],
    ids=["diagonal", "anti-diagonal", "steep"],
)
def test_a_slanted_one_pixel_line_is_a_band_along_it_not_its_bounding_square(line):
    """A one-pixel line at a slant spans no area, like a rule, but its bounding rectangle (widened to two
    pixels, as a rule's) is nearly all area: 900 pixels for a 30-pixel diagonal. It becomes the line
    widened by a pixel, then simplified with the usual tolerance of a pixel each side: every pixel of it
    covered, and a few pixels of area per pixel of the line."""
    (polygon,) = mask_polygons(np.ascontiguousarray(line))
    assert_valid(polygon, *line.shape)
    filled = fill(polygon, *line.shape)
    assert filled[line].all()
    assert filled.sum() <= 5 * line.sum()  # its bounding rectangle: 15 times (30 x 30), 7.5 (15 x 30)


def test_empty_mask_and_one_pixel_wide_page_give_no_polygon():
    assert mask_polygons(np.zeros((10, 10), bool)) == []
    assert mask_polygons(np.ones((10, 1), bool)) == []


def covers(polygon: np.ndarray, part: np.ndarray) -> bool:
    """The polygon outlines the mask part: little of it left out, nothing beyond two pixels around it."""
    filled = fill(polygon, *part.shape)
    near = cv2.dilate(part.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return (filled & part).sum() >= 0.97 * part.sum() and not (filled & ~near).any()


def test_parts_meeting_at_a_pixel_corner_stay_one_valid_polygon():
    mask = rect_mask(60, 60, 5, 5, 25, 25) | rect_mask(60, 60, 25, 25, 40, 40)  # touching diagonally
    (contour,) = mask_contours(mask)
    assert not shapely.Polygon(contour).is_valid  # the traced outline passes the pinch twice
    (polygon,) = mask_polygons(mask)
    assert_valid(polygon, 60, 60)
    assert covers(polygon, mask)
    # the pinch's 3 x 3 neighbourhood is added (module doc), nothing further: a 4 x 3 one passed the tests
    within_a_pixel = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert not (fill(polygon, 60, 60) & ~within_a_pixel).any()


def test_one_pixel_spurs_and_bridges_are_thickened_into_the_polygon():
    spur = rect_mask(80, 80, 10, 10, 30, 30) | rect_mask(80, 80, 30, 20, 60, 21)  # a square with a spur
    bridged = rect_mask(80, 80, 10, 50, 30, 70) | rect_mask(80, 80, 60, 50, 70, 70)
    bridged |= rect_mask(80, 80, 30, 60, 60, 61)  # two squares joined by a one-pixel bridge
    assert not any(shapely.Polygon(contour).is_valid for contour in mask_contours(spur | bridged))
    polygons = mask_polygons(spur | bridged)
    assert len(polygons) == 2
    for polygon in polygons:
        assert_valid(polygon, 80, 80)
    assert covers(polygons[0], bridged) and covers(polygons[1], spur)


def test_parts_still_touching_after_thickening_are_split_into_valid_rings(monkeypatch):
    monkeypatch.setattr(polygons_module, "THICKENING_ROUNDS", 0)  # no thickening: the last resort
    mask = rect_mask(60, 60, 5, 5, 25, 25) | rect_mask(60, 60, 25, 25, 40, 40)
    big, small = mask_polygons(mask)
    for polygon in (big, small):
        assert_valid(polygon, 60, 60)
    assert covers(big, rect_mask(60, 60, 5, 5, 25, 25)) and covers(small, rect_mask(60, 60, 25, 25, 40, 40))
    spur = rect_mask(60, 60, 10, 10, 30, 30) | rect_mask(60, 60, 30, 20, 50, 21)
    (polygon,) = mask_polygons(spur)  # the spur, walked out and back, encloses nothing: it is left out
    assert_valid(polygon, 60, 60)
    assert covers(polygon, rect_mask(60, 60, 10, 10, 30, 30))


def test_a_simplification_that_touches_itself_falls_back_to_a_valid_outline():
    mask = np.zeros((12, 12), bool)
    for row, (start, stop) in {
        2: (8, 9),
        3: (7, 9),
        4: (6, 9),
        5: (4, 9),
        6: (5, 9),
        7: (7, 9),
        8: (8, 9),
    }.items():
        mask[row, start:stop] = True
    mask[4, 4] = True
    (simplified,) = plain_simplification(mask)
    assert not shapely.Polygon(simplified).is_valid  # approxPolyDP ran an edge through a vertex
    (polygon,) = mask_polygons(mask)
    assert_valid(polygon, 12, 12)
    assert iou(fill(polygon, 12, 12), mask) > 0.8


def adversarial_mask(rng: np.random.Generator, height: int = 90, width: int = 120) -> np.ndarray:
    """Blobs, thin lines, polygons with holes, and pixel noise: pinches, spurs and crossings abound."""
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        x, y = (int(value) for value in rng.integers(0, (width, height)))
        shape = int(rng.integers(0, 4))
        if shape == 0:
            cv2.circle(canvas, (x, y), int(rng.integers(1, 25)), 1, -1)
        elif shape == 1:
            cv2.line(canvas, (x, y), tuple(int(v) for v in rng.integers(0, (width, height))), 1, 1)
        elif shape == 2:
            cv2.fillPoly(canvas, [rng.integers(0, (width, height), size=(int(rng.integers(3, 9)), 2))], 1)
        else:
            cv2.rectangle(canvas, (x, y), (x + int(rng.integers(2, 40)), y + int(rng.integers(2, 40))), 1, -1)
            canvas[y + 1 : y + 3, x + 1 : x + 3] = 0  # a hole
    return canvas.astype(bool) ^ (rng.random((height, width)) < rng.choice([0.0, 0.02, 0.1]))


def test_an_outline_whose_simplification_crosses_itself_is_simplified_keeping_validity():
    """Module doc, step 2: a thickened outline whose 1 px simplification is not valid is simplified by
    shapely's topology-preserving simplifier (found by a random search over adversarial masks): 4 of the
    exact outline's 13 corners, not all 13."""
    rows = [
        ".................",
        ".......###.......",
        "##......######...",
        "..##......#######",
        "............####.",
        "..............#..",
    ]
    mask = np.zeros((11, 17), bool)
    mask[5:] = [[char == "#" for char in row] for row in rows]
    polygon = mask_polygons(mask)[0]
    assert_valid(polygon, 11, 17)
    assert sorted(map(tuple, polygon.tolist())) == [(7, 6), (14, 8), (14, 10), (16, 8)]


def test_adversarial_masks_give_only_valid_polygons_and_keep_valid_ones_unchanged():
    rng = np.random.default_rng(7)
    repaired = kept = 0
    for _ in range(40):
        mask = adversarial_mask(rng)
        polygons = mask_polygons(mask)
        for polygon in polygons:
            assert_valid(polygon, *mask.shape)
        written = {polygon.tobytes() for polygon in polygons}
        for plain in plain_simplification(mask):
            if len(plain) < 3 or cv2.contourArea(plain) == 0:
                continue  # specks and one-pixel lines: see the thin-component test
            if ocrd_valid(plain):  # valid already: written exactly as before
                assert plain.astype(np.int32).tobytes() in written
                kept += 1
            else:
                repaired += 1
    assert repaired > 20 and kept > 40  # the generator exercises both paths


def test_small_windows_of_a_page_give_valid_polygons_even_one_pixel_high():
    """Masks are traced in their box's window of the page: every mask of 1 to 5 rows and columns (a row
    of separate specks and short runs among them), anywhere in a page as large or slightly larger, gives
    only valid polygons inside the page, at least one when the mask has a pixel and the page room for a
    polygon (a page one pixel high or wide has none; a PDF page rendered at a very low --dpi can be)."""
    rng = np.random.default_rng(11)
    for _ in range(3000):
        height, width = (int(side) for side in rng.integers(1, 6, 2))
        page_height, page_width = height + int(rng.integers(0, 3)), width + int(rng.integers(0, 3))
        x, y = int(rng.integers(0, page_width - width + 1)), int(rng.integers(0, page_height - height + 1))
        mask = rng.random((height, width)) < rng.random()
        polygons = mask_polygons(mask, origin=(x, y), page_size=(page_width, page_height))
        for polygon in polygons:
            assert_valid(polygon, page_height, page_width)
        assert bool(polygons) == (mask.any() and min(page_height, page_width) > 1), mask.astype(int)


def test_a_window_of_the_page_traces_like_the_whole_page():
    rng = np.random.default_rng(3)
    page = np.zeros((70, 90), bool)
    page[20:50, 30:75] = adversarial_mask(rng, 30, 45)
    ys, xs = np.nonzero(page)
    window = page[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    whole = mask_polygons(page)
    windowed = mask_polygons(window, origin=(int(xs.min()), int(ys.min())), page_size=(90, 70))
    assert len(whole) == len(windowed) > 3
    assert all((a == b).all() for a, b in zip(whole, windowed, strict=True))


def test_contours_for_datasets_are_exact_and_shifted():
    mask = rect_mask(20, 20, 2, 3, 6, 9)
    (contour,) = mask_contours(mask, offset=(10.5, 0.0))
    assert contour.dtype == np.float64
    assert sorted(map(tuple, contour.tolist())) == [(12.5, 3), (12.5, 8), (15.5, 3), (15.5, 8)]
    assert mask_contours(rect_mask(20, 20, 2, 3, 3, 4)) == []  # a lone pixel has no outline
    assert mask_contours(rect_mask(20, 20, 2, 3, 12, 4)) == []  # nor a rule (two points, out and back)
    (triangle,) = mask_contours(np.tril(np.ones((20, 20), bool)))  # three corners: an outline
    assert sorted(map(tuple, triangle.tolist())) == [(0, 0), (0, 19), (19, 19)]


def test_contours_of_an_rle_are_those_of_its_whole_page_mask():
    """An RLE is traced in its box and a pixel around it: the contours of the page-sized mask, point for
    point, for masks touching the page's edges, of parts far apart, with holes, one pixel, empty, full."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(5)
    masks = [adversarial_mask(rng, *rng.integers(1, 80, 2)) for _ in range(60)]
    masks += [np.zeros((9, 7), bool), np.ones((9, 7), bool), rect_mask(9, 7, 6, 8, 7, 9)]
    masks += [rect_mask(50, 60, 0, 0, 3, 4) | rect_mask(50, 60, 55, 45, 60, 50)]
    for mask in masks:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        whole = mask_contours(mask_utils.decode(rle))
        windowed = polygons_module.rle_contours(rle)
        assert len(windowed) == len(whole)
        assert all(a.dtype == b.dtype and (a == b).all() for a, b in zip(windowed, whole, strict=True))


def test_tracing_an_rle_decodes_its_box_not_the_page():
    """convert-dataset of COCO RLE masks (segment's coco.json) and training on them decoded and traced the
    whole page for each region: 40 ms a region at 300 dpi, 40 s for 20 pages of 50 regions (1.5 s now)."""
    import tracemalloc

    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(rect_mask(3508, 2480, 300, 1000, 900, 1060).astype(np.uint8)))
    tracemalloc.start()
    try:
        (contour,) = polygons_module.rle_contours(rle)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(map(tuple, contour.tolist())) == [(300, 1000), (300, 1059), (899, 1000), (899, 1059)]
    assert peak < 3508 * 2480 / 10


def test_edge_polygons_run_along_the_pixel_edges_of_a_window_of_the_page():
    """A lone pixel (x 2, y 3) of a window at page (10, 20) spans page [12, 13] x [23, 24]; a block's
    polygon has its outer corners; parts are largest first."""
    window = np.zeros((5, 5), bool)
    window[3, 2] = True
    (pixel,) = mask_edge_polygons(window, origin=(10, 20))
    assert pixel.dtype == np.int32
    assert sorted(map(tuple, pixel.tolist())) == [(12, 23), (12, 24), (13, 23), (13, 24)]
    mask = rect_mask(30, 40, 5, 6, 25, 16) | rect_mask(30, 40, 30, 20, 33, 22)
    block, speck = mask_edge_polygons(mask)
    assert sorted(map(tuple, block.tolist())) == [(5, 6), (5, 16), (25, 6), (25, 16)]
    assert sorted(map(tuple, speck.tolist())) == [(30, 20), (30, 22), (33, 20), (33, 22)]
    assert mask_edge_polygons(np.zeros((4, 4), bool)) == []


def test_tracing_a_mask_holds_no_more_than_its_padded_copy():
    """The mask, doubled for its pixel edges (4 times its size), was doubled and padded in temporaries: 9
    times a region's window in memory at once, 1.3 GB more for the page-sized regions of a 400-dpi
    newspaper page; tracing its outline copied it twice."""
    import tracemalloc

    mask = rect_mask(1000, 800, 50, 100, 700, 900)
    for trace, copies in ((mask_edge_polygons, 4), (mask_polygons, 1)):
        tracemalloc.start()
        try:
            (polygon,) = trace(mask)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(polygon) == 4
        assert peak < (copies + 1.5) * mask.size


def test_edge_polygons_split_parts_meeting_at_a_pixel_corner_into_valid_rings():
    mask = rect_mask(40, 40, 5, 5, 15, 15) | rect_mask(40, 40, 15, 15, 25, 25)
    rings = mask_edge_polygons(mask)
    assert len(rings) == 2 and all(shapely.Polygon(ring).is_valid for ring in rings)
    assert sum(shapely.Polygon(ring).area for ring in rings) == mask.sum()
    corner = rect_mask(40, 40, 5, 5, 15, 15) | rect_mask(40, 40, 15, 15, 16, 16)
    (_, pixel) = mask_edge_polygons(corner)  # the block, then a part of one pixel
    assert sorted(map(tuple, pixel.tolist())) == [(15, 15), (15, 16), (16, 15), (16, 16)]


def test_edge_polygons_keep_parts_one_or_two_pixels_wide():
    """Simplifying by half a pixel would take half a pixel off each side of a thin arm, and pycocotools
    would then rasterise none of it: such a ring stays exact. A ragged outline is still simplified."""
    from pycocotools import mask as mask_utils

    for arm in (1, 2):
        mask = np.zeros((1100, 40), bool)
        mask[50:1050, 5 : 5 + arm] = True
        mask[50:60, 5:30] = True
        (ring,) = mask_edge_polygons(mask)
        (rle,) = mask_utils.frPyObjects([ring.reshape(-1).astype(float).tolist()], *mask.shape)
        assert (mask_utils.decode(rle).astype(bool) == mask).all()
    ragged = np.zeros((200, 200), bool)
    rows = np.arange(200)[:, None]
    ragged[(np.arange(200)[None, :] - 100) ** 2 + (rows - 100) ** 2 < 80**2] = True
    (ring,) = mask_edge_polygons(ragged)
    exact = cv2.findContours(ragged.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0][0]
    assert len(ring) < len(exact)


def test_drop_repeats_removes_consecutive_and_closing_duplicates():
    points = np.array([[0, 0], [0, 0], [5, 0], [5, 5], [0, 0]])
    assert drop_repeats(points).tolist() == [[5, 0], [5, 5], [0, 0]]
    assert drop_repeats(np.array([[1, 1], [1, 1]])).tolist() == [[1, 1]]


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


def test_a_walk_split_into_loops_keeps_a_point_of_a_cut_loop_it_passes_again():
    """The last resort for a component that still touches itself (`_simple_rings`): the walk is cut into
    loops at every point it passes twice. A point of a loop already cut out, passed again later, belongs to
    the loop still open; a mutant that kept the cut loop's points as visited dropped it from that ring
    ((4, 0) here) and passed the tests, none of whose masks reach this step."""
    from docsam_cli.polygons import _simple_rings

    walk = np.array([[0, 0], [2, 0], [4, 0], [3, 2], [2, 0], [4, 0], [4, 4], [0, 4], [0, 0]])
    assert [ring.tolist() for ring in _simple_rings(walk)] == [
        [[2, 0], [4, 0], [3, 2]],
        [[0, 0], [2, 0], [4, 0], [4, 4], [0, 4]],
    ]
