"""One page through the segmentation pipeline with its stages marked, for benchmarks that look inside.

`run_page` does what `docsam segment` does for a page (`model.inference.segment_pages`, then
`PageWriter.write`), split into named stages around which a `Recorder` measures something (seconds, FLOPs,
synchronisations). The network's parts are the submodules `DocSAM.forward` calls, in its order; they are
observed with forward hooks, so nothing here depends on how those modules work inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from benchmarks.common import CLASS_NAMES, DOMAIN
from docsam_cli.precision import network_autocast
from docsam_cli.writers.formats import FORMATS
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter
from model.inference import (
    Geometry,
    forward_pages,
    make_patches,
    merge_patches,
    plan_page,
    postprocess_patches,
    prompt_names,
    to_page_instances,
)
from model.instances import PageInstances

# Stages of a page, in pipeline order. The network's parts: stage name → DocSAM submodules.
NETWORK_PARTS = {
    "backbone": ("backbone",),
    "pixel decoder": ("pixel_decoder", "mask_feature_fusion"),
    "text encoder": ("text_encoder",),
    "query decoder": ("decoder",),
}
NETWORK_REST = "network (rest)"  # the forward outside those parts: query set-up, projections, chunking
STAGES = (
    "pre-processing",
    *NETWORK_PARTS,
    NETWORK_REST,
    "post-processing",
    "merging + mapping",
    "writing",
)


class Recorder(Protocol):
    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Measure the work done inside, under `name`."""

    def network(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Measure a forward pass, its parts (NETWORK_PARTS) and the rest (NETWORK_REST)."""


def page_writer(out_dir: Path) -> PageWriter:
    """A writer of every output format, as `docsam segment --format coco,page,overlay,jsonl` uses."""
    return PageWriter(OutputSettings(out_dir=out_dir, formats=frozenset(FORMATS), class_names=CLASS_NAMES))


def run_page(
    model: nn.Module,
    page: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    recorder: Recorder,
    *,
    writer: PageWriter | None = None,
    page_id: str = "page",
    batch_size: int = 16,
) -> PageInstances:
    """Segment one BGR page in parity mode, stage by stage; write its outputs if a `writer` is given."""
    names = prompt_names(CLASS_NAMES, DOMAIN)
    layout = plan_page((page.shape[0], page.shape[1]), Geometry())
    with torch.inference_mode():
        with recorder.stage("pre-processing"):
            batch = make_patches(page, layout, device)
        with recorder.network(model), network_autocast(device, dtype):
            (outputs,) = forward_pages(model, [batch], names, batch_size=batch_size)
        with torch.autocast(device.type, enabled=False):
            with recorder.stage("post-processing"):
                detections = postprocess_patches(outputs, layout)
            with recorder.stage("merging + mapping"):
                result = merge_patches(detections, layout)
                instances = to_page_instances(result, layout.resized, layout.original, list(CLASS_NAMES))
    if writer is not None:
        with recorder.stage("writing"):
            writer.write(PageSource(Path(f"{page_id}.png"), None, page_id, page), instances, {})
            writer.finish([page_id])
    return instances


@contextlib.contextmanager
def part_hooks(
    model: nn.Module, enter: Callable[[str], None], leave: Callable[[str], None]
) -> Iterator[None]:
    """Call `enter(stage)` / `leave(stage)` around every call of the network parts' submodules."""
    handles = []
    for stage, attributes in NETWORK_PARTS.items():
        for attribute in attributes:
            module = getattr(model, attribute)
            handles.append(module.register_forward_pre_hook(lambda *_, name=stage: enter(name)))
            handles.append(module.register_forward_hook(lambda *_, name=stage: leave(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
