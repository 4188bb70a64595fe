"""PAGE → unified layout → PAGE through `segment`'s PAGE writer keeps region types and polygons."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from convert_helpers import run_cli
from instances_factory import make_instances, rect_mask
from lxml import etree
from scipy.optimize import linear_sum_assignment

from docsam_cli.datasets.convert.alto import read_alto
from docsam_cli.datasets.convert.page import page_map, read_page
from docsam_cli.datasets.geometry import fill_polygons, parse_points
from docsam_cli.datasets.predictions import PredictedInstance, page_instances
from docsam_cli.writers import page_xml
from docsam_cli.writers.alto import alto_string
from docsam_cli.writers.shapes import PageShapes

SETS = ("ocrd-gt-structure-text", "prima-page-examples", "ocrd-assets")


def _regions(path: Path) -> tuple[dict[str, list], str]:
    """(element, @type) and polygon of every top-level-or-nested non-cell region, by class; image name."""
    page = read_page(path, path.parent, frozenset({"regions"}))
    root = etree.parse(str(path)).getroot()
    elements = {element.get("id"): element for element in root.iter("{*}*") if element.get("id")}
    regions = defaultdict(list)
    for instance in page.instances:
        element = elements[instance.where.split()[-1]]
        kind = element.get("type") if element.get("type") != "other" else None
        regions[instance.category].append(((etree.QName(element).localname, kind), instance.polygons[0]))
    return regions, page.image.name


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two polygons rasterised as PAGE points (boundary pixels included), in their common window."""
    low = np.minimum(a.min(axis=0), b.min(axis=0)).astype(int)
    size = np.maximum(a.max(axis=0), b.max(axis=0)).astype(int) - low + 1
    masks = []
    for polygon in (a, b):
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        cv2.fillPoly(mask, [polygon.astype(np.int32) - low], 1)
        masks.append(mask.astype(bool))
    return float((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())


@pytest.mark.slow  # the writer traces every region of 16 pages of up to 17 Mpx
def test_page_round_trip_keeps_types_and_polygons(shared_data: Path, tmp_path: Path) -> None:
    sources = [shared_data / "pages" / name for name in SETS]
    out = tmp_path / "unified"
    assert run_cli("convert-dataset", *sources, "--from", "page", "--out", out).exit_code == 0
    schema = etree.XMLSchema(etree.parse(str(shared_data / "schema/2019-07-15/pagecontent.xsd")))
    written = tmp_path / "page"
    written.mkdir()
    checked = 0
    for source in sorted(path for folder in sources for path in folder.rglob("*.xml")):
        if etree.QName(etree.parse(str(source)).getroot()).localname != "PcGts":
            continue
        before, image_name = _regions(source)
        document = json.loads((out / "coco" / f"{Path(image_name).stem}.json").read_text())
        (image,) = document["images"]
        height, width = image["height"], image["width"]
        names = {category["id"]: category["name"] for category in document["categories"]}
        instances = page_instances(
            height,
            width,
            [
                PredictedInstance(
                    names[a["category_id"]],
                    fill_polygons([np.reshape(p, (-1, 2)) for p in a["segmentation"]], height, width),
                    (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]),
                    1.0,
                )
                for a in document["annotations"]
            ],
        )
        text = page_xml.page_xml_string(
            PageShapes(instances, polygon_epsilon=0), image["file_name"], page_map(instances.class_names)
        )
        path = written / f"{Path(image_name).stem}.xml"
        path.write_text(text)
        assert schema.validate(etree.parse(str(path))), schema.error_log
        after, _ = _regions(path)
        assert {name: len(items) for name, items in after.items()} == {
            name: len(items) for name, items in before.items()
        }
        for name, originals in before.items():
            ious = np.array([[_iou(a, b) for _, b in originals] for _, a in after[name]])
            rows, columns = linear_sum_assignment(ious, maximize=True)
            for row, column in zip(rows, columns, strict=True):
                assert ious[row, column] >= 0.99, (source.name, name)
                assert after[name][row][0] == originals[column][0], (source.name, name)
                checked += 1
    assert checked == 154  # every region of the 16 PAGE files was compared


