"""PAGE XML (PRImA; 2009 to 2019 schemas, `http://` or `https://` namespace) → pages of instances.

Class names: a region's `@custom` `structure {type:...}` (Transkribus tags) wins over its `@type`, which
wins over the element's own name (`TextRegion` → "text", `SeparatorRegion` → "separator", ...);
`ChartRegion` subtypes read "<type> chart". Text regions directly inside a `TableRegion`, Transkribus
`TableCell`s and regions with a `TableCellRole` are table cells: they belong to `--level cells`, not to
the regions. `page_map` inverts the naming, for writing PAGE from class names again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from lxml import etree

from docsam_cli.datasets.convert.base import ReadContext, referenced_image
from docsam_cli.datasets.geometry import parse_points
from docsam_cli.datasets.images import ImageFinder
from docsam_cli.datasets.records import (
    CLASS_LEVELS,
    LEVEL_CLASSES,
    LINE_CLASS,
    Instance,
    Note,
    SourcePage,
)
from docsam_cli.datasets.xml import child, child_text, children, local, parse_xml
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.writers.xml_tree import OCRD_PROCESSOR, SOFTWARE

REGION_NAMES = {
    "TextRegion": "text",
    "ImageRegion": "image",
    "LineDrawingRegion": "line-drawing",
    "GraphicRegion": "graphic",
    "TableRegion": "table",
    "ChartRegion": "chart",
    "SeparatorRegion": "separator",
    "MathsRegion": "maths",
    "ChemRegion": "chem",
    "MusicRegion": "music",
    "AdvertRegion": "advert",
    "NoiseRegion": "noise",
    "UnknownRegion": "unknown",
    "CustomRegion": "custom",
    "MapRegion": "map",
}
TEXT_TYPES = frozenset(
    (
        "paragraph",
        "heading",
        "caption",
        "header",
        "footer",
        "page-number",
        "drop-capital",
        "credit",
        "floating",
        "signature-mark",
        "catch-word",
        "marginalia",
        "footnote",
        "footnote-continued",
        "endnote",
        "TOC-entry",
        "list-label",
    )
)
GRAPHIC_TYPES = frozenset(
    (
        "logo",
        "letterhead",
        "decoration",
        "frame",
        "handwritten-annotation",
        "stamp",
        "signature",
        "barcode",
        "paper-grow",
        "punch-hole",
    )
)
CHART_TYPES = frozenset(("bar", "line", "pie", "scatter", "surface"))

_STRUCTURE = re.compile(r"structure\s*\{([^}]*)\}")
_STRUCTURE_TYPE = re.compile(r"(?:^|;)\s*type\s*:\s*([^;]*)")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
NO_COORDS = "no Coords"  # the note of an element left out for having no shape at all


def region_class(element: str, subtype: str | None) -> str:
    """The class name of a region element with an optional subtype."""
    default = REGION_NAMES.get(element, element.removesuffix("Region").lower())
    if not subtype or subtype == "other":
        return default
    if element == "ChartRegion" and subtype in CHART_TYPES:
        return f"{subtype} chart"
    return subtype


def page_map(class_names: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Element and `@type` that this reader reads back as each class name (the `segment` writer's map).

    "text line" is a `TextLine`. Names that no region type expresses become a `TextRegion` without
    `@type`: a writer that keeps the class in `@custom` `structure {type:...}` (as `segment`'s does)
    still reads back the same name.
    """
    defaults = {name: element for element, name in REGION_NAMES.items()}
    mapping: dict[str, tuple[str, str | None]] = {}
    for name in class_names:
        chart = name.removesuffix(" chart")
        if name == LINE_CLASS:
            mapping[name] = ("TextLine", None)
        elif name in defaults:
            mapping[name] = (defaults[name], None)
        elif name in TEXT_TYPES:
            mapping[name] = ("TextRegion", name)
        elif name in GRAPHIC_TYPES:
            mapping[name] = ("GraphicRegion", name)
        elif name.endswith(" chart") and chart in CHART_TYPES:
            mapping[name] = ("ChartRegion", chart)
        else:
            mapping[name] = ("TextRegion", None)
    return mapping


def structure_type(custom: str | None) -> str | None:
    """`type` of the `structure {...}` group in a Transkribus `@custom` attribute."""
    if not custom:
        return None
    group = _STRUCTURE.search(custom)
    found = _STRUCTURE_TYPE.search(group[1]) if group else None
    if not found:
        return None
    value = _ESCAPE.sub(lambda match: chr(int(match[1], 16)), found[1]).strip()
    return value or None


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    return [read_page(path, context.root, context.levels, finder=context.finder)]


def read_page(
    path: Path, root: Path, levels: frozenset[str], *, finder: ImageFinder | None = None
) -> SourcePage:
    """One PAGE file, its image looked up under `root` (by `finder`, if given). Raises WrongFormat (not
    PAGE) or InputError (unusable file)."""
    document = parse_xml(path)
    if local(document) != "PcGts":
        raise WrongFormat(path, f"not a PAGE document (root element <{local(document)}>)")
    page = child(document, "Page")
    if page is None:
        raise InputError(path, "no <Page> element")
    notes: list[Note] = []
    width, height = _declared_size(path, page, notes)
    reference = (page.get("imageFilename") or "").strip()
    if not reference:
        raise InputError(path, "<Page> has no imageFilename")
    image, problem = referenced_image(
        finder or ImageFinder(root), reference, path, notes, label="imageFilename"
    )
    instances: list[Instance] = []
    docsam = _written_by_docsam(document)
    for element in page.iter(etree.Element):
        name = local(element)
        kind = _kind(element, name)
        if (
            kind is None
            or not _selected(element, kind, levels, docsam)
            or (docsam and _line_holder(element, name))
        ):
            continue
        instance = _instance(path, element, name, kind, notes, docsam)
        if instance is not None:
            instances.append(instance)
    return SourcePage(path, image, width, height, instances, image_problem=problem, notes=notes)


