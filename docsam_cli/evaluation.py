"""Metrics of the reference: COCO mask/box AP, mAF and mIoU, per class and overall.

`evaluate` is the one entry point: ground-truth images plus, per image, the predicted `PageInstances`
(read from `segment` outputs, or produced by running a model on the ground truth's images). Everything
is computed at the ground truth's resolution; predictions made at another size are rescaled to it.

* COCO AP via pycocotools with `maxDets = [40, 400, 4000]`; AP@[.5:.95], AP50 and AP75 are read from
  the accumulated precision at 4000 detections per image (stock `summarize` would report -1 for
  AP@[.5:.95] with these maxDets). Detections are all instances, with their RLE masks and their own
  (regressed) boxes; the detection area used by pycocotools comes from the box, as in the reference.
* mAF: per class, predictions with score >= 0.5 and ground truth are matched one-to-one by maximal mask
  IoU (Hungarian: scipy's algorithm, in `docsam_cli.assignment`); for t in 0.50:0.05:0.95,
  F1_t = 2 TP_t / (GT + predictions), counts summed over images; a class scores the mean F1_t; mAF is
  the mean over classes with ground truth or predictions (None without any, as AP without ground truth).
* mIoU: per class, pixel counts summed over images of the ground-truth union and the predicted semantic
  map; IoU = intersection / union; mean over classes with pixels in either (None without any). Pixels of
  the class's crowd (ignore) regions outside its other ground truth are void: in neither count.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from docsam_cli.assignment import linear_sum_assignment
from docsam_cli.datasets.classes import clean_name
from docsam_cli.datasets.geometry import resize_rle
from docsam_cli.names import output_text

if TYPE_CHECKING:  # metrics only read PageInstances' fields
    from docsam_cli.errors import InputError
    from model.instances import PageInstances

MAX_DETS = (40, 400, 4000)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
F1_SCORE_THRESHOLD = 0.5


@dataclass
class GtAnnotation:
    category: str
    rle: dict  # COCO RLE at the image's size
    bbox: tuple[float, float, float, float]  # xywh
    iscrowd: bool = False
    area: float | None = None  # as stated by the source (pycocotools' area ranges); None: mask area


@dataclass
class GtImage:
    # Predictions are matched on this key: the image file's stem; where pages read by a converter share one
    # (vol1/0001.tif, vol2/0001.tif), the end of the image's path that tells it apart (vol1/0001)
    name: str
    height: int
    width: int
    annotations: list[GtAnnotation]
    image: Path | None = None  # the page image when it was found: what a model run would segment
    missing: InputError | None = None  # when `image` is None: the file named and where it was looked for


@dataclass
class ClassScores:
    gt: int = 0
    predictions: int = 0
    ap: float | None = None  # mask AP@[.5:.95]; None when the class has no ground truth
    ap50: float | None = None
    ap75: float | None = None
    box_ap: float | None = None
    box_ap50: float | None = None
    box_ap75: float | None = None
    f1: float | None = None  # the class's mAF term; None without ground truth and predictions
    iou: float | None = None  # semantic IoU; None without pixels in either


@dataclass
class EvaluationResult:
    images: int
    classes: list[str]
    mask: dict[str, float | None]  # AP, AP50, AP75 (None without any ground truth)
    box: dict[str, float | None]
    maf: float | None  # None without any class to average
    miou: float | None
    per_class: dict[str, ClassScores]
    images_without_predictions: list[str] = field(default_factory=list)
    predictions_without_ground_truth: list[str] = field(default_factory=list)  # predicted pages not scored
    rescaled_predictions: int = 0  # pages predicted at another size than the ground truth
    ignored_predictions: dict[str, int] = field(default_factory=dict)  # class → count, not in the GT

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "classes": self.classes,
            "mask": self.mask,
            "box": self.box,
            "mAF": self.maf,
            "mIoU": self.miou,
            "per_class": {name: vars(scores) for name, scores in self.per_class.items()},
            # page keys are file names: a byte that is not UTF-8 percent-encoded, as segment writes it
            "images_without_predictions": list(map(output_text, self.images_without_predictions)),
            "predictions_without_ground_truth": list(map(output_text, self.predictions_without_ground_truth)),
            "rescaled_predictions": self.rescaled_predictions,
            "ignored_predictions": self.ignored_predictions,
        }


def evaluate(
    ground_truth: Sequence[GtImage],
    predictions: Mapping[str, PageInstances],
    class_map: Mapping[str, str] | None = None,
    declared: Collection[str] = (),
) -> EvaluationResult:
    """Score `predictions` (by image key) against `ground_truth`.

    The ground truth's classes are those of its annotations and the `declared` ones (a COCO file's
    categories, which may have no instance in the images scored: predictions of them are false positives).
    `class_map` renames prediction classes to ground-truth classes; predicted classes that are not
    ground-truth classes afterwards are ignored and counted in `ignored_predictions`. Only classes with
    ground truth or predictions (instances, or pixels of a semantic map: a model's may paint a class that
    no instance predicts, which costs its mIoU term as in the reference) are reported and averaged.
    Predicted pages that are no ground-truth image are not scored, and listed in
    `predictions_without_ground_truth`. Class names on both sides are compared as `convert-dataset` writes
    them (`classes.clean_name`: blanks inside a name as one space), as `class_map` gives them.
    """
    class_map = dict(class_map or {})
    ground_truth = [_named_as_converted(image) for image in ground_truth]
    known = {a.category for image in ground_truth for a in image.annotations} | set(map(clean_name, declared))
    result = EvaluationResult(len(ground_truth), [], {}, {}, None, None, {})
    result.predictions_without_ground_truth = sorted(
        predictions.keys() - {image.name for image in ground_truth}
    )
    matched = [
        (image, _predicted_page(image, predictions, class_map, known, result)) for image in ground_truth
    ]
    result.per_class = _reported_classes(matched, known)
    result.classes = classes = list(result.per_class)
    _coco_ap(matched, classes, result)
    _mean_f1(matched, classes, result)
    _mean_iou(matched, classes, result)
    return result


def _predicted_page(
    image: GtImage,
    predictions: Mapping[str, PageInstances],
    class_map: Mapping[str, str],
    known: set[str],
    result: EvaluationResult,
) -> _Predicted:
    """The prediction of the ground-truth `image`, at its size: none where no page was predicted (listed in
    `result.images_without_predictions`), classes renamed by `class_map` and those not `known` counted as
    ignored, a page predicted at another size rescaled (and counted)."""
    page = predictions.get(image.name)
    if page is None:
        result.images_without_predictions.append(image.name)
        return _Predicted([], [], np.zeros((0, 4)), np.zeros(0), {})
    predicted = _Predicted.of(page, class_map, known, result.ignored_predictions)
    if (page.height, page.width) != (image.height, image.width):
        predicted = predicted.rescaled(page.height, page.width, image.height, image.width)
        result.rescaled_predictions += 1
    return predicted


def _reported_classes(matched: _Matched, known: set[str]) -> dict[str, ClassScores]:
    """The `known` classes with ground truth or predictions in `matched`, instances or pixels of a semantic
    map (a model's may paint a class no instance predicts), each with its counts, by name."""
    per_class = {name: ClassScores() for name in sorted(known)}
    painted: set[str] = set()
    for image, predicted in matched:
        for annotation in image.annotations:
            per_class[annotation.category].gt += 1
        for category in predicted.categories:
            per_class[category].predictions += 1
        painted |= {name for name, rle in predicted.semantic.items() if mask_utils.area(rle)}
    return {
        name: scores
        for name, scores in per_class.items()
        if scores.gt or scores.predictions or name in painted
    }


def _named_as_converted(image: GtImage) -> GtImage:
    """`image` with its annotations' class names as `convert-dataset` writes them (`classes.clean_name`)."""
    annotations = [
        replace(annotation, category=clean_name(annotation.category)) for annotation in image.annotations
    ]
    return replace(image, annotations=annotations)


@dataclass
class _Predicted:
    """A page's predictions restricted to ground-truth classes, with their semantic maps by class."""

    categories: list[str]
    masks: list[dict]
    boxes: np.ndarray  # xyxy
    scores: np.ndarray
    semantic: dict[str, dict]

    @classmethod
    def of(
        cls, page: PageInstances, class_map: dict[str, str], classes: set[str], ignored: dict[str, int]
    ) -> _Predicted:
        names = [class_map.get(name, name) for name in map(clean_name, page.class_names)]
        keep, categories = [], []
        for index, label in enumerate(page.labels):
            name = names[int(label)]
            if name in classes:
                keep.append(index)
                categories.append(name)
            else:
                ignored[name] = ignored.get(name, 0) + 1
        semantic: dict[str, list[dict]] = {}
        for name, rle in zip(names, page.semantic_masks, strict=True):
            if name in classes:
                semantic.setdefault(name, []).append(rle)
        return cls(
            categories,
            [page.masks[i] for i in keep],
            np.asarray(page.boxes, dtype=np.float64).reshape(-1, 4)[keep],
            np.asarray(page.scores, dtype=np.float64)[keep],
            {name: mask_utils.merge(rles) for name, rles in semantic.items()},
        )

    def rescaled(self, height: int, width: int, new_height: int, new_width: int) -> _Predicted:
        """Masks resampled (nearest) from `height` x `width` to the new size, boxes scaled likewise."""
        factor = np.array([new_width / width, new_height / height] * 2)
        return _Predicted(
            self.categories,
            [resize_rle(rle, new_height, new_width) for rle in self.masks],
            self.boxes * factor,
            self.scores,
            {name: resize_rle(rle, new_height, new_width) for name, rle in self.semantic.items()},
        )


_Matched: TypeAlias = list[tuple[GtImage, _Predicted]]


def _coco_ap(matched: _Matched, classes: list[str], result: EvaluationResult) -> None:
    category_ids = {name: index + 1 for index, name in enumerate(classes)}
    images, annotations, detections = [], [], []
    for image_id, (image, predicted) in enumerate(matched, start=1):
        images.append({"id": image_id, "height": image.height, "width": image.width})
        for annotation in image.annotations:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[annotation.category],
                    "segmentation": annotation.rle,
                    "bbox": list(annotation.bbox),
                    "area": float(
                        annotation.area if annotation.area is not None else mask_utils.area(annotation.rle)
                    ),
                    "iscrowd": int(annotation.iscrowd),
                }
            )
        for category, rle, box, score in zip(
            predicted.categories, predicted.masks, predicted.boxes, predicted.scores, strict=True
        ):
            x0, y0, x1, y1 = (float(v) for v in box)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[category],
                    "segmentation": rle,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    categories = [{"id": i, "name": name} for name, i in category_ids.items()]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = _coco({"images": images, "annotations": annotations, "categories": categories})
        dt = gt.loadRes(detections) if detections else _coco({"images": images, "categories": categories})
        for iou_type, target in (("segm", result.mask), ("bbox", result.box)):
            precision = _precision(gt, dt, iou_type)
            target.update(_summary(precision))
            for index, name in enumerate(classes):
                scores = _summary(precision[:, :, index : index + 1])
                prefix = "" if iou_type == "segm" else "box_"
                for key, value in scores.items():
                    setattr(result.per_class[name], f"{prefix}{key.lower()}", value)


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = {"annotations": [], **dataset}
    coco.createIndex()
    return coco


