"""Batched forward passes over the patches of one or more pages (docs/design.md, "batch coupling").

Parity mode (`isolate_batch=False`) reproduces `predict_with_dynamic_batch_size`: the patches of ONE page,
thumbnail first, in consecutive chunks of `batch_size` (16), halving on CUDA out-of-memory. Inside a chunk
the model zero-pads kept queries to the chunk maximum and those padded rows stay live (docs/design.md,
"live padding rows"), so they are kept here as well. Isolated mode asks the model to make every image
independent of its batch companions; padded rows are then blanked to fill rows and windows of several pages
may share a forward pass.

Either way each page's patches are re-padded along the query axis to the page maximum with the reference's
fill values (mask logits −1e10, boxes 0, class logits 0): the per-patch fallbacks of post-processing can
pick such rows (docs/design.md, "reference chunking").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from model.inference.preprocess import PatchBatch
from model.outputs import DocSAMOutput

MASK_PAD_VALUE = -1e10  # pad_sequence fill of the reference for mask logits


class SegmentationModel(Protocol):
    """What the pipeline needs from the network (`model.docsam` provides it)."""

    def __call__(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        image_bboxes: torch.Tensor,
        class_names: list[list[str]],
        *,
        isolate_batch: bool = False,
        all_stages: bool = True,
    ) -> DocSAMOutput: ...


@dataclass
class PatchOutputs:
    """Last-stage predictions of one page's patches, float32, queries re-padded to the page maximum."""

    mask_logits: torch.Tensor  # (P, Q, h, w) at 1/4 of the patch
    boxes: torch.Tensor  # (P, Q, 4) xyxy in patch pixels, not clamped
    class_logits: torch.Tensor  # (P, Q, C); column C-1 is the background prompt
    semantic_logits: torch.Tensor  # (P, C, h, w)


_PatchRows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def forward_pages(
    model: SegmentationModel,
    pages: Sequence[PatchBatch],
    class_names: list[str],
    *,
    batch_size: int = 16,
    isolate_batch: bool = False,
) -> list[PatchOutputs]:
    """Run the model over the patches of `pages`, every image prompted with the same `class_names`,
    background last (docs/design.md, "one prompt list per forward").

    Parity mode runs page by page; isolated mode chunks the patches of all pages together.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if getattr(model, "training", False):
        raise ValueError("the model is in training mode (dropout on, results vary): call model.eval() first")
    groups = [list(pages)] if isolate_batch else [[page] for page in pages]
    outputs: list[PatchOutputs] = []
    for group in groups:
        rows = _forward_with_backoff(model, _concat(group), class_names, batch_size, isolate_batch)
        start = 0
        for page in group:
            outputs.append(_repad(rows[start : start + len(page)]))
            start += len(page)
    return outputs


def _concat(pages: list[PatchBatch]) -> PatchBatch:
    if len(pages) == 1:
        return pages[0]
    return PatchBatch(
        pixel_values=torch.cat([page.pixel_values for page in pages]),
        pixel_mask=torch.cat([page.pixel_mask for page in pages]),
        image_bboxes=torch.cat([page.image_bboxes for page in pages]),
    )


def _forward_with_backoff(
    model: SegmentationModel, batch: PatchBatch, class_names: list[str], batch_size: int, isolate: bool
) -> list[_PatchRows]:
    """Chunks of `batch_size`; on CUDA OOM start over with half the chunk size, like the reference, but give
    up at 1 instead of looping forever (docs/design.md, "finite OOM back-off")."""
    size = min(batch_size, len(batch))
    while True:
        try:
            return _forward_chunks(model, batch, class_names, size, isolate)
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size = math.ceil(size / 2)


def _forward_chunks(
    model: SegmentationModel, batch: PatchBatch, class_names: list[str], size: int, isolate: bool
) -> list[_PatchRows]:
    rows: list[_PatchRows] = []
    with torch.inference_mode():
        for start in range(0, len(batch), size):
            end = min(start + size, len(batch))
            output = model(
                batch.pixel_values[start:end],
                batch.pixel_mask[start:end],
                batch.image_bboxes[start:end],
                [list(class_names) for _ in range(end - start)],
                isolate_batch=isolate,
                all_stages=False,
            )
            rows.extend(_split_rows(output, isolate))
    return rows


def _split_rows(output: DocSAMOutput, isolate: bool) -> list[_PatchRows]:
    """Per-patch last-stage rows. In parity mode all of them (padded rows are live). When the model
    isolated the images, batch-padding rows are moved behind the real ones and given the reference's fill
    values: the rows an image run alone would have, plus trailing fill rows, which the selection ignores
    exactly like the fill rows of `_repad` (only their count differs, and no fallback reaches past the
    first). Done on the device: no row counts are read back."""
    last = output.last
    masks, boxes, logits = last.instance_mask_logits.float(), last.boxes.float(), last.class_logits.float()
    if isolate:
        padding = last.padding_mask.bool()
        order = torch.argsort(padding.int(), dim=1, stable=True)  # real rows first, in their order
        blank = torch.sort(padding.int(), dim=1, stable=True).values.bool()
        masks = _gather_rows(masks, order).masked_fill(blank[..., None, None], MASK_PAD_VALUE)
        boxes = _gather_rows(boxes, order).masked_fill(blank[..., None], 0.0)
        logits = _gather_rows(logits, order).masked_fill(blank[..., None], 0.0)
    semantic = last.semantic_mask_logits.float()
    return list(zip(masks, boxes, logits, semantic, strict=True))


def _gather_rows(tensor: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    index = order.view(*order.shape, *([1] * (tensor.dim() - 2)))
    return torch.take_along_dim(tensor, index, dim=1)


def _repad(rows: list[_PatchRows]) -> PatchOutputs:
    """`pad_sequence` of the reference over the patches of one page."""
    queries = max(masks.shape[0] for masks, _, _, _ in rows)
    return PatchOutputs(
        mask_logits=torch.stack([_pad_queries(r[0], queries, MASK_PAD_VALUE) for r in rows]),
        boxes=torch.stack([_pad_queries(r[1], queries, 0.0) for r in rows]),
        class_logits=torch.stack([_pad_queries(r[2], queries, 0.0) for r in rows]),
        semantic_logits=torch.stack([r[3] for r in rows]),
    )


def _pad_queries(tensor: torch.Tensor, queries: int, value: float) -> torch.Tensor:
    missing = queries - tensor.shape[0]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1) + [0, missing]
    return F.pad(tensor, pad, value=value)
