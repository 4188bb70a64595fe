"""PAGE and ALTO output of real pages pass OCR-D's coordinate checks and the schemas; `segment --format
alto,page` output reads back with `convert-dataset --from alto`.

The masks: the human regions and lines of the 11 OCR-D ground-truth pages, with ragged edges as a model
gives them (pixels flipped at random along the outline: pinches, spurs, notches), and the tiny model's
own masks on two of those pages.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from convert_helpers import run_cli
from instances_factory import assert_same_masks, coco_masks, raster
from lxml import etree
from pycocotools import mask as mask_utils
from segment_helpers import run_segment

from docsam_cli.datasets.geometry import parse_points
from docsam_cli.writers.alto import alto_string
from docsam_cli.writers.page_xml import page_xml_string
from docsam_cli.writers.shapes import PageShapes
from model.instances import PageInstances

OCRD_PAGES = "pages/ocrd-gt-structure-text/data"
PARENT_SLACK = 1.5  # OCR-D's margin around a region for its lines


def ocrd_polygon(points: np.ndarray) -> shapely.Polygon | str:
    """A polygon as OCR-D's `--check-coords` reads it (simplified by 1 px), or its complaint."""
    if len(points) < 4:
        return "has too few points"
    polygon = shapely.Polygon(points).simplify(1.0)
    if not polygon.is_valid:
        return shapely.is_valid_reason(polygon)
    if polygon.is_empty or (points < 0).any():
        return "is empty or negative"
    return polygon


def points_of(text: str) -> np.ndarray:
    """PAGE's `x,y x,y ...` or ALTO's `x y x y ...`."""
    return parse_points(text).astype(int)


def ocrd_complaints(regions: list[etree._Element], points_xpath: str) -> list[str]:
    """OCR-D's checks on regions and their TextLines: valid polygons, lines inside their region."""
    complaints = []
    for region in regions:
        outer = ocrd_polygon(points_of(region.xpath(points_xpath, namespaces={"a": region.nsmap[None]})[0]))
        if isinstance(outer, str):
            complaints.append(f"{region.get('id') or region.get('ID')}: {outer}")
            continue
        for line in region.findall("{*}TextLine"):
            inner = ocrd_polygon(points_of(line.xpath(points_xpath, namespaces={"a": line.nsmap[None]})[0]))
            if isinstance(inner, str) or not inner.within(outer.buffer(PARENT_SLACK)):
                complaints.append(
                    f"{line.get('id') or line.get('ID')}: {inner if isinstance(inner, str) else 'outside'}"
                )
    return complaints


def ragged_ground_truth(path: Path, rng: np.random.Generator) -> PageInstances:
    """The page's regions and lines as instances whose masks have model-like ragged edges."""
    page = etree.parse(str(path)).getroot().find("{*}Page")
    height, width = int(page.get("imageHeight")), int(page.get("imageWidth"))
    found = []
    for element in page.iter("{*}*"):
        name = etree.QName(element).localname
        coords = element.find("{*}Coords")
        if coords is None or not (name.endswith("Region") or name == "TextLine"):
            continue
        outline = points_of(coords.get("points")).astype(np.int32)
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [outline], 1)
        (x0, y0), (x1, y1) = np.maximum(outline.min(0) - 2, 0), outline.max(0) + 3
        window = mask[y0:y1, x0:x1]
        kernel = np.ones((3, 3), np.uint8)
        edge = (cv2.dilate(window, kernel) ^ cv2.erode(window, kernel)).astype(bool)
        window ^= (edge & (rng.random(window.shape) < 0.04)).astype(np.uint8)
        if mask.any():
            class_name = (
                "text line" if name == "TextLine" else element.get("type") or name.removesuffix("Region")
            )
            found.append((class_name, mask_utils.encode(np.asfortranarray(mask))))
    found.sort(key=lambda item: -int(mask_utils.area(item[1])))
    names = sorted({name for name, _ in found})
    rles = [rle for _, rle in found]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in mask_utils.toBbox(rles)] if rles else []
    return PageInstances(
        height,
        width,
        names,
        rles,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        rng.uniform(0.3, 1.0, len(rles)),
        np.asarray([names.index(name) for name, _ in found], dtype=np.int64),
        [mask_utils.merge([rle for n, rle in found if n == name]) for name in names],
    )