def _precision(gt: COCO, dt: COCO, iou_type: str) -> np.ndarray:
    """Precision [T, R, K] at area 'all' and maxDets 4000."""
    evaluator = COCOeval(gt, dt, iou_type)
    evaluator.params.maxDets = list(MAX_DETS)
    evaluator.evaluate()
    evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]


def _summary(precision: np.ndarray) -> dict[str, float | None]:
    """AP@[.5:.95], AP50, AP75 as pycocotools' summarize averages them (entries of -1 left out)."""

    def mean(values: np.ndarray) -> float | None:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else None

    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}


def _mean_f1(matched: _Matched, classes: list[str], result: EvaluationResult) -> None:
    """F1 per IoU threshold of a one-to-one matching; crowd (ignore) regions are no ground truth, and a
    prediction left unmatched on one is no false positive, as COCO's evaluation ignores it."""
    true_positives = {name: np.zeros(len(IOU_THRESHOLDS)) for name in classes}
    counts = {name: np.zeros(len(IOU_THRESHOLDS)) for name in classes}
    for image, predicted in matched:
        for name in classes:
            gt = [a.rle for a in image.annotations if a.category == name and not a.iscrowd]
            crowd = [a.rle for a in image.annotations if a.category == name and a.iscrowd]
            dt = [
                rle
                for rle, category, score in zip(
                    predicted.masks, predicted.categories, predicted.scores, strict=True
                )
                if category == name and score >= F1_SCORE_THRESHOLD
            ]
            hits = np.zeros((len(IOU_THRESHOLDS), len(dt)), dtype=bool)  # threshold × prediction
            if gt and dt:
                ious = np.asarray(mask_utils.iou(dt, gt, [0] * len(gt))).reshape(len(dt), len(gt))
                rows, cols = linear_sum_assignment(ious, maximize=True)
                hits[:, rows] = ious[rows, cols][None, :] >= IOU_THRESHOLDS[:, None]
            ignored = _on_crowd_regions(dt, crowd) & ~hits
            true_positives[name] += hits.sum(axis=1)
            counts[name] += len(gt) + len(dt) - ignored.sum(axis=1)
    terms = []
    for name in classes:
        if counts[name].any():
            f1 = float(np.mean(2 * true_positives[name] / np.maximum(counts[name], 1)))
            result.per_class[name].f1 = f1
            terms.append(f1)
    result.maf = float(np.mean(terms)) if terms else None


