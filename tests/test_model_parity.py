"""Stage-by-stage parity of the network with the reference implementation (tiny-io fixtures).

Tolerances are the fixture README's recommendations for a float32 CPU reimplementation.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from model.text_encoder import tokenize

TOLERANCES = {  # (atol, rtol)
    "text": (1e-5, 1e-5),
    "backbone": (1e-4, 1e-4),
    "pixel_decoder": (5e-4, 1e-4),
    "semantic_mask_logits": (5e-4, 1e-4),
    "states": (2e-3, 1e-3),
    "instance_mask_logits": (5e-3, 1e-3),
    "class_logits": (5e-3, 1e-3),
    "boxes": (5e-2, 1e-4),
}
STAGE_FIELDS = {  # fixture name → (StageOutput attribute, tolerance group)
    "instance_states": ("instance_states", "states"),
    "semantic_states": ("semantic_states", "states"),
    "instance_mask_logits": ("instance_mask_logits", "instance_mask_logits"),
    "semantic_mask_logits": ("semantic_mask_logits", "semantic_mask_logits"),
    "bboxes_xyxy": ("boxes", "boxes"),
    "class_logits": ("class_logits", "class_logits"),
}


@pytest.fixture(scope="module")
def io(reference_fixtures):
    return load_file(str(reference_fixtures / "tiny-io.safetensors"))


@pytest.fixture(scope="module")
def io_meta(reference_fixtures):
    return json.loads((reference_fixtures / "tiny-io.json").read_text())


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, group: str) -> None:
    atol, rtol = TOLERANCES[group]
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    allowed = atol + rtol * expected.float().abs()
    if expected.dtype == torch.float16:
        # Stored in float16: allow one float16 ulp of the stored value on top.
        magnitude = expected.abs()
        allowed = (
            allowed
            + (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).float()
        )
    excess = (actual.float() - expected.float()).abs() - allowed
    assert excess.max() <= 0, f"{name}: max |diff| exceeds tolerance by {excess.max().item():.3g}"


def run_case(model, io, io_meta, case: str, forced: bool):
    names = io_meta["cases"][case]["class_names"]
    forced_index = [io[f"{case}.decoder.stage{s}.kept_index"] for s in range(1, 5)] if forced else None
    with torch.no_grad():
        return model(
            io[f"{case}.input.pixel_values"].float(),
            io[f"{case}.input.pixel_mask"].float(),
            io[f"{case}.input.image_bboxes"],
            names,
            forced_kept_index=forced_index,
        )


@pytest.mark.parametrize("case", ["a", "b"])
def test_token_ids_match_reference_tokenizer(io_meta, case):
    for names, expected in zip(
        io_meta["cases"][case]["class_names"], io_meta["cases"][case]["tokenized_class_names"], strict=True
    ):
        ids, mask = tokenize(names, 512)
        assert ids.tolist() == expected["input_ids"]
        assert mask.tolist() == expected["attention_mask"]


@pytest.mark.parametrize("forced", [False, True], ids=["own-selection", "forced-selection"])
@pytest.mark.parametrize("case", ["a", "b"])
def test_every_stage_matches_reference(tiny_model, io, io_meta, case, forced):
    out = run_case(tiny_model, io, io_meta, case, forced)
    checked = 0
    for index, feature in enumerate(out.backbone_features):
        assert_close(
            f"backbone.stage{index + 1}", feature, io[f"{case}.backbone.stage{index + 1}"], "backbone"
        )
        checked += 1
    for index, level in enumerate(out.multi_scale_features):
        key = f"{case}.pixel_decoder.multi_scale.{index}"
        if key in io:
            assert_close(key, level, io[key], "pixel_decoder")
            checked += 1
    if f"{case}.pixel_decoder.mask_features" in io:
        assert_close(
            "mask_features", out.mask_features, io[f"{case}.pixel_decoder.mask_features"], "pixel_decoder"
        )
        checked += 1
    for image, embedding in enumerate(out.text_embeddings):
        assert_close(f"text.img{image}", embedding, io[f"{case}.text.mean_pooled.img{image}"], "text")
        checked += 1
    assert_close("text.projected", out.semantic_queries, io[f"{case}.text.projected"], "text")
    checked += 1

    expected_counts = io_meta["cases"][case]["kept_queries_per_stage"]
    for stage, result in enumerate(out.stages):
        kept = (~result.padding_mask).sum(1).tolist()
        assert kept == expected_counts[f"stage{stage}"], f"stage {stage} kept {kept}"
        if stage > 0:
            expected_index = io[f"{case}.decoder.stage{stage}.kept_index"]
            assert torch.equal(result.kept_index, expected_index), f"stage {stage} selected other rows"
            assert torch.equal(result.padding_mask, io[f"{case}.decoder.stage{stage}.padding_mask"].bool())
        for name, (attribute, group) in STAGE_FIELDS.items():
            key = f"{case}.decoder.stage{stage}.{name}"
            if key in io:
                assert_close(key, getattr(result, attribute), io[key], group)
                checked += 1
    # Every tensor the fixture stores for this case was compared (inputs and selection bookkeeping aside).
    stored = [
        k
        for k in io
        if k.startswith(f"{case}.") and ".input." not in k and not k.endswith(("kept_index", "padding_mask"))
    ]
    assert checked == len(stored)


def test_query_selection_unit_case(io, io_meta):
    from model.query_selection import gather_rows, pad_rows, select_rows

    spec = io_meta["cases"]["select"]
    logits, boxes = io["select.input.logits"], io["select.input.bboxes"]
    for call, details in spec["calls"].items():
        rows = [
            select_rows(
                logits[image],
                boxes[image],
                len(names),
                spec["score_thres"],
                spec["min_num"],
                details["max_num"],
                nms_iou=0.9,
            )
            for image, names in enumerate(spec["class_names"])
        ]
        assert [r.tolist() for r in rows] == details["kept_source_rows"]
        kept_index, padding = pad_rows(rows)
        assert torch.equal(padding, io[f"select.{call}.padding_mask"].bool())
        for name in ("states", "bboxes", "masks"):
            assert torch.equal(
                gather_rows(io[f"select.input.{name}"], kept_index), io[f"select.{call}.{name}"]
            )
