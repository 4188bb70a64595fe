"""Text lines placed by the layout PAGE and ALTO share: against the region's written polygon (the outline
of its mask's largest part), not its whole mask, so that OCR-D's `--check-coords` accepts the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from instances_factory import empty_instances, make_instances, rect_mask
from lxml import etree

from docsam_cli.datasets.geometry import parse_points
from docsam_cli.writers.alto import ALTO_NAMESPACE, alto_string
from docsam_cli.writers.layout import page_layout
from docsam_cli.writers.page_xml import PAGE_NAMESPACE, page_xml_string
from docsam_cli.writers.shapes import MaskWindow, PageShapes
from model.instances import PageInstances

HEIGHT, WIDTH = 320, 300


def two_part_region_page() -> PageInstances:
    """A text region whose mask has two parts (rows 20-199 and 250-289): its polygon is the larger one.
    One line lies in each part; the third straddles the gap, more of it over the smaller part."""
    region = rect_mask(HEIGHT, WIDTH, 20, 20, 280, 200) | rect_mask(HEIGHT, WIDTH, 20, 250, 280, 290)
    masks = [
        region,
        rect_mask(HEIGHT, WIDTH, 30, 40, 270, 60),  # in the written part
        rect_mask(HEIGHT, WIDTH, 30, 260, 270, 280),  # in the part the polygon leaves out
        rect_mask(HEIGHT, WIDTH, 30, 190, 270, 270),  # 10 rows in the written part, 20 in the other
    ]
    return make_instances(masks, [0, 1, 1, 1], ["paragraph", "textline"], scores=[0.9, 0.8, 0.7, 0.6])


def test_lines_are_placed_against_the_regions_written_polygon():
    shapes = PageShapes(two_part_region_page())
    layout = page_layout(shapes, ["text", "line"])
    region, *holders = layout.regions
    assert region.instance == 0 and [line.instance for line in region.lines] == [1]
    assert sorted(line.instance for holder in holders for line in holder.lines) == [2, 3]
    assert all(holder.instance is None for holder in holders)
    assert shapes.share_within(3, 0) == pytest.approx(10 * 240 / (80 * 240))


def test_a_line_beside_the_regions_polygon_passes_ocrd_check_coords(tmp_path: Path, page_schema):
    validator = pytest.importorskip("ocrd_validators.page_validator", reason="needs the `ocrd` extra")
    path = tmp_path / "p.xml"
    path.write_text(page_xml_string(PageShapes(two_part_region_page()), "p.png"), encoding="utf-8")
    document = etree.parse(str(path))
    assert page_schema.validate(document), page_schema.error_log
    report = validator.PageValidator.validate(
        filename=str(path), page_textequiv_consistency="off", check_coords=True
    )
    assert report.is_valid, [str(error) for error in report.errors]
    page = document.getroot().find(f"{{{PAGE_NAMESPACE}}}Page")
    regions = page.findall(f"{{{PAGE_NAMESPACE}}}TextRegion")
    assert [len(region.findall(f"{{{PAGE_NAMESPACE}}}TextLine")) for region in regions] == [1, 1, 1]
    assert [region.get("type") for region in regions] == ["paragraph", None, None]


# Found by fuzzing the writers (1 page in about 600): a heading whose outline has concave corners and a
# thin diagonal text line across one. Tracing the line's pixels inside the heading's polygon gave a line
# polygon up to 5 px outside it. COCO RLEs (bytes counts) of a 249 x 109 page.
FUZZED_REGION = (
    b"fZ23b74L4K4M4L4K5L4K4M4L4K5L4L4K4M4kKTNY2P2]MYN_2l1XM]Nd2g1RMbNk2a1mLhNn2]1hLlNU3n2K4M4L3L5L3M4M"
    b"2100O2O0O100O100O2O0O100O100O2O0O100O100O2O0O100O100O2O0O100O100O2O0O100O100O2O0O100O100O2O0O100"
    b"O100O2O0O100O100O2O0O100O100O2O0O10o1PNgS1"
)
FUZZED_LINE = (
    b"Zg31g7010O010O010O010O010O00010O010O010O010O010O00010O010O010O010O00010O010O010O010O010O00010O010O"
    b"010O010O010O0ce9"
)


def test_a_line_cut_to_a_region_with_concave_corners_stays_inside_its_polygon(tmp_path: Path):
    validator = pytest.importorskip("ocrd_validators.page_validator", reason="needs the `ocrd` extra")
    from pycocotools import mask as mask_utils

    masks = [
        mask_utils.decode({"size": [249, 109], "counts": counts}).astype(bool)
        for counts in (FUZZED_REGION, FUZZED_LINE)
    ]
    path = tmp_path / "p.xml"
    instances = make_instances(masks, [0, 1], ["heading", "text line"])
    path.write_text(page_xml_string(PageShapes(instances), "p.png"), encoding="utf-8")
    report = validator.PageValidator.validate(
        filename=str(path), page_textequiv_consistency="off", check_coords=True, check_baseline=True
    )
    assert report.is_valid, [str(error) for error in report.errors]
    lines = etree.parse(str(path)).getroot().iter(f"{{{PAGE_NAMESPACE}}}TextLine")
    assert len(list(lines)) == 1


def test_clipping_keeps_a_polygon_within_and_cuts_one_that_leaves():
    import shapely

    from docsam_cli.polygons import clip_polygon, is_valid_polygon

    container = np.array([[0, 0], [40, 0], [40, 40], [20, 40], [20, 20], [0, 20]], np.int32)  # an L
    inside = np.array([[2, 2], [10, 2], [10, 10], [2, 10]], np.int32)
    assert clip_polygon(inside, container) is inside
    across = np.array([[5, 10], [35, 10], [35, 35], [5, 35]], np.int32)  # over the concave corner
    clipped = clip_polygon(across, container)
    assert is_valid_polygon(clipped)
    assert shapely.Polygon(clipped).within(shapely.Polygon(container))
    assert shapely.Polygon(clipped).area == 30 * 10 + 15 * 15


def test_clipping_keeps_the_largest_part_and_gives_none_for_a_touch_without_area():
    """A cut into several parts keeps the largest; a polygon that only shares an edge with its container
    leaves no polygon to keep."""
    import shapely

    from docsam_cli.polygons import clip_polygon

    container = np.array([[0, 0], [10, 0], [10, 30], [20, 30], [20, 0], [40, 0], [40, 40], [0, 40]], np.int32)
    across = np.array(
        [[2, 5], [38, 5], [38, 20], [2, 20]], np.int32
    )  # over both arms of the U, 8 and 18 wide
    clipped = clip_polygon(across, container)
    assert shapely.Polygon(clipped).equals(shapely.box(20, 5, 38, 20))
    beside = np.array([[40, 5], [50, 5], [50, 20], [40, 20]], np.int32)
    assert clip_polygon(beside, container) is None


def test_clipping_snaps_a_cut_whose_rounded_points_would_cross():
    """Found by fuzzing the writers (ragged masks): rounding each point of the cut made its ring cross
    itself, and the line was written uncut, outside its region (OCR-D's --check-coords refused the page).
    A cut that leaves no valid polygon is None: the line then gets a region of its own."""
    import shapely

    from docsam_cli.polygons import clip_polygon, is_valid_polygon

    container = np.array([[2, 9], [6, 9], [8, 13], [7, 3], [6, 8]], np.int32)
    across = np.array([[13, 1], [6, 5], [2, 6], [3, 13]], np.int32)
    clipped = clip_polygon(across, container)
    assert clipped is not None and is_valid_polygon(clipped)
    assert shapely.Polygon(clipped).within(shapely.Polygon(container).buffer(1.5))  # OCR-D's slack
    container = np.array([[1, 9], [6, 11], [5, 10], [9, 9], [8, 3]], np.int32)
    across = np.array([[11, 2], [11, 11], [7, 4], [7, 9], [1, 5]], np.int32)
    assert clip_polygon(across, container) is None  # two triangles


def test_alto_of_such_a_page_stays_schema_valid(alto_schema):
    document = etree.fromstring(alto_string(PageShapes(two_part_region_page()), "p.png").encode("utf-8"))
    assert alto_schema.validate(document), alto_schema.error_log
    space = document.find(
        f"{{{ALTO_NAMESPACE}}}Layout/{{{ALTO_NAMESPACE}}}Page/{{{ALTO_NAMESPACE}}}PrintSpace"
    )
    blocks = space.findall(f"{{{ALTO_NAMESPACE}}}TextBlock")
    assert [len(block.findall(f"{{{ALTO_NAMESPACE}}}TextLine")) for block in blocks] == [1, 1, 1]
    first = blocks[0].find(
        f"{{{ALTO_NAMESPACE}}}TextLine/{{{ALTO_NAMESPACE}}}Shape/{{{ALTO_NAMESPACE}}}Polygon"
    )
    points = parse_points(first.get("POINTS"))
    assert points[:, 1].max() < 200  # the nested line lies in the region's written part


def skewed_bar(start: tuple[float, float], length: float, height: float, angle: float) -> np.ndarray:
    """Bool mask of a bar from `start` (its left end, mid-height) rising to the right by `angle` degrees."""
    import cv2

    along = np.array([np.cos(np.radians(angle)), -np.sin(np.radians(angle))])
    across = np.array([-along[1], along[0]]) * height / 2
    x, y = np.asarray(start, dtype=np.float64), along * length
    corners = np.array([x - across, x + y - across, x + y + across, x + across])
    canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(canvas, [np.rint(corners).astype(np.int32)], 1)
    return canvas.astype(bool)


def test_lines_of_a_skewed_region_are_ordered_where_upright_puts_them():
    """A region skewed by 15° (lines rising to the right): a paragraph's short last line, then the long
    first line of the next. On the page the long line's right end lies above the short line's top, so it
    came first; where `upright` undoes the skew (the OCR-D processor's deskewed image), the short line is
    read first."""
    angle = 15
    short, long = skewed_bar((40, 200), 100, 10, angle), skewed_bar((40, 230), 240, 10, angle)
    region = rect_mask(HEIGHT, WIDTH, 20, 100, 295, 260)
    shapes = PageShapes(make_instances([region, short, long], [0, 1, 1], ["paragraph", "textline"]))
    cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    level = np.array([[cos, -sin], [sin, cos]])

    def upright(points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ level.T

    assert [line.instance for line in page_layout(shapes, ["text", "line"]).regions[0].lines] == [2, 1]
    (region_layout,) = page_layout(shapes, ["text", "line"], upright).regions
    assert [line.instance for line in region_layout.lines] == [1, 2]


def test_a_written_outline_is_kept_inside_its_bounding_box_and_an_instance_without_one_has_no_pixels():
    """`MaskWindow.of_polygon`: the outline's pixels inside its bounding box (points are pixel positions,
    boundary included); `PageShapes.written`: empty for an instance without an outline (an empty mask);
    `mask_boxes` of a page without instances: none."""
    window = MaskWindow.of_polygon(np.array([[10, 20], [14, 20], [14, 22], [10, 22]], dtype=np.int32))
    assert (window.x, window.y, window.mask.shape, window.count()) == (10, 20, (3, 5), 15)
    masks = [rect_mask(40, 40, 10, 20, 15, 23), np.zeros((40, 40), dtype=bool)]
    shapes = PageShapes(make_instances(masks, [0, 0], ["text"]))
    assert shapes.written(0).count() == 15
    assert shapes.outline(1) is None and shapes.written(1).count() == 0
    assert PageShapes(empty_instances(40, 40, ["text"])).mask_boxes == []
    assert shapes.polygons(1) == [] and shapes.share_within(1, 0) == 0.0  # an empty line in no region


def test_a_line_cut_into_parts_by_its_region_keeps_the_largest_part():
    """`outline_within`: the line's part inside the region's written outline, largest part first as for
    every outline: a U-shaped region cuts a line across its arms into a 30 and a 20 pixel wide piece."""
    region = rect_mask(60, 80, 0, 0, 60, 40)
    region[0:30, 30:40] = False  # the notch between the arms: x 0..29 and 40..59
    line = rect_mask(60, 80, 0, 5, 60, 11)
    shapes = PageShapes(make_instances([region, line], [0, 1], ["paragraph", "text line"]))
    part = shapes.outline_within(1, 0)
    assert (part[:, 0].min(), part[:, 0].max(), part[:, 1].min(), part[:, 1].max()) == (0, 29, 5, 10)