def test_page_map_inverts_the_reader_naming() -> None:
    mapping = page_map(["heading", "separator", "barcode", "bar chart", "chart", "text", "$pac", "text line"])
    assert mapping == {
        "text line": ("TextLine", None),
        "heading": ("TextRegion", "heading"),
        "separator": ("SeparatorRegion", None),
        "barcode": ("GraphicRegion", "barcode"),
        "bar chart": ("ChartRegion", "bar"),
        "chart": ("ChartRegion", None),
        "text": ("TextRegion", None),
        "$pac": ("TextRegion", None),  # its name travels in @custom
    }
    assert parse_points("1,2 3,4 5,6").tolist() == [[1, 2], [3, 4], [5, 6]]


def test_a_class_named_other_is_read_back_from_segments_page_as_other(tmp_path: Path) -> None:
    """`segment --classes table,other` writes the class `other` as a TextRegion whose @custom type is
    `other`; convert-dataset and evaluate --pred read it back as 'text' (as PAGE's @type `other`, which
    names no type in particular): the converted dataset had no class `other`, and evaluate ignored its
    predictions and scored the class as all missed. docsam's own @custom names the class as written; the
    same file of another producer is read as before."""
    masks = [rect_mask(100, 200, 10, 10, 60, 50), rect_mask(100, 200, 100, 20, 180, 60)]
    shapes = PageShapes(make_instances(masks, [0, 1], ["table", "other"]))
    (tmp_path / "p.xml").write_text(page_xml.page_xml_string(shapes, "p.png"))
    page = read_page(tmp_path / "p.xml", tmp_path, frozenset({"regions"}))
    assert sorted(instance.category for instance in page.instances) == ["other", "table"]
    other = (tmp_path / "p.xml").read_text().replace("<Creator>docsam ", "<Creator>Transkribus ")
    (tmp_path / "p.xml").write_text(other)
    page = read_page(tmp_path / "p.xml", tmp_path, frozenset({"regions"}))
    assert sorted(instance.category for instance in page.instances) == ["table", "text"]


def _written_and_read_back(shapes: PageShapes, folder: Path, levels: frozenset[str]) -> list:
    """`shapes` written as segment's PAGE (`p.xml`) and ALTO (`a.xml`) in `folder`, and read back."""
    (folder / "p.xml").write_text(page_xml.page_xml_string(shapes, "p.png"))
    (folder / "a.xml").write_text(alto_string(shapes, "p.png"))
    return [read_page(folder / "p.xml", folder, levels), read_alto(folder / "a.xml", folder, levels)]


def _read_as_another_producers(path: Path, levels: frozenset[str]):
    """segment's PAGE file `path` read back as the file of another producer (Transkribus) would be."""
    path.write_text(path.read_text().replace("<Creator>docsam ", "<Creator>Transkribus "))
    return read_page(path, path.parent, levels)


def test_a_line_class_is_read_back_from_segments_page_as_its_alto_is(tmp_path: Path) -> None:
    """`segment --classes text,DefaultLine,line` writes those lines as PAGE TextLines whose @custom type
    names their class, as ALTO's tags do; convert-dataset --level lines and evaluate --pred read ALTO's back
    as 'DefaultLine' and 'line' but PAGE's as 'text line', so those classes were lost (evaluate ignored
    their predictions and scored them as all missed). docsam's own PAGE lines are read with their class;
    another producer's lines are 'text line' as before."""
    masks = [rect_mask(100, 200, 0, 0, 200, 100), rect_mask(100, 200, 10, 10, 190, 30)]
    masks.append(rect_mask(100, 200, 10, 50, 190, 70))
    shapes = PageShapes(make_instances(masks, [0, 1, 2], ["text", "DefaultLine", "line"]))
    levels = frozenset({"regions", "lines"})
    for page in _written_and_read_back(shapes, tmp_path, levels):
        assert sorted(instance.category for instance in page.instances) == ["DefaultLine", "line", "text"]
    page = _read_as_another_producers(tmp_path / "p.xml", levels)
    assert sorted(instance.category for instance in page.instances) == ["text", "text line", "text line"]


