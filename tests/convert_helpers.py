"""Helpers for the convert-dataset and evaluate tests: run the CLI, make small inputs, count independently."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from inputs_corpus import pdf_file
from lxml import etree
from PIL import Image
from typer.testing import CliRunner

from docsam_cli.app import app

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def run_cli(*args: object) -> CliResult:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def assert_one_page_refused(result: CliResult, error_line: str, metric: str) -> None:
    """An `evaluate --json -` run that refused one page with `error_line` alone (exit 1) and scored the
    other page, a perfect prediction, at `metric` ("mask" or "box") AP 1.0."""
    import pytest

    assert result.exit_code == 1
    assert result.error_lines() == [error_line]
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report[metric]["AP"] == pytest.approx(1.0)


def write_image(path: Path, width: int, height: int, boxes: tuple = ()) -> Path:
    """A white RGB image with black filled boxes (x0, y0, x1, y1, exclusive ends)."""
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        pixels[y0:y1, x0:x1] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def page_xml(image_filename: str, width: int, height: int, regions: list[tuple[str, str | None, str]]) -> str:
    """A PAGE 2019 document with (element, @type, points) regions."""
    body = "".join(
        f'<{element} id="r{index}"' + (f' type="{kind}"' if kind else "") + ">"
        f'<Coords points="{points}"/></{element}>'
        for index, (element, kind, points) in enumerate(regions)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><PcGts xmlns="{PAGE_NS}">'
        f'<Page imageFilename="{image_filename}" imageWidth="{width}" imageHeight="{height}">{body}</Page>'
        "</PcGts>"
    )


def minimal_pdf(
    media_box: tuple[float, ...],
    rotate: int,
    rect: tuple[float, ...],
    crop_box: tuple[float, ...] | None = None,
) -> bytes:
    """A one-page PDF whose content is one black filled rectangle (x, y, w, h in user space)."""
    content = f"0 0 0 rg {' '.join(map(str, rect))} re f".encode()
    box = " ".join(map(str, media_box))
    crop = "" if crop_box is None else f"/CropBox [{' '.join(map(str, crop_box))}] "
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [{box}] {crop}/Rotate {rotate} /Contents 4 0 R >>".encode(),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    return pdf_file(objects)


def dark_box(image_path: Path) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of the dark pixels of an image."""
    pixels = np.asarray(Image.open(image_path).convert("L"))
    ys, xs = np.nonzero(pixels < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def layout_counts(folder: Path) -> tuple[Counter, dict[str, dict]]:
    """Instances per class over a written split folder, and each per-image json by image name."""
    counts: Counter = Counter()
    documents = {}
    for name in (folder / "list.txt").read_text().split():
        document = json.loads((folder / "coco" / f"{Path(name).stem}.json").read_text())
        names = {category["id"]: category["name"] for category in document["categories"]}
        counts.update(names[annotation["category_id"]] for annotation in document["annotations"])
        documents[name] = document
    return counts, documents


# --- An independent reading of PAGE region classes (the spec of convert/page.py, written again) ---

_NAMES = {
    "TextRegion": "text", "ImageRegion": "image", "LineDrawingRegion": "line-drawing",
    "GraphicRegion": "graphic", "TableRegion": "table", "ChartRegion": "chart",
    "SeparatorRegion": "separator", "MathsRegion": "maths", "ChemRegion": "chem", "MusicRegion": "music",
    "AdvertRegion": "advert", "NoiseRegion": "noise", "UnknownRegion": "unknown", "CustomRegion": "custom",
    "MapRegion": "map",
}  # fmt: skip


def page_region_counts(xml: Path) -> Counter:
    """Regions per class of one PAGE file, cells (text regions directly in a table) excluded."""
    root = etree.parse(str(xml)).getroot()
    counts: Counter = Counter()
    for element in root.iter("{*}*"):
        name = etree.QName(element).localname
        if not name.endswith("Region") or element.find("{*}Coords") is None:
            continue
        parent = etree.QName(element.getparent()).localname
        if name == "TextRegion" and parent == "TableRegion":
            continue
        custom = re.search(r"structure\s*\{[^}]*type:([^;}]+)", element.get("custom", ""))
        subtype = custom[1].replace("\\u0020", " ").strip() if custom else element.get("type")
        if subtype and subtype != "other":
            counts[f"{subtype} chart" if name == "ChartRegion" else subtype] += 1
        else:
            counts[_NAMES[name]] += 1
    return counts


# --- Malformed JSON: a valid COCO dataset, and one field changed at a time ---

DELETE = object()  # the value of a mutation that removes the field


def coco_document() -> dict:
    """A valid COCO dataset of two 60x40 pages (a.png, b.png): a polygon, an RLE and a box-only annotation,
    each with a score, so that it reads as ground truth, as a source and as predictions."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:20, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 60, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 60, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]],
             "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0, "score": 0.9},
            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "score": 0.8,
             "segmentation": {"size": [40, 60], "counts": rle["counts"].decode()}},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0, "score": 0.7},
        ],
        "categories": [{"id": 1, "name": "table"}, {"id": 2, "name": "figure"}],
    }  # fmt: skip


def coco_source(folder: Path, document: object | None = None) -> Path:
    """`folder` holding `document` (default: `coco_document()`) as annotations.json beside the two 60x40
    pages it names, a.png and b.png."""
    write_image(folder / "a.png", 60, 40)
    write_image(folder / "b.png", 60, 40)
    (folder / "annotations.json").write_text(json.dumps(coco_document() if document is None else document))
    return folder


def json_path(path: str) -> list[str | int]:
    """`images[0].height` → ["images", 0, "height"]; `[1].bbox` → [1, "bbox"]."""
    return [int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]


def mutated(document: object, path: str, value: object) -> object:
    """A deep copy of `document` with the field at `path` set to `value` (or removed: DELETE)."""
    copy = json.loads(json.dumps(document))
    *parents, last = json_path(path)
    target = copy
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return copy


def assert_one_error(result: CliResult, file_name: str, where: str) -> None:
    """Exit code 1 and exactly one `error:` line, naming the file and the field (a JSON path)."""
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.error_lines()
    assert len(lines) == 1, lines
    assert file_name in lines[0], lines[0]
    assert re.search(re.escape(where) + r"(?![\w.\[])", lines[0]), (where, lines[0])  # not a longer path


NAN = float("nan")
HUGE = 10**309  # a whole number JSON holds and Python reads, but no float does
ALL = frozenset({"convert", "truth", "predictions"})
# (field, new value, the field the error must name, the readings that must refuse it). A page's width and
# height may be left out by a source (the image has them) and by predictions (the ground truth has them).
COCO_CASES = [
    ("images[0].height", DELETE, "images[0].height", {"truth"}),
    ("images[0].width", "600", "images[0].width", ALL),
    ("images[0].width", -5, "images[0].width", ALL),
    ("images[0].height", NAN, "images[0].height", ALL),
    ("images[0].width", 12.5, "images[0].width", ALL),
    ("images[0].width", HUGE, "images[0].width", ALL),
    ("images[0].file_name", DELETE, "images[0].file_name", ALL),
    ("images[0].file_name", 5, "images[0].file_name", ALL),
    ("images[0].id", [1], "images[0].id", ALL),
    ("images[1].id", 1, "images[1].id", ALL),
    ("images", {}, "images", ALL),
    ("images[0]", "a.png", "images[0]", ALL),
    ("categories", DELETE, "categories", ALL),
    ("categories[0].name", DELETE, "categories[0].name", ALL),
    ("categories[0].name", 3, "categories[0].name", ALL),
    ("categories[0].id", None, "categories[0].id", ALL),
    ("categories[1].id", 1, "categories[1].id", ALL),
    ("categories[0]", ["table"], "categories[0]", ALL),
    ("annotations", {}, "annotations", ALL),
    ("annotations[0]", 7, "annotations[0]", ALL),
    ("annotations[0].image_id", DELETE, "annotations[0].image_id", ALL),
    ("annotations[0].image_id", 99, "annotations[0].image_id", ALL),
    ("annotations[0].category_id", 99, "annotations[0].category_id", ALL),
    ("annotations[0].category_id", [1], "annotations[0].category_id", ALL),
    ("annotations[1].segmentation.size", DELETE, "annotations[1].segmentation.size", ALL),
    ("annotations[1].segmentation.size", ["40", 60], "annotations[1].segmentation.size[0]", ALL),
    ("annotations[1].segmentation.size", [20, 60], "annotations[1].segmentation.size", ALL),
    ("annotations[1].segmentation.counts", 5, "annotations[1].segmentation.counts", ALL),
    ("annotations[1].segmentation.counts", [100, 50], "annotations[1].segmentation.counts", ALL),
    ("annotations[1].segmentation.counts", "!!", "annotations[1].segmentation.counts", ALL),
    # Runs [-1, 2401]: they add up to 40 x 60, but pycocotools refuses a negative run when it decodes them.
    ("annotations[1].segmentation.counts", "OQ[2", "annotations[1].segmentation.counts", ALL),
    ("annotations[0].segmentation", "abc", "annotations[0].segmentation", ALL),
    ("annotations[0].segmentation", [[10, 10, "40", 10, 40, 30]], "annotations[0].segmentation[0][2]", ALL),
    ("annotations[0].segmentation", [{"x": 1}], "annotations[0].segmentation[0]", ALL),
    ("annotations[0].segmentation", [[10, 10, 40, 10, 40]], "annotations[0].segmentation[0]", ALL),
    ("annotations[0].segmentation", [[10, 10, 40, NAN, 40, 30]], "annotations[0].segmentation[0][3]", ALL),
    ("annotations[0].segmentation", [[10, 10, 40, HUGE, 40, 30]], "annotations[0].segmentation[0][3]", ALL),
    ("annotations[0].bbox", [1, 2, 3], "annotations[0].bbox", ALL),
    ("annotations[0].bbox", [1, 2, -3, 4], "annotations[0].bbox[2]", ALL),
    ("annotations[0].bbox", [1, 2, HUGE, 4], "annotations[0].bbox[2]", ALL),
    ("annotations[0].bbox", {"x": 1}, "annotations[0].bbox", ALL),
    ("annotations[2].bbox", DELETE, "annotations[2]", ALL),
    ("annotations[0].iscrowd", "no", "annotations[0].iscrowd", ALL),
    ("annotations[0].area", "big", "annotations[0].area", ALL),
    ("annotations[0].score", "high", "annotations[0].score", ALL),
]


def coco_cases(reading: str) -> list:
    """The cases a reading must refuse, as pytest parameters named after the field and the value."""
    import pytest

    def shown(value: object) -> str:
        text = "deleted" if value is DELETE else json.dumps(value)
        return text if len(text) <= 40 else f"{text[:37]}..."

    return [
        pytest.param(field, value, where, id=f"{field}={shown(value)}")
        for field, value, where, readings in COCO_CASES
        if reading in readings
    ]


def write_rotated_jpeg(path: Path, width: int, height: int, box: tuple[int, int, int, int]) -> Path:
    """A `width` x `height` JPEG as stored (a dark box at x0, y0, x1, y1 of that raw grid), tagged EXIF
    Orientation 6: viewers and docsam's loader show it turned 90° clockwise, `height` x `width`."""
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path
