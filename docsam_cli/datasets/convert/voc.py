"""Pascal VOC XML (one `<annotation>` per image) → pages of box instances.

VOC boxes are 1-based inclusive pixel indices: `xmin=1, xmax=W` covers the whole image, i.e. the
continuous box [0, W]; so 1 is subtracted from `xmin`/`ymin` (as Detectron2 does). `difficult` objects
become `iscrowd` (COCO's ignore regions, which is what VOC's evaluation does with them).
"""

from __future__ import annotations

from pathlib import Path

from docsam_cli.datasets.convert.base import ReadContext
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import ImageNotFound
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.datasets.xml import child, children, local, parse_xml
from docsam_cli.errors import WrongFormat


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    """One VOC file. Raises WrongFormat (not VOC) or InputError."""
    document = parse_xml(path)
    if local(document) != "annotation":
        raise WrongFormat(path, f"not a VOC annotation (root element <{local(document)}>)")
    notes: list[Note] = []
    reference = _text(document, "filename") or Path(_text(document, "path") or "").name
    image, problem = _image(reference, path, context, notes)
    size = child(document, "size")
    width, height = _size(size, "width"), _size(size, "height")
    instances = []
    for index, element in enumerate(children(document, "object")):
        instance = _object(element, index, notes)
        if instance is not None:
            instances.append(instance)
    return [SourcePage(path, image, width, height, instances, image_problem=problem, notes=notes)]


def _text(element, name: str) -> str | None:
    found = child(element, name) if element is not None else None
    text = (found.text or "").strip() if found is not None else ""
    return text or None


def _size(size, name: str) -> int | None:
    try:
        value = int(float(_text(size, name) or 0))
    except (ValueError, OverflowError):  # NaN, or an infinity ('inf', '1e999')
        return None
    return value if value > 0 else None  # 0 or absent: take the image's size


def _image(
    reference: str, path: Path, context: ReadContext, notes: list[Note]
) -> tuple[ImageRef, str | None]:
    try:
        found, note = context.finder.find(
            reference or path.stem, path, label="filename", extra_dirs=("JPEGImages", "images")
        )
    except ImageNotFound as error:
        return ImageRef(Path(reference.replace("\\", "/")).name or path.stem), str(error)
    if note is not None:
        notes.append(Note("fixed", note, reference))
    return ImageRef(found.name, path=found), None


def _object(element, index: int, notes: list[Note]) -> Instance | None:
    name = _text(element, "name")
    where = f"object {index + 1}"
    box = child(element, "bndbox")
    if not name or box is None:
        notes.append(Note("dropped", "object without name or bndbox", where))
        return None
    try:
        xmin, ymin, xmax, ymax = (float(_text(box, key) or "") for key in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        notes.append(Note("dropped", "invalid bndbox", where))
        return None
    polygon = box_polygon(max(xmin - 1, 0.0), max(ymin - 1, 0.0), xmax, ymax)
    difficult = (_text(element, "difficult") or "0") not in ("0", "false")
    return Instance(name, [polygon], iscrowd=difficult, where=where)
