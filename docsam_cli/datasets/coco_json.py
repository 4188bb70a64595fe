"""COCO json as `convert-dataset` and `evaluate` read it: datasets and results lists, checked field by field.

One reader for every COCO file the tools meet: a source dataset (PubLayNet, DocLayNet, ...), a ground-truth
file, a per-image json of the unified layout, `segment`'s `coco.json` and a results list. Whatever a field
holds that the format does not allow is an `InputError` naming the file and the field (see `fields`), and it
costs as little as it can: a broken category makes the file unusable (every image depends on the
categories); a broken image entry or annotation makes its image fail; an annotation that names no image of
the file is reported once for the file.

Segmentations are polygon lists (also a single flat polygon, also under `poly`, which some exports and the
reference's per-image jsons name so), or RLE (`size` [height, width] and `counts`,
compressed string or run-length list, adding up to height x width). Geometry that is well-formed but useless
(a polygon of two points) is not an error here: the converters' clean-up and the metrics deal with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docsam_cli.datasets import geometry
from docsam_cli.datasets.fields import JsonField, is_finite, is_number
from docsam_cli.datasets.report import REPORT_FILE
from docsam_cli.errors import InputError, WrongFormat


@dataclass
class CocoAnnotation:
    where: str  # the JSON path, e.g. "annotations[17]"
    category: str
    polygons: list[np.ndarray]  # (N, 2) float arrays as stated; empty for an RLE or a box alone
    rle: dict | None = None  # compressed RLE ({"size": [h, w], "counts": bytes})
    bbox: tuple[float, float, float, float] | None = None  # xywh as stated
    iscrowd: bool = False
    area: float | None = None
    score: float | None = None


@dataclass
class CocoImage:
    where: str
    id: int | str | None  # None when the id itself is broken (then `error` says so)
    file_name: str
    width: int | None
    height: int | None
    annotations: list[CocoAnnotation] = field(default_factory=list)
    # The image's path relative to the json, where it says (docsam's own `coco.json` does: `file_name` alone
    # cannot tell two scan.png of different folders apart).
    path: str | None = None
    # segment's `source` of an image it saved upright (`image/<id>.png`, no `page`): the input, relative to
    # the json, which is the image a ground truth names (`vol1/0001.jpg` turned by its EXIF orientation).
    source: str | None = None
    error: InputError | None = None  # the first problem of the entry or of one of its annotations

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) when the entry states both."""
        return (self.height, self.width) if self.width is not None and self.height is not None else None


@dataclass
class CocoDataset:
    path: Path
    categories: Categories
    images: list[CocoImage]
    errors: list[InputError]  # problems that belong to no single image
    # Annotations left out by the reference loader's rule (`loader_rules`): `problem`s naming each
    dropped: list[InputError] = field(default_factory=list)


class Categories:
    """Category id → class name. A string `category_id` may also be a class name (the reference's own
    results do that); with `any_name` every string is taken as a class name (results lists, whose classes
    `evaluate --map` may rename)."""

    def __init__(
        self,
        names: dict[int | str, str],
        *,
        any_name: bool = False,
        repeated: list[str] | None = None,
        groups: set[str] | None = None,
    ) -> None:
        self.names = names
        self.any_name = any_name
        self.repeated = repeated or []  # a warning for each category named as an earlier one
        # The categories that another category names as its `supercategory` (Roboflow's project, category 0)
        self.groups = groups or set()
        self._known = set(names.values())

    def resolve(self, category_id: JsonField) -> str:
        """The class name `category_id` stands for. Raises InputError."""
        key = category_id.identifier()
        name = self.names.get(key)
        if name is None and isinstance(key, str) and (self.any_name or key.strip() in self._known):
            name = key.strip()
        if name is None:
            raise category_id.problem(f"{key!r} is not the id of a category")
        return name