def _written_by_docsam(document: etree._Element) -> bool:
    """Whether docsam wrote the file: `segment` (its `Metadata/Creator`) or, into a document of OCR-D's,
    the OCR-D processor (a `MetadataItem` of its step)."""
    metadata = child(document, "Metadata")
    steps = children(metadata, "MetadataItem") if metadata is not None else []
    return (child_text(metadata, "Creator") or "").split(" ")[0] == SOFTWARE or any(
        step.get("value") == OCRD_PROCESSOR for step in steps
    )


def _line_holder(element: etree._Element, name: str) -> bool:
    """Whether a region of docsam's PAGE output is one made only to hold a text line that no region of a
    class holds (`writers.layout`): a TextRegion with no class (no `@type`, no `@custom` type) around one
    TextLine of the same outline. It is no region of the page: read as one, it would be a 'text' region
    the model never found."""
    if name != "TextRegion" or element.get("type") or structure_type(element.get("custom")):
        return False
    lines = children(element, "TextLine")
    if len(lines) != 1 or any(local(item).endswith("Region") for item in element):
        return False
    outlines = [child(item, "Coords") for item in (element, lines[0])]
    try:
        return None not in outlines and np.array_equal(*(_points(coords) for coords in outlines))
    except ValueError:
        return False


def _declared_size(path: Path, page: etree._Element, notes: list[Note]) -> tuple[int | None, int | None]:
    sizes = []
    for attribute in ("imageWidth", "imageHeight"):
        text = (page.get(attribute) or "").strip()
        try:
            value = int(text)
        except ValueError:
            raise InputError(path, f"{attribute} '{text}' is not a whole number") from None
        if value < 0:
            raise InputError(path, f"{attribute} {value} is negative")
        sizes.append(value)
    if 0 in sizes:
        notes.append(Note("fixed", "imageWidth/imageHeight 0: size taken from the image"))
        return None, None
    return sizes[0], sizes[1]


def _kind(element: etree._Element, name: str) -> str | None:
    """Which `--level` the element belongs to, or None when it is not an annotated object."""
    if name == "TextLine":
        return "lines"
    if name == "Word":
        return "words"
    if name == "TableCell":
        return "cells"
    if not name.endswith("Region"):
        return None
    parent = element.getparent()
    if name == "TextRegion" and parent is not None and local(parent) == "TableRegion":
        return "cells"
    roles = child(element, "Roles")
    if roles is not None and child(roles, "TableCellRole") is not None:
        return "cells"
    return "regions"


def _selected(element: etree._Element, kind: str, levels: frozenset[str], docsam: bool) -> bool:
    """Whether `--level` selects the element, of level `kind`. A region of docsam's own files whose
    `@custom` type is the class of another level (`table cell`: the model finds the cells of its ground
    truth as regions of their own) is selected by that level too, as the ground truth's cells are."""
    if kind in levels:
        return True
    structure = structure_type(element.get("custom")) if docsam and kind == "regions" else None
    return CLASS_LEVELS.get(structure or "") in levels


def _instance(
    path: Path, element: etree._Element, name: str, kind: str, notes: list[Note], docsam: bool
) -> Instance | None:
    where = f"{name} {element.get('id', '?')}"
    coords = child(element, "Coords")
    if coords is None:
        notes.append(Note("dropped", NO_COORDS, where))
        return None
    try:
        polygon = _points(coords)
    except ValueError as error:
        notes.append(Note("dropped", "invalid Coords points", f"{where}: {error}"))
        return None
    category = _category(element, name, kind, docsam)
    return Instance(category, [polygon], score=_confidence(path, coords, where), where=where)


def _category(element: etree._Element, name: str, kind: str, docsam: bool) -> str:
    """The class of a region or text line: in docsam's own files, the class name its `@custom` type holds
    as written (also `other`, which as a PAGE `@type` names no type, read as the element's class, and a
    line's class, `line` or `DefaultLine`, as the ALTO reader reads it); else a region's `region_class` of
    that type or the `@type`, and the level's class."""
    structure = structure_type(element.get("custom"))
    if docsam and structure and kind in ("regions", "lines"):
        return structure
    if kind == "regions":
        return region_class(name, structure or element.get("type"))
    return LEVEL_CLASSES[kind]


def _points(coords: etree._Element) -> np.ndarray:
    text = coords.get("points")
    if text is not None:
        return parse_points(text)
    pairs = [(point.get("x", ""), point.get("y", "")) for point in children(coords, "Point")]  # PAGE 2010
    return parse_points(" ".join(f"{x},{y}" for x, y in pairs))


def _confidence(path: Path, coords: etree._Element, where: str) -> float | None:
    """`Coords/@conf`, a number in [0, 1] (the score of a prediction). Raises InputError."""
    text = coords.get("conf")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise InputError(path, f"{where}: Coords/@conf '{text}' is not a number from 0 to 1")
    return value
