"""The one way PAGE and ALTO build elements: every attribute value and text goes through `names.xml_text`.

File names and class names may hold characters XML 1.0 forbids (an escape or bell character, a byte that
is not UTF-8); lxml refuses them, which would fail the whole page. Routing every string through here
percent-encodes them instead (`%1B`), whatever the string's origin (file name, class name, map label).
"""

from __future__ import annotations

from collections.abc import Mapping

from lxml import etree

from docsam_cli.names import xml_text


def sub_element(
    parent: etree._Element, tag: str, attributes: Mapping[str, str], text: str | None = None
) -> etree._Element:
    """A new last child of `parent` (`tag` qualified, `{ns}name`) with XML-safe attributes and text."""
    safe = {name: xml_text(value) for name, value in attributes.items()}
    element = etree.SubElement(parent, tag, attrib=safe)
    if text is not None:
        element.text = xml_text(text)
    return element