def read_dataset(path: Path, *, sizes_required: bool, loader_rules: bool = False) -> CocoDataset:
    """The COCO dataset `path`. Raises WrongFormat (no 'images' list: another kind of json) or InputError
    (a file no image of which can be used).

    `sizes_required`: whether every image must state `width` and `height` (ground truth: masks are made
    at that size) or may leave them out (conversion: the image file gives them). `loader_rules`: read a
    per-image json of the unified layout as the reference's loader (and training) reads it: an annotation's
    `poly` wins over its `segmentation`, one with neither a bbox of 4 values nor a segmentation is left
    out (`dropped`) rather than failing its image, image ids are compared as strings, as that loader
    converts them (an `image_id` of "1" is image 1's), and an annotation without one is the region of the
    json's one image (training reads every annotation of a page's json); a plain COCO file, where `poly`
    is no field, keeps `segmentation`.
    """
    root = JsonField.load(path)
    if _is_conversion_report(root):
        raise WrongFormat(path, f"convert-dataset's report ({REPORT_FILE}), not a COCO dataset")
    if not is_dataset(root):
        raise WrongFormat(path, "not a COCO dataset (no 'images' list)")
    return dataset_of(root, sizes_required=sizes_required, loader_rules=loader_rules)


def is_dataset(root: JsonField) -> bool:
    """Whether a parsed json looks like a COCO dataset (an object with 'images') rather than anything else."""
    return root.is_object() and root.get("images") is not None


def _is_conversion_report(root: JsonField) -> bool:
    """Whether a parsed json is convert-dataset's report, whose `images` is a count: a folder converted
    before holds one, and a COCO file with a malformed `images` stays an error."""
    images = root.get("images") if root.is_object() else None
    return root.file.name == REPORT_FILE and images is not None and is_number(images.value)


def dataset_of(
    root: JsonField, *, sizes_required: bool, loader_rules: bool = False, annotations: JsonField | None = None
) -> CocoDataset:
    """`read_dataset` of an already parsed json; `annotations`: a results list read in place of its
    annotations (segment's `coco_results.json`, whose image and category ids are those of its `coco.json`,
    as pycocotools' `loadRes` reads them)."""
    path = root.file
    entries = root["images"].items()
    categories = read_categories(root["categories"])
    images = [_image(entry, sizes_required) for entry in entries]
    by_id = _images_by_id(images, entries)
    ids_complete = all(image.id is not None for image in images)
    by_text = {str(identifier): image for identifier, image in by_id.items()} if loader_rules else {}
    errors: list[InputError] = []
    dropped: list[InputError] = []
    orphans: list[JsonField] = []
    if annotations is None:
        annotations = root.get("annotations")
    for annotation in annotations.items() if annotations is not None else []:
        try:
            if loader_rules and len(images) == 1 and annotation.get("image_id") is None:
                image = images[0]  # the region of the json's page, as the loader and training read it
            else:
                image_id = annotation["image_id"]
                image = by_id.get(image_id.identifier()) or by_text.get(str(image_id.identifier()))
        except InputError as error:
            errors.append(error)
            continue
        if image is None:
            orphans.append(image_id)
        elif loader_rules and _without_geometry(annotation):
            dropped.append(annotation.problem("neither a bbox of 4 values nor a segmentation"))
        elif image.error is None:
            try:
                image.annotations.append(read_annotation(annotation, categories, image.size, loader_rules))
            except InputError as error:
                name = image.file_name or f"id {image.id!r}"
                image.error = InputError(error.path, f"{error.reason} (its image {name} is left out)")
    if orphans and ids_complete:
        more = f" (and {len(orphans) - 1} more annotations)" if len(orphans) > 1 else ""
        errors.append(orphans[0].problem(f"{orphans[0].value!r} is not the id of an image{more}"))
    return CocoDataset(path, categories, images, errors, dropped)


def _images_by_id(images: list[CocoImage], entries: list[JsonField]) -> dict[int | str, CocoImage]:
    """The `images` read from `entries` by their usable ids (an image without one is in none: annotations
    cannot be checked against it). Raises InputError for an id two images share."""
    by_id: dict[int | str, CocoImage] = {}
    for image, entry in zip(images, entries, strict=True):
        if image.id in by_id:
            raise entry["id"].problem(f"{image.id!r} is the id of another image too")
        if image.id is not None:
            by_id[image.id] = image
    return by_id


