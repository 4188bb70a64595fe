"""PAGE XML output: schema validity (2019-07-15 XSD), class mapping, polygons, lines, reading order."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import PROJECT_ROOT
from instances_factory import empty_instances, make_instances, publaynet_instances, raster, rect_mask
from lxml import etree

from docsam_cli.datasets.convert.page import CHART_TYPES, GRAPHIC_TYPES, TEXT_TYPES, region_class
from docsam_cli.writers.alto_map import AltoKind, alto_kind, parse_alto_map
from docsam_cli.writers.page_map import (
    ALLOWED_TYPES,
    DEFAULT_REGION_KINDS,
    REGION_ELEMENTS,
    parse_page_map,
    region_kind,
)
from docsam_cli.writers.page_xml import PAGE_NAMESPACE, page_xml_string, write_page_xml
from docsam_cli.writers.shapes import PageShapes

NS = {"pc": PAGE_NAMESPACE}
REGION_XPATH = "/pc:PcGts/pc:Page/*[contains(local-name(), 'Region')]"


def parse_valid(xml: str, page_schema: etree.XMLSchema) -> etree._Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    document = etree.fromstring(xml.encode("utf-8"))
    assert page_schema.validate(document), page_schema.error_log
    return document


def points(element: etree._Element) -> np.ndarray:
    text = element.find("pc:Coords", NS).get("points")
    return np.array([[int(value) for value in pair.split(",")] for pair in text.split()], dtype=np.int32)


def regions(document: etree._Element) -> list[etree._Element]:
    return document.xpath(REGION_XPATH, namespaces=NS)


def reading_order_refs(document: etree._Element) -> list[str]:
    refs = document.findall(".//pc:ReadingOrder/pc:OrderedGroup/pc:RegionRefIndexed", NS)
    assert [int(ref.get("index")) for ref in refs] == list(range(len(refs)))
    return [ref.get("regionRef") for ref in refs]


def check_geometry(document: etree._Element, height: int, width: int) -> None:
    for element in document.iter(f"{{{PAGE_NAMESPACE}}}Coords"):
        polygon = points(element.getparent())
        assert len({tuple(point) for point in polygon.tolist()}) >= 3
        assert (polygon >= 0).all() and (polygon[:, 0] < width).all() and (polygon[:, 1] < height).all()
        assert 0.0 <= float(element.get("conf")) <= 1.0


@pytest.fixture(scope="module")
def publaynet_page(shared_data: Path):
    return publaynet_instances(shared_data)


def test_real_page_annotations_give_a_valid_page_with_one_region_per_instance(publaynet_page, page_schema):
    image, instances = publaynet_page
    document = parse_valid(page_xml_string(PageShapes(instances), image["file_name"]), page_schema)
    page = document.find("pc:Page", NS)
    assert page.get("imageFilename") == image["file_name"]
    assert (int(page.get("imageWidth")), int(page.get("imageHeight"))) == (image["width"], image["height"])
    found = regions(document)
    assert len(found) == len(instances)
    assert reading_order_refs(document) == [region.get("id") for region in found]
    assert [region.get("id") for region in found] == [f"r{number}" for number in range(1, len(found) + 1)]
    check_geometry(document, instances.height, instances.width)
    expected = {
        "text": ("TextRegion", "paragraph"),
        "title": ("TextRegion", "heading"),
        "list": ("TextRegion", "paragraph"),
        "table": ("TableRegion", None),
        "figure": ("ImageRegion", None),
    }
    masks = {index: instances.decode_mask(index) for index in range(len(instances))}
    for region in found:
        class_name = region.get("custom").removeprefix("structure {type:").removesuffix(";}")
        assert (etree.QName(region).localname, region.get("type")) == expected[class_name]
        filled = raster(points(region), instances.height, instances.width)
        best = max(float((filled & mask).sum() / (filled | mask).sum()) for mask in masks.values())
        assert best > 0.9  # the polygon outlines one of the masks


def test_every_kind_of_region_validates_and_keeps_the_schema_order(page_schema):
    classes = [
        "Text",
        "Section-header",
        "caption",
        "footnote",
        "page_number",
        "Page-header",
        "page footer",
        "List-item",
        "marginalia",
        "Table",
        "Picture",
        "chart",
        "Formula",
        "chemistry",
        "separator",
        "stamp",
        "music",
        "map",
        "advertisement",
        "noise",
        "mystery class",
        "drawing",
        "custom",
        "unknown",
        "text line",
    ]
    page_map = {
        "drawing": ("LineDrawingRegion", None),
        "custom": ("CustomRegion", "my-type"),
        "unknown": ("UnknownRegion", None),
    }
    corners = [(10 + (i % 5) * 78, 10 + (i // 5) * 115) for i in range(len(classes))]  # a 5 x 5 grid
    masks = [rect_mask(600, 400, x, y, x + 70, y + 100) for x, y in corners]
    masks[-1] = rect_mask(600, 400, 15, 20, 75, 30)  # a line inside the "Text" region
    instances = make_instances(masks, list(range(len(classes))), classes)
    document = parse_valid(page_xml_string(PageShapes(instances), "grid.png", page_map), page_schema)
    kinds = {
        region.get("custom"): (etree.QName(region).localname, region.get("type"))
        for region in regions(document)
    }
    assert kinds["structure {type:Section-header;}"] == ("TextRegion", "heading")
    assert kinds["structure {type:page_number;}"] == ("TextRegion", "page-number")
    assert kinds["structure {type:Page-header;}"] == ("TextRegion", "header")
    assert kinds["structure {type:page footer;}"] == ("TextRegion", "footer")
    assert kinds["structure {type:Picture;}"] == ("ImageRegion", None)
    assert kinds["structure {type:Formula;}"] == ("MathsRegion", None)
    assert kinds["structure {type:separator;}"] == ("SeparatorRegion", None)
    assert kinds["structure {type:stamp;}"] == ("GraphicRegion", "stamp")
    assert kinds["structure {type:mystery class;}"] == ("TextRegion", None)
    assert kinds["structure {type:custom;}"] == ("CustomRegion", "my-type")
    assert kinds["structure {type:drawing;}"] == ("LineDrawingRegion", None)
    assert len(kinds) == len(classes) - 1  # the text line is not a region
    unordered = {
        region.get("id")
        for region in regions(document)
        if etree.QName(region).localname in ("SeparatorRegion", "NoiseRegion")
    }
    assert len(unordered) == 2 and not unordered & set(reading_order_refs(document))
    assert len(reading_order_refs(document)) == len(classes) - 3


def test_text_lines_go_into_the_covering_text_region_or_one_of_their_own(page_schema):
    height, width = 300, 200
    masks = [
        rect_mask(height, width, 10, 10, 190, 140),  # text region
        rect_mask(height, width, 20, 90, 180, 100),  # line, lower
        rect_mask(height, width, 20, 20, 195, 30),  # line, upper, sticking out of the region on the right
        rect_mask(height, width, 10, 160, 190, 290),  # table: cannot hold lines
        rect_mask(height, width, 20, 200, 180, 210),  # line inside the table
    ]
    instances = make_instances(
        masks, [0, 1, 1, 2, 1], ["paragraph", "textline", "table"], [0.9, 0.8, 0.7, 0.6, 0.5]
    )
    document = parse_valid(page_xml_string(PageShapes(instances), "p.png"), page_schema)
    text_region, table, holder = regions(document)
    assert etree.QName(table).localname == "TableRegion" and not table.findall("pc:TextLine", NS)
    lines = text_region.findall("pc:TextLine", NS)
    assert [line.get("id") for line in lines] == ["r1_l1", "r1_l2"]
    assert points(lines[0])[:, 1].min() == 20 and points(lines[1])[:, 1].min() == 90  # top to bottom
    assert points(lines[0])[:, 0].max() <= 189  # cut to its region
    assert float(lines[0].find("pc:Coords", NS).get("conf")) == pytest.approx(0.7)
    assert holder.get("custom") is None and holder.get("type") is None
    (own_line,) = holder.findall("pc:TextLine", NS)
    assert points(own_line).tolist() == points(holder).tolist()
    assert reading_order_refs(document) == ["r1", "r2", "r3"]
    check_geometry(document, height, width)


def test_empty_page_and_unusable_masks_still_validate(page_schema):
    document = parse_valid(
        page_xml_string(PageShapes(empty_instances(50, 40, ["text"])), "blank.png"), page_schema
    )
    assert not regions(document) and document.find(".//pc:ReadingOrder", NS) is None
    masks = [np.zeros((50, 40), bool), rect_mask(50, 40, 5, 5, 30, 30)]
    document = parse_valid(
        page_xml_string(PageShapes(make_instances(masks, [0, 0], ["text"])), "x.png"), page_schema
    )
    assert len(regions(document)) == 1


def test_page_map_overrides_defaults_ignoring_case_and_separators(page_schema):
    masks = [rect_mask(100, 100, 0, 0, 50, 50), rect_mask(100, 100, 50, 50, 100, 100)]
    instances = make_instances(masks, [0, 1], ["Table", "body_text"])
    page_map = parse_page_map("TABLE=ImageRegion,body-text=TextRegion:footnote")
    document = parse_valid(page_xml_string(PageShapes(instances), "p.png", page_map), page_schema)
    assert [(etree.QName(r).localname, r.get("type")) for r in regions(document)] == [
        ("ImageRegion", None),
        ("TextRegion", "footnote"),
    ]


def test_a_map_entry_matches_its_class_whether_composed_or_decomposed(page_schema):
    """`Überschrift` typed with one code point for Ü (NFC, as on Linux) or two (NFD, as macOS names files)
    reads the same; a --page-map or --alto-map entry written one way used to be ignored for the class
    spelled the other way (the region became an untyped TextRegion, the block a CustomZone)."""
    composed, decomposed = (unicodedata.normalize(form, "Überschrift") for form in ("NFC", "NFD"))
    instances = make_instances([rect_mask(100, 100, 0, 0, 50, 50)], [0], [decomposed])
    page_map = parse_page_map(f"{composed}=TextRegion:heading")
    document = parse_valid(page_xml_string(PageShapes(instances), "p.png", page_map), page_schema)
    assert [(etree.QName(r).localname, r.get("type")) for r in regions(document)] == [
        ("TextRegion", "heading")
    ]
    alto_map = parse_alto_map(f"{composed}=TextBlock:MainZone:Head")
    assert alto_kind(decomposed, alto_map) == AltoKind("TextBlock", "MainZone:Head")


def test_a_map_entry_names_a_class_holding_a_comma_or_equals_sign_as_classes_does(page_schema):
    """`--classes 'Name\\, Title,Stamp'` prompts a class `Name, Title`, but `--page-map 'Name\\,
    Title=TextRegion:heading'` was refused ("invalid page map entry 'Name\\'"), and `a=b` could not be
    named at all: the inline form split at every comma and the first `=`. It reads `\\,` and `\\=` as
    `--classes` and convert-dataset --map do."""
    masks = [rect_mask(100, 100, 0, 0, 50, 50), rect_mask(100, 100, 50, 50, 100, 100)]
    instances = make_instances(masks, [0, 1], ["Name, Title", "a=b"])
    page_map = parse_page_map("Name\\, Title=TextRegion:heading,a\\=b=TableRegion")
    document = parse_valid(page_xml_string(PageShapes(instances), "p.png", page_map), page_schema)
    assert [(etree.QName(r).localname, r.get("type")) for r in regions(document)] == [
        ("TextRegion", "heading"),
        ("TableRegion", None),
    ]
    alto_map = parse_alto_map("Name\\, Title=TextBlock:MainZone:Head")
    assert alto_kind("Name, Title", alto_map) == AltoKind("TextBlock", "MainZone:Head")


def test_page_map_spec_forms_and_errors(tmp_path):
    spec = {
        "table": "TableRegion",
        "logo": ["GraphicRegion", "logo"],
        "x": {"element": "TextRegion", "type": "credit"},
    }
    (tmp_path / "map.json").write_text(json.dumps(spec))
    assert parse_page_map(str(tmp_path / "map.json")) == {
        "table": ("TableRegion", None),
        "logo": ("GraphicRegion", "logo"),
        "x": ("TextRegion", "credit"),
    }
    assert parse_page_map('{"a": "MathsRegion"}') == {"a": ("MathsRegion", None)}
    for bad, message in [
        ("a=Nonsense", "unknown PAGE element"),
        ("a=ImageRegion:photo", "has no @type"),
        ("a=TextRegion:list", "is not a PAGE TextRegion @type"),
        ("a", "class=Element"),
        ("[1]", "class=Element"),
        ("{1: 2}", "not valid JSON"),
        # JSON types that are no string: refused here, not when the first page is written (exit 3 or
        # every page failing after the model ran)
        ('{"a": {"element": "TextRegion", "type": ["heading"]}}', "must be a string"),
        ('{"a": {"element": "CustomRegion", "type": 5}}', "must be a string"),
        ('{"a": 5}', r"page map entry 'a' must be 'Element\[:type\]', got 5"),
        ('{"a": {"type": "heading"}}', "page map entry 'a' must be"),  # no element
        (
            str(tmp_path / "absent.json"),
            rf"^cannot read page map {re.escape(str(tmp_path))}/absent.json: No such",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_page_map(bad)
    (tmp_path / "list.json").write_text('["table"]')
    with pytest.raises(ValueError, match="must be an object"):
        parse_page_map(str(tmp_path / "list.json"))
    with pytest.raises(ValueError, match="unknown PAGE element"):
        page_xml_string(
            PageShapes(make_instances([rect_mask(9, 9, 0, 0, 5, 5)], [0], ["a"])),
            "p.png",
            {"a": ("Box", None)},
        )
    assert region_kind("Chapter-Title").type == "heading" and region_kind("Table caption").type == "caption"


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ('{"a": "TextRegion:heading", " a ": "ImageRegion"}', "'a' and ' a '"),
        ('{"a": "TextRegion:heading", "a": "ImageRegion"}', "'a' and 'a'"),
        ("Text=TextRegion:heading,text=ImageRegion", "'Text' and 'text'"),
    ],
)
def test_a_map_naming_one_class_twice_is_refused(spec, names):
    """Inline JSON with the keys "a" and " a " (or "a" twice) kept the last entry, unsaid; so did the
    class=Element form with `Text` and `text`, whose lookup then took the first."""
    with pytest.raises(ValueError) as error:
        parse_page_map(spec)
    assert str(error.value) == (
        f"page map names one class twice, as {names} (class names are matched ignoring case, spaces, hyphens "
        "and underscores): keep one entry"
    )


@pytest.mark.parametrize("parse", [parse_page_map, parse_alto_map])
def test_class_map_file_is_read_in_the_encoding_json_finds_and_named_when_unreadable(tmp_path, parse):
    """A map file saved by Windows tools (Notepad's "UTF-8 with BOM", PowerShell 5's `Out-File -Encoding
    utf8`, its UTF-16 default) was refused as 'page map is not valid JSON: Unexpected UTF-8 BOM', and one in
    Latin-1 with a Python codec message that named neither the file nor the option's map; now the first two
    are read and the last refused naming the file."""
    element = "TextRegion:heading" if parse is parse_page_map else "TextBlock"
    text = json.dumps({"Überschrift": element}, ensure_ascii=False)
    expected = parse(text)
    for name, data in [
        ("bom.json", text.encode("utf-8-sig")),
        ("utf16.json", text.encode("utf-16")),
    ]:
        (tmp_path / name).write_bytes(data)
        assert parse(str(tmp_path / name)) == expected
    latin = tmp_path / "latin1.json"
    latin.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"map {re.escape(str(latin))} is not UTF-8 text \(") as refused:
        parse(str(latin))
    assert not isinstance(refused.value, UnicodeDecodeError)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"map {re.escape(str(broken))} is not valid JSON: Expecting value"):
        parse(str(broken))


@pytest.mark.parametrize("parse", [parse_page_map, parse_alto_map])
def test_class_map_nested_deeper_than_json_reads_is_refused_naming_the_file(tmp_path, parse):
    """A map file nested deeper than Python's JSON reader goes (a file made to break readers, a runaway
    generator) ended segment as 'error: internal error: RecursionError: maximum recursion depth exceeded
    while decoding a JSON array' (exit 3); it is a usage error naming the file, as invalid JSON is."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=rf"map {re.escape(str(deep))} is JSON nested too deeply to read$"):
        parse(str(deep))


