"""Helpers for the convert-dataset and evaluate tests: run the CLI, make small inputs, count independently."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def minimal_pdf(media_box: tuple[float, ...], rotate: int, rect: tuple[float, ...]) -> bytes:
    """A one-page PDF whose content is one black filled rectangle (x, y, w, h in user space)."""
    content = f"0 0 0 rg {' '.join(map(str, rect))} re f".encode()
    box = " ".join(map(str, media_box))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [{box}] /Rotate {rotate} /Contents 4 0 R >>".encode(),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


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
