"""ICDAR 2013 table competition ground truth (`<doc>-reg.xml`, `<doc>-str.xml` beside `<doc>.pdf`).

Regions (`-reg`) become "table" instances, cells (`-str`) "table cell" instances (`--level cells`), on
the 1-based `page` they name. Their `bounding-box` corners are PDF user-space points (y up); pages are
rendered as `docsam segment` renders them (`inputs.pdf.render_pdf_page`: the CropBox, /Rotate applied, as
viewers show them; the pixel limit checked before poppler runs) and the boxes mapped accordingly, so that
segment's outputs for `<doc>.pdf` match these pages in `evaluate`. Without a `-reg` file the tables come
from the `-str` regions.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lxml import etree

from docsam_cli.datasets.convert.base import ReadContext
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import ImageNotFound
from docsam_cli.datasets.records import CELL_CLASS, ImageRef, Instance, Note, SourcePage
from docsam_cli.datasets.xml import child, local, parse_xml
from docsam_cli.errors import InputError, WrongFormat

TABLE_CLASS = "table"
_TIMEOUT = 120
_CROP_BOX = re.compile(r"^Page\s+(\d+)\s+CropBox:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_ROTATION = re.compile(r"^Page\s+(\d+)\s+rot:\s+(-?\d+)", re.MULTILINE)


@dataclass(frozen=True)
class PageBox:
    """A page's CropBox (x0, y0, x1, y1 in points: what viewers, and segment, show of it) and its /Rotate."""

    x0: float
    y0: float
    x1: float
    y1: float
    rotation: int

    @property
    def size(self) -> tuple[float, float]:
        """Displayed (width, height) in points."""
        width, height = self.x1 - self.x0, self.y1 - self.y0
        return (height, width) if self.rotation in (90, 270) else (width, height)

    def to_display(self, points: np.ndarray) -> np.ndarray:
        """PDF user-space points (y up) → displayed page points (y down, rotation applied)."""
        width, height = self.x1 - self.x0, self.y1 - self.y0
        u, v = points[:, 0] - self.x0, self.y1 - points[:, 1]
        if self.rotation == 90:
            u, v = height - v, u
        elif self.rotation == 180:
            u, v = width - u, height - v
        elif self.rotation == 270:
            u, v = v, width - u
        return np.stack([u, v], axis=1)


def read(path: Path, context: ReadContext) -> list[SourcePage | InputError]:
    """The annotated pages of one document, read from its -reg file (and its -str file)."""
    stem, kind = _split_name(path)
    if kind is None:
        raise WrongFormat(path, "not an ICDAR 2013 -reg.xml or -str.xml file")
    region_file, structure_file = path.with_name(f"{stem}-reg.xml"), path.with_name(f"{stem}-str.xml")
    if kind == "str" and region_file.is_file():
        return []  # read together with the -reg file
    notes: list[Note] = []
    boxes: dict[int, list[Instance]] = defaultdict(list)
    documents = [(kind, parse_xml(path))]
    if kind == "reg" and structure_file.is_file():
        documents.append(("str", parse_xml(structure_file)))
    for document_kind, document in documents:
        if local(document) != "document":
            raise WrongFormat(path, f"not an ICDAR 2013 document (root element <{local(document)}>)")
        _collect(document, document_kind, kind, context.levels, boxes, notes)
    pdf = _pdf(path, stem, documents[0][1], context)
    pages = sorted(page for page, instances in boxes.items() if instances)
    if not pages:
        return []
    geometry = page_boxes(pdf, pages)
    result: list[SourcePage | InputError] = []
    for page in pages:
        if page not in geometry:
            result.append(InputError(path, f"page {page} is not in {pdf.name}"))
            continue
        box = geometry[page]
        instances = [_to_display(instance, box) for instance in boxes[page]]
        # Named like `segment` names PDF pages, so its outputs match these pages in `evaluate`.
        image = ImageRef(f"{pdf.stem}_p{page:04d}.png", load=_renderer(pdf, page, context.dpi, box.size))
        width, height = box.size
        result.append(SourcePage(path, image, width, height, instances, relative=True, notes=notes))
        notes = []
    return result


def _split_name(path: Path) -> tuple[str, str | None]:
    for kind in ("reg", "str"):
        suffix = f"-{kind}.xml"
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)], kind
    return path.stem, None


