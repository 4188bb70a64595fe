"""ALTO 4.4 XML, one file per page, valid against the ALTO 4.4 schema.

What a page's file holds:
- `Description`: `MeasurementUnit` pixel, `sourceImageInformation/fileName` naming the page image (the
  same reference as PAGE's `imageFilename`), and a `Processing` step (docsam and its version, the time);
- `Tags`: one `OtherTag` per class of the blocks and lines written, `TYPE="region"` for a block's class
  and `TYPE="type"` for a text line's (the tag types Kraken, and so YALTAi, read: see `_tag_type`), its
  `LABEL` the SegmOnto zone of `alto_map.alto_kind` (eScriptorium reads the LABEL of a block's first tag)
  and its `DESCRIPTION` naming the docsam class (`docsam class <name>`); ids `BT<n>` and `LT<n>`, n the
  class's number in the prompted list (from 1);
- `ReadingOrder`: one `OrderedGroup` referencing the blocks in the order PAGE output reads them (XY-cut,
  separators and noise left out); the blocks are also written in that order, then the unordered ones top
  to bottom, with the ids PAGE gives them (`r1`, `r2`, ..., lines `r1_l1`, ...): a class plays the part
  its PAGE region plays (only a TextRegion's block holds lines), unless `--alto-map` names its element;
- `Layout/Page` (`WIDTH`, `HEIGHT` in pixels, `PHYSICAL_IMG_NR` the page's number in its document) with a
  `PrintSpace` covering the page and the blocks in it: each with its bounding box (`HPOS`, `VPOS`,
  `WIDTH`, `HEIGHT`: the pixels the polygon's points span, so a block over the whole page has the page's
  size) and its exact polygon (`Shape/Polygon@POINTS`, the same valid polygon PAGE writes, as
  `x1 y1 x2 y2 ...`: see `_points`), `TAGREFS` naming its class tag. Blocks carry no `TYPE` of their own:
  Kraken takes a block's `TYPE` over its tag, which would hide the SegmOnto zone;
- text lines as `TextLine`s of their `TextBlock` (nesting as in PAGE, see `layout`), each with its
  `BASELINE` (see `baselines`; `x1 y1 x2 y2`, as `POINTS`) and one empty `String` (the schema requires
  one) whose `WC` is the line's score.
Confidence: ALTO 4.4 has no confidence attribute on blocks (only `String@WC`/`CC` and the page's `PC`),
so a block's score is not written; PAGE output has it (`Coords/@conf`).
Names: every attribute and text goes through `names.xml_text` (see `xml_tree`), as in PAGE output.
"""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
from lxml import etree

from docsam_cli import __version__
from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.writers.alto_map import DOCSAM_CLASS, TEXT_BLOCK, AltoKind, alto_kind
from docsam_cli.writers.baselines import line_baseline
from docsam_cli.writers.class_map import ClassMap, lookup
from docsam_cli.writers.layout import Layout, Line, Region, Role, page_layout
from docsam_cli.writers.page_map import TEXT_LINE, region_kind, region_role
from docsam_cli.writers.shapes import PageShapes
from docsam_cli.writers.xml_tree import SOFTWARE, XSI_NAMESPACE, document_text, sub_element, utc_timestamp

ALTO_NAMESPACE = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA_LOCATION = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
_ROLES: dict[str, Role] = {TEXT_BLOCK: "text", TEXT_LINE: "line", "GraphicalElement": "unordered"}


def alto_string(
    shapes: PageShapes,
    image_filename: str,
    *,
    page_number: int = 1,
    alto_map: ClassMap | None = None,
    page_map: ClassMap | None = None,
    created: datetime | None = None,
) -> str:
    """The ALTO document for one page, as a str with an XML declaration.

    `alto_map` overrides the class → (element, label) defaults, which follow `page_map` (see `alto_map`);
    raises ValueError for an element ALTO does not have. `created` (UTC) defaults to now.
    """
    names = shapes.instances.class_names
    kinds = [alto_kind(name, alto_map, page_map) for name in names]
    roles = [_role(name, kind, alto_map, page_map) for name, kind in zip(names, kinds, strict=True)]
    layout = page_layout(shapes, roles)
    timestamp = utc_timestamp(created)

    root = etree.Element(
        _tag("alto"),
        nsmap={None: ALTO_NAMESPACE, "xsi": XSI_NAMESPACE},
        attrib={
            f"{{{XSI_NAMESPACE}}}schemaLocation": f"{ALTO_NAMESPACE} {ALTO_SCHEMA_LOCATION}",
            "SCHEMAVERSION": "4.4",
        },
    )
    description = _child(root, "Description")
    _child(description, "MeasurementUnit", text="pixel")
    _child(_child(description, "sourceImageInformation"), "fileName", text=image_filename)
    processing = _child(description, "Processing", ID="docsam")
    _child(processing, "processingCategory", text="contentGeneration")
    _child(processing, "processingDateTime", text=timestamp)
    software = _child(processing, "processingSoftware")
    _child(software, "softwareName", text=SOFTWARE)
    _child(software, "softwareVersion", text=__version__)

    used = sorted({shapes.label(index) for index in _written_instances(layout)})
    if used:
        tags = _child(root, "Tags")
        for label in used:
            kind = kinds[label]
            _child(
                tags,
                "OtherTag",
                ID=_tag_id(kind, label),
                TYPE=_tag_type(kind),
                LABEL=kind.label,
                DESCRIPTION=DOCSAM_CLASS + shapes.class_names[label],
            )
    if layout.ordered:
        group = _child(_child(root, "ReadingOrder"), "OrderedGroup", ID="ro1")
        for number in range(1, len(layout.ordered) + 1):
            _child(group, "ElementRef", ID=f"ro1_{number}", REF=f"r{number}")

    page = _child(
        _child(root, "Layout"),
        "Page",
        ID="page1",
        PHYSICAL_IMG_NR=str(page_number),
        WIDTH=str(shapes.width),
        HEIGHT=str(shapes.height),
        PROCESSING="docsam",
    )
    space = _child(page, "PrintSpace", HPOS="0", VPOS="0", WIDTH=str(shapes.width), HEIGHT=str(shapes.height))
    for number, region in enumerate(layout.regions, 1):
        _write_block(space, shapes, kinds, region, f"r{number}")
    return document_text(root)


