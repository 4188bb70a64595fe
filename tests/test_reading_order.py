"""XY-cut reading order (`docsam_cli.writers.reading_order`) on two-column layouts and real pages.

The basic cases (full-width bands, the top-then-left fallback) are in test_writers_geometry.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from docsam_cli.writers.reading_order import Box, reading_order

UNORDERED = {"SeparatorRegion", "NoiseRegion"}  # outside the reading order, as the PAGE writer keeps them
# PAGE ground truth with a reading order that the XY-cut reproduces. Not here: a drop capital inside its
# paragraph's box, a marginal note overlapping the main text's box, and a form read row by row (kant
# PAGE_0017, kraken 170025120000003,0074, aletheiaexamplepage): overlapping boxes leave no gap to cut at.
GROUND_TRUTH_PAGES = [
    "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0146.xml",
    "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0168.xml",
    "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0176.xml",
    "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0186.xml",
    "ocrd-gt-structure-text/data/herder_geschichte03_1787/GT-PAGE/herder_geschichte03_1787_0007.xml",
    "ocrd-gt-structure-text/data/laube_europa0202_1837/GT-PAGE/laube_europa0202_1837_0006.xml",
    "ocrd-gt-structure-text/data/laube_europa0202_1837/GT-PAGE/laube_europa0202_1837_0007.xml",
    "ocrd-gt-structure-text/data/laube_europa0202_1837/GT-PAGE/laube_europa0202_1837_0105.xml",
    "ocrd-assets/data/kant_aufklaerung_1784-page-region-line-word_glyph/data/OCR-D-GT-PAGE/PAGE_0020_PAGE.xml",
    "prima-page-examples/documentation/example/SimplePage.xml",
    "prima-page-examples/legacy/PAGEtoSVG/testing/in/regiontypes_2013-07-15.xml",
]


def test_a_paragraph_break_level_in_both_columns_does_not_read_across_the_gutter():
    boxes = [
        (0, 0, 100, 10),  # title, full width; the gap below it is narrower than the paragraph breaks
        (0, 12, 45, 50),  # L1
        (55, 12, 100, 50),  # R1
        (0, 70, 45, 100),  # L2: its break from L1 lines up with R1/R2's
        (55, 70, 100, 100),  # R2
    ]
    assert reading_order(boxes) == [0, 1, 3, 2, 4]


def test_bands_split_only_at_full_width_elements():
    boxes = [
        (0, 0, 100, 10),  # title
        (0, 20, 45, 30),  # left, three paragraphs level with the right's three
        (55, 20, 100, 30),
        (0, 35, 45, 45),
        (55, 35, 100, 45),
        (0, 50, 100, 60),  # full-width figure
        (55, 65, 100, 80),  # right, then left: a two-column band under the figure
        (0, 65, 45, 72),
        (0, 74, 45, 80),
        (0, 90, 100, 95),  # footer
    ]
    assert reading_order(boxes) == [0, 1, 3, 2, 4, 5, 7, 8, 6, 9]


def test_a_single_column_is_read_top_to_bottom():
    boxes = [(10, 40, 90, 50), (0, 0, 100, 10), (20, 20, 80, 30)]
    assert reading_order(boxes) == [1, 2, 0]


def test_a_real_two_column_page_is_read_column_by_column(shared_data: Path):
    """PubLayNet's ground-truth boxes of a two-column article page with a full-width figure."""
    coco = json.loads((shared_data / "pages" / "publaynet" / "annotations.json").read_text())
    image = next(image for image in coco["images"] if image["file_name"] == "PMC4954804_00001.jpg")
    annotations = [item for item in coco["annotations"] if item["image_id"] == image["id"]]
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (item["bbox"] for item in annotations)]
    left = [0, 1, 2, 10, 9]  # text x3, title, list
    right = [8, 11, 12, 3, 4, 13, 5]  # list, title x2, text x2, title, text
    assert reading_order(boxes) == [*left, *right, 7, 6]  # then the figure and its caption


@pytest.mark.parametrize("path", GROUND_TRUTH_PAGES, ids=lambda path: Path(path).stem)
def test_real_pages_follow_their_ground_truth_reading_order(shared_data: Path, path: str):
    document = etree.parse(str(shared_data / "pages" / path))
    ids, boxes = ordered_regions(document)
    order = [ids[index] for index in reading_order(boxes)]
    expected = [ref.get("regionRef") for ref in ground_truth_order(document)]
    assert [name for name in order if name in expected] == [name for name in expected if name in ids]