def _collect(
    document: etree._Element,
    document_kind: str,
    file_kind: str,
    levels: frozenset[str],
    boxes: dict[int, list[Instance]],
    notes: list[Note],
) -> None:
    """Tables (from -reg, or from -str when there is no -reg) and cells (from -str) by page."""
    tables_here = "regions" in levels and (document_kind == "reg" or file_kind == "str")
    for table in document.iter("table"):
        for region in table.iter("region"):
            where = f"table {table.get('id', '?')} region {region.get('id', '?')}"
            try:
                page = int(region.get("page", ""))
            except ValueError:
                notes.append(Note("dropped", "region without a page number", where))
                continue
            cells = list(region.iter("cell")) if document_kind == "str" else []
            if tables_here:
                polygon = _box(region, where, notes)
                if polygon is None and cells:
                    boxes_of_cells = [p for c in cells if (p := _box(c, where, notes)) is not None]
                    if boxes_of_cells:
                        stacked = np.concatenate(boxes_of_cells)
                        polygon = box_polygon(*stacked.min(axis=0), *stacked.max(axis=0))
                        notes.append(Note("fixed", "table box derived from its cells", where))
                if polygon is not None:
                    boxes[page].append(Instance(TABLE_CLASS, [polygon], where=where))
            if "cells" in levels:
                for cell in cells:
                    cell_where = f"{where} cell {cell.get('id', '?')}"
                    polygon = _box(cell, cell_where, notes)
                    if polygon is not None:
                        boxes[page].append(Instance(CELL_CLASS, [polygon], where=cell_where))


def _box(element: etree._Element, where: str, notes: list[Note]) -> np.ndarray | None:
    box = child(element, "bounding-box")
    if box is None:
        return None
    try:
        x1, y1, x2, y2 = (float(box.get(key, "")) for key in ("x1", "y1", "x2", "y2"))
    except ValueError:
        notes.append(Note("dropped", "invalid bounding-box", where))
        return None
    return box_polygon(x1, y1, x2, y2)


def _to_display(instance: Instance, box: PageBox) -> Instance:
    return Instance(instance.category, [box.to_display(p) for p in instance.polygons], where=instance.where)


def _pdf(path: Path, stem: str, document: etree._Element, context: ReadContext) -> Path:
    """The document's PDF: `<doc>.pdf`, or the PDF the root's `filename` names (some files name the XML
    itself there, which is not the PDF). Raises InputError naming the PDF looked for and where."""
    stated = (document.get("filename") or "").strip()
    references = [stated] if stated.lower().endswith(".pdf") else []
    references += [f"{stem}.pdf"] if f"{stem}.pdf" not in references else []
    problems = []
    for reference in references:
        try:
            return context.finder.find(reference, path, label="PDF", suffixes=(".pdf",))[0]
        except ImageNotFound as error:
            problems.append(str(error))
    raise InputError(path, problems[0])


def page_boxes(pdf: Path, pages: list[int]) -> dict[int, PageBox]:
    """CropBox and /Rotate of the given pages (from poppler's `pdfinfo -box`). Raises InputError."""
    command = ["pdfinfo", "-box", "-f", str(min(pages)), "-l", str(max(pages)), str(pdf.absolute())]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InputError(pdf, f"pdfinfo failed: {error}") from None
    if completed.returncode != 0:
        raise InputError(pdf, f"unreadable PDF (pdfinfo: {completed.stderr.strip()[:200]})")
    rotations = {int(page): int(angle) % 360 for page, angle in _ROTATION.findall(completed.stdout)}
    found = {}
    for page, *corners in _CROP_BOX.findall(completed.stdout):
        x0, y0, x1, y1 = (float(value) for value in corners)
        found[int(page)] = PageBox(x0, y0, x1, y1, rotations.get(int(page), 0))
    return found


def _renderer(pdf: Path, page: int, dpi: float, size_points: tuple[float, float]) -> Callable[[], bytes]:
    def render() -> bytes:
        import cv2

        from docsam_cli.inputs.pdf import render_pdf_page

        pixels = render_pdf_page(pdf, page, dpi=dpi, size_points=size_points, timeout=_TIMEOUT)
        return cv2.imencode(".png", pixels)[1].tobytes()

    return render
