"""LabelMe JSON (one file per image) → pages of instances.

Shapes: polygon, rectangle, circle and mask (newer LabelMe) are areas; line, linestrip and point shapes
are not and are dropped with a note. A rectangle is two opposite corners (LabelMe) or all four
(X-AnyLabeling), X-AnyLabeling's `rotation` the four corners of a rotated rectangle: four corners are read
as the polygon they outline. Shapes sharing a label and a `group_id` form one instance, as in
LabelMe's own instance export. A missing image file is recovered from the embedded `imageData`.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from docsam_cli.datasets.convert.base import ReadContext
from docsam_cli.datasets.fields import JsonField
from docsam_cli.datasets.geometry import box_polygon, ellipse_polygon
from docsam_cli.datasets.images import ImageNotFound
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.polygons import mask_contours

_AREA_SHAPES = frozenset(("polygon", "rectangle", "rotation", "circle", "mask"))
_POINT_COUNTS = {"rectangle": (2, 4), "rotation": (4,), "circle": (2,)}
_OTHER_SHAPES = frozenset(("line", "linestrip", "point", "points"))


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    """One LabelMe file. Raises WrongFormat (not LabelMe) or InputError."""
    document = JsonField.load(path)
    if not document.is_object() or document.get("shapes") is None:
        raise WrongFormat(path, "not a LabelMe file (no 'shapes' list)")
    shapes = document["shapes"].items()
    width, height = (_size(document.get(key)) for key in ("imageWidth", "imageHeight"))
    notes: list[Note] = []
    image, problem = _image(path, document, context, notes)
    groups: dict[tuple, Instance] = {}
    instances: list[Instance] = []
    for shape in shapes:
        instance = _shape(shape, notes)
        if instance is None:
            continue
        group_field = shape.get("group_id")
        group = group_field.identifier() if group_field is not None else None
        key = (instance.category, group)
        if group is not None and key in groups:
            groups[key].polygons.extend(instance.polygons)
            continue
        if group is not None:
            groups[key] = instance
        instances.append(instance)
    return [SourcePage(path, image, width, height, instances, image_problem=problem, notes=notes)]


def _size(field: JsonField | None) -> int | None:
    """`imageWidth` / `imageHeight`: absent, null or 0 leave the size to the image."""
    if field is None or field.value == 0:
        return None
    return field.size()


def _image(
    path: Path, document: JsonField, context: ReadContext, notes: list[Note]
) -> tuple[ImageRef, str | None]:
    reference, embedded = (_optional_text(document.get(key)) for key in ("imagePath", "imageData"))
    name = Path(reference.replace("\\", "/")).name or f"{path.stem}.png"
    problem = "no imagePath"
    if reference:
        try:
            found, note = context.finder.find(reference, path, label="imagePath")
            if note is not None:
                notes.append(Note("fixed", note, reference))
            return ImageRef(found.name, path=found), None
        except ImageNotFound as error:
            problem = str(error)
    if embedded:
        notes.append(Note("fixed", "image taken from the embedded imageData"))
        return ImageRef(name, load=_decoder(path, embedded)), None
    return ImageRef(name), problem


def _optional_text(field: JsonField | None) -> str:
    """A string field that may be absent, null or empty."""
    return "" if field is None or field.value == "" else field.text()


def _decoder(path: Path, embedded: str) -> Callable[[], bytes]:
    def decode() -> bytes:
        try:
            return base64.b64decode(embedded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise InputError(path, f"imageData is not base64 ({error})") from None

    return decode


def _shape(shape: JsonField, notes: list[Note]) -> Instance | None:
    """One shape as an instance; None (with a note) for shapes that are not areas. Raises InputError."""
    label = shape["label"].text()
    kind_field = shape.get("shape_type")
    kind = kind_field.text() if kind_field is not None else "polygon"
    if kind in _OTHER_SHAPES:
        notes.append(Note("dropped", f"'{kind}' shape is not an area", shape.where))
        return None
    if kind not in _AREA_SHAPES:
        raise kind_field.expected(f"one of {', '.join(sorted(_AREA_SHAPES | _OTHER_SHAPES))}")
    points = _points(shape["points"])
    counts = _POINT_COUNTS.get(kind, (len(points),))
    if len(points) not in counts:
        raise shape["points"].expected(f"{' or '.join(map(str, counts))} points for a {kind}")
    if kind == "polygon" or (kind in ("rectangle", "rotation") and len(points) == 4):
        polygons = [points]
    elif kind == "rectangle":
        polygons = [box_polygon(*points[0], *points[1])]
    elif kind == "circle":
        radius = float(np.hypot(*(points[1] - points[0])))
        polygons = [ellipse_polygon(*points[0], radius, radius)]
    else:
        if not len(points):
            raise shape["points"].expected("the mask's top-left corner")
        polygons = _mask(shape["mask"], points[0])
    return Instance(label, polygons, where=shape.where)


def _points(field: JsonField) -> np.ndarray:
    """`[[x, y], ...]` → (N, 2) floats. Raises InputError."""
    rows = field.items()
    for row in rows:
        if not row.is_list() or len(row.value) != 2:
            raise row.expected("a point [x, y]")
        for value in row.items():
            value.number()
    return np.asarray(field.value, dtype=np.float64).reshape(-1, 2)


def _mask(field: JsonField, origin: np.ndarray) -> list[np.ndarray]:
    """A mask shape's base64 PNG, placed at `origin`. Raises InputError."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(field.text(), validate=True))) as image:
            mask = np.asarray(image.convert("L")) > 0
    except (OSError, ValueError, binascii.Error):
        raise field.expected("a base64-encoded PNG mask") from None
    return mask_contours(mask, offset=(float(origin[0]), float(origin[1])))