def write_alto(path: str | os.PathLike[str], shapes: PageShapes, image_filename: str, **options) -> None:
    """`alto_string` (same keyword options) written atomically (UTF-8)."""
    atomic_write_bytes(path, alto_string(shapes, image_filename, **options).encode("utf-8"))


def _role(name: str, kind: AltoKind, alto_map: ClassMap | None, page_map: ClassMap | None) -> Role:
    """A class plays the part its PAGE region plays (so the two files hold the same regions and lines under
    the same ids), unless `--alto-map` names its element: then the element's part."""
    if lookup(alto_map, name) is None:
        return region_role(region_kind(name, page_map))
    return _ROLES.get(kind.element, "region")


def _written_instances(layout: Layout) -> list[int]:
    """The instances the file holds as blocks or lines (an empty mask's instance has neither)."""
    regions = [region.instance for region in layout.regions if region.instance is not None]
    return regions + [line.instance for region in layout.regions for line in region.lines]


def _write_block(
    parent: etree._Element, shapes: PageShapes, kinds: list[AltoKind], region: Region, block_id: str
) -> None:
    if region.instance is None:  # a block made to hold a line no block holds: no class of its own
        element = _positioned(parent, TEXT_BLOCK, region.polygon, ID=block_id)
    else:
        label = shapes.label(region.instance)
        kind = kinds[label]
        element = _positioned(parent, kind.element, region.polygon, ID=block_id, TAGREFS=_tag_id(kind, label))
    for number, line in enumerate(region.lines, 1):
        _write_line(element, shapes, kinds, line, f"{block_id}_l{number}")


def _write_line(
    parent: etree._Element, shapes: PageShapes, kinds: list[AltoKind], line: Line, line_id: str
) -> None:
    label = shapes.label(line.instance)
    baseline = _points(line_baseline(line.polygon))
    tag = _tag_id(kinds[label], label)
    element = _positioned(parent, TEXT_LINE, line.polygon, ID=line_id, TAGREFS=tag, BASELINE=baseline)
    _child(element, "String", CONTENT="", WC=f"{shapes.confidence(line.instance):.4f}")


def _positioned(parent: etree._Element, tag: str, polygon: np.ndarray, **attributes: str) -> etree._Element:
    """An element with the bounding box of `polygon` and the polygon itself as its Shape.

    The points are pixel centres: a polygon from column x0 to column x1 covers x1 - x0 + 1 pixels, the
    ALTO WIDTH (as the PrintSpace of a W-pixel page is W wide)."""
    (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
    box = {"HPOS": str(x0), "VPOS": str(y0), "WIDTH": str(x1 - x0 + 1), "HEIGHT": str(y1 - y0 + 1)}
    element = _child(parent, tag, **attributes, **box)
    _child(_child(element, "Shape"), "Polygon", POINTS=_points(polygon))
    return element


def _points(points: np.ndarray) -> str:
    """`(N, 2)` integer x, y points as `x1 y1 x2 y2 ...`, one of the two forms ALTO 4.4's PointsType allows
    and the one Kraken and eScriptorium write. eScriptorium's import (app/apps/imports/parsers.py,
    `AltoParser.update_block`/`update_line`) splits `POINTS` and `BASELINE` at spaces and reads each part
    as a number: the other form, `x1,y1 x2,y2`, loses every block's polygon and every line's baseline and
    mask there. Kraken (`parse_alto_pointstype`) reads either."""
    return " ".join(str(value) for value in points.ravel().tolist())


def _tag_type(kind: AltoKind) -> str:
    """The tag TYPE Kraken (kraken/lib/xml/alto.py `parse_alto_tagrefs`) files the LABEL under: a block
    takes its class from its tags of type "region" (else "type"), a line from those of type "type"; a
    tag of any other TYPE ("block type") is kept under that name and classes nothing. Kraken's own ALTO
    output types its tags so."""
    return "type" if kind.element == TEXT_LINE else "region"


def _tag_id(kind: AltoKind, label: int) -> str:
    return f"{'LT' if kind.element == TEXT_LINE else 'BT'}{label + 1}"


def _tag(name: str) -> str:
    return f"{{{ALTO_NAMESPACE}}}{name}"


def _child(parent: etree._Element, tag: str, *, text: str | None = None, **attributes: str) -> etree._Element:
    return sub_element(parent, _tag(tag), attributes, text)