def test_graphic_types_of_the_schema_are_default_kinds():
    """Class names that are PAGE's own GraphicRegion types become that region, not a TextRegion."""
    for name in (
        "handwritten-annotation",
        "Handwritten annotation",
        "letterhead",
        "punch_hole",
        "paper-grow",
    ):
        kind = region_kind(name)
        assert kind.element == "GraphicRegion" and kind.type in ALLOWED_TYPES["GraphicRegion"], name


def test_the_class_names_convert_dataset_reads_from_page_are_written_back_as_those_regions():
    """A model trained on `convert-dataset --from page` data prompts PAGE's own region and type names
    ("line-drawing", "graphic", "footnote-continued", "frame", "bar chart", ...): segment writes each as the
    region it was read from, not as an untyped TextRegion (or, for "graphic", an ImageRegion)."""
    subtypes = {"TextRegion": TEXT_TYPES, "GraphicRegion": GRAPHIC_TYPES, "ChartRegion": CHART_TYPES}
    for element in REGION_ELEMENTS:
        for subtype in [None, *sorted(subtypes.get(element, ()))]:
            name = region_class(element, subtype)
            kind = region_kind(name)
            assert kind.element == element, (name, kind)
            assert subtype is None or kind.type == subtype, (name, kind)


def test_readme_names_every_default_graphic_type():
    """README's PAGE defaults list the class names that become a GraphicRegion of each type."""
    readme = " ".join((PROJECT_ROOT / "README.md").read_text(encoding="utf-8").split())
    defaults = readme[readme.index("PAGE defaults") : readme.index("anything else a `TextRegion`")]
    graphic = {
        kind.type for kind in DEFAULT_REGION_KINDS.values() if kind.element == "GraphicRegion" and kind.type
    }
    for graphic_type in graphic:
        assert graphic_type.replace("-", " ") in defaults, graphic_type


