"""PAGE XML 2019-07-15, one file per page, valid against the PRImA schema.

What a page's file holds:
- `Metadata` (Creator `docsam <version>`, Created/LastChange in UTC) and `Page` with the ORIGINAL page's
  `imageFilename`, `imageWidth`, `imageHeight`;
- one region per instance, its element and `@type` from `page_map.region_kind`, its polygon the largest
  connected component of the mask (see `polygons`), its score in `Coords/@conf`, its class in
  `@custom="structure {type:<class>;}"` (Transkribus convention; `;{}\\` escaped as `\\uXXXX`);
- text-line instances as `TextLine`s of the TextRegion instance that covers at least half of the line's
  mask (the line's polygon cut to that region's mask), else of a TextRegion made for the line alone
  (same polygon, no class); lines ordered top to bottom within their region;
- a `ReadingOrder` (one OrderedGroup) over all regions except separators and noise, by XY-cut (see
  `reading_order`); regions are written in that order, then the separators and noise top to bottom, and
  their ids `r1`, `r2`, ... follow the written order (lines: `r3_l1`, ...).
Instances whose mask yields no polygon (empty, or a page one pixel wide) are left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from lxml import etree
from pycocotools import mask as mask_utils

from docsam_cli import __version__
from docsam_cli.atomic import atomic_write_bytes
from docsam_cli.writers.page_map import TEXT_LINE, RegionKind, region_kind
from docsam_cli.writers.polygons import DEFAULT_EPSILON, largest_polygon
from docsam_cli.writers.reading_order import reading_order
from model.instances import PageInstances

PAGE_NAMESPACE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_UNORDERED_ELEMENTS = frozenset({"SeparatorRegion", "NoiseRegion"})
_LINE_IN_REGION = 0.5  # share of a line's mask a TextRegion must cover to be its parent
_CUSTOM_ESCAPES = {ord(char): f"\\u{ord(char):04x}" for char in "\\;{}"}

PageMap = Mapping[str, tuple[str, str | None]]


@dataclass
class _Element:
    kind: RegionKind
    class_name: str | None  # None: a TextRegion made to hold a line
    score: float
    polygon: np.ndarray
    lines: list[_Element] = field(default_factory=list)

    def bounds(self) -> tuple[float, float, float, float]:
        """Half-open pixel box, so that touching regions leave no gap for the XY-cut."""
        (x1, y1), (x2, y2) = self.polygon.min(axis=0), self.polygon.max(axis=0)
        return float(x1), float(y1), float(x2 + 1), float(y2 + 1)


def page_xml_string(
    instances: PageInstances,
    image_filename: str,
    page_map: PageMap | None = None,
    *,
    created: datetime | None = None,
    polygon_epsilon: float = DEFAULT_EPSILON,
) -> str:
    """The PAGE document for one page, as a str with an XML declaration.

    `page_map` overrides the class → (element, @type) defaults (see `page_map.parse_page_map`); raises
    ValueError if it names an element or type the schema does not allow. `created` (UTC) defaults to now.
    """
    regions = _regions(instances, page_map, polygon_epsilon)
    ordered = [region for region in regions if region.kind.element not in _UNORDERED_ELEMENTS]
    ordered = [ordered[index] for index in reading_order([region.bounds() for region in ordered])]
    unordered = [region for region in regions if region.kind.element in _UNORDERED_ELEMENTS]
    unordered.sort(key=lambda region: (region.bounds()[1], region.bounds()[0]))

    timestamp = (created or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    root = etree.Element(
        f"{{{PAGE_NAMESPACE}}}PcGts",
        nsmap={None: PAGE_NAMESPACE, "xsi": _XSI},
        attrib={f"{{{_XSI}}}schemaLocation": f"{PAGE_NAMESPACE} {PAGE_NAMESPACE}/pagecontent.xsd"},
    )
    metadata = _child(root, "Metadata")
    _child(metadata, "Creator").text = f"docsam {__version__}"
    _child(metadata, "Created").text = timestamp
    _child(metadata, "LastChange").text = timestamp
    page = _child(
        root,
        "Page",
        imageFilename=image_filename,
        imageWidth=str(instances.width),
        imageHeight=str(instances.height),
    )
    if ordered:
        group = _child(_child(page, "ReadingOrder"), "OrderedGroup", id="ro1")
        for index in range(len(ordered)):
            _child(group, "RegionRefIndexed", index=str(index), regionRef=f"r{index + 1}")
    for number, region in enumerate(ordered + unordered, 1):
        _write_region(page, region, f"r{number}")
    etree.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="unicode") + "\n"


def write_page_xml(
    path: str | os.PathLike[str],
    instances: PageInstances,
    image_filename: str,
    page_map: PageMap | None = None,
    *,
    created: datetime | None = None,
    polygon_epsilon: float = DEFAULT_EPSILON,
) -> None:
    """`page_xml_string` written atomically (UTF-8)."""
    text = page_xml_string(
        instances, image_filename, page_map, created=created, polygon_epsilon=polygon_epsilon
    )
    atomic_write_bytes(path, text.encode("utf-8"))


def _regions(instances: PageInstances, page_map: PageMap | None, epsilon: float) -> list[_Element]:
    """Top-level regions, with the text lines attached, in instance order; lines' own holders last."""
    kinds = [region_kind(name, page_map) for name in instances.class_names]
    regions: dict[int, _Element] = {}
    lines: list[int] = []
    for index in range(len(instances)):
        kind = kinds[int(instances.labels[index])]
        if kind.element == TEXT_LINE:
            lines.append(index)
            continue
        polygon = largest_polygon(instances.decode_mask(index), epsilon)
        if polygon is not None:
            score = float(instances.scores[index])
            regions[index] = _Element(kind, instances.class_name(index), score, polygon)
    return [*regions.values(), *_attach_lines(instances, lines, regions, epsilon)]


