"""ALTO 4.4 output: schema validity, elements and SegmOnto tags per class, the PAGE writer's polygons and
reading order, text lines, `--alto-map`, and reading it back with `convert-dataset --from alto`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest
from cli_helpers import PROJECT_ROOT
from convert_helpers import run_cli
from instances_factory import (
    assert_same_masks,
    coco_masks,
    empty_instances,
    make_instances,
    publaynet_instances,
    raster,
    rect_mask,
)
from lxml import etree

from docsam_cli import __version__
from docsam_cli.datasets.convert.alto import read_alto
from docsam_cli.datasets.geometry import parse_points
from docsam_cli.writers.alto import ALTO_NAMESPACE, alto_string, write_alto
from docsam_cli.writers.alto_map import alto_kind, parse_alto_map
from docsam_cli.writers.page_map import region_kind
from docsam_cli.writers.page_xml import PAGE_NAMESPACE, page_xml_string
from docsam_cli.writers.shapes import PageShapes

NS = {"a": ALTO_NAMESPACE}
BLOCKS = ("TextBlock", "Illustration", "GraphicalElement", "ComposedBlock")


def parse_valid(text: str, schema: etree.XMLSchema) -> etree._Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    document = etree.fromstring(text.encode("utf-8"))
    assert schema.validate(document), schema.error_log
    return document


def blocks(document: etree._Element) -> list[etree._Element]:
    space = document.find("a:Layout/a:Page/a:PrintSpace", NS)
    return [element for element in space if etree.QName(element).localname in BLOCKS]


def tags(document: etree._Element) -> dict[str, etree._Element]:
    return {tag.get("ID"): tag for tag in document.findall("a:Tags/a:OtherTag", NS)}


def polygon(element: etree._Element, namespace: str = ALTO_NAMESPACE) -> np.ndarray:
    if namespace == ALTO_NAMESPACE:
        text = element.find("a:Shape/a:Polygon", NS).get("POINTS")
    else:
        text = element.find(f"{{{PAGE_NAMESPACE}}}Coords").get("points")
    return parse_points(text).astype(np.int32)


def page_regions(document: etree._Element) -> list[etree._Element]:
    page = document.find(f"{{{PAGE_NAMESPACE}}}Page")
    return [element for element in page if etree.QName(element).localname.endswith("Region")]


def test_real_page_gives_valid_alto_with_the_page_outputs_polygons_and_order(
    shared_data, alto_schema, page_schema
):
    image, instances = publaynet_instances(shared_data)
    shapes = PageShapes(instances)
    document = parse_valid(alto_string(shapes, image["file_name"], page_number=7), alto_schema)
    page_document = parse_valid(page_xml_string(shapes, image["file_name"]), page_schema)

    assert document.findtext("a:Description/a:MeasurementUnit", namespaces=NS) == "pixel"
    assert (
        document.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=NS)
        == (image["file_name"])
    )
    page = document.find("a:Layout/a:Page", NS)
    assert (page.get("WIDTH"), page.get("HEIGHT"), page.get("PHYSICAL_IMG_NR")) == (
        str(image["width"]),
        str(image["height"]),
        "7",
    )
    found, regions = blocks(document), page_regions(page_document)
    assert len(found) == len(regions) == len(instances)
    assert [block.get("ID") for block in found] == [region.get("id") for region in regions]
    for block, region in zip(found, regions, strict=True):
        points = polygon(block)
        assert (points == polygon(region, PAGE_NAMESPACE)).all()
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        assert [block.get(key) for key in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == [
            str(x0),
            str(y0),
            str(x1 - x0 + 1),  # points are pixel centres: columns x0..x1 are x1 - x0 + 1 pixels
            str(y1 - y0 + 1),
        ]
    refs = [ref.get("REF") for ref in document.findall("a:ReadingOrder/a:OrderedGroup/a:ElementRef", NS)]
    page_refs = [ref.get("regionRef") for ref in page_document.iter(f"{{{PAGE_NAMESPACE}}}RegionRefIndexed")]
    assert refs == page_refs == [block.get("ID") for block in found]

    by_id = tags(document)
    expected = {
        "text": ("TextBlock", "MainZone:P"),
        "title": ("TextBlock", "MainZone:Head"),
        "list": ("TextBlock", "MainZone:P"),
        "table": ("ComposedBlock", "TableZone"),
        "figure": ("Illustration", "GraphicZone"),
    }
    seen = set()
    for block in found:
        (tag,) = [by_id[ref] for ref in block.get("TAGREFS").split()]
        class_name = tag.get("DESCRIPTION").removeprefix("docsam class ")
        assert (etree.QName(block).localname, tag.get("LABEL")) == expected[class_name]
        assert tag.get("TYPE") == "region"  # Kraken's tag type for a block's class
        assert block.get("TYPE") is None  # Kraken would take it over the tag's SegmOnto zone
        seen.add(class_name)
    assert seen == {instances.class_name(index) for index in range(len(instances))}
    assert {"text", "title", "table", "figure"} <= seen


def test_every_kind_of_region_and_nested_lines_validate(alto_schema):
    classes = ["paragraph", "heading", "page number", "marginalia", "table", "figure", "chart", "stamp"]
    classes += ["separator", "noise", "formula", "mystery class", "drawing", "custom", "text line"]
    page_map = {"drawing": ("LineDrawingRegion", None), "custom": ("CustomRegion", "my-type")}
    corners = [(10 + (i % 5) * 78, 10 + (i // 5) * 115) for i in range(len(classes))]
    masks = [rect_mask(600, 400, x, y, x + 70, y + 100) for x, y in corners]
    masks[-1] = rect_mask(600, 400, 15, 20, 75, 30)  # a line inside the paragraph
    masks.append(rect_mask(600, 400, 330, 400, 390, 410))  # a line no region holds
    labels = [*range(len(classes)), len(classes) - 1]
    scores = [0.9] * len(classes) + [float("nan")]
    instances = make_instances(masks, labels, classes, scores=scores)
    document = parse_valid(alto_string(PageShapes(instances), "grid.png", page_map=page_map), alto_schema)
    by_id = tags(document)
    kinds = {}
    for block in blocks(document):
        if block.get("TAGREFS") is None:
            holder = block
            continue
        tag = by_id[block.get("TAGREFS")]
        kinds[tag.get("DESCRIPTION").removeprefix("docsam class ")] = (
            etree.QName(block).localname,
            tag.get("LABEL"),
        )
    assert kinds["page number"] == ("TextBlock", "NumberingZone:page")
    assert kinds["marginalia"] == ("TextBlock", "MarginTextZone")
    assert kinds["chart"] == ("Illustration", "GraphicZone:Chart")
    assert kinds["stamp"] == ("Illustration", "StampZone")
    assert kinds["separator"] == ("GraphicalElement", "GraphicZone:Separator")
    assert kinds["noise"] == ("GraphicalElement", "DigitizationArtefactZone")
    assert kinds["mystery class"] == ("TextBlock", "CustomZone:mystery class")
    assert kinds["drawing"] == ("Illustration", "GraphicZone:Drawing")
    assert kinds["custom"] == ("TextBlock", "CustomZone:my-type")
    assert len(kinds) == len(classes) - 1  # every class but the text line is a block

    graphical = {
        block.get("ID") for block in blocks(document) if etree.QName(block).localname == "GraphicalElement"
    }
    ordered = {ref.get("REF") for ref in document.iter(f"{{{ALTO_NAMESPACE}}}ElementRef")}
    assert len(graphical) == 2 and not graphical & ordered
    assert len(ordered) == len(blocks(document)) - 2

    (line,) = [
        line for block in blocks(document) if block is not holder for line in block.findall("a:TextLine", NS)
    ]
    assert by_id[line.getparent().get("TAGREFS")].get("DESCRIPTION") == "docsam class paragraph"
    assert by_id[line.get("TAGREFS")].get("LABEL") == "DefaultLine"
    assert by_id[line.get("TAGREFS")].get("TYPE") == "type"
    assert line.find("a:String", NS).get("CONTENT") == "" and line.find("a:String", NS).get("WC") == "0.9000"
    (own,) = holder.findall("a:TextLine", NS)
    assert (polygon(own) == polygon(holder)).all()
    assert own.find("a:String", NS).get("WC") == "0.0000"  # a NaN score is no confidence


def test_alto_map_overrides_the_defaults(tmp_path, alto_schema):
    masks = [rect_mask(100, 100, 0, 0, 50, 50), rect_mask(100, 100, 50, 50, 100, 100)]
    instances = make_instances(masks, [0, 1], ["Stamp", "body_text"])
    alto_map = parse_alto_map("stamp=Illustration:SealZone,body-text=TextBlock")
    document = parse_valid(alto_string(PageShapes(instances), "p.png", alto_map=alto_map), alto_schema)
    labels = {tag.get("LABEL") for tag in tags(document).values()}
    assert labels == {"SealZone", "body_text"}  # without a label the class name is the label
    assert (
        alto_kind("table", None, {"table": ("ImageRegion", None)}).element == "Illustration"
    )  # follows PAGE

    (tmp_path / "map.json").write_text(json.dumps({"a": "ComposedBlock:TableZone:Head", "b": ["TextLine"]}))
    assert parse_alto_map(str(tmp_path / "map.json")) == {
        "a": ("ComposedBlock", "TableZone:Head"),
        "b": ("TextLine", None),
    }
    assert parse_alto_map('{"x": {"element": "GraphicalElement", "label": "Rule"}}') == {
        "x": ("GraphicalElement", "Rule")
    }
    for bad, message in [
        ("a=TextRegion", "unknown ALTO element"),
        ("a", "class=Element"),
        ('{"a": {"element": "TextBlock", "label": 3}}', "non-empty string"),
        ("{1: 2}", "not valid JSON"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_alto_map(bad)


def test_empty_page_and_names_that_need_escaping(alto_schema):
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    document = parse_valid(
        alto_string(PageShapes(empty_instances(50, 40, ["text"])), "x.png", created=created), alto_schema
    )
    assert not blocks(document) and document.find("a:Tags", NS) is None
    assert document.find("a:ReadingOrder", NS) is None
    assert (
        document.findtext("a:Description/a:Processing/a:processingDateTime", namespaces=NS)
        == "2024-05-06T07:08:09Z"
    )

    name = os.fsdecode(b"scan\xff & <1>.png")
    instances = make_instances([rect_mask(60, 60, 5, 5, 50, 50)], [0], ['a "table" & <b>'])
    document = parse_valid(alto_string(PageShapes(instances), name), alto_schema)
    assert document.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=NS) == (
        "scan%FF & <1>.png"
    )
    (block,) = blocks(document)
    (tag,) = tags(document).values()
    assert tag.get("LABEL") == 'CustomZone:a "table" & <b>' and tag.get("ID") == block.get("TAGREFS")


def test_written_alto_reads_back_with_the_page_writers_regions(tmp_path, shared_data):
    """segment-like instances → ALTO file → `convert-dataset --from alto` → the same regions per class,
    each with IoU >= 0.99 against the polygon the PAGE writer writes for it. A block made to hold a line
    has no class, and is no region: the reader reads its line alone (it used to name it "text", as an
    untagged TextBlock of another producer)."""
    _, instances = publaynet_instances(shared_data)
    height, width = instances.height, instances.width
    text = next(i for i in range(len(instances)) if instances.class_name(i) == "text")
    ys, xs = np.nonzero(instances.decode_mask(text))
    top, left, right = int(ys.min()), int(xs.min()), int(xs.max())
    lines = [
        rect_mask(height, width, left + 2, top + 2 + 14 * i, right - 2, top + 12 + 14 * i) for i in range(2)
    ]
    lines.append(rect_mask(height, width, 5, 5, 60, 12))  # in the margin: a block of its own
    masks = [instances.decode_mask(i) for i in range(len(instances))] + lines
    labels = [*instances.labels.tolist(), len(instances.class_names)]
    labels += [len(instances.class_names)] * (len(lines) - 1)
    instances = make_instances(masks, labels, [*instances.class_names, "text line"])
    shapes = PageShapes(instances)

    source = tmp_path / "run"
    (source / "image").mkdir(parents=True)
    cv2.imwrite(str(source / "image" / "p.png"), np.full((height, width, 3), 255, np.uint8))
    write_alto(source / "alto" / "p.xml", shapes, "../image/p.png")
    out = tmp_path / "dataset"
    result = run_cli("convert-dataset", source, "--from", "alto", "--out", out, "--level", "regions,lines")
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "coco" / "p.json").read_text())
    read = coco_masks(document, height, width)

    page_document = etree.fromstring(page_xml_string(shapes, "p.png").encode())
    written = []
    for region in page_regions(page_document):
        custom = region.get("custom")  # None: the region made for a line no region holds
        if custom is not None:
            label = custom.removeprefix("structure {type:").removesuffix(";}")
            written.append((label, raster(polygon(region, PAGE_NAMESPACE), height, width)))
        for line in region.findall(f"{{{PAGE_NAMESPACE}}}TextLine"):
            written.append(("text line", raster(polygon(line, PAGE_NAMESPACE), height, width)))
    assert_same_masks(read, written)
    assert len(read) == len(instances)  # not the holder block
    assert sum(name == "text line" for name, _ in read) == 3


def test_block_box_counts_the_pixels_its_polygon_spans(tmp_path, alto_schema):
    """Polygon points are pixel centres: a mask over columns 10-19 and rows 5-24 is 10 x 20 pixels, and a
    block over the whole page is as large as the page and its PrintSpace; reading the file back gives the
    mask again."""
    masks = [rect_mask(50, 40, 10, 5, 20, 25), rect_mask(50, 40, 0, 0, 40, 50)]
    shapes = PageShapes(make_instances(masks, [0, 1], ["figure", "text"]))
    document = parse_valid(alto_string(shapes, "p.png"), alto_schema)
    space = document.find("a:Layout/a:Page/a:PrintSpace", NS)
    boxes = {
        block.get("ID"): [block.get(key) for key in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] for block in space
    }
    assert sorted(boxes.values()) == [["0", "0", "40", "50"], ["10", "5", "10", "20"]]
    assert [space.get(key) for key in ("WIDTH", "HEIGHT")] == ["40", "50"]

    path = tmp_path / "p.xml"
    path.write_text(alto_string(shapes, "p.png"))
    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((50, 40, 3), np.uint8))
    page = read_alto(path, tmp_path, frozenset({"regions"}))
    read = sorted(
        (instance.category, raster(instance.polygons[0], 50, 40).sum()) for instance in page.instances
    )
    assert read == [("figure", 200), ("text", 2000)]


def kraken_class(document: etree._Element, element: etree._Element) -> str | None:
    """The class Kraken gives a block or line (kraken/lib/xml/alto.py, `parse_alto` and
    `parse_alto_tagrefs`): tags map to (TYPE, LABEL), a missing TYPE counting as "type"; a block takes a
    TYPE attribute of its own first, then its "region" tags, then its "type" tags; a line its "type" tags."""
    tag_map = {
        tag.get("ID"): (tag.get("TYPE") or "type", tag.get("LABEL")) for tag in document.iter("{*}OtherTag")
    }
    found: dict[str, str] = {}
    for reference in (element.get("TAGREFS") or "").split():
        kind, label = tag_map.get(reference, (None, None))
        if label:
            found.setdefault(kind, label)
    if etree.QName(element).localname == "TextLine":
        return found.get("type")
    return element.get("TYPE") or found.get("region") or found.get("type")


def escriptorium_points(text: str) -> list[tuple[float, float]]:
    """ALTO points as eScriptorium's import reads them (app/apps/imports/parsers.py, `AltoParser`'s
    `update_block` and `update_line`): split at spaces, each part a number, in pairs; it drops (ValueError)
    any other form."""
    coords = [float(value) for value in text.split(" ")]
    return list(zip(coords[::2], coords[1::2], strict=True))


def test_escriptorium_reads_the_polygons_and_baselines_of_blocks_and_lines(alto_schema):
    masks = [rect_mask(200, 200, 0, 0, 200, 100), rect_mask(200, 200, 10, 10, 190, 30)]
    shapes = PageShapes(make_instances(masks, [0, 1], ["paragraph", "text line"]))
    document = parse_valid(alto_string(shapes, "p.png"), alto_schema)
    (block,) = blocks(document)
    (line,) = block.findall("a:TextLine", NS)
    assert escriptorium_points(block.find("a:Shape/a:Polygon", NS).get("POINTS")) == [
        (0, 0), (0, 99), (199, 99), (199, 0)
    ]  # fmt: skip
    assert escriptorium_points(line.find("a:Shape/a:Polygon", NS).get("POINTS")) == [
        (10, 10), (10, 29), (189, 29), (189, 10)
    ]  # fmt: skip
    assert escriptorium_points(line.get("BASELINE")) == [(10, 29), (189, 29)]


def escriptorium_upload_name(path: str) -> str:
    """The name eScriptorium files an uploaded image under, which its import matches `fileName` and
    `imageFilename` against: Django's `MultiPartParser.sanitize_file_name` keeps what follows the last `/`
    and the last `\\`."""
    return path.rsplit("/")[-1].rsplit("\\")[-1]


@pytest.mark.parametrize(
    "reference",
    [
        "../../scans dir/a & b é.png",
        "../../scans/p%20x.png",
        "../image/M%FCller.png",
        "p.png",
        "../../in/vol1\\p1.png",  # a file so named by a Windows zip unpacked on Linux
    ],
)
def test_readmes_escriptorium_lines_leave_the_name_escriptorium_gives_the_upload(
    reference, tmp_path, alto_schema, page_schema
):
    """README's sed lines strip the folders from segment's PAGE and ALTO before an eScriptorium import. A
    page image whose name holds a backslash (README's `vol1\\p1.png`) kept `vol1\\p1.png`, while its upload
    is `p1.png`: the import found no page to match."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(
        r"\*\*Importing into eScriptorium\.\*\*.*?```bash\n(.*?)```", readme, flags=re.DOTALL
    )
    shapes = PageShapes(make_instances([rect_mask(200, 200, 0, 0, 200, 100)], [0], ["paragraph"]))
    for folder, text in (
        ("alto", alto_string(shapes, reference)),
        ("page", page_xml_string(shapes, reference)),
    ):
        (tmp_path / "out" / folder).mkdir(parents=True)
        (tmp_path / "out" / folder / "p.xml").write_text(text, encoding="utf-8")
    subprocess.run(["bash", "-euc", block], cwd=tmp_path, check=True)
    alto = etree.parse(str(tmp_path / "import" / "alto" / "p.xml")).getroot()
    page = etree.parse(str(tmp_path / "import" / "page" / "p.xml")).getroot()
    assert alto_schema.validate(alto), alto_schema.error_log
    assert page_schema.validate(page), page_schema.error_log
    expected = escriptorium_upload_name(reference)
    assert alto.find("a:Description/a:sourceImageInformation/a:fileName", NS).text == expected
    assert page.find(f"{{{PAGE_NAMESPACE}}}Page").get("imageFilename") == expected


