"""ALTO XML (v1 to v4, any namespace) → pages of instances.

Class names come from the `TAGREFS` of a block: the first referenced tag whose `TYPE` is absent or a
layout kind ("type", "region", "block", ...) gives its `LABEL` (SegmOnto labels as eScriptorium and
kraken write them; language, split and other tags are ignored), or the docsam class that docsam's own ALTO
output names in the tag's `DESCRIPTION` ("docsam class table"), so that output reads back with its classes.
Untagged blocks are named after their element: `TextBlock` → "text", `Illustration` → "illustration",
`GraphicalElement` → "graphic"; an untagged `ComposedBlock` is named by its `TYPE` in lower case (a
user-defined string: ABBYY FineReader's and PRImA's PAGE-to-ALTO tables are `TYPE="table"`, others write
"Table", the Library of Congress's pictures `TYPE="Illustration"`), and is only a container without one.
The `TextBlock`s of a table (ALTO has no table element: a table `ComposedBlock` holds a block per cell) are
its cells, `--level cells`, as PAGE's text regions of a `TableRegion` are. Lines are "text line" and
`String`s "word" unless tagged.

Coordinates in `pixel` units must match the image; `mm10`, `inch1200` (or no stated unit) are scaled
from the `Page` WIDTH/HEIGHT onto the image, or, where the `Page` does not state them, by the resolution
the image file states (ALTO: "the values for pixel will be related to the resolution of the image").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lxml import etree

from docsam_cli.datasets.convert.base import ReadContext, referenced_image
from docsam_cli.datasets.geometry import box_polygon, ellipse_polygon, parse_points
from docsam_cli.datasets.images import ImageFinder, ImageNotFound
from docsam_cli.datasets.records import (
    CELL_CLASS,
    CLASS_LEVELS,
    LINE_CLASS,
    WORD_CLASS,
    ImageRef,
    Instance,
    Note,
    SourcePage,
)
from docsam_cli.datasets.xml import child, child_text, children, local, parse_xml
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.inputs.images import open_image, to_first_page, upright_header
from docsam_cli.writers.alto_map import DOCSAM_CLASS
from docsam_cli.writers.xml_tree import SOFTWARE

BLOCK_NAMES = {"TextBlock": "text", "Illustration": "illustration", "GraphicalElement": "graphic"}
_LAYOUT_TAG_TYPES = frozenset(
    ("", "type", "region", "block", "blocktype", "block type", "line", "linetype", "line type", "structure")
)
_TAG_ELEMENTS = frozenset(("OtherTag", "LayoutTag", "StructureTag", "RoleTag"))
_TABLE_CLASSES = frozenset(("table", "tablezone"))  # a ComposedBlock's lower-case class, subtype aside
_UNITS_PER_INCH = {"mm10": 254.0, "inch1200": 1200.0}
_SHAPE_KEYS = {
    "Polygon": ("POINTS",),
    "Ellipse": ("HPOS", "VPOS", "HLENGTH", "VLENGTH"),
    "Circle": ("HPOS", "VPOS", "RADIUS", "RADIUS"),
}


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    return [read_alto(path, context.root, context.levels, finder=context.finder)]


def read_alto(
    path: Path, root: Path, levels: frozenset[str], *, finder: ImageFinder | None = None
) -> SourcePage:
    """One ALTO file, its image looked up under `root` (by `finder`, if given). Raises WrongFormat (not
    ALTO) or InputError (unusable file)."""
    document = parse_xml(path)
    if local(document) != "alto":
        raise WrongFormat(path, f"not an ALTO document (root element <{local(document)}>)")
    layout = child(document, "Layout")
    pages = [] if layout is None else [element for element in layout if local(element) == "Page"]
    if len(pages) != 1:
        raise InputError(
            path, f"{len(pages)} <Page> elements; one page (one image) per ALTO file is supported"
        )
    page = pages[0]
    description = child(document, "Description")
    unit = child_text(description, "MeasurementUnit")
    width, height = _number(path, page, "WIDTH"), _number(path, page, "HEIGHT")
    relative = unit != "pixel"
    notes: list[Note] = []
    image, problem = _image(path, finder or ImageFinder(root), description, notes)
    if relative and (not width or not height) and image.path is not None:  # not found: reported as such
        width, height = _size_from_resolution(path, image.path, unit)
    tags = _tags(document)
    docsam = child_text(description, "Processing", "processingSoftware", "softwareName") == SOFTWARE
    instances = [
        instance
        for element in page.iter(etree.Element)
        if not (docsam and _line_holder(element, tags))
        and (instance := _instance(element, tags, levels, notes, docsam)) is not None
    ]
    return SourcePage(
        path, image, width or None, height or None, instances, relative, image_problem=problem, notes=notes
    )


def _size_from_resolution(path: Path, image: Path, unit: str | None) -> tuple[float, float]:
    """The page's size in `unit` (mm10, inch1200) from the image's pixels and the resolution its file states,
    as ALTO relates these units to pixels, for a `<Page>` that does not state its WIDTH and HEIGHT. Raises
    InputError when there is no such resolution, or naming the image when it cannot be read."""
    per_inch = _UNITS_PER_INCH.get(unit or "")
    dpi = None
    if per_inch is not None:
        with open_image(image) as opened:
            to_first_page(image, opened)
            size, dpi = upright_header(opened)
    if dpi is None:
        why = "" if per_inch is None else " (or an image stating its resolution)"
        raise InputError(path, f"<Page> WIDTH/HEIGHT{why} are needed to scale '{unit or 'unstated'}' units")
    return size[0] * per_inch / dpi[0], size[1] * per_inch / dpi[1]


def _number(path: Path, element: etree._Element, attribute: str) -> float | None:
    text = element.get(attribute)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"<{local(element)}> {attribute} '{text}' is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise InputError(path, f"<{local(element)}> {attribute} {text} is not a size")
    return value


def _image(
    path: Path, finder: ImageFinder, description: etree._Element | None, notes: list[Note]
) -> tuple[ImageRef, str | None]:
    reference = child_text(description, "sourceImageInformation", "fileName")
    if reference is None:  # eScriptorium and others also export the image beside an XML of the same stem
        try:
            found, _ = finder.find(path.stem, path, label="image named like the XML")
        except ImageNotFound as problem:
            return ImageRef(path.stem), f"no sourceImageInformation/fileName, and {problem}"
        notes.append(Note("fixed", "no fileName: image found by the XML's name", found.name))
        return ImageRef(found.name, path=found), None
    return referenced_image(finder, reference, path, notes, label="fileName")


def _tags(document: etree._Element) -> dict[str, tuple[str, str]]:
    """Tag ID → (LABEL, TYPE) for the tags that can name a layout element."""
    tags = child(document, "Tags")
    if tags is None:
        return {}
    found = {}
    for tag in tags:
        if local(tag) in _TAG_ELEMENTS and tag.get("ID") and tag.get("LABEL"):
            description = (tag.get("DESCRIPTION") or "").strip()
            label = description.removeprefix(DOCSAM_CLASS) if description.startswith(DOCSAM_CLASS) else ""
            found[tag.get("ID")] = (
                label or tag.get("LABEL").strip(),
                (tag.get("TYPE") or "").strip().lower(),
            )
    return found


def _label(element: etree._Element, tags: dict[str, tuple[str, str]]) -> str | None:
    for reference in (element.get("TAGREFS") or "").split():
        label, kind = tags.get(reference, ("", "-"))
        if label and kind in _LAYOUT_TAG_TYPES:
            return label
    return None


def _instance(
    element: etree._Element,
    tags: dict[str, tuple[str, str]],
    levels: frozenset[str],
    notes: list[Note],
    docsam: bool,
) -> Instance | None:
    """The block, line or word `element` where `levels` select it; a block of docsam's own files whose
    class is that of another level (`table cell`) is selected by that level too, as the PAGE reader selects
    its regions."""
    name = local(element)
    label = _composed_class(element, tags) if name == "ComposedBlock" else _label(element, tags)
    if name == "TextBlock" and _in_table(element, tags):
        level, category = "cells", CELL_CLASS
    elif name in BLOCK_NAMES or (name == "ComposedBlock" and label):
        level, category = "regions", label or BLOCK_NAMES[name]
    elif name == "TextLine":
        level, category = "lines", label or LINE_CLASS
    elif name == "String":
        level, category = "words", label or WORD_CLASS
    else:
        return None
    if level not in levels and not (docsam and CLASS_LEVELS.get(category) in levels):
        return None
    where = f"{name} {element.get('ID', '?')}"
    try:
        polygon = _outline(element)
    except ValueError as error:
        notes.append(Note("dropped", "invalid coordinates", f"{where}: {error}"))
        return None
    if polygon is None:
        notes.append(Note("dropped", "no coordinates", where))
        return None
    return Instance(category, [polygon], where=where)


def _line_holder(element: etree._Element, tags: dict[str, tuple[str, str]]) -> bool:
    """Whether a block of docsam's ALTO output is one made only to hold a text line that no block of a class
    holds (`writers.layout`): a TextBlock with no class tag around one TextLine of the same outline. It is
    no region of the page: read as one, it would be a 'text' region the model never found."""
    if local(element) != "TextBlock" or _label(element, tags) is not None:
        return False
    lines = children(element, "TextLine")
    try:
        return len(lines) == 1 and np.array_equal(_outline(element), _outline(lines[0]))
    except ValueError:
        return False


def _composed_class(element: etree._Element, tags: dict[str, tuple[str, str]]) -> str | None:
    """A ComposedBlock's class: its tag's label, else its TYPE ("the type of composed block (e.g. table,
    advertisement, ...)", a user-defined string) in lower case, as the element names of untagged blocks
    are; None for a container."""
    return _label(element, tags) or (element.get("TYPE") or "").strip().lower() or None


def _in_table(element: etree._Element, tags: dict[str, tuple[str, str]]) -> bool:
    """Whether the nearest ComposedBlock around `element` that has a class (rows of untyped ones between
    them aside) is a table."""
    for ancestor in element.iterancestors(etree.Element):
        if local(ancestor) == "ComposedBlock" and (kind := _composed_class(ancestor, tags)) is not None:
            return kind.lower().partition(":")[0] in _TABLE_CLASSES
    return False


def _outline(element: etree._Element) -> np.ndarray | None:
    """The element's `Shape` (a Polygon's POINTS, an Ellipse or a Circle as a polygon along it) when it has
    one, else its HPOS/VPOS/WIDTH/HEIGHT box. Raises ValueError."""
    shape = child(element, "Shape")
    outline = _shape(shape) if shape is not None else None
    if outline is not None:
        return outline
    values = [element.get(key) for key in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
    if any(value is None for value in values):
        return None
    x, y, w, h = parse_points(" ".join(values)).reshape(-1)
    return box_polygon(x, y, x + w, y + h)


def _shape(shape: etree._Element) -> np.ndarray | None:
    """The first of ALTO's Polygon, Ellipse (HPOS/VPOS its centre, HLENGTH/VLENGTH its width and height) and
    Circle (centre and RADIUS) in a Shape that states its coordinates, as points; None when there is none.
    Raises ValueError."""
    for element in shape:
        name = local(element)
        keys = _SHAPE_KEYS.get(name, ())
        values = [element.get(key) for key in keys]
        if not keys or any(value is None or not value.strip() for value in values):
            continue
        if name == "Polygon":
            return parse_points(values[0])
        numbers = parse_points(" ".join(values)).reshape(-1)  # Circle: RADIUS twice, as two radii
        x, y = numbers[:2]
        rx, ry = (numbers[2], numbers[3]) if name == "Circle" else (numbers[2] / 2, numbers[3] / 2)
        return ellipse_polygon(x, y, rx, ry)
    return None