def _without_geometry(annotation: JsonField) -> bool:
    """Whether an annotation has neither a bbox of 4 values nor a non-empty segmentation or `poly`, which
    the reference's loader drops (its first rule)."""
    bbox = annotation.get("bbox")
    shapes = (annotation.get("segmentation"), annotation.get("poly"))
    has_box = bbox is not None and bbox.is_list() and len(bbox.value) == 4
    return not has_box and not any(shape is not None and shape.value for shape in shapes)


def read_categories(field: JsonField) -> Categories:
    """The `categories` list. Raises InputError.

    Classes are names (the model's prompts), so two categories of one name are one class: pycocotools
    would keep them apart by id, so each later one is a warning naming the file and both ids
    (`Categories.repeated`)."""
    names: dict[int | str, str] = {}
    first_of: dict[str, int | str] = {}
    repeated: list[str] = []
    parents: set[str] = set()
    for category in field.items():
        identifier = category["id"].identifier()
        if identifier in names:
            raise category["id"].problem(f"{identifier!r} is the id of another category too")
        name = names[identifier] = category["name"].text()
        parent = category.get("supercategory")
        if parent is not None and isinstance(parent.value, str) and parent.value.strip() != name:
            parents.add(parent.value.strip())
        earlier = first_of.setdefault(name, identifier)
        if earlier != identifier:
            reason = (
                f"category {identifier!r} is named {name!r}, as category {earlier!r} is: classes are names"
            )
            reason += ", so both are one class"
            repeated.append(str(category["name"].problem(reason)))
    return Categories(names, repeated=repeated, groups=parents & set(names.values()))


def _image(entry: JsonField, sizes_required: bool) -> CocoImage:
    """An `images` entry; a broken one carries its error, and what could be read before it (an id of None:
    the id itself is broken; a file name of "": so is the file name)."""
    image = CocoImage(entry.where, None, "", None, None)
    try:
        image.id = entry["id"].identifier()
        image.file_name = entry["file_name"].text()
        stated = entry.get("path")
        if stated is not None and isinstance(stated.value, str) and stated.value.strip():
            image.path = stated.value.strip()  # other tools' path fields of other kinds are not docsam's
        source = entry.get("source")
        if source is not None and isinstance(source.value, str) and entry.get("page") is None:
            image.source = source.value.strip() or None  # a PDF's or TIFF's page names its file and page
        for key in ("width", "height"):
            value = entry[key] if sizes_required else entry.get(key)
            setattr(image, key, value.size() if value is not None else None)
    except InputError as error:
        image.error = error
    return image


def read_annotation(
    field: JsonField, categories: Categories, size: tuple[int, int] | None, loader_rules: bool = False
) -> CocoAnnotation:
    """One annotation or result on an image of `size` (height, width; None: unknown); `loader_rules`: as
    for `read_dataset` (the `poly` wins). Raises InputError."""
    category = categories.resolve(field["category_id"])
    segmentation = field.get("segmentation")
    poly = field.get("poly")  # a single flat polygon, as some exports name it
    if poly is not None and poly.value and (loader_rules or _empty(segmentation)):
        segmentation = poly
    polygons: list[np.ndarray] = []
    rle = None
    if segmentation is not None and segmentation.is_object():
        rle = read_rle(segmentation, size)
    elif segmentation is not None:
        polygons = read_polygons(segmentation)
    bbox = field.get("bbox")
    box = None if _empty(bbox) else read_bbox(bbox)  # `[]`, as VIA-to-COCO scripts write it: no bbox
    if not polygons and rle is None and box is None:
        raise field.problem("neither a segmentation nor a bbox")
    if box is not None and not polygons and rle is None and (degrees := _rotation(field)):
        # Its box is then its polygon's as it lies on the page (a turned corner may leave it), as for no bbox
        polygons, box = [geometry.turned_box(*box, degrees)], None
    optional = {key: field.get(key) for key in ("iscrowd", "area", "score")}
    return CocoAnnotation(
        field.where,
        category,
        polygons,
        rle,
        box,
        iscrowd=optional["iscrowd"].flag() if optional["iscrowd"] is not None else False,
        area=optional["area"].number(minimum=0) if optional["area"] is not None else None,
        score=optional["score"].number() if optional["score"] is not None else None,
    )


