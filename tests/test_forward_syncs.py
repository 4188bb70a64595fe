"""A forward pass reads the device from the host only to size its outputs: once per query selection and
once per RoIAlign of the boxes (the number of bilinear samples).

On the CPU the profiler shows the operators that force such a read on an accelerator (a scalar read, a
data-dependent shape); `Tensor.tolist` reads without an operator, so it is counted separately.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.profiler import ProfilerActivity, profile

from benchmarks.syncs import SYNCING_OPERATORS


@pytest.mark.parametrize("isolate", [False, True], ids=["reference-batches", "isolated"])
def test_forward_reads_the_device_only_to_size_selections_and_box_samples(
    tiny_model, reference_fixtures, monkeypatch, isolate
):
    io = load_file(str(reference_fixtures / "tiny-io.safetensors"))
    names = json.loads((reference_fixtures / "tiny-io.json").read_text())["cases"]["b"]["class_names"]
    inputs = [io[f"b.input.{name}"] for name in ("pixel_values", "pixel_mask", "image_bboxes")]
    pixels, mask, boxes = inputs[0].float(), inputs[1].float(), inputs[2]
    with torch.no_grad():
        tiny_model(pixels, mask, boxes, names)  # class-name embeddings are cached after this one
        reads = []
        tolist = torch.Tensor.tolist
        monkeypatch.setattr(
            torch.Tensor, "tolist", lambda tensor: reads.append(tensor.shape) or tolist(tensor)
        )
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            tiny_model(pixels, mask, boxes, names, isolate_batch=isolate, all_stages=False)
    syncing = {event.key: event.count for event in trace.key_averages() if event.key in SYNCING_OPERATORS}
    assert syncing == {}
    stages = tiny_model.config.decoder_layers
    assert reads.count(torch.Size([2])) == stages  # a selection: kept rows, settled
    assert len(reads) == stages + (stages + 1)  # and one RoIAlign per stage, stage 0 included
