"""Per-image COCO annotations as the reference's training dataset reads them (its `_coco_data_rectify`).

One COCO json per image (`coco/<stem>.json` of the unified layout). `rectify` applies the reference's
`_coco_data_rectify` in its order: drop annotations with neither box nor polygon, accept `poly` and string
category ids, drop `_background_` (and `text word` when `table` exists), sort the category names (Python
order) — that order defines the labels — clamp boxes and polygons into the image, derive a missing box from
the polygons or a missing polygon from the box. An annotation whose category is none of the listed ones is
an AnnotationError (the reference drops it without a word), and an RLE segmentation (which the reference
cannot read) is traced to its outlines as `convert-dataset` traces it. `PageAnnotations.scaled` then maps the
coordinates onto the decoded image and sorts the instances by polygon area, largest first (the GT order the
matcher sees; it is not re-sorted after augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from docsam_cli.datasets.classes import BACKGROUND, dropped_by_loader
from docsam_cli.datasets.coco_json import read_rle
from docsam_cli.datasets.fields import JsonField
from docsam_cli.errors import InputError
from docsam_cli.polygons import rle_contours


class AnnotationError(ValueError):
    """A COCO json that the training data cannot use (the message says why)."""


@dataclass(frozen=True)
class Instance:
    """One annotated region: label index into the page's sorted class names, xyxy box, polygons, area."""

    label: int
    box: np.ndarray  # (4,) float64 x1, y1, x2, y2
    polygons: tuple[np.ndarray, ...]  # each (K, 2) float64 x, y
    area: float  # sum of the polygons' areas (shoelace, like cv2.contourArea)

    def transformed(self, scale: tuple[float, float], offset: tuple[float, float] = (0.0, 0.0)) -> Instance:
        """Scale by (sx, sy), then subtract the offset (x, y); the area is recomputed."""
        factor = np.array(scale, dtype=np.float64)
        shift = np.array(offset, dtype=np.float64)
        polygons = tuple(points * factor - shift for points in self.polygons)
        box = self.box * np.tile(factor, 2) - np.tile(shift, 2)
        return replace(self, box=box, polygons=polygons, area=polygons_area(polygons))


@dataclass(frozen=True)
class PageAnnotations:
    """A rectified per-image json: its image size, sorted class names (no background) and instances."""

    height: int
    width: int
    class_names: tuple[str, ...]
    instances: tuple[Instance, ...]

    def scaled(self, height: int, width: int) -> PageAnnotations:
        """Coordinates for the decoded image size, instances sorted by area (descending, stable)."""
        scale = (width / self.width, height / self.height)
        instances = [instance.transformed(scale) for instance in self.instances]
        instances.sort(key=lambda instance: instance.area, reverse=True)
        return replace(self, height=height, width=width, instances=tuple(instances))


def polygons_area(polygons: Sequence[np.ndarray]) -> float:
    """Sum of the absolute shoelace areas; fewer than 3 points count 0."""
    total = 0.0
    for points in polygons:
        if len(points) >= 3:
            x, y = points[:, 0], points[:, 1]
            total += abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
    return total


def category_count(coco: Mapping[str, Any]) -> int:
    """Non-background categories of a json as listed (the class count behind the reference's dataset
    sampling probabilities)."""
    return sum(category.get("name") != BACKGROUND for category in coco.get("categories", []))


def rectify(coco: Mapping[str, Any]) -> PageAnnotations:
    """Clean a per-image COCO dict as `_coco_data_rectify` does (the steps in the module docstring).
    Raises AnnotationError on unusable input."""
    try:
        image = coco["images"][0]
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:  # OverflowError: Infinity
        raise AnnotationError(f"no usable images[0].height/width ({error})") from None
    if height <= 0 or width <= 0:
        raise AnnotationError(f"image size {width}x{height} is empty")

    names_by_id = _names_by_id(coco)
    dropped = dropped_by_loader(names_by_id.values())
    # A name listed under several ids is one class: the reference prompts it twice, two identical columns
    # of which the loss cannot tell the right one.
    class_names = tuple(sorted({name for name in names_by_id.values() if name not in dropped}))
    label_of_name = {name: index for index, name in enumerate(class_names)}

    instances = []
    for annotation in coco.get("annotations", []):
        polygons = _polygons(annotation, (height, width))
        box = annotation.get("bbox")
        has_box = isinstance(box, list | tuple) and len(box) == 4
        if not has_box and not polygons:
            continue
        name = _category_name(annotation, names_by_id)
        if name not in label_of_name:
            if name not in names_by_id.values():  # not the background or a class left out on purpose
                raise AnnotationError(
                    f"annotation {annotation.get('id')}: category_id {annotation.get('category_id')!r} is "
                    "none of the categories"
                )
            continue
        polygons = [_clamp_points(points, width, height) for points in polygons]
        xyxy = _clamp_box(_box_numbers(annotation), width, height) if has_box else _bounding_rect(polygons)
        if not polygons:
            x1, y1, x2, y2 = xyxy
            polygons = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)]
        instances.append(Instance(label_of_name[name], xyxy, tuple(polygons), polygons_area(polygons)))
    return PageAnnotations(height, width, class_names, tuple(instances))


