"""Which PAGE element (and `@type`) a prompted class becomes: defaults, overrides, `--page-map` parsing.

Class names are matched as `class_map.normalize_class` says. Defaults cover the class names of the
common layout sets (DocLayNet, PubLayNet, M6Doc, OCR-D structure GT) and those `convert-dataset --from
page` gives PAGE's regions and types (`datasets.convert.page.region_class`: "line-drawing", "graphic",
"footnote-continued", "bar chart", ...), so that a model trained on PAGE data writes its classes back as
the regions they were read from; then names ending in
title/heading (heading), caption or list; any other class becomes a TextRegion without `@type` (its name
is in `@custom` like every region's, see `page_xml`). PAGE has no list type, so list items become
paragraphs (their class stays in `@custom`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docsam_cli.writers.class_map import (
    ClassMap,
    MapSyntax,
    lookup,
    normalize_class,
    parse_class_map,
    validated_entries,
)
from docsam_cli.writers.layout import Role

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
    **_kinds("TextRegion", "floating", "floating"),
    **_kinds("TextRegion", "footnote-continued", "footnote continued"),
    **_kinds("TableRegion", None, "table"),
    **_kinds("ImageRegion", None, "figure", "image", "picture", "photo", "photograph", "illustration"),
    **_kinds("ChartRegion", None, "chart", "plot"),
    **{normalize_class(f"{type_} chart"): RegionKind("ChartRegion", type_)
       for type_ in sorted(ALLOWED_TYPES["ChartRegion"] - {"other"})},  # "line chart", ...
    **_kinds("LineDrawingRegion", None, "line drawing"),
    **_kinds("MathsRegion", None, "formula", "equation", "math", "maths", "isolated formula"),
    **_kinds("ChemRegion", None, "chem", "chemistry", "chemical formula"),
    **_kinds("SeparatorRegion", None, "separator", "separator line", "rule"),
    **_kinds("GraphicRegion", "stamp", "stamp", "seal"),
    **_kinds("GraphicRegion", "logo", "logo"),
    **_kinds("GraphicRegion", "signature", "signature"),
    **_kinds("GraphicRegion", "barcode", "barcode", "qr code"),
    **_kinds("GraphicRegion", "decoration", "decoration", "ornament"),
    **_kinds("GraphicRegion", "handwritten-annotation", "handwritten annotation"),
    **_kinds("GraphicRegion", "letterhead", "letterhead"),
    **_kinds("GraphicRegion", "punch-hole", "punch hole"),
    **_kinds("GraphicRegion", "paper-grow", "paper grow"),
    **_kinds("GraphicRegion", "frame", "frame"),
    **_kinds("GraphicRegion", None, "graphic"),
    **_kinds("MusicRegion", None, "music", "musical notation", "sheet music"),
    **_kinds("MapRegion", None, "map"),
    **_kinds("AdvertRegion", None, "advert", "advertisement"),
    **_kinds("NoiseRegion", None, "noise"),
    **_kinds("UnknownRegion", None, "unknown"),
    **_kinds("CustomRegion", None, "custom"),
    **_kinds(TEXT_LINE, None, "text line", "text lines", "line", "lines"),
    # SegmOnto zones and lines (a subtype, "MarginTextZone:note", goes as its zone: `region_kind`)
    **_kinds("TextRegion", "paragraph", "MainZone"),
    **_kinds("TextRegion", "marginalia", "MarginTextZone"),
    **_kinds("TextRegion", "page-number", "NumberingZone"),
    **_kinds("TextRegion", "header", "RunningTitleZone"),
    **_kinds("TextRegion", "signature-mark", "QuireMarksZone"),
    **_kinds("TextRegion", "drop-capital", "DropCapitalZone"),
    **_kinds("ImageRegion", None, "GraphicZone"),
    **_kinds("GraphicRegion", "stamp", "StampZone", "SealZone"),
    **_kinds("TableRegion", None, "TableZone"),
    **_kinds("MusicRegion", None, "MusicZone"),
    **_kinds("NoiseRegion", None, "DigitizationArtefactZone", "DamageZone"),
    **_kinds(TEXT_LINE, None, "DefaultLine", "HeadingLine", "DropCapitalLine", "InterlinearLine", "MusicLine",
             "CustomLine"),
}  # fmt: skip
# A SegmOnto zone or line type, its subtype after a colon ("MainZone", "MarginTextZone:note", "DefaultLine"):
# the tag labels of eScriptorium's and Kraken's ALTO, and so the class names `convert-dataset --from alto`
# reads from it.
SEGMONTO_NAME = re.compile(r"[A-Z][A-Za-z]*(?:Zone|Line)(?::.+)?")
# For the many numbered or qualified variants (M6Doc: "first-level title", "unordered list", ...).
SUFFIX_KINDS: tuple[tuple[str, RegionKind], ...] = (
    ("title", RegionKind("TextRegion", "heading")),
    ("heading", RegionKind("TextRegion", "heading")),
    ("caption", RegionKind("TextRegion", "caption")),
    ("list", RegionKind("TextRegion", "paragraph")),
)
UNKNOWN_KIND = RegionKind("TextRegion", None)
_UNORDERED_ELEMENTS = frozenset({"SeparatorRegion", "NoiseRegion"})
PAGE_MAP_SYNTAX = MapSyntax("page map", "type")


def region_kind(class_name: str, page_map: ClassMap | None = None) -> RegionKind:
    """The PAGE element for a class: `page_map` (keys matched like the defaults), the defaults (a SegmOnto
    name by its zone or line type), a name ending in title/heading/caption/list, else a TextRegion without
    @type."""
    entry = lookup(page_map, class_name)
    if entry is not None:
        return validated_kind(*entry)
    key = normalize_class(class_name)
    if key in DEFAULT_REGION_KINDS:
        return DEFAULT_REGION_KINDS[key]
    if SEGMONTO_NAME.fullmatch(class_name):  # not "HeadingLine:title" as a title
        return DEFAULT_REGION_KINDS.get(normalize_class(class_name.partition(":")[0]), UNKNOWN_KIND)
    return next((kind for suffix, kind in SUFFIX_KINDS if key.endswith(suffix)), UNKNOWN_KIND)


def region_role(kind: RegionKind) -> Role:
    """The part a PAGE element plays in the layout (`layout`): only a TextRegion holds text lines, and
    separators and noise stay out of the reading order."""
    if kind.element == TEXT_LINE:
        return "line"
    if kind.element == "TextRegion":
        return "text"
    return "unordered" if kind.element in _UNORDERED_ELEMENTS else "region"


def validated_kind(element: str, type_: object) -> RegionKind:
    """Raises ValueError unless the schema allows `type_` on `element`."""
    if element != TEXT_LINE and element not in REGION_ELEMENTS:
        raise ValueError(
            f"unknown PAGE element {element!r}: use one of {', '.join(REGION_ELEMENTS)}, {TEXT_LINE}"
        )
    if type_ is None:
        return RegionKind(element, None)
    if not isinstance(type_, str):  # JSON's {"element": ..., "type": 5}
        raise ValueError(f"PAGE @type for {element} must be a string, got {type_!r}")
    if element not in ALLOWED_TYPES:
        raise ValueError(f"PAGE {element} has no @type (got {type_!r})")
    allowed = ALLOWED_TYPES[element]
    if allowed is not None and type_ not in allowed:
        raise ValueError(f"{type_!r} is not a PAGE {element} @type: use one of {', '.join(sorted(allowed))}")
    return RegionKind(element, type_)


def parse_page_map(spec: str) -> ClassMap:
    """`--page-map` (spec forms in `class_map`), validated. Raises ValueError with a usage message."""
    entries = parse_class_map(spec, PAGE_MAP_SYNTAX)
    kinds = validated_entries(
        spec, PAGE_MAP_SYNTAX, entries, lambda _, element, type_: validated_kind(element, type_)
    )
    return {name: (kind.element, kind.type) for name, kind in kinds.items()}