def test_names_are_escaped_and_scores_clipped(page_schema):
    masks = [
        rect_mask(60, 60, 0, 0, 20, 20),
        rect_mask(60, 60, 30, 30, 50, 50),
        rect_mask(60, 60, 0, 40, 10, 50),
    ]
    instances = make_instances(masks, [0, 1, 1], ['a;b{c} & <"d">', "text"], scores=[1.5, -0.2, float("nan")])
    document = parse_valid(page_xml_string(PageShapes(instances), "scan & <1>.png"), page_schema)
    assert document.find("pc:Page", NS).get("imageFilename") == "scan & <1>.png"
    customs = [region.get("custom") for region in regions(document)]
    assert 'structure {type:a\\u003bb\\u007bc\\u007d & <"d">;}' in customs
    confs = sorted(float(coords.get("conf")) for coords in document.iter(f"{{{PAGE_NAMESPACE}}}Coords"))
    assert confs == [0.0, 0.0, 1.0]


def test_metadata_and_atomic_file(tmp_path, page_schema):
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    instances = make_instances([rect_mask(30, 20, 2, 2, 18, 28)], [0], ["text"])
    write_page_xml(tmp_path / "out" / "p.xml", PageShapes(instances), "p.png", created=created)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["p.xml"]
    text = (tmp_path / "out" / "p.xml").read_text(encoding="utf-8")
    assert text == page_xml_string(PageShapes(instances), "p.png", created=created)
    document = parse_valid(text, page_schema)
    assert document.findtext("pc:Metadata/pc:Creator", namespaces=NS).startswith("docsam ")
    assert document.findtext("pc:Metadata/pc:Created", namespaces=NS) == "2024-05-06T07:08:09Z"
    assert document.findtext("pc:Metadata/pc:LastChange", namespaces=NS) == "2024-05-06T07:08:09Z"


