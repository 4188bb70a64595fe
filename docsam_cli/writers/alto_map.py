"""Which ALTO element, and which tag label, a prompted class becomes: defaults, `--alto-map` parsing.

ALTO 4.4 has four block elements and text lines; the class itself is carried by a tag the element
references (`TAGREFS`), whose `LABEL` follows SegmOnto, the zone vocabulary eScriptorium, kraken and
YALTAi read (`Zone` or `Zone:subtype`, subtypes after the LADaS guidelines where they have one). By
default a class goes where its PAGE region goes (`page_map.region_kind`, so `--page-map` counts too):

    PAGE region (@type)                     ALTO element      tag label
    TextRegion paragraph, heading           TextBlock         MainZone:P, MainZone:Head
    TextRegion header, page-number          TextBlock         RunningTitleZone, NumberingZone:page
    TextRegion marginalia, footnote         TextBlock         MarginTextZone, MarginTextZone:Footnote
    TextRegion drop-capital                 TextBlock         DropCapitalZone
    TextRegion signature-mark, catch-word   TextBlock         QuireMarksZone, QuireMarksZone:Catchword
    TextRegion caption, footer, other types TextBlock         MainZone:Caption, MainZone:Footer, ...
    TextRegion without @type (unknown name) TextBlock         CustomZone:<class>
    TableRegion, AdvertRegion               ComposedBlock     TableZone, AdvertisementZone
    ImageRegion, GraphicRegion (stamp)      Illustration      GraphicZone, GraphicZone:<type> (StampZone)
    Chart/Map/Maths/Chem/LineDrawingRegion  Illustration      GraphicZone:Chart, :Map, :Maths, :Chem, :Drawing
    MusicRegion                             Illustration      MusicZone
    SeparatorRegion, NoiseRegion            GraphicalElement  GraphicZone:Separator, DigitizationArtefactZone
    UnknownRegion, CustomRegion (type)      TextBlock         CustomZone, CustomZone:<type>
    TextLine                                TextLine          DefaultLine

A class named by a SegmOnto label itself ("MainZone", "MarginTextZone:note", "DefaultLine": a model trained
on eScriptorium's or Kraken's ALTO, whose classes `convert-dataset --from alto` names so) keeps that label,
on the element of its zone's PAGE region (`page_map`; SegmOnto lines are text lines).
`--alto-map` overrides this per class, `class=Element[:label]` (forms as in `class_map`); without a label
the class name is the label.
"""

from __future__ import annotations

from dataclasses import dataclass

from docsam_cli.writers.class_map import ClassMap, MapSyntax, lookup, parse_class_map, validated_entries
from docsam_cli.writers.page_map import SEGMONTO_NAME, TEXT_LINE, RegionKind, region_kind

TEXT_BLOCK = "TextBlock"
ALTO_ELEMENTS = (TEXT_BLOCK, "Illustration", "GraphicalElement", "ComposedBlock", TEXT_LINE)
ALTO_MAP_SYNTAX = MapSyntax("ALTO map", "label")
DOCSAM_CLASS = "docsam class "  # a tag's DESCRIPTION: the docsam class behind its SegmOnto LABEL


@dataclass(frozen=True)
class AltoKind:
    element: str  # one of ALTO_ELEMENTS
    label: str  # the LABEL of the tag the element references


