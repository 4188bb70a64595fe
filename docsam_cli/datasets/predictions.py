"""Predictions for `evaluate` from files: COCO (dataset-style or results list) or PAGE → `PageInstances`.

Files carry no semantic maps, so a class's semantic map is taken as the union of its instances with
score >= 0.5 (the score the reference uses to draw instances). Model runs hand `PageInstances` with
the model's own voted semantic maps to `evaluate` directly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

from docsam_cli.datasets import geometry
from docsam_cli.datasets.convert import FORMATS, source_files
from docsam_cli.datasets.convert.base import load_json
from docsam_cli.datasets.convert.page import read_page
from docsam_cli.datasets.ground_truth import GroundTruth
from docsam_cli.errors import InputError, WrongFormat

if TYPE_CHECKING:
    from model.instances import PageInstances

PRED_FORMATS = ("auto", "coco", "page")
SEMANTIC_SCORE = 0.5


@dataclass
class PredictedInstance:
    """One predicted instance as files describe it (what `page_instances` assembles into a page)."""

    category: str
    rle: dict
    box: tuple[float, float, float, float]  # xyxy
    score: float


@dataclass
class Predictions:
    pages: dict[str, PageInstances] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if path.suffix.lower() == ".xml" or (path.is_dir() and any(path.rglob("*.xml"))):
        return "page"
    raise ValueError(f"cannot tell the format of {path}")


def page_instances(height: int, width: int, entries: list[PredictedInstance]) -> PageInstances:
    """PageInstances of entries, sorted by mask area (largest first) as the pipeline sorts them."""
    from model.instances import PageInstances  # imported here: the `model` package loads torch

    class_names = sorted({entry.category for entry in entries})
    areas = [float(mask_utils.area(entry.rle)) for entry in entries]
    order = sorted(range(len(entries)), key=lambda i: -areas[i])
    entries = [entries[i] for i in order]
    semantic = []
    for name in class_names:
        rles = [e.rle for e in entries if e.category == name and e.score >= SEMANTIC_SCORE]
        semantic.append(mask_utils.merge(rles) if rles else _empty_rle(height, width))
    return PageInstances(
        height,
        width,
        class_names,
        [entry.rle for entry in entries],
        np.asarray([entry.box for entry in entries], dtype=np.float64).reshape(-1, 4),
        np.asarray([entry.score for entry in entries], dtype=np.float64),
        np.asarray([class_names.index(entry.category) for entry in entries], dtype=np.int64),
        semantic,
    )


def _empty_rle(height: int, width: int) -> dict:
    return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))


def load_predictions(path: Path, fmt: str, truth: GroundTruth, levels: frozenset[str]) -> Predictions:
    """Predictions in `fmt` ("coco" or "page"), matched to the ground truth's image keys."""
    return _from_coco(path, truth) if fmt == "coco" else _from_page(path, truth, levels)


def _from_coco(path: Path, truth: GroundTruth) -> Predictions:
    """A COCO dataset with scored annotations (segment's run file), or a COCO results list.

    Results lists name images by `file_name` when they have one, else by the ground truth's image ids;
    `category_id` may be a ground-truth category id or a class name.
    """
    data = load_json(path)
    sizes = {image.name: (image.height, image.width) for image in truth.images}
    predictions = Predictions()
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        keys = {
            image.get("id"): Path(str(image.get("file_name", "")).replace("\\", "/")).stem
            for image in data["images"]
            if isinstance(image, dict)
        }
        for image in data["images"]:
            if isinstance(image, dict) and image.get("height") and image.get("width"):
                sizes[keys[image.get("id")]] = (int(image["height"]), int(image["width"]))
        names = {c.get("id"): str(c.get("name", "")).strip() for c in data.get("categories") or []}
        results = data.get("annotations") or []
    elif isinstance(data, list):
        keys, names, results = truth.image_keys, truth.category_names, data
    else:
        raise InputError(path, "neither a COCO dataset nor a COCO results list")
    by_key: dict[str, list[PredictedInstance]] = defaultdict(list)
    for index, result in enumerate(results):
        entry, key = _coco_entry(result, keys, names, sizes)
        if isinstance(entry, str):
            predictions.errors.append(InputError(path, f"prediction {index + 1}: {entry}"))
        else:
            by_key[key].append(entry)
    for key, entries in by_key.items():
        height, width = sizes[key]
        predictions.pages[key] = page_instances(height, width, entries)
    for key in keys.values():  # images with no prediction at all were still predicted
        if key in sizes and key not in predictions.pages:
            predictions.pages[key] = page_instances(*sizes[key], [])
    return predictions


