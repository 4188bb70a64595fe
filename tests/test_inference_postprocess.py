"""The query filters of §7.5 with their fallbacks, against a transcription of the reference's two filters."""

from __future__ import annotations

import torch

from model.inference.forward import MASK_PAD_VALUE, PatchOutputs
from model.inference.postprocess import select_queries


def reference_kept_rows(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> list[int]:
    """`post_process_instance_segmentation` filters of test.py, one patch: score ≥ 0.01 (else row 0), then a
    σ > 0.5 pixel at 1/4 resolution (else the first row left)."""
    rows = torch.arange(len(class_logits))
    scores = class_logits.softmax(dim=-1)[:, :-1].max(dim=-1).values
    keep = scores >= 0.01
    if keep.sum() == 0:
        keep[0] = True
    rows, mask_logits = rows[keep], mask_logits[keep]
    keep = (mask_logits.sigmoid() > 0.5).sum(dim=[1, 2]) > 0
    if keep.sum() == 0:
        keep[0] = True
    return rows[keep].tolist()


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