def test_kraken_reads_the_segmonto_zone_of_every_block_and_line(alto_schema):
    masks = [rect_mask(200, 200, 0, 0, 100, 100), rect_mask(200, 200, 100, 0, 200, 100)]
    masks += [rect_mask(200, 200, 0, 100, 100, 200), rect_mask(200, 200, 10, 10, 90, 30)]
    classes = ["paragraph", "table", "figure", "text line"]
    document = parse_valid(
        alto_string(PageShapes(make_instances(masks, [0, 1, 2, 3], classes)), "p.png"), alto_schema
    )
    read = {
        tags(document)[element.get("TAGREFS")].get("DESCRIPTION"): kraken_class(document, element)
        for element in [*blocks(document), *document.iter(f"{{{ALTO_NAMESPACE}}}TextLine")]
    }
    assert read == {
        "docsam class paragraph": "MainZone:P",
        "docsam class table": "TableZone",
        "docsam class figure": "GraphicZone",
        "docsam class text line": "DefaultLine",
    }


def test_segmonto_classes_are_written_as_their_own_zones_and_lines(alto_schema):
    """A model fine-tuned on eScriptorium or Kraken ALTO (`convert-dataset --from alto` names its classes by
    the tags' SegmOnto labels) prompts "MainZone", "DefaultLine", ...: the ALTO tags carry those very
    labels, SegmOnto lines are text lines of their zone, and PAGE gets the zones' regions."""
    masks = [rect_mask(200, 200, 0, 0, 200, 100), rect_mask(200, 200, 10, 10, 190, 30)]
    masks += [rect_mask(200, 200, 10, 40, 190, 60), rect_mask(200, 200, 0, 100, 100, 200)]
    masks += [rect_mask(200, 200, 100, 100, 200, 200)]
    classes = ["MainZone", "DefaultLine", "HeadingLine:title", "MarginTextZone:note", "TableZone"]
    document = parse_valid(
        alto_string(PageShapes(make_instances(masks, [0, 1, 2, 3, 4], classes)), "p.png"), alto_schema
    )
    lines = list(document.iter(f"{{{ALTO_NAMESPACE}}}TextLine"))
    read = {
        tags(document)[element.get("TAGREFS")].get("DESCRIPTION"): kraken_class(document, element)
        for element in [*blocks(document), *lines]
    }
    assert read == {f"docsam class {name}": name for name in classes}
    assert {line.getparent().get("TAGREFS") for line in lines} == {"BT1"}  # both in the MainZone
    page_kinds = {name: (kind.element, kind.type) for name in classes if (kind := region_kind(name))}
    assert page_kinds == {
        "MainZone": ("TextRegion", "paragraph"),
        "DefaultLine": ("TextLine", None),
        "HeadingLine:title": ("TextLine", None),
        "MarginTextZone:note": ("TextRegion", "marginalia"),
        "TableZone": ("TableRegion", None),
    }


