"""Whether an image's result depends on the other images of its forward batch (README: "Batches").

The reference zero-pads kept queries to the batch maximum and those padding rows stay live (docs/design.md,
"live padding rows"), so results depend on batch companions; `isolate_batch=True` removes that coupling.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def case_a(reference_fixtures):
    io = load_file(str(reference_fixtures / "tiny-io.safetensors"))
    names = json.loads((reference_fixtures / "tiny-io.json").read_text())["cases"]["a"]["class_names"]
    return io["a.input.pixel_values"].float(), names


def real_rows(output, image: int):
    last = output.last
    keep = ~last.padding_mask[image]
    return last.class_logits[image][keep], last.boxes[image][keep], last.instance_mask_logits[image][keep]


def run(model, pixels, names, isolate):
    with torch.no_grad():
        return model(pixels, class_names=names, isolate_batch=isolate)


def test_isolated_batches_give_each_image_its_solo_result(tiny_model, case_a):
    pixels, names = case_a
    batch = run(tiny_model, pixels, names, isolate=True)
    for image in range(pixels.shape[0]):
        solo = run(tiny_model, pixels[image : image + 1], names[image : image + 1], isolate=True)
        for together, alone in zip(real_rows(batch, image), real_rows(solo, 0), strict=True):
            assert together.shape == alone.shape
            torch.testing.assert_close(together, alone, atol=1e-3, rtol=1e-4)


def test_reference_mode_reproduces_the_batch_coupling(tiny_model, case_a):
    pixels, names = case_a
    batch = run(tiny_model, pixels, names, isolate=False)
    solo = run(tiny_model, pixels[1:2], names[1:2], isolate=False)
    # In the batch, image 1 keeps 38 of 40 rows at stage 1 and two padding rows are selected again at
    # stage 2 (40 kept); alone it has only its 38 rows to choose from.
    assert int((~batch.stages[2].padding_mask[1]).sum()) == 40
    assert int((~solo.stages[2].padding_mask[0]).sum()) <= 38
    isolated = run(tiny_model, pixels, names, isolate=True)
    assert int((~isolated.stages[2].padding_mask[1]).sum()) <= 38
