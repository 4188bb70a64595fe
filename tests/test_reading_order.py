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