@pytest.mark.parametrize(("block_type", "line_type"), [("region", "type"), ("block type", "line type")])
def test_docsam_reads_its_classes_back_from_new_and_old_tags(tmp_path, block_type, line_type):
    """Files written before the tags took Kraken's types ("block type", "line type") read as new ones."""
    masks = [rect_mask(100, 100, 0, 0, 100, 100), rect_mask(100, 100, 10, 10, 90, 20)]
    text = alto_string(PageShapes(make_instances(masks, [0, 1], ["body_text", "text line"])), "p.png")
    text = text.replace('TYPE="region"', f'TYPE="{block_type}"').replace('TYPE="type"', f'TYPE="{line_type}"')
    (tmp_path / "p.xml").write_text(text)
    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((100, 100, 3), np.uint8))
    page = read_alto(tmp_path / "p.xml", tmp_path, frozenset({"regions", "lines"}))
    assert sorted(instance.category for instance in page.instances) == ["body_text", "text line"]


def test_alto_holds_the_regions_and_lines_of_page_under_the_same_ids(alto_schema, page_schema):
    """A class mapped to a PAGE CustomRegion (no lines there) stays a childless TextBlock in ALTO, so both
    files give `r2` to the same region; a class whose only instance is empty has no tag."""
    masks = [
        rect_mask(100, 100, 5, 5, 95, 40),  # stamp
        rect_mask(100, 100, 10, 10, 90, 16),  # a line inside the stamp
        rect_mask(100, 100, 5, 60, 95, 90),  # table
        np.zeros((100, 100), dtype=bool),  # a figure with an empty mask
    ]
    instances = make_instances(masks, [0, 1, 2, 3], ["stamp", "text line", "table", "figure"])
    shapes = PageShapes(instances)
    page_map = {"stamp": ("CustomRegion", "stamp")}
    alto = parse_valid(alto_string(shapes, "p.png", page_map=page_map), alto_schema)
    page = parse_valid(page_xml_string(shapes, "p.png", page_map), page_schema)
    page_ids = {region.get("id"): polygon(region, PAGE_NAMESPACE).tolist() for region in page_regions(page)}
    alto_ids = {block.get("ID"): polygon(block).tolist() for block in blocks(alto)}
    assert alto_ids == page_ids and len(alto_ids) == 3
    page_lines = [line.get("id") for line in page.iter(f"{{{PAGE_NAMESPACE}}}TextLine")]
    alto_lines = [line.get("ID") for line in alto.iter(f"{{{ALTO_NAMESPACE}}}TextLine")]
    assert alto_lines == page_lines and len(alto_lines) == 1
    described = {tag.get("DESCRIPTION") for tag in tags(alto).values()}
    assert described == {"docsam class stamp", "docsam class text line", "docsam class table"}


