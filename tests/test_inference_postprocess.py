"""Per-patch post-processing against a transcription of the reference: the two query filters with
their fallbacks, then upsampling, scores, boxes and the 0.25 mask NMS, on random and adversarial outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_loops import LAYOUT, random_outputs, reference_kept_rows, reference_postprocess

from model.inference import greedy, postprocess
from model.inference.forward import MASK_PAD_VALUE, PatchOutputs
from model.inference.postprocess import postprocess_patches, select_queries
from model.inference.transfer import fetch


def test_query_selection_and_its_fallbacks():
    generator = torch.Generator().manual_seed(0)
    patches, queries, classes = 4, 6, 4
    masks = torch.randn(patches, queries, 4, 4, generator=generator) * 3
    logits = torch.randn(patches, queries, classes, generator=generator) * 2
    background = torch.tensor([-10.0, -10.0, -10.0, 10.0])
    logits[1] = background  # nothing confident: row 0, whose mask is empty
    masks[1, 0] = -5.0
    logits[2] = background  # rows 2, 3 confident but empty: the first of them
    logits[2, 2:4] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    masks[2] = 5.0
    masks[2, 2:4] = -5.0
    logits[3, :4] = background  # rows 4, 5 are re-padding rows (uniform classes, −1e10 masks)
    logits[3, 4:] = 0.0
    masks[3, 4:] = MASK_PAD_VALUE
    outputs = PatchOutputs(
        masks, torch.zeros(patches, queries, 4), logits, torch.zeros(patches, classes, 4, 4)
    )
    selected = select_queries(outputs)
    for patch in range(patches):
        assert selected[patch].nonzero().flatten().tolist() == reference_kept_rows(
            masks[patch], logits[patch]
        )
    assert [selected[patch].nonzero().flatten().tolist() for patch in (1, 2, 3)] == [[0], [2], [4]]


def _adversarial(name: str) -> PatchOutputs:
    outputs = random_outputs(11)
    if name == "one label":
        outputs.class_logits[..., 1] += 8.0
    elif name == "nothing confident":
        outputs.class_logits[..., -1] += 12.0
    elif name == "tied duplicates":
        outputs.mask_logits[:, 6:] = outputs.mask_logits[:, :6]
        outputs.class_logits[:, 6:] = outputs.class_logits[:, :6]
    elif name == "nearly empty masks":
        outputs.mask_logits -= 9.0
        outputs.mask_logits[:, ::2, 3, 3] = 0.05  # a faint single source pixel: tiny or empty masks
    elif name == "fill rows":
        outputs.mask_logits[:, 5:] = MASK_PAD_VALUE
        outputs.class_logits[:, 5:] = 0.0
        outputs.boxes[:, 5:] = 0.0
    return outputs


def _assert_as_reference(found, expected) -> None:
    assert len(found) == len(expected)
    for patch, reference in zip(found, expected, strict=True):
        np.testing.assert_array_equal(patch.masks.numpy(), reference["masks"])
        np.testing.assert_array_equal(patch.labels.numpy(), reference["labels"])
        np.testing.assert_allclose(patch.scores.numpy(), reference["scores"], rtol=1e-6)
        np.testing.assert_allclose(patch.boxes_xywh.numpy(), reference["boxes"], rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(patch.areas.numpy(), reference["masks"].sum(axis=(1, 2)))


@pytest.mark.parametrize("seed", range(4))
def test_post_processing_matches_the_reference_loop(seed):
    outputs = random_outputs(seed)
    _assert_as_reference(postprocess_patches(outputs, LAYOUT), reference_postprocess(outputs, LAYOUT))


@pytest.mark.parametrize(
    "case", ["one label", "nothing confident", "tied duplicates", "nearly empty masks", "fill rows"]
)
def test_post_processing_on_adversarial_outputs(case):
    outputs = _adversarial(case)
    _assert_as_reference(postprocess_patches(outputs, LAYOUT), reference_postprocess(outputs, LAYOUT))


def test_a_patch_walk_that_needs_a_second_burst_continues(monkeypatch):
    """Three overlapping stripes A > B > C in score: A removes B, so C stays; deciding C takes two walk
    rounds. With one round per burst, post-processing reads the walk state once more and goes on."""
    monkeypatch.setattr(greedy, "ROUNDS_PER_BURST", 1)
    transfers = []
    monkeypatch.setattr(postprocess, "fetch", lambda *args: transfers.append(len(args)) or fetch(*args))
    outputs = random_outputs(0, queries=3)
    outputs.mask_logits[:] = -6.0
    for query, first_column in enumerate((0, 2, 4)):
        outputs.mask_logits[:, query, :, first_column : first_column + 4] = 6.0
    outputs.class_logits[:] = torch.tensor([4.0, 0.0, 0.0, 0.0])
    outputs.class_logits[:, :, 0] -= torch.tensor([0.0, 0.5, 1.0])
    found = postprocess_patches(outputs, LAYOUT)
    assert len(transfers) == 3  # label counts, an unsettled walk, the settled walk
    assert [len(patch) for patch in found] == [2, 2, 2]
    _assert_as_reference(found, reference_postprocess(outputs, LAYOUT))


@pytest.mark.parametrize("leaders", [1, 2, 5])
@pytest.mark.parametrize("seed", range(4))
def test_the_nms_in_two_parts_matches_the_reference_loop(monkeypatch, seed, leaders):
    """With few leaders per label, most candidates are decided in the NMS's second part (left over after
    the leaders' kept ones): the result is still the reference's."""
    monkeypatch.setattr(postprocess, "NMS_LEADERS", leaders)
    transfers = []
    monkeypatch.setattr(postprocess, "fetch", lambda *args: transfers.append(len(args)) or fetch(*args))
    outputs = random_outputs(seed)
    _assert_as_reference(postprocess_patches(outputs, LAYOUT), reference_postprocess(outputs, LAYOUT))
    if leaders == 1:  # then the second part runs: label counts, leaders' walk with what is left, the rest's
        assert len(transfers) >= 3


@pytest.mark.parametrize("case", ["one label", "tied duplicates", "nearly empty masks", "fill rows"])
def test_the_nms_in_two_parts_on_adversarial_outputs(monkeypatch, case):
    monkeypatch.setattr(postprocess, "NMS_LEADERS", 2)
    outputs = _adversarial(case)
    _assert_as_reference(postprocess_patches(outputs, LAYOUT), reference_postprocess(outputs, LAYOUT))


def test_a_class_score_equal_to_the_threshold_is_kept(monkeypatch):
    """The class-score filter keeps `score ≥ threshold` (ARCHITECTURE.md §7.5, not strict): with the
    threshold at 0.5, a query scoring exactly 0.5 is kept, not replaced by the fallback query 0."""
    monkeypatch.setattr(postprocess, "SCORE_THRESHOLD", 0.5)
    logits = torch.tensor([[[-1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]])  # softmax: 0.27, exactly 0.5, 0.12
    outputs = PatchOutputs(
        torch.full((1, 3, 4, 4), 5.0), torch.zeros(1, 3, 4), logits, torch.zeros(1, 2, 4, 4)
    )
    assert select_queries(outputs)[0].nonzero().flatten().tolist() == [1]


@pytest.mark.parametrize("seed", range(3))
def test_post_processing_with_more_classes_than_queries(seed):
    """Three queries, seven prompted classes: the candidates are still grouped by label and the unselected
    queries left out, as the reference does."""
    outputs = random_outputs(seed, queries=3, classes=8)
    _assert_as_reference(postprocess_patches(outputs, LAYOUT), reference_postprocess(outputs, LAYOUT))
