"""Safe XML parsing shared by the XML readers: no entity expansion, no network, one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

from lxml import etree

from docsam_cli.errors import InputError

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_comments=True)


def parse_xml(path: Path) -> etree._Element:
    """Root element of `path`. Raises InputError for unreadable or malformed files."""
    try:
        # The bytes, not the name: lxml cannot encode a file name with undecodable bytes.
        return etree.parse(io.BytesIO(path.read_bytes()), _PARSER).getroot()
    except etree.XMLSyntaxError as error:
        raise InputError(path, f"invalid XML: {error}") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None


def root_name(path: Path) -> str | None:
    """Local name of the root element of `path`, reading no further than its start tag (a folder's format
    is told from every file in it); None for a file that cannot be read or holds no XML element."""
    try:
        with path.open("rb") as file:
            events = etree.iterparse(
                file, events=("start",), resolve_entities=False, no_network=True, huge_tree=True
            )
            return next((local(element) for _, element in events), None)
    except (etree.XMLSyntaxError, OSError):
        return None


def local(element: etree._Element) -> str:
    """Tag name without namespace ('' for comments and processing instructions)."""
    tag = element.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def children(element: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in element if local(child) == name]


def child(element: etree._Element, name: str) -> etree._Element | None:
    found = children(element, name)
    return found[0] if found else None


def child_text(parent: etree._Element | None, *path: str) -> str | None:
    """The stripped text of the element at `path` of names below `parent`; None when it is missing or
    holds only white space."""
    element = parent
    for name in path:
        element = child(element, name) if element is not None else None
    text = (element.text or "").strip() if element is not None else ""
    return text or None