def _rotation(field: JsonField) -> float:
    """The turn of a rectangle, CVAT's `attributes.rotation` (degrees clockwise about its centre; its bbox
    is the rectangle before the turn); 0 where none is stated. Raises InputError."""
    attributes = field.get("attributes")
    rotation = attributes.get("rotation") if attributes is not None and attributes.is_object() else None
    return rotation.number() if rotation is not None else 0.0


def _empty(shape: JsonField | None) -> bool:
    """Whether a `segmentation`, `poly` or `bbox` is absent or an empty list (no shape)."""
    return shape is None or (shape.is_list() and not shape.value)


def read_polygons(field: JsonField) -> list[np.ndarray]:
    """`[[x1, y1, x2, y2, ...], ...]` or one flat `[x1, y1, ...]` → (N, 2) arrays. Raises InputError."""
    values = field.value
    if not isinstance(values, list):
        raise field.expected("a list of polygons or an RLE object")
    if values and all(is_number(value) for value in values):
        return [_polygon(field)]
    return [_polygon(polygon) for polygon in field.items()]


def _polygon(field: JsonField) -> np.ndarray:
    """One polygon; an empty one (`[[]]`, as some exporters write a box alone) is a polygon of no point,
    which gives way to the bbox as any of fewer than 3 points does."""
    values = field.value
    if not isinstance(values, list):
        raise field.expected("a polygon (a list of numbers x1, y1, x2, y2, ...)")
    if not all(is_finite(value) for value in values):
        for value in field.items():
            value.number()  # raises for the first value that is not a finite number
    if len(values) % 2:
        raise field.problem(f"odd number of coordinates ({len(values)})")
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def read_bbox(field: JsonField) -> tuple[float, float, float, float]:
    """`[x, y, width, height]` with a non-negative width and height. Raises InputError."""
    if not field.is_list() or len(field.value) != 4:
        raise field.expected("[x, y, width, height]")
    x, y, width, height = field.items()
    return x.number(), y.number(), width.number(minimum=0), height.number(minimum=0)


RLE_PIXELS = 2**32 - 1  # pycocotools counts a mask's pixels and runs in 32 bits


def read_rle(field: JsonField, size: tuple[int, int] | None) -> dict:
    """A COCO RLE as a compressed RLE; its size must be the image's when that is known. Raises InputError."""
    size_field = field["size"]
    if not size_field.is_list() or len(size_field.value) != 2:
        raise size_field.expected("[height, width]")
    height, width = (side.size() for side in size_field.items())
    if height * width > RLE_PIXELS:
        raise size_field.problem(f"{[height, width]}: more pixels than a COCO RLE holds ({RLE_PIXELS})")
    if size is not None and (height, width) != size:
        raise size_field.problem(f"{[height, width]} is not the image's [height, width] {list(size)}")
    counts = field["counts"]
    if isinstance(counts.value, str):
        total = sum(_decode_counts(counts))
        compressed = counts.value.encode("ascii")
    elif counts.is_list():
        runs = [run.count() for run in counts.items()]
        total = sum(runs)
        compressed = None
    else:
        raise counts.expected("a compressed RLE string or a list of run lengths")
    if total != height * width:
        raise counts.problem(f"runs add up to {total} pixels, not height x width = {height * width}")
    if compressed is None:
        from pycocotools import mask as mask_utils

        return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"size": [height, width], "counts": compressed}


def _decode_counts(field: JsonField) -> list[int]:
    """Run lengths of a compressed RLE string (pycocotools' 6-bit, delta-coded LEB128). Raises InputError.

    pycocotools trusts the string; a corrupt one would be decoded into a wrong mask, so it is checked here.
    """
    text: str = field.value
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                raise field.problem("the compressed RLE string ends inside a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise field.problem(f"character {text[position]!r} cannot be in a compressed RLE string")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise field.problem("the compressed RLE string holds a negative run length")
        runs.append(value)
    return runs