def ordered_regions(document: etree._ElementTree) -> tuple[list[str], list[Box]]:
    """Ids and half-open boxes of the page's regions that belong in a reading order (top level)."""
    ids, boxes = [], []
    for region in document.getroot().find("{*}Page"):
        name = etree.QName(region).localname
        if not name.endswith("Region") or name in UNORDERED:
            continue
        points = np.array([pair.split(",") for pair in region.find("{*}Coords").get("points").split()], float)
        (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
        ids.append(region.get("id"))
        boxes.append((x1, y1, x2 + 1, y2 + 1))
    return ids, boxes


def ground_truth_order(document: etree._ElementTree) -> list[etree._Element]:
    refs = document.xpath("//*[local-name()='ReadingOrder']//*[local-name()='RegionRefIndexed']")
    return sorted(refs, key=lambda ref: int(ref.get("index")))


def test_two_boxes_are_ordered_like_any_other_group():
    """A pair is cut like a larger group: the one below (or to the right) comes second whatever its index."""
    assert reading_order([(0, 20, 10, 30), (0, 0, 10, 10)]) == [1, 0]  # stacked
    assert reading_order([(60, 0, 100, 10), (0, 0, 40, 10)]) == [1, 0]  # side by side


def test_boxes_no_gap_separates_are_read_by_top_edge_then_left_edge():
    """README: "then top edge and left edge". Overlapping in x and y, so neither cut applies."""
    level = [(50, 0, 100, 20), (0, 0, 60, 30)]  # same top: the left one first, though it reaches lower
    assert reading_order(level) == [1, 0]
    assert reading_order([(0, 5, 60, 20), (50, 0, 100, 30)]) == [1, 0]  # the higher top first, though right


def test_boxes_that_only_touch_are_cut_apart():
    """Half-open boxes (layout.polygon_bounds): a region ending at x = 50 and one starting there share no
    pixel column, so they are two columns: the left one is read first though it starts lower."""
    assert reading_order([(0, 20, 50, 30), (50, 0, 100, 10)]) == [0, 1]


def test_a_band_grows_while_its_rows_together_still_leave_a_column_gap():
    """A band's covered x intervals carry over from row to row: after A, B and C, the gap between the left
    column (A, D) and the right one (B, C) is still open when D comes, so only E ends the band."""
    boxes = [
        (0, 0, 10, 10),  # A, left
        (20, 20, 30, 30),  # B, right
        (25, 40, 40, 50),  # C, right
        (5, 60, 15, 70),  # D, left
        (0, 80, 40, 90),  # E, spanning both
    ]
    assert reading_order(boxes) == [0, 3, 1, 2, 4]


def test_rows_whose_boxes_only_touch_in_x_keep_the_band_open():
    """A and B touch at x = 50 (no pixel column shared): the band under A goes on with B and A2, read
    column by column; only C, over both, starts a new one."""
    boxes = [(0, 0, 50, 10), (50, 20, 100, 30), (0, 40, 50, 50), (40, 60, 60, 70)]
    assert reading_order(boxes) == [0, 2, 1, 3]


def test_a_band_keeps_the_whole_extent_of_its_covered_intervals():
    """A box inside an interval the band covers already (R in P's, S in Q's) leaves the interval as it
    was: the band under P and Q goes on until U closes the last gap, and is read column by column."""
    boxes = [
        (0, 0, 50, 10),  # P, left column
        (60, 0, 70, 10),  # Q, right column
        (65, 20, 68, 30),  # S, right column, inside Q's extent
        (10, 20, 20, 30),  # R, left column, inside P's extent
        (0, 40, 62, 50),  # U: closes the gap only with Q's extent up to 70 ...
        (69, 40, 75, 50),  # V: ... which V overlaps
    ]
    assert reading_order(boxes) == [0, 3, 1, 2, 4, 5]
    nested = [(0, 0, 50, 10), (60, 0, 100, 10), (10, 20, 20, 30), (30, 40, 70, 50)]
    assert reading_order(nested) == [0, 2, 1, 3]


def test_a_band_keeps_its_first_column_when_a_row_widens_the_last():
    """D widens the right column's interval but leaves the gap to A's column open: A3, below D in the
    left column, is still in the band, so it is read after A and before the right column."""
    boxes = [
        (0, 0, 10, 10),  # A, left
        (20, 20, 30, 30),  # B, right
        (25, 40, 40, 50),  # C, right
        (15, 60, 45, 70),  # D, right, wider
        (0, 80, 8, 90),  # A3, left
        (0, 100, 45, 110),  # E, spanning both
    ]
    assert reading_order(boxes) == [0, 4, 1, 2, 3, 5]