def _names_by_id(coco: Mapping[str, Any]) -> dict[Any, str]:
    try:
        return {category["id"]: category["name"] for category in coco.get("categories", [])}
    except (KeyError, TypeError) as error:
        raise AnnotationError(f"a category without a usable id and name ({error!r})") from None


def _category_name(annotation: Mapping[str, Any], names_by_id: Mapping[Any, str]) -> str | None:
    """The annotation's category name: a string `category_id` is the name itself (the reference accepts
    both); an id that cannot be a key (a list, a dict) is an AnnotationError, not a TypeError."""
    category = annotation.get("category_id")
    if isinstance(category, str):
        return category
    try:
        return names_by_id.get(category)
    except TypeError:
        raise AnnotationError(f"annotation {annotation.get('id')}: bad category_id {category!r}") from None


def _box_numbers(annotation: Mapping[str, Any]) -> tuple[float, ...]:
    """The four numbers of the annotation's `bbox` (x, y, w, h); a value that is not a number is an
    AnnotationError naming the annotation (the caller adds the json's path)."""
    box = annotation["bbox"]
    try:
        numbers = tuple(float(value) for value in box)
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: a whole number no float holds
        raise AnnotationError(f"annotation {annotation.get('id')}: bad bbox {box!r} ({error})") from None
    if not all(math.isfinite(number) for number in numbers):  # Python's json reads NaN and Infinity
        raise AnnotationError(f"annotation {annotation.get('id')}: bad bbox {box!r} (not a finite number)")
    return numbers


def _polygons(annotation: Mapping[str, Any], size: tuple[int, int]) -> list[np.ndarray]:
    segmentation = annotation.get("segmentation")
    if annotation.get("poly"):  # the reference's loader takes it over `segmentation`
        segmentation = [annotation["poly"]]
    if isinstance(segmentation, dict):
        return _rle_polygons(annotation, segmentation, size)
    if not isinstance(segmentation, list):
        return []
    try:
        polygons = [np.asarray(flat, dtype=np.float64).reshape(-1, 2) for flat in segmentation if len(flat)]
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: a whole number no float holds
        raise AnnotationError(f"annotation {annotation.get('id')}: bad polygon ({error})") from None
    if not all(np.isfinite(polygon).all() for polygon in polygons):
        raise AnnotationError(f"annotation {annotation.get('id')}: bad polygon (not a finite number)")
    return polygons


def _rle_polygons(
    annotation: Mapping[str, Any], segmentation: Mapping[str, Any], size: tuple[int, int]
) -> list[np.ndarray]:
    """The outlines of an RLE mask, traced as `convert-dataset` traces them (the reference reads polygons
    only, and `evaluate` and `--val` read the mask itself): an RLE is not left to its bbox's rectangle.
    Raises AnnotationError for an RLE that cannot be read or is not of the image's size."""
    field = JsonField(Path("json"), segmentation, "segmentation")
    try:
        rle = read_rle(field, size)
    except InputError as error:
        raise AnnotationError(f"annotation {annotation.get('id')}: bad RLE ({error.reason})") from None
    return rle_contours(rle)


def _clamp_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack([points[:, 0].clip(0, width - 1), points[:, 1].clip(0, height - 1)], axis=1)


def _clamp_box(box: Sequence[float], width: int, height: int) -> np.ndarray:
    x, y, w, h = box
    x1, y1 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    x2, y2 = min(max(x + w, 0.0), width - 1.0), min(max(y + h, 0.0), height - 1.0)
    return np.array([x1, y1, max(x2, x1), max(y2, y1)], dtype=np.float64)


def _bounding_rect(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """The reference uses `cv2.boundingRect` (integer points: width = max − min + 1); fractional points
    (which make the reference fail) get their exact extent."""
    points = np.concatenate(polygons)
    low, high = points.min(0), points.max(0)
    if np.all(points == np.round(points)):
        high = high + 1
    return np.array([low[0], low[1], high[0], high[1]], dtype=np.float64)
