"""`docsam evaluate --weights`: segment the ground truth's own images, then score them as predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from docsam_cli.errors import InputError
from docsam_cli.evaluation import GtImage
from docsam_cli.inputs.images import load_frame
from docsam_cli.precision import network_autocast, precision_dtype
from docsam_cli.runtime import load_for_inference, page_geometry, pick_device
from model.inference import segment_page
from model.instances import PageInstances


class ModelRun:
    """A loaded model with the prompts and geometry to segment evaluation pages."""

    def __init__(
        self,
        weights: str,
        variant: str | None,
        model_config: Path | None,
        device: str,
        precision: str,
        short_side: str | None,
        window: str | None,
        domain: str,
    ) -> None:
        self.device = pick_device(device)
        self.dtype = precision_dtype(precision, self.device)
        page_geometry(
            None, short_side, window, None, None
        )  # option syntax first: usage errors before loading
        self.loaded = load_for_inference(weights, variant, model_config, self.device)
        self.geometry = page_geometry(self.loaded.weights.entry, short_side, window, None, None)
        self.domain = domain

    def predict(self, images: Sequence[GtImage]) -> tuple[dict[str, PageInstances], list[InputError]]:
        """Instances per image key, prompting with the ground truth's own class names (sorted, §6.2)."""
        classes = sorted({annotation.category for image in images for annotation in image.annotations})
        predictions: dict[str, PageInstances] = {}
        errors: list[InputError] = []
        for image in images:
            if image.image is None:
                errors.append(InputError(image.name, "the image file was not found: cannot run the model"))
                continue
            try:
                page = load_frame(image.image)
            except InputError as error:
                errors.append(InputError(image.image, error.reason))
                continue
            with network_autocast(self.device, self.dtype):
                predictions[image.name] = segment_page(
                    self.loaded.model, page, classes, domain=self.domain, geometry=self.geometry
                )
        return predictions, errors
