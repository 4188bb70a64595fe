"""Builders and checks shared by the writer tests."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from model.instances import PageInstances


def rect_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Bool mask with pixels x0..x1-1, y0..y1-1 set."""
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def raster(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool mask of the polygon `points` ((N, 2) x, y; truncated to whole pixels) filled as OpenCV does."""
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.asarray(points, dtype=np.int32).reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def coco_masks(document: dict, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """(class name, mask of its first polygon) of each annotation of a COCO document."""
    names = {category["id"]: category["name"] for category in document["categories"]}
    return [
        (names[a["category_id"]], raster(np.reshape(a["segmentation"][0], (-1, 2)), height, width))
        for a in document["annotations"]
    ]


def assert_same_masks(
    read: list[tuple[str, np.ndarray]], written: list[tuple[str, np.ndarray]], where: str = ""
) -> None:
    """`read` names each class as often as `written`, and each written mask has a read one of its class
    that matches it (IoU at least 0.99)."""
    assert Counter(name for name, _ in read) == Counter(name for name, _ in written), where
    for name, mask in written:
        ious = [
            float((mask & other).sum() / (mask | other).sum())
            for other_name, other in read
            if other_name == name
        ]
        assert max(ious) >= 0.99, (where, name)


def make_instances(
    masks: Sequence[np.ndarray],
    labels: Sequence[int],
    class_names: Sequence[str],
    scores: Sequence[float] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
) -> PageInstances:
    """PageInstances as the pipeline hands them over: RLE masks (bytes counts), boxes from the masks
    unless given, semantic masks as the union per class."""
    height, width = masks[0].shape if masks else (0, 0)
    rles = [mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))) for mask in masks]
    if boxes is None:
        boxes = [_mask_box(mask) for mask in masks]
    semantic = []
    for label in range(len(class_names)):
        union = np.zeros((height, width), dtype=np.uint8)
        for mask, mask_label in zip(masks, labels, strict=True):
            if mask_label == label:
                union |= mask.astype(np.uint8)
        semantic.append(mask_utils.encode(np.asfortranarray(union)))
    return PageInstances(
        height=height,
        width=width,
        class_names=list(class_names),
        masks=rles,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        scores=np.asarray(scores if scores is not None else [0.9] * len(masks), dtype=np.float64),
        labels=np.asarray(labels, dtype=np.int64),
        semantic_masks=semantic,
    )


def empty_instances(height: int, width: int, class_names: Sequence[str]) -> PageInstances:
    return PageInstances(
        height=height,
        width=width,
        class_names=list(class_names),
        masks=[],
        boxes=np.zeros((0, 4)),
        scores=np.zeros(0),
        labels=np.zeros(0, dtype=np.int64),
        semantic_masks=[],
    )


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def publaynet_instances(shared_data: Path) -> tuple[dict, PageInstances]:
    """The most crowded PubLayNet page's human annotations (text, title, list, table, figure) as
    instances, with its COCO image entry."""
    folder = shared_data / "pages" / "publaynet"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(folder / "annotations.json"))
    image = max(coco.loadImgs(coco.getImgIds()), key=lambda img: len(coco.getAnnIds(imgIds=img["id"])))
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
    categories = coco.loadCats(coco.getCatIds())
    label_of = {category["id"]: index for index, category in enumerate(categories)}
    masks = [coco.annToMask(annotation).astype(bool) for annotation in annotations]
    labels = [label_of[annotation["category_id"]] for annotation in annotations]
    return image, make_instances(masks, labels, [category["name"] for category in categories])
