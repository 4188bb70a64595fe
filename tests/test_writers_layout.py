"""Text lines placed by the layout PAGE and ALTO share: against the region's written polygon (the outline
of its mask's largest part), not its whole mask, so that OCR-D's `--check-coords` accepts the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from instances_factory import make_instances, rect_mask
from lxml import etree

from docsam_cli.writers.alto import ALTO_NAMESPACE, alto_string
from docsam_cli.writers.layout import page_layout
from docsam_cli.writers.page_xml import PAGE_NAMESPACE, page_xml_string
from docsam_cli.writers.shapes import PageShapes
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
    points = np.array([[int(v) for v in pair.split(",")] for pair in first.get("POINTS").split()])
    assert points[:, 1].max() < 200  # the nested line lies in the region's written part