def test_a_table_cell_is_read_back_from_segments_files_at_the_cells_level(tmp_path: Path) -> None:
    """A model fine-tuned on table cells (Transkribus' TableCells, converted with --level regions,cells)
    finds them as regions of class `table cell`, which segment writes as TextRegions (ALTO: TextBlocks)
    beside the table: evaluate --level cells read none of them against the ground truth's cells, which
    scored as all missed (pred 0, AP 0), and convert-dataset --level cells found no cell. They are now read
    at the cells level too, and at the regions level as before."""
    masks = [rect_mask(100, 200, 10, 10, 190, 90), rect_mask(100, 200, 10, 10, 100, 50)]
    masks.append(rect_mask(100, 200, 100, 10, 190, 50))
    shapes = PageShapes(make_instances(masks, [0, 1, 1], ["table", "table cell"]))
    for page in _written_and_read_back(shapes, tmp_path, frozenset({"cells"})):
        assert [instance.category for instance in page.instances] == ["table cell", "table cell"]
    for page in _written_and_read_back(shapes, tmp_path, frozenset({"regions"})):
        assert sorted(instance.category for instance in page.instances) == [
            "table",
            "table cell",
            "table cell",
        ]
    cells = "".join(
        f'<TableCell id="c{index}" row="0" col="{index}"><Coords points="{points}"/></TableCell>'
        for index, points in enumerate(("10,10 99,10 99,49 10,49", "100,10 189,10 189,49 100,49"))
    )
    truth = tmp_path / "truth" / "p.xml"  # Transkribus' table model
    truth.parent.mkdir()
    truth.write_text(
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15">'
        '<Page imageFilename="p.png" imageWidth="200" imageHeight="100"><TableRegion id="t">'
        f'<Coords points="10,10 189,10 189,89 10,89"/>{cells}</TableRegion></Page></PcGts>'
    )
    (tmp_path / "a.xml").unlink()
    result = run_cli(
        "evaluate", truth.parent, "--pred", tmp_path / "p.xml", "--level", "cells", "--json", "-"
    )
    assert result.exit_code == 0, result.stderr
    cell = json.loads(result.stdout)["per_class"]["table cell"]
    assert cell["gt"] == 2 and cell["predictions"] == 2 and cell["ap"] == 1.0


def test_a_region_made_to_hold_a_line_is_read_as_no_region(tmp_path: Path) -> None:
    """A text line that no region of a class holds gets a class-less TextRegion (ALTO: TextBlock) of its
    own in segment's PAGE and ALTO files; read back (evaluate --pred, convert-dataset), it was a 'text'
    region the model never found: a false positive of a ground truth's 'text' class. It is read as no
    region now, its line kept; the same region in a file of another producer is still a region."""
    masks = [rect_mask(100, 200, 10, 10, 60, 50), rect_mask(100, 200, 100, 20, 180, 30)]
    shapes = PageShapes(make_instances(masks, [0, 1], ["text", "text line"]))
    levels = frozenset({"regions", "lines"})
    for page in _written_and_read_back(shapes, tmp_path, levels):
        assert sorted(instance.category for instance in page.instances) == ["text", "text line"]
    page = _read_as_another_producers(tmp_path / "p.xml", levels)
    assert sorted(instance.category for instance in page.instances) == ["text", "text", "text line"]
    # OCR-D's document, the processor's regions added to it, its step named in a MetadataItem
    step = (
        '<MetadataItem type="processingStep" name="layout/segmentation/region" value="ocrd-docsam-segment"/>'
    )
    other = (tmp_path / "p.xml").read_text()  # as another producer's (Transkribus) file, above
    (tmp_path / "p.xml").write_text(other.replace("</Metadata>", step + "</Metadata>"))
    page = read_page(tmp_path / "p.xml", tmp_path, levels)
    assert sorted(instance.category for instance in page.instances) == ["text", "text line"]
