"""Stage-by-stage parity of the network with the reference implementation (tiny-io fixtures).

Tolerances are the fixture README's recommendations for a float32 CPU reimplementation.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from docsam_cli.precision import network_autocast
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
    actual = actual.float().cpu()
    if expected.dtype == torch.float16:
        # A value stored in float16 is known to within one float16 ulp: move the actual value up to that
        # much towards it, then apply the usual tolerance.
        magnitude = expected.abs()
        ulp = (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).float()
        actual = actual - (actual - expected.float()).clamp(min=-ulp, max=ulp)
    torch.testing.assert_close(
        actual, expected.float(), atol=atol, rtol=rtol, msg=lambda message: f"{name}: {message}"
    )


def forced_selection(kept_indices: list[torch.Tensor]):
    """A stand-in for `QueryDecoder.select_queries` that returns the reference's rows for each stage."""

    def select(class_logits, boxes, padding, class_padding, stage, isolate_batch):
        return kept_indices[stage - 1].to(class_logits.device)

    return select


def run_case(model, io, io_meta, case: str, forced: bool, monkeypatch, device: str = "cpu"):
    names = io_meta["cases"][case]["class_names"]
    if forced:
        kept = [io[f"{case}.decoder.stage{s}.kept_index"] for s in range(1, 5)]
        monkeypatch.setattr(model.decoder, "select_queries", forced_selection(kept))
    with torch.no_grad(), network_autocast(torch.device(device), torch.float32):
        return model(
            io[f"{case}.input.pixel_values"].float().to(device),
            io[f"{case}.input.pixel_mask"].float().to(device),
            io[f"{case}.input.image_bboxes"].to(device),
            names,
        )


@pytest.mark.parametrize("case", ["a", "b"])
def test_token_ids_match_reference_tokenizer(io_meta, case):
    for names, expected in zip(
        io_meta["cases"][case]["class_names"], io_meta["cases"][case]["tokenized_class_names"], strict=True
    ):
        ids, mask = tokenize(names, 512)
        assert ids.tolist() == expected["input_ids"]
        assert mask.tolist() == expected["attention_mask"]


CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
)


@pytest.fixture(scope="module", params=["cpu", CUDA])
def device_model(request, tiny_model):
    """The tiny parity model on each device, float32 throughout."""
    if request.param == "cpu":
        return tiny_model, "cpu"
    return copy.deepcopy(tiny_model).to(request.param), request.param


@pytest.mark.parametrize("forced", [False, True], ids=["own-selection", "forced-selection"])
@pytest.mark.parametrize("case", ["a", "b"])
def test_every_stage_matches_reference(device_model, io, io_meta, case, forced, monkeypatch):
    model, device = device_model
    out = run_case(model, io, io_meta, case, forced, monkeypatch, device)
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
            assert torch.equal(result.kept_index.cpu(), expected_index), f"stage {stage} selected other rows"
            expected_padding = io[f"{case}.decoder.stage{stage}.padding_mask"].bool()
            assert torch.equal(result.padding_mask.cpu(), expected_padding)
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
    from model.query_selection import gather_rows, select_queries

    spec = io_meta["cases"]["select"]
    logits, boxes = io["select.input.logits"], io["select.input.bboxes"]
    counts = torch.tensor([len(names) for names in spec["class_names"]])
    class_padding = torch.arange(logits.shape[-1])[None] >= counts[:, None]
    for call, details in spec["calls"].items():
        kept_index = select_queries(
            logits,
            boxes,
            class_padding,
            spec["score_thres"],
            spec["min_num"],
            details["max_num"],
            nms_iou=0.9,
        )
        assert [row[row >= 0].tolist() for row in kept_index] == details["kept_source_rows"]
        assert torch.equal(kept_index < 0, io[f"select.{call}.padding_mask"].bool())
        for name in ("states", "bboxes", "masks"):
            assert torch.equal(
                gather_rows(io[f"select.input.{name}"], kept_index), io[f"select.{call}.{name}"]
            )


def test_folded_cross_attention_keeps_parity(tiny_model, io, io_meta, monkeypatch):
    """The tiny model's widths never make the folded order the cheaper one, so force it for every
    cross-attention (both branches) and compare every stage again."""
    from model.attention import PackedAttention

    def folded(self, query, memory, allowed):
        return self._attend_folded(query, memory.keys, memory.values, allowed)

    monkeypatch.setattr(PackedAttention, "attend_to_memory", folded)
    out = run_case(tiny_model, io, io_meta, "a", True, monkeypatch)
    for stage, result in enumerate(out.stages):
        for name, (attribute, group) in STAGE_FIELDS.items():
            key = f"a.decoder.stage{stage}.{name}"
            if key in io:
                assert_close(key, getattr(result, attribute), io[key], group)
