"""Page resize and sliding windows against the reference's geometry (`resize-and-windows.json`)."""

from __future__ import annotations

import json

import pytest

from model.inference.geometry import Geometry, plan_page, resized_size, window_boxes


@pytest.fixture(scope="module")
def geometry_fixture(reference_fixtures):
    return json.loads((reference_fixtures / "resize-and-windows.json").read_text())


def test_real_settings_resize_and_windows(geometry_fixture):
    assert len(geometry_fixture["real_settings"]) >= 18
    for case in geometry_fixture["real_settings"]:
        geometry = Geometry(short_range=tuple(case["short_range"]), keep_size=case["keep_size"])
        layout = plan_page(tuple(case["input_hw"]), geometry)
        assert list(layout.resized) == case["resized_hw"], case
        assert layout.canvas == layout.resized
        assert [list(box) for box in layout.patch_boxes] == case["patch_bboxes_xyxy"], case
        assert len(case["image_bboxes_xyxy"]) == layout.num_patches
        assert all(box == [0, 0, *reversed(layout.patch)] for box in case["image_bboxes_xyxy"])


def test_keep_size_default_matches_the_keepsize_cases(geometry_fixture):
    keep = [case for case in geometry_fixture["real_settings"] if case["keep_size"]]
    assert keep and all(tuple(case["short_range"]) == (640, 1280) for case in keep)
    for case in keep:
        assert list(resized_size(tuple(case["input_hw"]), Geometry.keep_size_default())) == case["resized_hw"]


def test_small_patch_windows(geometry_fixture):
    for case in geometry_fixture["small_patch_examples"]:
        patch = tuple(case["patch_size"])
        height, width = case["resized_hw"]
        windows = window_boxes((height, width), patch, (patch[0] // 2, patch[1] // 2))
        assert [[0, 0, width, height], *map(list, windows)] == case["patch_bboxes_xyxy"], case


def test_custom_stride_covers_the_page_with_snapped_last_window():
    windows = window_boxes((1000, 700), (640, 640), (200, 100))
    assert {box[1] for box in windows} == {0, 200, 360}
    assert {box[0] for box in windows} == {0, 60}
    assert all(x2 - x1 == 640 and y2 - y1 == 640 for x1, y1, x2, y2 in windows)


def test_pages_smaller_than_a_patch_get_a_padded_canvas():
    """A resized side shorter than a patch crashes the reference; we pad the canvas to one patch and keep the
    page size."""
    layout = plan_page((300, 200), Geometry(short_range=(100, 100), patch=(128, 128)))
    assert layout.resized == (150, 100)
    assert layout.canvas == (150, 128)
    assert layout.windows == ((0, 0, 128, 128), (0, 22, 128, 150))


def test_extremely_elongated_pages_are_capped_per_side():
    assert resized_size((10, 5000), Geometry()) == (800, 1600)
    assert resized_size((5000, 10), Geometry()) == (1600, 800)
    assert resized_size((10, 5000), Geometry.keep_size_default()) == (640, 1280)
    assert resized_size((5000, 10), Geometry.keep_size_default()) == (1280, 640)
    layout = plan_page((10, 5000), Geometry())
    assert len(layout.windows) == 2 * 4


def test_invalid_geometry_is_rejected():
    with pytest.raises(ValueError):
        Geometry(short_range=(900, 800))
    with pytest.raises(ValueError):
        Geometry(stride=(0, 320))
    with pytest.raises(ValueError):
        resized_size((0, 10), Geometry())


def test_keep_size_with_the_default_range_scales_only_pages_outside_704_to_896():
    geometry = Geometry(keep_size=True)
    assert resized_size((700, 1000), geometry) == (704, 1006)
    assert resized_size((704, 1000), geometry) == (704, 1000)
    assert resized_size((896, 1000), geometry) == (896, 1000)
    assert resized_size((900, 1000), geometry) == (896, 996)


def test_geometry_rejects_empty_sizes_and_accepts_the_smallest_valid_ones():
    """The bounds of each check: a short side of 0, a patch side of 0 even with an explicit stride, and a
    patch side of 1 with the default stride (half of it is 0) are refused; their smallest neighbours pass."""
    for invalid in [
        {"short_range": (0, 0)},
        {"short_range": (0, 10)},
        {"patch": (0, 640), "stride": (1, 1)},
        {"patch": (640, 0), "stride": (1, 1)},
        {"patch": (1, 640)},
        {"stride": (320, 0)},
    ]:
        with pytest.raises(ValueError):
            Geometry(**invalid)
    assert Geometry(short_range=(1, 1)).short_range == (1, 1)
    assert Geometry(patch=(1, 1), stride=(1, 1)).window_stride == (1, 1)
    assert Geometry(patch=(2, 2)).window_stride == (1, 1)
    with pytest.raises(ValueError):
        resized_size((10, 0), Geometry())
    assert resized_size((1, 1), Geometry(short_range=(1, 1))) == (1, 1)
