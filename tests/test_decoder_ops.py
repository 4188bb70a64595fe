"""The decoder's attention masks, attention and mask heads, against their straightforward formulations."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F

from model.attention import MemoryLevel, PackedAttention
from model.attention_masks import _allowed_at_once, attention_allowed
from model.heads import MaskPredictor
from model.layers import resize_bilinear


def reference_allowed(logits, level_sizes, memory_padding):
    """The reference's recipe, literally: square max-pool, bilinear resize, sigmoid, unblock empty rows."""
    height = logits.shape[-2]
    masks = []
    for size, padding in zip(level_sizes, memory_padding, strict=True):
        radius = round(height / size[0])
        dilated = F.max_pool2d(logits, 2 * radius + 1, stride=1, padding=radius)
        blocked = (resize_bilinear(dilated, size).sigmoid() < 0.5).flatten(2)
        blocked &= ~blocked.all(-1, keepdim=True)
        masks.append(~(blocked | padding[:, None, :])[:, None])
    return masks


@pytest.mark.parametrize(
    ("size", "levels"),
    [
        ((160, 160), [(20, 20), (40, 40), (80, 80), (160, 160)]),  # a 640-px window
        ((56, 48), [(7, 6), (14, 12), (28, 24), (56, 48)]),  # the parity fixtures
        ((150, 113), [(19, 15), (38, 29), (75, 57), (150, 113)]),  # no exact multiples
        ((40, 40), [(3, 3), (10, 10), (20, 20)]),  # radius 13 (odd, not a multiple), 4, 2
        ((36, 24), [(3, 2), (6, 4)]),  # radius 12 and 6: even multiples, not powers of two
        ((2, 2), [(1, 1), (2, 2)]),  # maps narrower than the filters
    ],
)
@pytest.mark.parametrize("selected", [False, True], ids=["all-rows", "selected-rows"])
@pytest.mark.parametrize(
    "route",
    [attention_allowed, _allowed_at_once],  # the CPU's per-image route; accelerators' all-at-once one
    ids=["per-image", "at-once"],
)
def test_attention_masks_equal_reference_recipe(size, levels, selected, route):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, *size, generator=generator) * 3 - 2
    logits[0, 8] = -5.0  # attends nowhere: must attend everywhere
    memory_padding = [torch.rand(2, h * w, generator=generator) < 0.1 for h, w in levels]
    rows = None
    expected_logits = logits
    if selected:
        rows = torch.tensor([[8, 0, 3, 3, -1, -1], [2, 7, 1, 0, 5, -1]])
        # The reference gathers the rows and zero-pads: padding rows hold zeros.
        expected_logits = torch.stack([logits[image, row.clamp(min=0)] for image, row in enumerate(rows)])
        expected_logits = expected_logits.masked_fill((rows < 0)[..., None, None], 0.0)
    got = route(logits, memory_padding, levels, rows)
    expected = reference_allowed(expected_logits, levels, memory_padding)
    queries = 6 if selected else 9
    for level, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine.shape == theirs.shape == (2, 1, queries, levels[level][0] * levels[level][1])
        assert torch.equal(mine, theirs), f"level {levels[level]}"
    nowhere = 0 if selected else 8  # the row of logits[0, 8]
    assert torch.equal(got[-1][0, 0, nowhere], ~memory_padding[-1][0])


def test_without_logits_only_memory_padding_restricts():
    padding = torch.tensor([[False, True, False]])
    (allowed,) = attention_allowed(None, [padding], [(1, 3)])
    assert allowed.shape == (1, 1, 1, 3)
    assert allowed.flatten().tolist() == [True, False, True]


def double_attention(heads: int, bias: bool) -> PackedAttention:
    torch.manual_seed(0)
    attention = PackedAttention(64, heads, bias=bias, dropout=0.0).double().eval()
    if bias:
        with torch.no_grad():
            attention.in_proj_bias.normal_()
            attention.out_proj.bias.normal_()
    return attention


@pytest.mark.parametrize("bias", [True, False])
def test_attention_equals_multihead_attention(bias):
    attention = double_attention(8, bias)
    reference = torch.nn.MultiheadAttention(64, 8, bias=bias, batch_first=True).double().eval()
    reference.load_state_dict(attention.state_dict())
    query, memory = torch.randn(2, 5, 64, dtype=torch.double), torch.randn(2, 30, 64, dtype=torch.double)
    allowed = torch.rand(2, 1, 5, 30) < 0.6
    allowed[0, 0, 1] = False  # no key at all: zeros before the output projection
    blocked = (~allowed[:, 0]).repeat_interleave(8, 0)
    with torch.no_grad():
        expected = reference(query, memory, memory, attn_mask=blocked, need_weights=False)[0]
        torch.testing.assert_close(attention(query, memory, memory, allowed), expected)
        expected = reference(query, query, memory[:, :5], need_weights=False)[0]
        torch.testing.assert_close(attention(query, query, memory[:, :5], None), expected)


