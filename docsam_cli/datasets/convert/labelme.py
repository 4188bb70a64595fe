"""LabelMe JSON (one file per image) → pages of instances.

Shapes: polygon, rectangle, circle and mask (newer LabelMe) are areas; line, linestrip and point shapes
are not and are dropped with a note. Shapes sharing a label and a `group_id` form one instance, as in
LabelMe's own instance export. A missing image file is recovered from the embedded `imageData`.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from numbers import Real
from pathlib import Path

import numpy as np
from PIL import Image

from docsam_cli.datasets.convert.base import ReadContext, load_json
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import ImageNotFound, resolve_image
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.polygons import mask_contours

_CIRCLE_VERTICES = 64


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    """One LabelMe file. Raises WrongFormat (not LabelMe) or InputError."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise WrongFormat(path, "not a LabelMe file (no 'shapes' list)")
    notes: list[Note] = []
    image, problem = _image(path, data, context, notes)
    groups: dict[tuple, Instance] = {}
    instances: list[Instance] = []
    for index, shape in enumerate(data["shapes"]):
        instance = _shape(shape, index, notes)
        if instance is None:
            continue
        group = shape.get("group_id")
        key = (instance.category, group)
        if group is not None and key in groups:
            groups[key].polygons.extend(instance.polygons)
            continue
        if group is not None:
            groups[key] = instance
        instances.append(instance)
    width, height = _size(data.get("imageWidth")), _size(data.get("imageHeight"))
    return [SourcePage(path, image, width, height, instances, image_problem=problem, notes=notes)]


def _size(value: object) -> int | None:
    return int(value) if isinstance(value, Real) and value > 0 else None


def _image(path: Path, data: dict, context: ReadContext, notes: list[Note]) -> tuple[ImageRef, str | None]:
    reference = str(data.get("imagePath") or "")
    name = Path(reference.replace("\\", "/")).name or f"{path.stem}.png"
    problem = "no imagePath"
    if reference:
        try:
            found, note = resolve_image(reference, path.parent, context.root, label="imagePath")
            if note is not None:
                notes.append(Note("fixed", note, reference))
            return ImageRef(found.name, path=found), None
        except ImageNotFound as error:
            problem = str(error)
    embedded = data.get("imageData")
    if isinstance(embedded, str) and embedded:
        notes.append(Note("fixed", "image taken from the embedded imageData"))
        return ImageRef(name, load=_decoder(path, embedded)), None
    return ImageRef(name), problem


def _decoder(path: Path, embedded: str) -> Callable[[], bytes]:
    def decode() -> bytes:
        try:
            return base64.b64decode(embedded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise InputError(path, f"imageData is not base64 ({error})") from None

    return decode


def _shape(shape: object, index: int, notes: list[Note]) -> Instance | None:
    where = f"shape {index + 1}"
    if not isinstance(shape, dict) or not str(shape.get("label") or "").strip():
        notes.append(Note("dropped", "shape without label", where))
        return None
    kind = shape.get("shape_type") or "polygon"
    try:
        points = np.asarray(shape.get("points") or [], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        notes.append(Note("dropped", "invalid shape points", where))
        return None
    if kind == "polygon":
        polygons = [points]
    elif kind == "rectangle" and len(points) == 2:
        polygons = [box_polygon(*points[0], *points[1])]
    elif kind == "circle" and len(points) == 2:
        radius = float(np.hypot(*(points[1] - points[0])))
        angles = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        polygons = [points[0] + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)]
    elif kind == "mask" and len(points) >= 1 and isinstance(shape.get("mask"), str):
        polygons = _mask(shape["mask"], points[0])
    else:
        notes.append(Note("dropped", f"'{kind}' shape is not an area", where))
        return None
    return Instance(str(shape["label"]).strip(), polygons, where=where)


def _mask(encoded: str, origin: np.ndarray) -> list[np.ndarray]:
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            mask = np.asarray(image.convert("L")) > 0
    except (OSError, ValueError):  # not base64 or not an image: the shape is dropped as empty
        return []
    return mask_contours(mask, offset=(float(origin[0]), float(origin[1])))
