"""PAGE XML 2019-07-15, one file per page, valid against the PRImA schema.

What a page's file holds:
- `Metadata` (Creator `docsam <version>`, Created/LastChange in UTC) and `Page` with the ORIGINAL page's
  `imageFilename`, `imageWidth`, `imageHeight`;
- one region per instance, its element and `@type` from `page_map.region_kind`, its polygon the outline
  of the mask's largest part, a valid polygon (see `docsam_cli.polygons`), its score in `Coords/@conf`,
  its class in `@custom="structure {type:<class>;}"` (Transkribus convention; `;{}\\` escaped as
  `\\uXXXX`);
- text-line instances as `TextLine`s of the TextRegion covering at least half of the line's mask, else of
  a TextRegion made for the line alone (same polygon, no class); see `layout`; each with a `Baseline`
  inside its `Coords` (see `baselines`: Kraken drops lines without one);
- a `ReadingOrder` (one OrderedGroup) over all regions except separators and noise, by XY-cut (see
  `reading_order`); regions are written in that order, then the separators and noise top to bottom, and
  their ids `r1`, `r2`, ... follow the written order (lines: `r3_l1`, ...).
Instances whose mask yields no polygon (empty, or a page one pixel wide) are left out. Every attribute and
text goes through `names.xml_text` (see `xml_tree`): file and class names with characters XML forbids
(undecodable bytes, control characters) are written percent-encoded, so the file stays valid UTF-8 XML.
"""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
from lxml import etree

from docsam_cli import __version__
from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.writers.baselines import line_baseline
from docsam_cli.writers.class_map import ClassMap
from docsam_cli.writers.layout import Line, PointMap, Region, page_layout
from docsam_cli.writers.page_map import TEXT_LINE, RegionKind, region_kind, region_role
from docsam_cli.writers.shapes import PageShapes
from docsam_cli.writers.xml_tree import (
    SOFTWARE,
    XSI_NAMESPACE,
    document_text,
    points_text,
    sub_element,
    utc_timestamp,
)

PAGE_NAMESPACE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
_CUSTOM_ESCAPES = {ord(char): f"\\u{ord(char):04x}" for char in "\\;{}"}
_HOLDER = RegionKind("TextRegion")


def page_xml_string(
    shapes: PageShapes,
    image_filename: str,
    page_map: ClassMap | None = None,
    *,
    created: datetime | None = None,
) -> str:
    """The PAGE document for one page, as a str with an XML declaration.

    `page_map` overrides the class → (element, @type) defaults (see `page_map.parse_page_map`); raises
    ValueError if it names an element or type the schema does not allow. `created` (UTC) defaults to now.
    """
    timestamp = utc_timestamp(created)
    root = etree.Element(
        f"{{{PAGE_NAMESPACE}}}PcGts",
        nsmap={None: PAGE_NAMESPACE, "xsi": XSI_NAMESPACE},
        attrib={f"{{{XSI_NAMESPACE}}}schemaLocation": f"{PAGE_NAMESPACE} {PAGE_NAMESPACE}/pagecontent.xsd"},
    )
    metadata = _child(root, "Metadata")
    _child(metadata, "Creator", text=f"{SOFTWARE} {__version__}")
    _child(metadata, "Created", text=timestamp)
    _child(metadata, "LastChange", text=timestamp)
    page = _child(
        root,
        "Page",
        imageFilename=image_filename,
        imageWidth=str(shapes.width),
        imageHeight=str(shapes.height),
    )
    write_page_content(page, shapes, page_map)
    return document_text(root)


def write_page_content(
    page: etree._Element,
    shapes: PageShapes,
    page_map: ClassMap | None = None,
    *,
    id_prefix: str = "",
    upright: PointMap | None = None,
) -> None:
    """Append the reading order and the regions (text lines nested) to `page`, a PAGE `Page` element that
    holds neither yet. Every id is `id_prefix` followed by the id the module doc gives (`r1`, `r3_l1`,
    `ro1`): the OCR-D processor adds regions to documents whose ids must stay unique, and orders them where
    `upright` puts them (see `layout.page_layout`)."""
    kinds = [region_kind(name, page_map) for name in shapes.instances.class_names]
    layout = page_layout(shapes, [region_role(kind) for kind in kinds], upright)
    region_ids = [f"{id_prefix}r{number}" for number in range(1, len(layout.regions) + 1)]
    if layout.ordered:
        group = _child(_child(page, "ReadingOrder"), "OrderedGroup", id=f"{id_prefix}ro1")
        for index, region_id in enumerate(region_ids[: len(layout.ordered)]):
            _child(group, "RegionRefIndexed", index=str(index), regionRef=region_id)
    for region, region_id in zip(layout.regions, region_ids, strict=True):
        kind = _HOLDER if region.instance is None else kinds[shapes.label(region.instance)]
        _write_region(page, shapes, region, kind, region_id)


def write_page_xml(
    path: str | os.PathLike[str],
    shapes: PageShapes,
    image_filename: str,
    page_map: ClassMap | None = None,
    *,
    created: datetime | None = None,
) -> None:
    """`page_xml_string` written atomically (UTF-8)."""
    text = page_xml_string(shapes, image_filename, page_map, created=created)
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_region(
    parent: etree._Element, shapes: PageShapes, region: Region, kind: RegionKind, region_id: str
) -> None:
    attributes = {"id": region_id}
    if kind.type is not None:
        attributes["type"] = kind.type
    if region.instance is not None:
        attributes["custom"] = _custom(shapes.class_name(region.instance))
    element = _child(parent, kind.element, **attributes)
    scored = region.instance if region.instance is not None else region.lines[0].instance
    _coords(element, region.polygon, shapes.confidence(scored))
    for number, line in enumerate(region.lines, 1):
        _write_line(element, shapes, line, f"{region_id}_l{number}")


def _write_line(parent: etree._Element, shapes: PageShapes, line: Line, line_id: str) -> None:
    element = _child(parent, TEXT_LINE, id=line_id, custom=_custom(shapes.class_name(line.instance)))
    _coords(element, line.polygon, shapes.confidence(line.instance))
    _child(element, "Baseline", points=points_text(line_baseline(line.polygon)))  # the schema's order


def _coords(parent: etree._Element, polygon: np.ndarray, confidence: float) -> None:
    _child(parent, "Coords", points=points_text(polygon), conf=f"{confidence:.4f}")


def _custom(class_name: str) -> str:
    return f"structure {{type:{class_name.translate(_CUSTOM_ESCAPES)};}}"


def _child(parent: etree._Element, tag: str, *, text: str | None = None, **attributes: str) -> etree._Element:
    return sub_element(parent, f"{{{PAGE_NAMESPACE}}}{tag}", attributes, text)