def test_the_processing_step_names_docsam_and_its_version_and_a_page_defaults_to_number_one(alto_schema):
    """Module doc: a `Processing` step (docsam and its version, the time); PHYSICAL_IMG_NR is the page's
    number in its document, 1 for a page given alone."""
    document = parse_valid(alto_string(PageShapes(empty_instances(50, 40, ["text"])), "x.png"), alto_schema)
    processing = document.find("a:Description/a:Processing", NS)
    assert processing.findtext("a:processingCategory", namespaces=NS) == "contentGeneration"
    software = processing.find("a:processingSoftware", NS)
    assert software.findtext("a:softwareName", namespaces=NS) == "docsam"
    assert software.findtext("a:softwareVersion", namespaces=NS) == __version__
    assert document.find("a:Layout/a:Page", NS).get("PHYSICAL_IMG_NR") == "1"


def test_a_class_the_alto_map_names_plays_its_elements_part(alto_schema):
    """Module doc: a class plays its PAGE region's part "unless --alto-map names its element: then the
    element's part": a TextBlock holds lines, a TextLine class is a line, a GraphicalElement is left out
    of the reading order."""
    masks = [
        rect_mask(100, 100, 0, 0, 60, 60),
        rect_mask(100, 100, 5, 5, 55, 15),
        rect_mask(100, 100, 0, 80, 99, 85),
    ]
    instances = make_instances(masks, [0, 1, 2], ["Stamp", "ocr line", "rule"])
    alto_map = parse_alto_map("stamp=TextBlock,ocr-line=TextLine,rule=GraphicalElement")
    document = parse_valid(alto_string(PageShapes(instances), "p.png", alto_map=alto_map), alto_schema)
    found = blocks(document)
    assert [(etree.QName(block).localname, block.get("ID")) for block in found] == [
        ("TextBlock", "r1"),
        ("GraphicalElement", "r2"),
    ]
    assert [line.get("ID") for line in found[0].findall("a:TextLine", NS)] == ["r1_l1"]
    assert [ref.get("REF") for ref in document.findall("a:ReadingOrder/a:OrderedGroup/a:ElementRef", NS)] == [
        "r1"
    ]
