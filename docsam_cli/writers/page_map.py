"""Which PAGE element (and `@type`) a prompted class becomes: defaults, overrides, `--page-map` parsing.

Class names are matched ignoring case, spaces, hyphens and underscores (`Section-header`,
`section_header` and `sectionheader` are one key). Defaults cover the class names of the common layout
sets (DocLayNet, PubLayNet, M6Doc, OCR-D structure GT), then names ending in title/heading (heading),
caption or list; any other class becomes a TextRegion without `@type` (its name is in `@custom` like
every region's, see `page_xml`). PAGE has no list type, so list items become paragraphs (their class
stays in `@custom`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TEXT_LINE = "TextLine"
REGION_ELEMENTS = (
    "TextRegion", "ImageRegion", "LineDrawingRegion", "GraphicRegion", "TableRegion", "ChartRegion",
    "MapRegion", "SeparatorRegion", "MathsRegion", "ChemRegion", "MusicRegion", "AdvertRegion",
    "NoiseRegion", "UnknownRegion", "CustomRegion",
)  # fmt: skip


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# @type values allowed by the 2019-07-15 schema, per element; elements not listed have no @type.
ALLOWED_TYPES: dict[str, frozenset[str] | None] = {
    "TextRegion": _words(
        "paragraph heading caption header footer page-number drop-capital credit floating signature-mark "
        "catch-word marginalia footnote footnote-continued endnote TOC-entry list-label other"
    ),
    "GraphicRegion": _words(
        "logo letterhead decoration frame handwritten-annotation stamp signature barcode paper-grow "
        "punch-hole other"
    ),
    "ChartRegion": _words("bar line pie scatter surface other"),
    "CustomRegion": None,  # free text
}


@dataclass(frozen=True)
class RegionKind:
    element: str  # one of REGION_ELEMENTS, or TEXT_LINE
    type: str | None = None


def normalize_class(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _kinds(element: str, type_: str | None, *names: str) -> dict[str, RegionKind]:
    return {normalize_class(name): RegionKind(element, type_) for name in names}


DEFAULT_REGION_KINDS: dict[str, RegionKind] = {
    **_kinds("TextRegion", "paragraph", "text", "paragraph", "plain text", "text block", "body", "body text",
             "abstract", "list", "list item", "list text", "reference", "references"),
    **_kinds("TextRegion", "heading", "title", "heading", "section header", "section title", "subtitle",
             "subheading", "headline", "doc title", "para title"),
    **_kinds("TextRegion", "caption", "caption", "figure caption", "table caption", "figure name",
             "table name"),
    **_kinds("TextRegion", "footnote", "footnote", "table footnote", "table note"),
    **_kinds("TextRegion", "endnote", "endnote"),
    **_kinds("TextRegion", "page-number", "page number", "page no", "folio"),
    **_kinds("TextRegion", "header", "header", "page header", "running head", "running title"),
    **_kinds("TextRegion", "footer", "footer", "page footer"),
    **_kinds("TextRegion", "marginalia", "marginalia", "marginal note", "margin note", "side note"),
    **_kinds("TextRegion", "drop-capital", "drop capital", "drop cap"),
    **_kinds("TextRegion", "signature-mark", "signature mark"),
    **_kinds("TextRegion", "catch-word", "catch word", "catchword"),
    **_kinds("TextRegion", "credit", "credit", "credits", "byline"),
    **_kinds("TextRegion", "TOC-entry", "toc entry", "table of contents entry"),
    **_kinds("TextRegion", "list-label", "list label"),
    **_kinds("TableRegion", None, "table"),
    **_kinds("ImageRegion", None, "figure", "image", "picture", "graphic", "photo", "photograph",
             "illustration"),
    **_kinds("ChartRegion", None, "chart", "plot"),
    **_kinds("MathsRegion", None, "formula", "equation", "math", "maths", "isolated formula"),
    **_kinds("ChemRegion", None, "chemistry", "chemical formula"),
    **_kinds("SeparatorRegion", None, "separator", "separator line", "rule"),
    **_kinds("GraphicRegion", "stamp", "stamp", "seal"),
    **_kinds("GraphicRegion", "logo", "logo"),
    **_kinds("GraphicRegion", "signature", "signature"),
    **_kinds("GraphicRegion", "barcode", "barcode", "qr code"),
    **_kinds("GraphicRegion", "decoration", "decoration", "ornament"),
    **_kinds("MusicRegion", None, "music", "musical notation", "sheet music"),
    **_kinds("MapRegion", None, "map"),
    **_kinds("AdvertRegion", None, "advert", "advertisement"),
    **_kinds("NoiseRegion", None, "noise"),
    **_kinds(TEXT_LINE, None, "text line", "text lines", "line", "lines"),
}  # fmt: skip
# For the many numbered or qualified variants (M6Doc: "first-level title", "unordered list", ...).
SUFFIX_KINDS: tuple[tuple[str, RegionKind], ...] = (
    ("title", RegionKind("TextRegion", "heading")),
    ("heading", RegionKind("TextRegion", "heading")),
    ("caption", RegionKind("TextRegion", "caption")),
    ("list", RegionKind("TextRegion", "paragraph")),
)
UNKNOWN_KIND = RegionKind("TextRegion", None)


def region_kind(class_name: str, page_map: Mapping[str, tuple[str, str | None]] | None = None) -> RegionKind:
    """The PAGE element for a class: `page_map` (keys matched like the defaults), the defaults, a name
    ending in title/heading/caption/list, else a TextRegion without @type."""
    key = normalize_class(class_name)
    for name, (element, type_) in (page_map or {}).items():
        if normalize_class(name) == key:
            return validated_kind(element, type_)
    if key in DEFAULT_REGION_KINDS:
        return DEFAULT_REGION_KINDS[key]
    return next((kind for suffix, kind in SUFFIX_KINDS if key.endswith(suffix)), UNKNOWN_KIND)


def validated_kind(element: str, type_: str | None) -> RegionKind:
    """Raises ValueError unless the schema allows `type_` on `element`."""
    if element != TEXT_LINE and element not in REGION_ELEMENTS:
        raise ValueError(
            f"unknown PAGE element {element!r}: use one of {', '.join(REGION_ELEMENTS)}, {TEXT_LINE}"
        )
    if type_ is None:
        return RegionKind(element, None)
    if element not in ALLOWED_TYPES:
        raise ValueError(f"PAGE {element} has no @type (got {type_!r})")
    allowed = ALLOWED_TYPES[element]
    if allowed is not None and type_ not in allowed:
        raise ValueError(f"{type_!r} is not a PAGE {element} @type: use one of {', '.join(sorted(allowed))}")
    return RegionKind(element, type_)


def parse_page_map(spec: str) -> dict[str, tuple[str, str | None]]:
    """`--page-map`: a JSON file, inline JSON, or `class=Element[:type],...`, validated.

    JSON maps a class to `"Element"`, `"Element:type"`, `["Element", "type"]` or
    `{"element": "Element", "type": "type"}`. Raises ValueError with a usage-error message.
    """
    text = spec.strip()
    if text.startswith("{") or Path(text).suffix.lower() == ".json":
        entries = list(_json_map(text).items())
    else:
        entries = [_split_entry(item, spec) for item in text.split(",") if item.strip()]
    page_map: dict[str, tuple[str, str | None]] = {}
    for name, value in entries:
        kind = validated_kind(*_element_and_type(value, name))
        page_map[name.strip()] = (kind.element, kind.type)
    return page_map


def _json_map(text: str) -> dict[str, object]:
    """Inline JSON, or the JSON file `text` names."""
    if not text.startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read page map {text!r}: {error.strerror or error}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"page map is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError('page map JSON must be an object: {"class": "Element[:type]", ...}')
    return {str(name): value for name, value in raw.items()}


def _split_entry(item: str, spec: str) -> tuple[str, str]:
    name, separator, value = item.partition("=")
    if not separator or not name.strip() or not value.strip():
        raise ValueError(f"invalid page map entry {item.strip()!r} in {spec!r}: use class=Element[:type]")
    return name.strip(), value.strip()


def _element_and_type(value: object, name: str) -> tuple[str, str | None]:
    if isinstance(value, str):
        element, _, type_ = value.partition(":")
        return element.strip(), type_.strip() or None
    if isinstance(value, list) and len(value) in (1, 2) and all(isinstance(v, str | None) for v in value):
        return value[0], value[1] if len(value) == 2 else None
    if isinstance(value, dict) and isinstance(value.get("element"), str):
        return value["element"], value.get("type")
    raise ValueError(f"page map entry for {name!r} must be 'Element[:type]', got {value!r}")
