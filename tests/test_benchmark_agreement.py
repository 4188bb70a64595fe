"""The comparison behind `benchmarks/precision_agreement.py`: one-to-one matching by mask IoU, labels and
semantic maps (figures only; the script itself runs models and asserts nothing)."""

from __future__ import annotations

import pytest
from instances_factory import make_instances, rect_mask

from benchmarks.precision_agreement import compare, summary

NAMES = ["text", "table"]


def test_instances_are_matched_one_to_one_by_mask_iou():
    reference = make_instances(
        [rect_mask(20, 30, 0, 0, 10, 10), rect_mask(20, 30, 15, 5, 25, 15)], [0, 1], NAMES
    )
    other = make_instances(  # the second instance first, shifted by one pixel, with the other label
        [rect_mask(20, 30, 16, 5, 26, 15), rect_mask(20, 30, 0, 0, 10, 10), rect_mask(20, 30, 0, 18, 2, 20)],
        [0, 0, 1],
        NAMES,
    )
    agreement = compare(reference, other)
    assert (agreement.reference_count, agreement.other_count) == (2, 3)
    assert sorted(agreement.matched_iou) == pytest.approx([90 / 110, 1.0])
    assert agreement.labels_agree == 1  # the shifted instance changed its label
    # text: the reference's first square against both of other's text squares; table: disjoint
    assert agreement.semantic_iou == pytest.approx([100 / 200, 0.0])


def test_disjoint_results_match_nothing():
    reference = make_instances([rect_mask(10, 10, 0, 0, 3, 3)], [0], NAMES)
    other = make_instances([rect_mask(10, 10, 5, 5, 8, 8)], [0], NAMES)
    agreement = compare(reference, other)
    assert agreement.matched_iou == [] and agreement.labels_agree == 0
    figures = summary([agreement, compare(reference, reference)])
    assert figures["matched"] == 1 and figures["matched_share_of_fp32"] == 0.5
    assert figures["mask_iou_mean"] == 1.0 and figures["pages_with_equal_counts"] == 2