def _on_crowd_regions(dt: list[dict], crowd: list[dict]) -> np.ndarray:
    """threshold × prediction: whether the prediction lies on a crowd region at that IoU threshold (COCO's
    crowd IoU, the intersection over the prediction's area)."""
    if not dt or not crowd:
        return np.zeros((len(IOU_THRESHOLDS), len(dt)), dtype=bool)
    ious = np.asarray(mask_utils.iou(dt, crowd, [1] * len(crowd))).reshape(len(dt), len(crowd))
    return ious.max(axis=1)[None, :] >= IOU_THRESHOLDS[:, None]


def _mean_iou(matched: _Matched, classes: list[str], result: EvaluationResult) -> None:
    """Pixel IoU per class, counts summed over images; a crowd (ignore) region's pixels outside the class's
    other ground truth are void, counted neither as ground truth nor as predicted, as AP and mAF ignore it."""
    pixels = {name: np.zeros(3) for name in classes}  # ground truth, predicted, intersection
    for image, predicted in matched:
        for name in classes:
            gt = _union([a.rle for a in image.annotations if a.category == name and not a.iscrowd])
            crowd = _union([a.rle for a in image.annotations if a.category == name and a.iscrowd])
            pixels[name] += _semantic_counts(gt, predicted.semantic.get(name), crowd)
    terms = []
    for name in classes:
        a, b, c = pixels[name]
        if a + b > 0:
            iou = float(c / max(a + b - c, 1))
            result.per_class[name].iou = iou
            terms.append(iou)
    result.miou = float(np.mean(terms)) if terms else None


def _union(rles: list[dict]) -> dict | None:
    return mask_utils.merge(rles) if rles else None


def _semantic_counts(gt: dict | None, dt: dict | None, crowd: dict | None) -> list[int]:
    """Pixels of the ground truth, of the prediction outside the void (crowd minus ground truth), and of
    their intersection, from areas of RLE intersections: no page is decoded."""
    void_predicted = _overlap(dt, crowd) - _overlap(dt, crowd, gt)
    return [_overlap(gt), _overlap(dt) - void_predicted, _overlap(gt, dt)]


def _overlap(*rles: dict | None) -> int:
    """Pixels common to all `rles` (0 if one is None)."""
    if any(rle is None for rle in rles):
        return 0
    return int(mask_utils.area(mask_utils.merge(list(rles), intersect=True)))