_TEXT_LABELS = {
    "paragraph": "MainZone:P",
    "heading": "MainZone:Head",
    "header": "RunningTitleZone",
    "page-number": "NumberingZone:page",
    "marginalia": "MarginTextZone",
    "footnote": "MarginTextZone:Footnote",
    "footnote-continued": "MarginTextZone:Footnote",
    "drop-capital": "DropCapitalZone",
    "signature-mark": "QuireMarksZone",
    "catch-word": "QuireMarksZone:Catchword",
    "caption": "MainZone:Caption",
    "footer": "MainZone:Footer",
    "endnote": "MainZone:Endnote",
    "credit": "MainZone:Credit",
    "floating": "MainZone:Floating",
    "TOC-entry": "MainZone:TocEntry",
    "list-label": "MainZone:ListLabel",
    "other": "MainZone:Other",
}
_REGION_KINDS = {
    "TableRegion": AltoKind("ComposedBlock", "TableZone"),
    "AdvertRegion": AltoKind("ComposedBlock", "AdvertisementZone"),
    "ImageRegion": AltoKind("Illustration", "GraphicZone"),
    "LineDrawingRegion": AltoKind("Illustration", "GraphicZone:Drawing"),
    "ChartRegion": AltoKind("Illustration", "GraphicZone:Chart"),
    "MapRegion": AltoKind("Illustration", "GraphicZone:Map"),
    "MathsRegion": AltoKind("Illustration", "GraphicZone:Maths"),
    "ChemRegion": AltoKind("Illustration", "GraphicZone:Chem"),
    "MusicRegion": AltoKind("Illustration", "MusicZone"),
    "SeparatorRegion": AltoKind("GraphicalElement", "GraphicZone:Separator"),
    "NoiseRegion": AltoKind("GraphicalElement", "DigitizationArtefactZone"),
    "UnknownRegion": AltoKind(TEXT_BLOCK, "CustomZone"),
    TEXT_LINE: AltoKind(TEXT_LINE, "DefaultLine"),
}


def alto_kind(
    class_name: str, alto_map: ClassMap | None = None, page_map: ClassMap | None = None
) -> AltoKind:
    """The ALTO element and label for a class: `alto_map` (keys matched as in `class_map`), else the
    default for its PAGE region (see the module doc)."""
    entry = lookup(alto_map, class_name)
    if entry is not None:
        return validated_alto_kind(*entry, class_name)
    return default_alto_kind(region_kind(class_name, page_map), class_name)


def default_alto_kind(page_kind: RegionKind, class_name: str) -> AltoKind:
    """The element for the class's PAGE region, labelled as the table above says; a class named by a
    SegmOnto label (`page_map.SEGMONTO_NAME`: a model trained on eScriptorium's ALTO) keeps it as given."""
    kind = _region_alto_kind(page_kind, class_name)
    return AltoKind(kind.element, class_name) if SEGMONTO_NAME.fullmatch(class_name) else kind


def _region_alto_kind(page_kind: RegionKind, class_name: str) -> AltoKind:
    element, type_ = page_kind.element, page_kind.type
    if element == "TextRegion":
        return AltoKind(TEXT_BLOCK, _TEXT_LABELS.get(type_ or "", f"CustomZone:{class_name}"))
    if element == "GraphicRegion":
        label = {None: "GraphicZone", "stamp": "StampZone"}.get(type_, f"GraphicZone:{type_}")
        return AltoKind("Illustration", label)
    if element == "CustomRegion":
        return AltoKind(TEXT_BLOCK, f"CustomZone:{type_}" if type_ else "CustomZone")
    return _REGION_KINDS[element]


def validated_alto_kind(element: str, label: object, class_name: str) -> AltoKind:
    """The kind of a map entry; no label means the class name. Raises ValueError unless `element` is an
    ALTO block or TextLine and the label a non-empty string."""
    if element not in ALTO_ELEMENTS:
        raise ValueError(f"unknown ALTO element {element!r}: use one of {', '.join(ALTO_ELEMENTS)}")
    label = class_name if label is None else label
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"ALTO label for {element} must be a non-empty string, got {label!r}")
    return AltoKind(element, label.strip())


def parse_alto_map(spec: str) -> ClassMap:
    """`--alto-map` (spec forms in `class_map`), validated. Raises ValueError with a usage message.

    An entry without a label keeps None: the prompted class name becomes the label (`alto_kind`).
    """
    alto_map = parse_class_map(spec, ALTO_MAP_SYNTAX)
    validated_entries(
        spec,
        ALTO_MAP_SYNTAX,
        alto_map,
        lambda name, element, label: validated_alto_kind(element, label, name),
    )
    return alto_map
