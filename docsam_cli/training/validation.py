"""Validation during training through `docsam evaluate`'s code: its ground-truth reader and metrics, with
predictions from the inference pipeline `segment` uses.

The reference validates every 200 iterations on 10 training-style random crops per set, each predicted
whole (a noisy measure). Here the first `max_images` pages of each validation split go through the
sliding-window pipeline (`model.inference`, at the test-time size of the training geometry) and are scored
by `docsam_cli.evaluation.evaluate` (COCO mask AP at 4000 detections, mAF, mIoU). Metrics are reported per
set (`<name>/mAP` ...; sets of the same name told apart as `<name>#2`, `<name>#3` ...) and as unweighted
means over the sets (`mAP`, `AP50`, `AP75`, `mAF`, `mIoU`), as the reference averages its datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from docsam_cli.datasets.ground_truth import GtImage, split_ground_truth
from docsam_cli.errors import InputError
from docsam_cli.evaluation import evaluate
from docsam_cli.model_evaluation import as_written
from docsam_cli.training.datasets import DatasetError, LayoutDataset
from docsam_cli.training.settings import METRICS
from model.docsam import DocSAM
from model.inference import Geometry, segment_pages

Page = tuple[np.ndarray, GtImage, list[str]]  # the image, its ground truth, its class names


class LayoutValidator:
    """Scores a model on the first `max_images` pages of each validation split (decoded once)."""

    def __init__(self, datasets: Sequence[LayoutDataset], geometry: Geometry, max_images: int) -> None:
        self.geometry = geometry
        self.sets: list[tuple[str, list[Page]]] = []
        for dataset in datasets:
            indexes = _distinct_pages(dataset, max_images)  # only theirs is read: a split may hold 100k
            ground_truth = split_ground_truth(dataset.root, [dataset.image_names[index] for index in indexes])
            truth = {image.name: image for image in ground_truth.images}
            pages: list[Page] = []
            for index in indexes:
                gt = _ground_truth_of(dataset, index, truth, ground_truth.errors)
                image, page = dataset.load(index)
                pages.append((image, gt, list(dataset.page_classes(page))))
            self.sets.append((dataset.name, pages))

    def __call__(self, model: DocSAM) -> dict[str, float]:
        scores = [self._score(model, name, pages) for name, pages in self.sets]
        metrics: dict[str, float] = {}
        for label, set_scores in zip(unique_labels([name for name, _ in self.sets]), scores, strict=True):
            metrics.update({f"{label}/{key}": value for key, value in set_scores.items()})
        metrics.update(mean_metrics(scores))
        return metrics

    def _score(self, model: DocSAM, name: str, pages: list[Page]) -> dict[str, float]:
        """The metrics of one set, its name the domain of the background prompt."""
        predictions = {
            gt.name: as_written(segment_pages(model, [image], names, domain=name, geometry=self.geometry)[0])
            for image, gt, names in pages
        }
        # The classes the pages are prompted with are declared, as `docsam evaluate` declares a split's
        # categories: a prediction of one that no validated page annotates is a false positive.
        declared = {name for _, _, names in pages for name in names}
        result = evaluate([gt for _, gt, _ in pages], predictions, declared=declared)
        scores = {"mAP": result.mask["AP"], "AP50": result.mask["AP50"], "AP75": result.mask["AP75"]}
        scores.update({"mAF": result.maf, "mIoU": result.miou})
        return {key: float(value or 0.0) for key, value in scores.items()}


def _distinct_pages(dataset: LayoutDataset, count: int) -> list[int]:
    """The indexes of the split's first `count` pages, each once: a list naming a page again (lists
    joined) validates it once, as `evaluate` scores it once."""
    first: dict[str, int] = {}
    for index, name in enumerate(dataset.image_names):
        if len(first) == count:
            break
        first.setdefault(name, index)
    return list(first.values())


def _ground_truth_of(
    dataset: LayoutDataset, index: int, truth: dict[str, GtImage], errors: Sequence[InputError]
) -> GtImage:
    """The ground truth of a listed page. Images are keyed by their file's stem, as `evaluate` matches
    predictions: of two listed in different folders under one stem (`vol1/a.png`, `vol2/a.png`) the second
    has an error and no ground truth, which the key alone would take for the first's; the ground truth's
    image is the one training reads (a pre-resized copy where there is one). A page whose json has an
    error `evaluate` reports (an annotation of no image) is not validated without its region: raises
    DatasetError, as for a page without ground truth."""
    name = dataset.image_names[index]
    gt = truth.get(os.path.splitext(os.path.basename(name))[0])
    if gt is None or (gt.image is not None and gt.image != dataset.image_path(index)):
        raise _no_ground_truth(dataset, index, errors)
    flawed = [error for error in errors if error.path == dataset.json_path(index)]
    if flawed:
        raise DatasetError(str(flawed[0]))
    return gt


def _no_ground_truth(dataset: LayoutDataset, index: int, errors: Sequence[InputError]) -> DatasetError:
    """The error of a validation page that has no ground truth, with the reason `evaluate` gives for its
    json where it could not read it."""
    message = f"{dataset.root}: no ground truth for {dataset.image_names[index]}"
    reasons = [str(error) for error in errors if error.path == dataset.json_path(index)]
    return DatasetError(f"{message}: {reasons[0]}" if reasons else message)


def unique_labels(names: Sequence[str]) -> list[str]:
    """The sets' names, the second and later sets of one name numbered (`A`, `A#2`), so that their metric
    keys do not overwrite each other."""
    labels: list[str] = []
    for name in names:
        label, number = name, 1
        while label in labels:
            number += 1
            label = f"{name}#{number}"
        labels.append(label)
    return labels


def mean_metrics(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """The unweighted mean of each metric over the sets' own results."""
    return {key: float(np.mean([set_scores[key] for set_scores in scores])) for key in METRICS}
