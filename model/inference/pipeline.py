"""One call from decoded pages to instances: the reference's inference, mapped back to original pixels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.inference.forward import SegmentationModel, forward_pages
from model.inference.geometry import Geometry, PageLayout, plan_page
from model.inference.mapping import to_page_instances
from model.inference.merge import SlideWindowResult, merge_patches
from model.inference.postprocess import postprocess_patches
from model.inference.preprocess import make_patches
from model.instances import PageInstances


@dataclass
class PagePrediction:
    """The reference's result for one page (resized coordinates) and the layout to map it back."""

    layout: PageLayout
    result: SlideWindowResult


def prompt_names(class_names: Sequence[str], domain: str) -> list[str]:
    """The prompts: the classes, then the background `"<domain> _background_"` last (docs/design.md,
    "background prompt last")."""
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a list of names, got the string {class_names!r}")
    if not class_names:
        raise ValueError("at least one class name is needed")
    return [*class_names, f"{domain} _background_"]


def model_device(model: SegmentationModel) -> torch.device:
    """Where the model's parameters live (CPU for parameter-less stand-ins)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def predict_pages(
    model: SegmentationModel,
    pages: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    domain: str,
    geometry: Geometry | None = None,
    batch_size: int = 16,
    isolate_batch: bool = False,
    device: torch.device | str | None = None,
) -> list[PagePrediction]:
    """The reference's inference of BGR uint8 pages, results in each page's resized coordinates (its frame).

    `isolate_batch=False` reproduces the reference bit for bit: one page per forward group, thumbnail first,
    chunks of `batch_size`. `isolate_batch=True` lets windows of all `pages` share forward passes (the model
    then keeps every image independent of its companions); a page's result no longer matches the reference
    exactly, but it is the same whatever the other pages or the batch size.

    A surrounding autocast applies to the network only; post-processing always runs in float32.
    """
    return list(
        _iter_predictions(
            model,
            pages,
            class_names,
            domain=domain,
            geometry=geometry,
            batch_size=batch_size,
            isolate_batch=isolate_batch,
            device=device,
        )
    )


def _iter_predictions(
    model: SegmentationModel,
    pages: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    domain: str,
    geometry: Geometry | None,
    batch_size: int,
    isolate_batch: bool,
    device: torch.device | str | None,
) -> Iterator[PagePrediction]:
    """`predict_pages` one page at a time. A forward group's patches are dropped once the network has run,
    and each page's network outputs (DocSAM-Base with random weights: 900 mask logits of 160² per patch,
    0.65 GB for an A4 page) once the page is post-processed: memory holds one group's outputs at most, not
    one per page given."""
    geometry = geometry or Geometry()
    device = torch.device(device) if device is not None else model_device(model)
    names = prompt_names(class_names, domain)
    groups = [list(pages)] if isolate_batch else [[page] for page in pages]
    for group in groups:
        layouts = [plan_page((page.shape[0], page.shape[1]), geometry) for page in group]
        batches = [make_patches(page, layout, device) for page, layout in zip(group, layouts, strict=True)]
        outputs = forward_pages(model, batches, names, batch_size=batch_size, isolate_batch=isolate_batch)
        del batches
        outputs.reverse()  # popped in page order, each page's outputs released after its post-processing
        for layout in layouts:
            with torch.inference_mode(), torch.autocast(device.type, enabled=False):
                result = merge_patches(postprocess_patches(outputs.pop(), layout), layout)
            yield PagePrediction(layout=layout, result=result)
            del result  # the caller holds it as long as it needs it


def segment_pages(
    model: SegmentationModel,
    pages: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    domain: str,
    geometry: Geometry | None = None,
    batch_size: int = 16,
    isolate_batch: bool = False,
    device: torch.device | str | None = None,
) -> list[PageInstances]:
    """`predict_pages`, then every result mapped to its original page's pixels (see `mapping`), page by
    page: memory holds the masks of one page in the resized frame at a time, whatever the number of pages."""
    predictions = _iter_predictions(
        model,
        pages,
        class_names,
        domain=domain,
        geometry=geometry,
        batch_size=batch_size,
        isolate_batch=isolate_batch,
        device=device,
    )
    names = list(class_names)

    def in_original_pixels(prediction: PagePrediction) -> PageInstances:
        return to_page_instances(
            prediction.result, prediction.layout.resized, prediction.layout.original, names
        )

    return list(map(in_original_pixels, predictions))  # each page's masks released once mapped


def segment_page(
    model: SegmentationModel,
    page: np.ndarray,
    class_names: Sequence[str],
    *,
    domain: str,
    geometry: Geometry | None = None,
    batch_size: int = 16,
    isolate_batch: bool = False,
    device: torch.device | str | None = None,
) -> PageInstances:
    """Segment one BGR uint8 `(H, W, 3)` page; instances in its own pixel coordinates."""
    (instances,) = segment_pages(
        model,
        [page],
        class_names,
        domain=domain,
        geometry=geometry,
        batch_size=batch_size,
        isolate_batch=isolate_batch,
        device=device,
    )
    return instances