@pytest.mark.parametrize("parse", ["page", "alto"])
@pytest.mark.parametrize("in_file", [True, False], ids=["file", "inline"])
def test_a_map_entry_that_cannot_be_used_is_named_with_its_file(tmp_path, parse, in_file):
    """`--page-map map.json` whose entry "stamp" names no PAGE element said 'invalid value for '--page-map':
    unknown PAGE element 'Stamp': ...': which of a map's entries held it, and in which file, went unsaid
    (and 'page map JSON must be an object' named no file either). Each now names the entry and the file."""
    name, read = {"page": ("page map", parse_page_map), "alto": ("ALTO map", parse_alto_map)}[parse]
    entries = {"table": "TableRegion" if parse == "page" else "TextBlock", "stamp": "Stamp"}
    spec = json.dumps(entries)
    if in_file:
        (path := tmp_path / "map.json").write_text(spec)
        spec, name = str(path), f"{name} {path}"
    with pytest.raises(ValueError) as error:
        read(spec)
    assert str(error.value).startswith(f"{name} entry 'stamp': unknown {parse.upper()} element 'Stamp': use")
    if in_file:
        path.write_text('["table"]')
        with pytest.raises(ValueError, match=rf"^{re.escape(name)} JSON must be an object"):
            read(spec)
