"""The inference pipeline against the reference run on `tiny-e2e-page.png` (tiny-e2e.json, tiny-io case `a`).

The network is replaced by a replay of the stored case-`a` stage-4 outputs (all rows, batch-padding rows
included), which the reference verified bit-identical to the model call inside its pipeline. The replay
model checks that it is fed exactly the stored inputs, so pre-processing, batching and prompts are
exercised too.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from safetensors import safe_open

from model.inference import (
    Geometry,
    PatchOutputs,
    make_patches,
    merge_patches,
    plan_page,
    postprocess_patches,
    predict_pages,
    segment_page,
)
from model.inference.mapping import resample_masks
from model.outputs import DocSAMOutput, StageOutput

STAGE = "a.decoder.stage4."


@pytest.fixture(scope="module")
def e2e(reference_fixtures):
    return json.loads((reference_fixtures / "tiny-e2e.json").read_text())


@pytest.fixture(scope="module")
def case_a(reference_fixtures):
    with safe_open(str(reference_fixtures / "tiny-io.safetensors"), "pt") as tensors:
        names = [key for key in tensors.keys() if key.startswith(("a.input.", STAGE))]  # noqa: SIM118
        return {key: tensors.get_tensor(key) for key in names}


@pytest.fixture(scope="module")
def page(reference_fixtures):
    return cv2.imread(str(reference_fixtures / "tiny-e2e-page.png"), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def geometry(e2e):
    pipeline = e2e["pipeline"]
    return Geometry(
        short_range=tuple(pipeline["short_range"]),
        patch=tuple(pipeline["patch_size"]),
        keep_size=pipeline["keep_size"],
    )


@pytest.fixture(scope="module")
def names(e2e):
    class_names = e2e["pipeline"]["class_names"]
    return class_names[:-1], class_names[-1].removesuffix(" _background_")


class ReplayModel:
    """Stand-in for the network: checks the inputs of each call and returns the stored stage-4 rows."""

    def __init__(self, case: dict[str, torch.Tensor], class_names: list[str]) -> None:
        self.case = case
        self.class_names = class_names
        self.calls: list[int] = []

    def __call__(
        self, pixel_values, pixel_mask, image_bboxes, class_names, *, isolate_batch=False, all_stages=True
    ):
        start = sum(self.calls)
        rows = slice(start, start + len(pixel_values))
        self.calls.append(len(pixel_values))
        torch.testing.assert_close(pixel_values, self.case["a.input.pixel_values"][rows], atol=1e-3, rtol=0)
        assert torch.equal(pixel_mask, self.case["a.input.pixel_mask"][rows].float())
        assert torch.equal(image_bboxes, self.case["a.input.image_bboxes"][rows])
        assert class_names == [self.class_names] * len(pixel_values)
        return _output({name: self.case[STAGE + name][rows] for name in _STAGE_NAMES})


_STAGE_NAMES = (
    "instance_states",
    "semantic_states",
    "instance_mask_logits",
    "semantic_mask_logits",
    "bboxes_xyxy",
    "class_logits",
    "padding_mask",
    "kept_index",
)


def _output(stage: dict[str, torch.Tensor]) -> DocSAMOutput:
    last = StageOutput(
        instance_states=stage["instance_states"],
        semantic_states=stage["semantic_states"],
        instance_mask_logits=stage["instance_mask_logits"],
        semantic_mask_logits=stage["semantic_mask_logits"],
        boxes=stage["bboxes_xyxy"],
        class_logits=stage["class_logits"],
        padding_mask=stage["padding_mask"].bool(),
        kept_index=stage["kept_index"],
    )
    empty = torch.zeros(0)
    return DocSAMOutput([], [], empty, [], empty, stages=[last])


def _stored_outputs(case_a) -> PatchOutputs:
    return PatchOutputs(
        mask_logits=case_a[STAGE + "instance_mask_logits"],
        boxes=case_a[STAGE + "bboxes_xyxy"],
        class_logits=case_a[STAGE + "class_logits"],
        semantic_logits=case_a[STAGE + "semantic_mask_logits"],
    )


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _assert_instance(mask, box_xywh, score, label, reference) -> None:
    """The fixture README's tolerances (item 5): labels exact, scores rtol 1e-4, boxes atol 1e-3, masks
    equal or IoU ≥ 0.999."""
    assert label + 1 == reference["label"]
    assert score == pytest.approx(reference["score"], rel=1e-4)
    np.testing.assert_allclose(box_xywh, reference["bbox_xywh"], atol=1e-3, rtol=0)
    expected = _decode(reference["segmentation"])
    assert mask.shape == expected.shape
    assert (mask & expected).sum() >= 0.999 * (mask | expected).sum()


def test_layout_matches_the_reference_pipeline(e2e, geometry):
    layout = plan_page(tuple(e2e["pipeline"]["original_page_hw"]), geometry)
    assert list(layout.resized) == e2e["pipeline"]["page_after_resize_hw"]
    assert [list(box) for box in layout.patch_boxes] == e2e["pipeline"]["patch_bboxes_xyxy_in_resized_page"]


def test_preprocessing_reproduces_the_stored_model_inputs(page, geometry, case_a):
    layout = plan_page(page.shape[:2], geometry)
    batch = make_patches(page, layout)
    torch.testing.assert_close(batch.pixel_values, case_a["a.input.pixel_values"], atol=1e-3, rtol=0)
    assert torch.equal(batch.pixel_mask, case_a["a.input.pixel_mask"].float())
    assert torch.equal(batch.image_bboxes, case_a["a.input.image_bboxes"])


def test_per_patch_post_processing(e2e, geometry, case_a):
    layout = plan_page(tuple(e2e["pipeline"]["original_page_hw"]), geometry)
    detections = postprocess_patches(_stored_outputs(case_a), layout)
    assert len(detections) == len(e2e["per_patch_post_process"])
    for found, expected in zip(detections, e2e["per_patch_post_process"], strict=True):
        assert list(found.masks.shape[1:]) == expected["target_size_hw"]
        assert len(found.scores) == len(expected["instances"])
        for index, reference in enumerate(expected["instances"]):
            mask, box = found.masks[index].numpy(), found.boxes_xywh[index].numpy()
            _assert_instance(mask, box, found.scores[index].item(), found.labels[index].item(), reference)
            assert mask.sum() == reference["area"]


def _assert_slide_window_result(result, e2e) -> None:
    reference = e2e["predict_slide_window_result"]
    assert len(result) == len(reference["instances"])
    for index, expected in enumerate(reference["instances"]):
        mask, box = result.masks[index].numpy(), result.boxes_xywh[index].numpy()
        _assert_instance(mask, box, result.scores[index].item(), result.labels[index].item(), expected)
        assert mask.sum() == expected["area"]
    class_names = e2e["pipeline"]["class_names"]
    assert [entry["class_name"] for entry in reference["semantic_masks"]] == class_names[:-1]
    assert result.semantic.shape[0] == len(reference["semantic_masks"])
    for semantic, expected in zip(result.semantic.numpy(), reference["semantic_masks"], strict=True):
        np.testing.assert_array_equal(semantic, _decode(expected["segmentation"]))


def test_merge_of_the_stored_patch_outputs(e2e, geometry, case_a):
    layout = plan_page(tuple(e2e["pipeline"]["original_page_hw"]), geometry)
    result = merge_patches(postprocess_patches(_stored_outputs(case_a), layout), layout)
    _assert_slide_window_result(result, e2e)


def test_pipeline_from_the_png_matches_predict_slide_window(page, geometry, names, case_a, e2e):
    class_names, domain = names
    model = ReplayModel(case_a, e2e["pipeline"]["class_names"])
    (prediction,) = predict_pages(model, [page], class_names, domain=domain, geometry=geometry)
    assert model.calls == [3]  # all patches of the page in one chunk, thumbnail first
    _assert_slide_window_result(prediction.result, e2e)


def test_pipeline_reproduces_the_reference_jsonl(page, geometry, names, case_a, e2e):
    class_names, domain = names
    model = ReplayModel(case_a, e2e["pipeline"]["class_names"])
    result = predict_pages(model, [page], class_names, domain=domain, geometry=geometry)[0].result
    records = e2e["reference_jsonl"]
    assert len(records) == len(result)
    for index, record in enumerate(records):
        assert class_names[result.labels[index].item()] == record["category_id"]
        assert result.scores[index].item() == pytest.approx(record["score"], rel=1e-4)
        np.testing.assert_allclose(result.boxes_xywh[index].numpy(), record["bbox"], atol=1e-3, rtol=0)
        mask = np.asfortranarray(result.masks[index].numpy().astype(np.uint8))
        assert mask_utils.encode(mask)["counts"].decode() == record["segmentation"]["counts"]


def test_segment_page_maps_the_reference_result_to_original_pixels(page, geometry, names, case_a, e2e):
    class_names, domain = names
    model = ReplayModel(case_a, e2e["pipeline"]["class_names"])
    instances = segment_page(model, page, class_names, domain=domain, geometry=geometry)
    height0, width0 = e2e["pipeline"]["original_page_hw"]
    height, width = e2e["pipeline"]["page_after_resize_hw"]
    assert (instances.height, instances.width, instances.class_names) == (height0, width0, class_names)
    reference = sorted(e2e["reference_jsonl"], key=lambda record: -_decode(record["segmentation"]).sum())
    assert len(instances) == len(reference)
    assert list(instances.areas()) == sorted(instances.areas(), reverse=True)
    for index, record in enumerate(reference):
        assert instances.class_name(index) == record["category_id"]
        assert instances.scores[index] == pytest.approx(record["score"], rel=1e-4)
        x, y, w, h = record["bbox"]
        scale = np.array([width0 / width, height0 / height] * 2)
        np.testing.assert_allclose(instances.boxes[index], np.array([x, y, x + w, y + h]) * scale, atol=1e-2)
        mask = torch.from_numpy(instances.decode_mask(index))[None]
        back = resample_masks(mask, (height, width))[0].numpy()
        expected = _decode(record["segmentation"])
        assert (back & expected).sum() >= 0.98 * (back | expected).sum()
    assert len(instances.semantic_masks) == len(class_names)
