"""docsam's regions put into a real PAGE document (OCR-D ground truth with regions, lines, a Border and a
reading order): exactly the regions `--format page` writes, replacing the page's or kept beside them with
unique ids and a reading order that still covers both, and the document valid against the 2019 schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from instances_factory import make_instances, rect_mask
from lxml import etree

pytest.importorskip("ocrd_models", reason="the OCR-D processor needs the `ocrd` extra")

from ocrd_modelfactory import page_from_file
from ocrd_models.ocrd_page import (
    OcrdPage,
    ReadingOrderType,
    RegionRefType,
    RelationsType,
    RelationType,
    UnorderedGroupType,
    to_xml,
)

from docsam_cli.ocrd.regions import add_regions
from docsam_cli.writers.page_map import REGION_ELEMENTS
from docsam_cli.writers.page_xml import page_xml_string
from docsam_cli.writers.shapes import PageShapes

GT_PAGE = Path(
    "pages/ocrd-gt-structure-text/data/laube_europa0202_1837/GT-PAGE/laube_europa0202_1837_0007.xml"
)
WIDTH, HEIGHT = 1280, 2086
CLASSES = ["text", "table", "text line", "separator"]


@pytest.fixture
def gt_page(shared_data, tmp_path) -> OcrdPage:
    copy = tmp_path / "gt.xml"
    shutil.copy(shared_data / GT_PAGE, copy)
    return page_from_file(str(copy))


@pytest.fixture(scope="module")
def shapes() -> PageShapes:
    """Two text regions (one holding a line), a table and a separator (outside the reading order)."""
    masks = [
        rect_mask(HEIGHT, WIDTH, 100, 300, 1100, 700),
        rect_mask(HEIGHT, WIDTH, 100, 800, 1100, 1200),
        rect_mask(HEIGHT, WIDTH, 120, 320, 1080, 360),
        rect_mask(HEIGHT, WIDTH, 100, 1300, 1100, 1700),
        rect_mask(HEIGHT, WIDTH, 100, 1250, 1100, 1254),
    ]
    return PageShapes(make_instances(masks, [0, 0, 2, 1, 3], CLASSES, scores=[0.9, 0.8, 0.7, 0.6, 0.5]))


def document(pcgts: OcrdPage) -> etree._Element:
    return etree.fromstring(to_xml(pcgts).encode("utf-8"))


def regions(root: etree._Element) -> dict[str, etree._Element]:
    page = root.find("{*}Page")
    return {
        element.get("id"): element for element in page if etree.QName(element).localname in REGION_ELEMENTS
    }


def reading_order(root: etree._Element) -> list[str]:
    references = root.findall("{*}Page/{*}ReadingOrder//{*}RegionRefIndexed")
    return [ref.get("regionRef") for ref in sorted(references, key=lambda ref: int(ref.get("index")))]


def summary(element: etree._Element, prefix: str = "") -> tuple:
    """A region as written, its ids without `prefix`: element, attributes, points and confidence, lines."""
    attributes = {key: value for key, value in element.attrib.items() if key != "id"}
    coords = element.find("{*}Coords")
    lines = [summary(line, prefix) for line in element.findall("{*}TextLine")]
    region_id = element.get("id").removeprefix(prefix)
    confidence = float(coords.get("conf"))  # OCR-D writes 0.5000 back as 0.5
    return (etree.QName(element).localname, region_id, attributes, coords.get("points"), confidence, lines)


def written_by_format_page(shapes: PageShapes) -> etree._Element:
    return etree.fromstring(page_xml_string(shapes, "page.jpg").encode("utf-8"))


def test_replace_writes_what_format_page_writes(gt_page, shapes, page_schema):
    added = add_regions(gt_page, shapes, None, "replace")
    root = document(gt_page)
    page_schema.assertValid(root)
    expected = written_by_format_page(shapes)
    assert added == len(regions(expected)) == 4  # the line is inside its region
    assert sorted(map(summary, regions(root).values())) == sorted(map(summary, regions(expected).values()))
    assert reading_order(root) == reading_order(expected) == ["r1", "r2", "r3"]  # the separator is unordered
    assert [etree.QName(el).localname for el in regions(root).values()].count("SeparatorRegion") == 1
    # What the page had besides its regions stays: its image, derived image and Border.
    page = root.find("{*}Page")
    assert page.get("imageFilename").endswith("laube_europa0202_1837_0007.jpg")
    assert page.find("{*}Border") is not None and page.find("{*}AlternativeImage") is not None


def test_keep_adds_beside_the_regions_with_fresh_ids_and_appends_the_order(gt_page, shapes, page_schema):
    before = document(gt_page)
    old_ids, old_order = set(regions(before)), reading_order(before)
    assert "r1" in old_ids  # the ground truth uses r0, r1, ...: docsam's ids must step aside
    add_regions(gt_page, shapes, None, "keep")
    root = document(gt_page)
    page_schema.assertValid(root)  # ids unique, every reference resolves
    new_ids = set(regions(root)) - old_ids
    assert old_ids <= set(regions(root)) and len(new_ids) == 4
    assert all(region_id.startswith("docsam_r") for region_id in new_ids)
    expected = written_by_format_page(shapes)
    ours = [summary(regions(root)[region_id], "docsam_") for region_id in new_ids]
    assert sorted(ours) == sorted(map(summary, regions(expected).values()))
    order = reading_order(root)
    assert order == [*old_order, "docsam_r1", "docsam_r2", "docsam_r3"]
    indices = [int(ref.get("index")) for ref in root.findall("{*}Page/{*}ReadingOrder/*/{*}RegionRefIndexed")]
    assert len(set(indices)) == len(indices)
    # Once more: the next free prefix.
    add_regions(gt_page, shapes, None, "keep")
    root = document(gt_page)
    page_schema.assertValid(root)
    assert reading_order(root)[-3:] == ["docsam2_r1", "docsam2_r2", "docsam2_r3"]


def test_keep_nests_the_new_order_in_an_unordered_top_group(gt_page, shapes, page_schema):
    page = gt_page.get_Page()
    old_ids = [region.id for region in page.get_AllRegions()]
    page.set_ReadingOrder(
        ReadingOrderType(
            UnorderedGroup=UnorderedGroupType(
                id="ug", RegionRef=[RegionRefType(regionRef=i) for i in old_ids]
            )
        )
    )
    add_regions(gt_page, shapes, None, "keep")
    root = document(gt_page)
    page_schema.assertValid(root)
    top = root.find("{*}Page/{*}ReadingOrder/{*}UnorderedGroup")
    assert [ref.get("regionRef") for ref in top.findall("{*}RegionRef")] == old_ids
    (nested,) = top.findall("{*}OrderedGroup")
    assert [ref.get("regionRef") for ref in nested.findall("{*}RegionRefIndexed")] == [
        "docsam_r1",
        "docsam_r2",
        "docsam_r3",
    ]


def test_keep_gives_a_page_without_reading_order_the_new_one(gt_page, shapes, page_schema):
    gt_page.get_Page().set_ReadingOrder(None)
    add_regions(gt_page, shapes, None, "keep")
    root = document(gt_page)
    page_schema.assertValid(root)
    assert reading_order(root) == ["docsam_r1", "docsam_r2", "docsam_r3"]


def test_replace_drops_relations_and_layers_that_would_point_nowhere(gt_page, shapes, page_schema):
    page = gt_page.get_Page()
    first, second = (region.id for region in page.get_AllRegions()[:2])
    page.set_Relations(RelationsType(Relation=[RelationType(id="rel1", type_="link")]))
    page.get_Relations().get_Relation()[0].set_SourceRegionRef(RegionRefType(regionRef=first))
    page.get_Relations().get_Relation()[0].set_TargetRegionRef(RegionRefType(regionRef=second))
    page_schema.assertValid(document(gt_page))
    add_regions(gt_page, shapes, None, "replace")
    root = document(gt_page)
    page_schema.assertValid(root)
    assert root.find("{*}Page/{*}Relations") is None and root.find("{*}Page/{*}Layers") is None


def test_no_regions_leave_a_replaced_page_empty_and_valid(gt_page, page_schema):
    nothing = PageShapes(make_instances([np.zeros((HEIGHT, WIDTH), dtype=bool)], [0], CLASSES))
    assert add_regions(gt_page, nothing, None, "replace") == 0
    root = document(gt_page)
    page_schema.assertValid(root)
    assert not regions(root) and root.find("{*}Page/{*}ReadingOrder") is None


def test_the_page_map_applies(gt_page, shapes, page_schema):
    add_regions(gt_page, shapes, {"table": ("GraphicRegion", "other")}, "replace")
    root = document(gt_page)
    page_schema.assertValid(root)
    kinds = sorted((etree.QName(el).localname, el.get("type")) for el in regions(root).values())
    assert ("GraphicRegion", "other") in kinds and all(kind != "TableRegion" for kind, _ in kinds)