def _coco_entry(
    result: object, keys: dict, names: dict, sizes: dict[str, tuple[int, int]]
) -> tuple[PredictedInstance | str, str]:
    if not isinstance(result, dict):
        return "not an object", ""
    key = Path(str(result["file_name"])).stem if result.get("file_name") else keys.get(result.get("image_id"))
    if key is None or key not in sizes:
        return f"unknown image {result.get('file_name') or result.get('image_id')!r}", ""
    category = result.get("category_id")
    category = category if isinstance(category, str) else names.get(category)
    if not category:
        return f"unknown category {result.get('category_id')!r}", key
    height, width = sizes[key]
    segmentation = result.get("segmentation")
    bbox = result.get("bbox")
    try:
        if isinstance(segmentation, dict):
            rle = segmentation
            if isinstance(rle.get("counts"), list):
                rle = mask_utils.frPyObjects(rle, *rle["size"])
        elif isinstance(segmentation, list) and segmentation:
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(bbox, list) and len(bbox) == 4:
            x, y, w, h = bbox
            rle = geometry.polygons_rle([geometry.box_polygon(x, y, x + w, y + h)], height, width)
        else:
            return "neither segmentation nor bbox", key
    except (TypeError, ValueError, KeyError) as error:
        return f"unusable segmentation ({error})", key
    if tuple(rle["size"]) != (height, width):
        return f"mask size {rle['size']} differs from the image's {[height, width]}", key
    if not (isinstance(bbox, list) and len(bbox) == 4):
        bbox = mask_utils.toBbox(rle).tolist()
    x, y, w, h = (float(v) for v in bbox)
    score = result.get("score", 1.0)
    score = float(score) if isinstance(score, Real) else 1.0
    return PredictedInstance(category, rle, (x, y, x + w, y + h), score), key


def _from_page(path: Path, truth: GroundTruth, levels: frozenset[str]) -> Predictions:
    """PAGE files (one per page), matched on their imageFilename; `Coords/@conf` is the score.

    Points are pixel positions (the writer traces mask boundaries through pixel centres), so they are
    rasterised with their boundary included, which gives the written masks back.
    """
    sizes = {image.name: (image.height, image.width) for image in truth.images}
    root, files, _ = source_files(path, FORMATS["page"])
    predictions = Predictions()
    for file in files:
        try:
            page = read_page(file, root, levels)
        except WrongFormat as error:  # a METS or other XML beside the PAGE files is fine
            if path.is_file():
                predictions.errors.append(error)
            continue
        except InputError as error:
            predictions.errors.append(error)
            continue
        size = (page.height, page.width) if page.width is not None else sizes.get(page.key)
        if size is None:
            predictions.errors.append(InputError(file, "page size unknown"))
            continue
        height, width = size
        entries = []
        for instance in page.instances:
            polygons = [p for p in instance.polygons if len(p) >= 3]
            if not polygons:
                continue
            x, y, w, h = geometry.polygons_bbox(polygons)
            rle = geometry.fill_polygons(polygons, height, width)
            score = instance.score if instance.score is not None else 1.0
            entries.append(PredictedInstance(instance.category, rle, (x, y, x + w, y + h), score))
        predictions.pages[page.key] = page_instances(height, width, entries)
    return predictions