def _attach_lines(
    instances: PageInstances, lines: list[int], regions: dict[int, _Element], epsilon: float
) -> list[_Element]:
    """Add each line to the TextRegion that holds it; return TextRegions made for the lines none holds."""
    text_regions = [index for index, region in regions.items() if region.kind.element == "TextRegion"]
    holders: list[_Element] = []
    for index in lines:
        parent = _parent_region(instances, index, text_regions)
        polygon = None
        if parent is not None:  # cut to the parent, as PAGE wants a line inside its region
            inside = mask_utils.merge([instances.masks[index], instances.masks[parent]], intersect=True)
            polygon = largest_polygon(mask_utils.decode(inside).astype(bool), epsilon)
        if polygon is None:
            parent, polygon = None, largest_polygon(instances.decode_mask(index), epsilon)
        if polygon is None:
            continue
        score = float(instances.scores[index])
        line = _Element(RegionKind(TEXT_LINE), instances.class_name(index), score, polygon)
        if parent is None:
            holders.append(_Element(RegionKind("TextRegion"), None, score, polygon, [line]))
        else:
            regions[parent].lines.append(line)
    return holders


def _parent_region(instances: PageInstances, line: int, candidates: list[int]) -> int | None:
    """The candidate covering the largest share (at least half) of the line's mask."""
    if not candidates:
        return None
    region_masks = [instances.masks[index] for index in candidates]
    # With iscrowd set for the "ground truth" side, pycocotools divides the overlap by the detection's area.
    shares = mask_utils.iou([instances.masks[line]], region_masks, [1] * len(candidates))[0]
    best = int(np.argmax(shares))
    return candidates[best] if shares[best] >= _LINE_IN_REGION else None


def _write_region(parent: etree._Element, region: _Element, region_id: str) -> None:
    attributes = {"id": region_id}
    if region.kind.type is not None:
        attributes["type"] = region.kind.type
    if region.class_name is not None:
        attributes["custom"] = _custom(region.class_name)
    element = _child(parent, region.kind.element, **attributes)
    _coords(element, region)
    region.lines.sort(key=lambda line: (line.bounds()[1], line.bounds()[0]))
    for number, line in enumerate(region.lines, 1):
        line_attributes = {"id": f"{region_id}_l{number}"}
        if line.class_name is not None:
            line_attributes["custom"] = _custom(line.class_name)
        _coords(_child(element, TEXT_LINE, **line_attributes), line)


def _coords(parent: etree._Element, element: _Element) -> None:
    points = " ".join(f"{x},{y}" for x, y in element.polygon.tolist())
    score = element.score if math.isfinite(element.score) else 0.0
    _child(parent, "Coords", points=points, conf=f"{min(max(score, 0.0), 1.0):.4f}")


def _custom(class_name: str) -> str:
    return f"structure {{type:{class_name.translate(_CUSTOM_ESCAPES)};}}"


def _child(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{PAGE_NAMESPACE}}}{tag}", attrib=attributes)
