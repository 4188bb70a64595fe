"""`docsam evaluate --weights`: segment the ground truth's own images, then score them as predictions.

Importing this module is cheap; torch and the network load when a `ModelRun` is created.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from docsam_cli.errors import InputError
from docsam_cli.runtime import GeometryOptions, ModelSpec, describe_geometry, load_for_inference

if TYPE_CHECKING:
    from docsam_cli.evaluation import GtImage
    from model.instances import PageInstances

logger = logging.getLogger(__name__)


def prompt_classes(images: Sequence[GtImage], declared: Sequence[str] = ()) -> list[str]:
    """The ground truth's class names, sorted (the reference's evaluation prompts): those it declares (a
    COCO file's or dataset's categories, `declared`) and those it annotates, so that a class no page of the
    split holds is prompted as `segment --classes` would prompt it."""
    annotated = {annotation.category for image in images for annotation in image.annotations}
    return sorted(annotated | set(declared))


class ModelRun:
    """A loaded model with the prompts and geometry to segment evaluation pages.

    Raises `UsageError` for a device or precision that is not available, `WeightsError` or
    `CheckpointError` for weights that do not load.
    """

    def __init__(
        self,
        weights: str,
        variant: str | None,
        model_config: Path | None,
        device: str,
        precision: str,
        geometry: GeometryOptions,
        domain: str,
    ) -> None:
        self.loaded = load_for_inference(ModelSpec(weights, variant, model_config, device, precision))
        self.geometry = geometry.resolve(self.loaded.weights)
        logger.info("geometry: %s", describe_geometry(self.geometry))
        self.domain = domain

    def predict(
        self, images: Sequence[GtImage], classes: Sequence[str]
    ) -> tuple[dict[str, PageInstances], list[InputError]]:
        """Instances per image key, prompting with `classes` (`prompt_classes`). Boxes are sorted and
        clipped to the page, as segment's COCO output writes them. An image that cannot be segmented (its
        file is missing or unreadable, or not of the size the ground truth states) has no key, and an error
        naming the file."""
        from docsam_cli.inputs.images import load_frame, turned_note
        from model.inference import segment_page

        predictions: dict[str, PageInstances] = {}
        errors: list[InputError] = []
        for image in images:
            if image.image is None:
                errors.append(image.missing or InputError(image.name, "image file not found"))
                continue
            try:
                page = load_frame(image.image)
            except InputError as error:
                errors.append(InputError(image.image, error.reason))
                continue
            height, width = page.shape[:2]
            if (height, width) != (image.height, image.width):
                stated = f"{image.width}x{image.height}" + turned_note(
                    image.image, (image.width, image.height)
                )
                errors.append(
                    InputError(image.image, f"image is {width}x{height} but the ground truth says {stated}")
                )
                continue
            with self.loaded.autocast():
                instances = segment_page(
                    self.loaded.model, page, classes, domain=self.domain, geometry=self.geometry
                )
            predictions[image.name] = as_written(instances)
        return predictions, errors


def as_written(instances: PageInstances) -> PageInstances:
    """`instances` with their boxes sorted and clipped to the page, as segment's COCO output writes them: the
    box head moves each corner on its own, and pycocotools takes a detection's area from its box, so a false
    positive with x2 < x1 (a negative area) fell outside every area range and was not counted."""
    from docsam_cli.writers.boxes import clip_box

    boxes = [clip_box(box, instances.width, instances.height) for box in instances.boxes]
    return replace(instances, boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
