"""COCO json (one file, many images: PubLayNet, DocLayNet, M6Doc...) → pages of instances.

Segmentations may be polygon lists, a single flat polygon, or RLE (compressed or not; traced back to
polygons, since the reference loader reads polygons only). An annotation with only a bbox becomes its
4-corner polygon, as the reference loader does. `category_id` may also be a category name (the
reference's own results). Images are looked up by `file_name` under `--images`, else beside the json,
in `images/` or `PNG/` (DocLayNet) there, or in the parent folder and its `images/` or `PNG/`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from numbers import Real
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from docsam_cli.datasets.convert.base import ReadContext, load_json
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import ImageNotFound, ImageOutsideRoot, resolve_image
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.polygons import mask_contours

_IMAGE_FOLDERS = ("", "images", "PNG")


def read(path: Path, context: ReadContext) -> Iterator[SourcePage]:
    """Every image of one COCO file. Raises WrongFormat (not a COCO dataset) or InputError."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise WrongFormat(path, "not a COCO dataset (no 'images' list)")
    categories = _categories(path, data.get("categories"))
    by_image: dict[object, list[dict]] = defaultdict(list)
    for annotation in data.get("annotations") or []:
        if isinstance(annotation, dict):
            by_image[_hashable(annotation.get("image_id"))].append(annotation)
    roots = image_roots(path, context.images)
    for entry in data["images"]:
        if not isinstance(entry, dict):
            raise InputError(path, "an 'images' entry is not an object")
        yield _page(path, entry, by_image.get(_hashable(entry.get("id")), []), categories, roots)


def _hashable(value: object) -> object:
    return value if isinstance(value, str | int) else repr(value)


def _categories(path: Path, categories: object) -> dict[object, str]:
    """category id → name; names also map to themselves (string category_id)."""
    if not isinstance(categories, list):
        raise InputError(path, "no 'categories' list")
    names: dict[object, str] = {}
    for category in categories:
        if not isinstance(category, dict) or not str(category.get("name", "")).strip():
            raise InputError(path, f"category without a name: {category!r:.60}")
        name = str(category["name"]).strip()
        names[_hashable(category.get("id"))] = name
        names.setdefault(name, name)
    return names


def image_roots(path: Path, images: Path | None) -> list[Path]:
    """Folders where the images of the COCO file `path` may be (see the module docstring)."""
    if images is not None:
        return [images]
    bases = (path.parent, path.parent.parent)
    return [base / folder for base in bases for folder in _IMAGE_FOLDERS if (base / folder).is_dir()]


def _page(
    path: Path, entry: dict, annotations: list[dict], categories: dict[object, str], roots: list[Path]
) -> SourcePage:
    reference = str(entry.get("file_name") or "")
    width, height = _size(entry.get("width")), _size(entry.get("height"))
    notes: list[Note] = []
    image, problem = _image(reference, roots, notes)
    instances = []
    for annotation in annotations:
        instance = _instance(annotation, categories, width, height, notes)
        if instance is not None:
            instances.append(instance)
    return SourcePage(path, image, width, height, instances, image_problem=problem, notes=notes)


def _size(value: object) -> int | None:
    return int(value) if isinstance(value, Real) and value > 0 else None


def _image(reference: str, roots: list[Path], notes: list[Note]) -> tuple[ImageRef, str | None]:
    name = Path(reference.replace("\\", "/")).name or "?"
    problem = f"file_name '{reference}' not found" if roots else "no image folder beside the json"
    for root in roots:
        try:
            found, note = resolve_image(reference, root, root, label="file_name")
        except ImageOutsideRoot as error:
            return ImageRef(name), str(error)
        except ImageNotFound:
            continue
        if note is not None:
            notes.append(Note("fixed", note, reference))
        return ImageRef(found.name, path=found), None
    return ImageRef(name), problem


def _instance(
    annotation: dict, categories: dict[object, str], width: int | None, height: int | None, notes: list[Note]
) -> Instance | None:
    where = f"annotation {annotation.get('id', '?')}"
    category = categories.get(_hashable(annotation.get("category_id")))
    if category is None:
        notes.append(Note("dropped", "unknown category_id", where))
        return None
    segmentation = annotation.get("segmentation")
    if not segmentation and isinstance(annotation.get("poly"), list):
        segmentation = [annotation["poly"]]
    if isinstance(segmentation, dict):
        polygons = _rle_polygons(segmentation, width, height, where, notes)
    else:
        polygons = _polygons(segmentation, where, notes)
    bbox = _bbox(annotation.get("bbox"))
    if not polygons and bbox is not None:
        x, y, w, h = bbox
        polygons = [box_polygon(x, y, x + w, y + h)]
    if not polygons:
        notes.append(Note("dropped", "no usable segmentation or bbox", where))
        return None
    score = annotation.get("score")
    return Instance(
        category,
        polygons,
        bbox=bbox,
        iscrowd=bool(annotation.get("iscrowd", 0)),
        score=float(score) if isinstance(score, Real) else None,
        where=where,
    )


def _polygons(segmentation: object, where: str, notes: list[Note]) -> list[np.ndarray]:
    if not isinstance(segmentation, list) or not segmentation:
        return []
    if all(isinstance(value, Real) for value in segmentation):  # one flat polygon instead of a list
        segmentation = [segmentation]
    polygons = []
    for polygon in segmentation:
        if (
            isinstance(polygon, list)
            and len(polygon) >= 6
            and len(polygon) % 2 == 0
            and all(isinstance(value, Real) and np.isfinite(value) for value in polygon)
        ):
            polygons.append(np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
        else:
            notes.append(Note("fixed", "malformed polygon removed", where))
    return polygons


def _rle_polygons(
    rle: dict, width: int | None, height: int | None, where: str, notes: list[Note]
) -> list[np.ndarray]:
    try:
        rle_height, rle_width = (int(side) for side in rle["size"])
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, rle_height, rle_width)
        mask = mask_utils.decode(rle)
    except (KeyError, TypeError, ValueError) as error:
        notes.append(Note("dropped", "malformed RLE", f"{where}: {error}"))
        return []
    if width is not None and height is not None and (rle_width, rle_height) != (width, height):
        notes.append(Note("dropped", "RLE size differs from the image", where))
        return []
    notes.append(Note("fixed", "RLE mask traced to polygons", where))
    return mask_contours(mask)


def _bbox(value: object) -> tuple[float, float, float, float] | None:
    if (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, Real) and np.isfinite(v) for v in value)
        and value[2] >= 0
        and value[3] >= 0
    ):
        x, y, w, h = (float(v) for v in value)
        return x, y, w, h
    return None
