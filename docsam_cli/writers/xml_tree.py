"""The one way PAGE and ALTO build elements and their file text: every attribute value and text goes through
`names.xml_text`.

File names and class names may hold characters XML 1.0 forbids (an escape or bell character, a byte that
is not UTF-8); lxml refuses them, which would fail the whole page. Routing every string through here
percent-encodes them instead (`%1B`), whatever the string's origin (file name, class name, map label).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lxml import etree

from docsam_cli.names import xml_text

if TYPE_CHECKING:
    import numpy as np

XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"  # of `xsi:schemaLocation`
# PAGE's `Metadata/Creator` ("docsam 0.1.0") and ALTO's `processingSoftware/softwareName`, and the OCR-D
# processor's name, which OCR-D writes in the `MetadataItem` of its step: how the readers know docsam's own
# files (and the regions it writes only to hold lines, which are no regions of the page)
SOFTWARE = "docsam"
OCRD_PROCESSOR = "ocrd-docsam-segment"


def sub_element(
    parent: etree._Element, tag: str, attributes: Mapping[str, str], text: str | None = None
) -> etree._Element:
    """A new last child of `parent` (`tag` qualified, `{ns}name`) with XML-safe attributes and text."""
    safe = {name: xml_text(value) for name, value in attributes.items()}
    element = etree.SubElement(parent, tag, attrib=safe)
    if text is not None:
        element.text = xml_text(text)
    return element


def points_text(points: np.ndarray) -> str:
    """`(N, 2)` integer x, y points as `x1,y1 x2,y2 ...`, PAGE's `points` (ALTO's are written by
    `alto._points`)."""
    return " ".join(f"{x},{y}" for x, y in points.tolist())


def utc_timestamp(moment: datetime | None = None) -> str:
    """`moment` (default: now) as the xsd:dateTime PAGE and ALTO state, in UTC and saying so:
    `2024-05-06T07:08:09Z`."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def document_text(root: etree._Element) -> str:
    """The file text of the document `root`: indented by two spaces, after a UTF-8 XML declaration."""
    etree.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="unicode") + "\n"