@pytest.mark.parametrize("rows", ["per-query", "shared"])
def test_folded_cross_attention_equals_direct(rows):
    attention = double_attention(8, bias=True)
    query = torch.randn(2, 3, 64, dtype=torch.double)  # 3 queries · 7 < 64: the folded order is taken
    keys, values = torch.randn(2, 40, 64, dtype=torch.double), torch.randn(2, 40, 64, dtype=torch.double)
    memory = MemoryLevel(keys, values, torch.zeros(2, 40, dtype=torch.bool), (5, 8))
    allowed = torch.rand(2, 1, 3 if rows == "per-query" else 1, 40) < 0.5
    allowed[1, 0, 0] = False  # a row that attends nowhere gives zeros, bias included
    with torch.no_grad():
        direct = attention(query, keys, values, allowed)
        folded = attention.attend_to_memory(query, memory, allowed)
    torch.testing.assert_close(folded, direct, rtol=1e-12, atol=1e-12)


def test_training_with_dropout_attends_directly(monkeypatch):
    attention = PackedAttention(64, 8, bias=True, dropout=0.5).train()
    query, keys = torch.randn(1, 2, 64), torch.randn(1, 10, 64)
    memory = MemoryLevel(keys, keys, torch.zeros(1, 10, dtype=torch.bool), (2, 5))

    def refuse(*args):
        raise AssertionError("folded attention with dropout")

    monkeypatch.setattr(attention, "_attend_folded", refuse)
    assert attention.attend_to_memory(query, memory, torch.ones(1, 1, 1, 10, dtype=torch.bool)).shape == (
        1,
        2,
        64,
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_mask_logits_with_the_last_convolution_folded_equal_direct(batch):
    predictor = MaskPredictor(64).double().eval()
    queries = torch.randn(batch, 5, 64, dtype=torch.double)
    pixels = torch.randn(batch, 64, 12, 10, dtype=torch.double)
    encoding = predictor.encode_pixels(pixels, queries=5, predictions=5)  # 8 · 5 · 5 < 9 · 64: folded
    with torch.no_grad():
        direct = torch.einsum(
            "nkc,nchw->nkhw", predictor.query_feat_reducer(queries), predictor.visual_feat_reducer(pixels)
        )
        folded = predictor(queries, encoding)
    assert encoding.last_conv_folded
    torch.testing.assert_close(folded, direct, rtol=1e-12, atol=1e-12)


def test_many_queries_keep_the_direct_order():
    predictor = MaskPredictor(64)
    encoding = predictor.encode_pixels(torch.randn(1, 64, 8, 8), queries=900, predictions=4)
    assert not encoding.last_conv_folded
    assert encoding.features.shape == (1, 64, 8, 8)


def test_the_semantic_mask_head_runs_its_last_convolution_per_class_not_per_channel(tiny_model):
    """With a handful of class names the semantic mask head's last 3×3 convolution is folded into them:
    per pixel 9·D·K multiply-adds for each of the 5 predictions instead of 9·D² once (D = 64, K = 3 here)."""
    from benchmarks.breakdown import flop_counter

    width, height = 96, 80
    pixels = torch.rand(1, 3, height, width) * 255
    with torch.no_grad(), flop_counter() as counter:
        tiny_model(pixels, class_names=[["text", "table", "X _background_"]], all_stages=False)
    counts = counter.get_flop_counts()
    head = "DocSAM.decoder.semantic_mask_predictor"  # its forward, and the convolutions of its pixel side
    names = [head] + [f"{head}.visual_feat_reducer.{index}.0" for index in range(3)]
    convolutions = sum(counts.get(name, {}).get(torch.ops.aten.convolution, 0) for name in names)
    dim, mask_pixels = 64, (height // 4) * (width // 4)
    one_convolution = 2 * 9 * dim * dim * mask_pixels
    assert 2 * one_convolution < convolutions < 2.5 * one_convolution


def test_a_stage_s_attention_masks_are_freed_before_its_mask_logits_are_made(tiny_model, monkeypatch):
    """The masks of a decoder layer (DocSAM-Base: 900 × 25600 bools per 640-px window at the finest level,
    31 MB over the four) were held beside the next stage's mask logits and the next layer's masks."""
    decoder = tiny_model.decoder
    made, alive_at_predict = [], []
    make_masks, predict = decoder.attention_masks, decoder.predict

    def recording_masks(*args, **kwargs):
        masks = make_masks(*args, **kwargs)
        made.extend(weakref.ref(mask) for mask in masks)
        return masks

    def counting_predict(*args, **kwargs):
        alive_at_predict.append(sum(ref() is not None for ref in made))
        return predict(*args, **kwargs)

    monkeypatch.setattr(decoder, "attention_masks", recording_masks)
    monkeypatch.setattr(decoder, "predict", counting_predict)
    pixels = torch.rand(1, 3, 80, 96) * 255
    with torch.inference_mode():
        tiny_model(pixels, class_names=[["text", "table", "X _background_"]], all_stages=False)
    assert made and len(alive_at_predict) == len(decoder.decoder_layers) + 1
    assert alive_at_predict == [0] * len(alive_at_predict)
