"""Pages the writers must not fail on: hundreds of instances, names XML forbids, non-finite scores.

Each page goes through `PageWriter` with COCO, PAGE, ALTO and JSON lines on; the XML is validated against
the PAGE 2019 and ALTO 4.4 schemas, the JSON parsed strictly (no NaN or Infinity accepted).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from instances_factory import make_instances, rect_mask
from lxml import etree
from pycocotools import mask as mask_utils

from docsam_cli.inputs.sources import portable_stem
from docsam_cli.names import xml_text
from docsam_cli.writers.jsonl import dumps_record
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter
from model.instances import rle_areas

FORMATS = frozenset({"coco", "page", "alto", "jsonl"})
HEIGHT, WIDTH = 400, 300


def write_page(out: Path, instances, file_name: str = "scan.png", alto_map=None) -> tuple[PageWriter, dict]:
    """One page through every writer but overlay and semantic, the run finished; its writer and record."""
    settings = OutputSettings(
        out_dir=out, formats=FORMATS, class_names=tuple(instances.class_names), alto_map=alto_map
    )
    writer = PageWriter(settings)
    source = PageSource(out / file_name, None, "p", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    record = writer.write(source, instances, {})
    writer.finish(["p"])
    return writer, record


def valid_xml(path: Path, schema: etree.XMLSchema) -> etree._Element:
    document = etree.parse(str(path)).getroot()
    assert schema.validate(document), schema.error_log
    return document


def strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_rle_areas_count_pixels_past_pycocotools_uint8_limit():
    masks = [rect_mask(20, 30, 0, 0, 1 + index % 30, 1 + index % 20) for index in range(300)]
    rles = [mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))) for mask in masks]
    assert rle_areas(rles).tolist() == [int(mask.sum()) for mask in masks]
    assert rle_areas([]).dtype == np.int64 and rle_areas([]).shape == (0,)


def test_a_page_with_300_instances_writes_every_format(tmp_path, page_schema, alto_schema):
    masks, labels = [], []
    for index in range(300):  # 15 x 20 cells of 20 x 20 pixels: text regions, tables and figures
        x, y = (index % 15) * 20, (index // 15) * 20
        masks.append(rect_mask(HEIGHT, WIDTH, x + 1, y + 1, x + 19, y + 19))
        labels.append(index % 3)
    instances = make_instances(masks, labels, ["paragraph", "table", "figure"])
    writer, record = write_page(tmp_path, instances)
    files = writer.files("p")

    assert [entry["area"] for entry in strict_json(dumps_record(record))["instances"]] == [18 * 18] * 300
    namespace = {"pc": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"}
    page_regions = valid_xml(files.page_xml, page_schema).xpath("//pc:Coords", namespaces=namespace)
    assert len(page_regions) == 300
    alto = valid_xml(files.alto, alto_schema)
    assert len(alto.findall(".//{*}PrintSpace/*")) == 300
    coco = strict_json((tmp_path / "coco.json").read_text())
    assert len(coco["annotations"]) == 300 and {a["area"] for a in coco["annotations"]} == {18 * 18}


def test_xml_text_percent_encodes_what_xml_forbids_as_utf8_bytes():
    assert xml_text("a\x1bb\x07\x00\x0b\x0c\x1f") == "a%1Bb%07%00%0B%0C%1F"
    assert xml_text("\udcff\ud800\ufffe\uffff") == "%FF%ED%A0%80%EF%BF%BE%EF%BF%BF"  # bytes, lone surrogates
    assert xml_text("tab\tnew\nline\r é & <x> \x7f") == "tab\tnew\nline\r é & <x> \x7f"  # XML allows these


def test_a_page_id_is_written_in_xml_as_its_files_are_named():
    """A file name holding U+FFFE or U+FFFF (noncharacters XML forbids, left by a byte-swapped byte order
    mark) kept them in the page id, so its PAGE and ALTO files named its saved image `image/%EF%BF%BEx.png`
    while the image was saved as `image/\ufffex.png`: a file of another name. The id now percent-encodes
    them, as it does control characters, so the text in the files is the name on disk."""
    for name in ("\ufffex", "x\uffff", "ctl\x01\udcff\ufffe"):
        stem = portable_stem(name)
        assert xml_text(stem) == stem, name
    assert portable_stem("\ufffex") == "%EF%BF%BEx"


def test_control_characters_in_file_and_class_names_give_valid_xml(tmp_path, page_schema, alto_schema):
    masks = [rect_mask(HEIGHT, WIDTH, 10, 10, 100, 100), rect_mask(HEIGHT, WIDTH, 150, 150, 250, 250)]
    instances = make_instances(masks, [0, 1], ["para\x1bgraph", "fig\x07ure\x00"])
    alto_map = {"fig\x07ure\x00": ("Illustration", None)}  # the class name becomes the tag's LABEL
    writer, record = write_page(tmp_path, instances, file_name="scan\x1b[31m\x07.png", alto_map=alto_map)
    files = writer.files("p")

    page = valid_xml(files.page_xml, page_schema)
    # XML cannot hold the file's name (it would be written percent-encoded, naming no file): the files name
    # the page's own image
    assert page.find("{*}Page").get("imageFilename") == "../image/p.png" and files.image.is_file()
    customs = {region.get("custom") for region in page.iter("{*}TextRegion")}
    assert "structure {type:para%1Bgraph;}" in customs and "structure {type:fig%07ure%00;}" in customs

    alto = valid_xml(files.alto, alto_schema)
    assert alto.findtext(".//{*}sourceImageInformation/{*}fileName") == "../image/p.png"
    tags = {tag.get("DESCRIPTION"): tag.get("LABEL") for tag in alto.iter("{*}OtherTag")}
    assert tags == {
        "docsam class para%1Bgraph": "CustomZone:para%1Bgraph",
        "docsam class fig%07ure%00": "fig%07ure%00",
    }
    assert alto.find(".//{*}Illustration").get("TYPE") is None  # the class is in the tag's DESCRIPTION

    # JSON holds any character: the names stay as they are there
    assert [entry["class"] for entry in record["instances"]] == ["para\x1bgraph", "fig\x07ure\x00"]
    coco = strict_json((tmp_path / "coco.json").read_text())
    assert coco["images"][0]["source"] == "scan\x1b[31m\x07.png"


def test_non_finite_scores_are_written_as_zero_by_every_writer(tmp_path, page_schema, alto_schema):
    masks = [rect_mask(HEIGHT, WIDTH, 10, 10 + 40 * index, 200, 40 + 40 * index) for index in range(4)]
    scores = [float("nan"), float("inf"), float("-inf"), 0.75]
    instances = make_instances(masks, [0] * 4, ["text line"], scores=scores)
    writer, record = write_page(tmp_path, instances)
    files = writer.files("p")

    assert [entry["score"] for entry in strict_json(dumps_record(record))["instances"]] == [0, 0, 0, 0.75]
    part = strict_json(writer.coco.part_path("p").read_text())
    assert [annotation["score"] for annotation in part["annotations"]] == [0, 0, 0, 0.75]
    results = strict_json((tmp_path / "coco_results.json").read_text())
    assert [result["score"] for result in results] == [0, 0, 0, 0.75]
    confidences = [
        float(coords.get("conf")) for coords in valid_xml(files.page_xml, page_schema).iter("{*}Coords")
    ]
    assert sorted(confidences) == [0] * 6 + [0.75] * 2  # each line, and the TextRegion made for it
    words = [float(string.get("WC")) for string in valid_xml(files.alto, alto_schema).iter("{*}String")]
    assert sorted(words) == [0, 0, 0, 0.75]