@pytest.mark.slow  # 11 pages of up to 14 Mpx, ~280 masks
def test_ragged_masks_of_real_pages_give_page_and_alto_that_ocrd_accepts(shared_data):
    page_schema = etree.XMLSchema(etree.parse(str(shared_data / "schema/2019-07-15/pagecontent.xsd")))
    alto_schema = etree.XMLSchema(etree.parse(str(shared_data / "schema/alto-4-4/alto-4-4.local.xsd")))
    rng = np.random.default_rng(11)
    sources = sorted((shared_data / OCRD_PAGES).glob("*/GT-PAGE/*.xml"))
    assert len(sources) == 11
    plain_invalid = checked = 0
    for source in sources:
        instances = ragged_ground_truth(source, rng)
        for index in range(len(instances)):  # how the plain simplification would have fared
            contours, _ = cv2.findContours(
                instances.decode_mask(index).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            largest = max(contours, key=cv2.contourArea)
            plain_invalid += isinstance(
                ocrd_polygon(cv2.approxPolyDP(largest, 1.0, True).reshape(-1, 2)), str
            )
        shapes = PageShapes(instances)
        page = etree.fromstring(page_xml_string(shapes, source.name).encode())
        assert page_schema.validate(page), (source.name, page_schema.error_log)
        regions = [element for element in page.find("{*}Page") if element.find("{*}Coords") is not None]
        assert not ocrd_complaints(regions, "a:Coords/@points"), source.name
        alto = etree.fromstring(alto_string(shapes, source.name).encode())
        assert alto_schema.validate(alto), (source.name, alto_schema.error_log)
        blocks = list(alto.find("{*}Layout/{*}Page/{*}PrintSpace"))
        assert not ocrd_complaints(blocks, "a:Shape/a:Polygon/@POINTS"), source.name
        checked += len(regions) + sum(len(region.findall("{*}TextLine")) for region in regions)
    assert checked > 250
    assert plain_invalid > 25  # the masks are adversarial: plain simplification fails on many


@pytest.mark.slow  # the tiny model on two real pages, then convert-dataset
def test_segment_alto_validates_and_reads_back_as_the_page_output(tmp_path, tiny_weights, shared_data):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("laube_europa0202_1837_0006.jpg", "laube_europa0202_1837_0105.jpg"):
        (scans / name).symlink_to(next((shared_data / OCRD_PAGES).glob(f"*/GT-PAGE/{name}")))
    out = tmp_path / "out"
    code, _, stderr = run_segment(tiny_weights, out, str(scans), "--format", "alto,page,jsonl")
    assert code == 0, stderr
    alto_schema = etree.XMLSchema(etree.parse(str(shared_data / "schema/alto-4-4/alto-4-4.local.xsd")))
    alto_files = sorted((out / "alto").glob("*.xml"))
    assert len(alto_files) == 2
    for path in alto_files:
        assert alto_schema.validate(etree.parse(str(path))), alto_schema.error_log

    dataset = tmp_path / "dataset"
    result = run_cli("convert-dataset", tmp_path, "--from", "alto", "--out", dataset)
    assert result.exit_code == 0, result.stderr
    compared = 0
    for path in sorted((out / "page").glob("*.xml")):
        document = json.loads((dataset / "coco" / f"{path.stem}.json").read_text())
        height, width = document["images"][0]["height"], document["images"][0]["width"]
        read = coco_masks(document, height, width)
        regions = [
            r for r in etree.parse(str(path)).getroot().find("{*}Page") if r.find("{*}Coords") is not None
        ]
        assert not ocrd_complaints(regions, "a:Coords/@points")
        written = []
        for region in regions:
            class_name = region.get("custom").removeprefix("structure {type:").removesuffix(";}")
            outline = points_of(region.find("{*}Coords").get("points"))
            written.append((class_name, raster(outline, height, width)))
        assert_same_masks(read, written, path.name)
        compared += len(written)
    assert compared >= 4
