"""`rectify` and `clamp_box` of convert-dataset on their own: which polygons are kept, clamped, repaired or
dropped, with which note, and how a stated box is clamped (the reference loader's [0, W-1] x [0, H-1])."""

from __future__ import annotations

import numpy as np

from docsam_cli.datasets import geometry
from docsam_cli.datasets.records import Instance, Note
from docsam_cli.datasets.rectify import clamp_box, rectify, scale


def _instance(*polygons: list[tuple[float, float]], bbox=None) -> Instance:
    return Instance("text", [np.array(p, dtype=float) for p in polygons], bbox=bbox, where="region r1")


def _reasons(notes: list[Note]) -> list[tuple[str, str]]:
    return [(note.kind, note.reason) for note in notes]


def test_stated_boxes_are_clamped_to_the_last_pixel_and_negative_sizes_are_refused() -> None:
    assert clamp_box((-5.0, 2.0, 20.0, 200.0), width=10, height=50) == (0.0, 2.0, 9.0, 47.0)
    assert clamp_box((3.0, 4.0, 0.0, 0.0), width=10, height=50) == (3.0, 4.0, 0.0, 0.0)  # a point box stays
    assert clamp_box((12.0, 60.0, 5.0, 5.0), width=10, height=50) == (9.0, 49.0, 0.0, 0.0)
    assert clamp_box((2.0, -3.0, 4.0, 5.0), width=10, height=50) == (2.0, 0.0, 4.0, 2.0)
    assert clamp_box((1.0, 1.0, -1.0, 2.0), width=10, height=50) is None
    assert clamp_box((1.0, 1.0, 2.0, -1.0), width=10, height=50) is None


def test_a_triangle_inside_the_page_is_kept_untouched_with_its_stated_box() -> None:
    triangle = [(1, 1), (8, 1), (4, 6)]
    (kept,), notes = rectify([_instance(triangle, bbox=(1.0, 1.0, 7.0, 5.0))], width=10, height=10)
    assert notes == []
    np.testing.assert_array_equal(kept.polygons[0], np.array(triangle, dtype=float))
    assert kept.bbox == (1.0, 1.0, 7.0, 5.0)


def test_a_pixel_sized_triangle_is_kept() -> None:
    """Any positive area counts: half a pixel is a region, not a degenerate part."""
    (kept,), notes = rectify([_instance([(1, 1), (2, 1), (1, 2)])], width=10, height=10)
    assert notes == [] and len(kept.polygons) == 1


def test_a_negative_stated_box_is_replaced_by_the_polygons_box() -> None:
    (kept,), _ = rectify([_instance([(1, 2), (8, 2), (8, 6), (1, 6)], bbox=(0.0, 0.0, -3.0, 4.0))], 10, 10)
    assert kept.bbox == (1.0, 2.0, 7.0, 4.0)


def test_each_repair_is_noted_once_with_its_reason() -> None:
    off_page = _instance([(-5, 1), (8, 1), (8, 6), (-5, 6)])
    (kept,), notes = rectify([off_page], width=10, height=10)
    assert _reasons(notes) == [("fixed", "clamped to the page")]
    assert kept.polygons[0][:, 0].min() == 0.0

    triangle = _instance([(-4, 1), (8, 1), (4, 6)])  # the fewest points that are clamped
    (kept,), notes = rectify([triangle], width=10, height=10)
    assert _reasons(notes) == [("fixed", "clamped to the page")]
    assert kept.polygons[0][:, 0].min() == 0.0

    figure_eight = _instance([(0, 0), (6, 6), (6, 0), (0, 6)])
    (kept,), notes = rectify([figure_eight], width=10, height=10)
    assert _reasons(notes) == [("fixed", "self-intersecting polygon repaired")]
    assert sum(abs(geometry.area(polygon)) for polygon in kept.polygons) == 18.0  # both lobes, not 0

    with_a_line = _instance([(1, 1), (8, 1), (4, 6)], [(1, 1), (5, 5), (9, 9)])
    (kept,), notes = rectify([with_a_line], width=10, height=10)
    assert _reasons(notes) == [("fixed", "degenerate polygon part removed")]
    assert len(kept.polygons) == 1

    overlapping = _instance([(1, 1), (5, 1), (5, 5), (1, 5)], [(3, 3), (8, 3), (8, 8), (3, 8)])
    (kept,), notes = rectify([overlapping], width=10, height=10)
    assert _reasons(notes) == [("fixed", "overlapping polygons merged")]
    assert len(kept.polygons) == 1


def test_instances_with_nothing_left_are_dropped_with_the_reason() -> None:
    beyond = _instance([(20, 20), (30, 20), (30, 30), (20, 30)])
    two_points = _instance([(1, 1), (5, 5)])
    flat = _instance([(1, 1), (5, 5), (9, 9), (3, 3)])
    kept, notes = rectify([beyond, two_points, flat], width=10, height=10)
    assert kept == []
    assert _reasons(notes) == [
        ("dropped", "outside the page"),
        ("dropped", "fewer than 3 points or no area"),
        ("dropped", "fewer than 3 points or no area"),
    ]
    assert {note.where for note in notes} == {"region r1"}


def test_scaling_multiplies_x_and_y_by_their_own_factor() -> None:
    (scaled,) = scale([_instance([(1, 2), (3, 4), (5, 6)], bbox=(1.0, 2.0, 3.0, 4.0))], sx=2.0, sy=0.5)
    np.testing.assert_array_equal(scaled.polygons[0], [[2, 1], [6, 2], [10, 3]])
    assert scaled.bbox == (2.0, 1.0, 6.0, 2.0)
    (unboxed,) = scale([_instance([(1, 2), (3, 4), (5, 6)])], sx=2.0, sy=0.5)
    assert unboxed.bbox is None
