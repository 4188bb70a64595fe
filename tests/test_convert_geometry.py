"""Pieces under convert-dataset: polygon clean-up, splits, class options, dataset names, layout reading."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest
from convert_helpers import page_xml, run_cli, write_image
from pycocotools import mask as mask_utils

from docsam_cli.datasets import geometry, layout, split
from docsam_cli.datasets.classes import ClassFilter, parse_mapping
from docsam_cli.datasets.ground_truth import load_ground_truth


def test_parse_points_accepts_page_and_alto_forms_and_rejects_junk() -> None:
    expected = [[1.0, 2.0], [3.0, 4.5], [5.0, 6.0]]
    for text in ("1,2 3,4.5 5,6", "1 2 3 4.5 5 6", "1,2,3,4.5,5,6"):
        assert geometry.parse_points(text).tolist() == expected
    for junk in ("1,2 3", "1,2 a,4", "1,2 nan,4 5,6"):
        with pytest.raises(ValueError):
            geometry.parse_points(junk)


def test_crossings_are_found_and_touching_is_not() -> None:
    assert geometry.self_intersects(geometry.parse_points("0,0 10,10 10,0 0,10"))
    assert not geometry.self_intersects(geometry.parse_points("0,0 10,0 10,10 0,10"))
    # A pixel-contour spike going out and back along one line, and a vertex touching an edge.
    assert not geometry.self_intersects(geometry.parse_points("0,0 10,0 10,5 15,5 10,5 10,10 0,10"))
    assert not geometry.self_intersects(geometry.parse_points("0,0 10,0 5,5 10,10 0,10 5,5"))
    rng = np.random.default_rng(1)
    star = np.stack([np.cos(np.arange(5) * 4 * np.pi / 5), np.sin(np.arange(5) * 4 * np.pi / 5)], 1) * 50 + 60
    assert geometry.self_intersects(star + rng.normal(0, 0.01, star.shape))
    parts = geometry.repair([star])
    assert parts and not any(geometry.self_intersects(part) for part in parts)
    # The repaired outline is the star's own (a simple decagon), the inner pentagon included once.
    angles = np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2, 50 * np.cos(2 * np.pi / 5) / np.cos(np.pi / 5), 50)
    decagon = np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None] + 60
    assert sum(geometry.area(part) for part in parts) == pytest.approx(geometry.area(decagon), rel=0.02)


def test_clamp_flags_only_points_off_the_page() -> None:
    inside, off = geometry.clamp(np.array([[0.0, 0.0], [100.0, 50.0]]), 100, 50)
    assert not off and inside.tolist() == [[0, 0], [99, 49]]
    _, off = geometry.clamp(np.array([[-1.0, 0.0], [10.0, 10.0]]), 100, 50)
    assert off


def _page_fill(polygons: list[np.ndarray], height: int, width: int) -> dict:
    """The whole-page rasterisation `fill_polygons` must give: each polygon int32-truncated and drawn by
    `cv2.fillPoly` on the page (so clipped at its edges), their union, encoded."""
    page = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        cv2.fillPoly(page, [polygon.astype(np.int32)], 1)
    return mask_utils.encode(np.asfortranarray(page))


def _random_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Points on the page, around it, far off it, on its edges, or all in one column (no area)."""
    count = int(rng.integers(1, 9))
    kind = rng.integers(0, 4)
    if kind == 0:
        x, y = rng.uniform(-0.5 * width, 1.5 * width, count), rng.uniform(-0.5 * height, 1.5 * height, count)
    elif kind == 1:
        x, y = rng.uniform(-3 * width, 4 * width, count), rng.uniform(-3 * height, 4 * height, count)
    elif kind == 2:
        x, y = (
            rng.integers(0, width + 1, count).astype(float),
            rng.integers(0, height + 1, count).astype(float),
        )
    else:
        x, y = np.full(count, rng.uniform(-2, width + 2)), rng.uniform(-2, height + 2, count)
    return np.stack([x, y], axis=1)


def test_polygons_filled_in_their_box_are_the_whole_page_fill_bit_for_bit() -> None:
    """Self-crossing, degenerate, partly and wholly off-page polygons, negative coordinates, several per
    instance, pages of one row or column: the RLE is the one the whole page drawn and encoded gives."""
    rng = np.random.default_rng(0)
    for _ in range(5000):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        polygons = [_random_polygon(rng, height, width) for _ in range(int(rng.integers(0, 4)))]
        assert geometry.fill_polygons(polygons, height, width) == _page_fill(polygons, height, width)
    for height, width in [(5, 7), (1, 1), (30, 1), (1, 30)]:
        for polygons in (
            [geometry.box_polygon(-10, -10, width + 10, height + 10)],  # the whole page, columns joined
            [geometry.box_polygon(0, 0, width - 1, height - 1)],
            [np.array([[-1e6, 2], [1e6, 3], [5, 1e6]])],
            [np.array([[3, -1e6], [3, 1e6]])],
            [],
        ):
            assert geometry.fill_polygons(polygons, height, width) == _page_fill(polygons, height, width)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(500, 1500, 2))
        polygons = [
            np.stack(
                [rng.uniform(-0.2 * width, 1.2 * width, n), rng.uniform(-0.2 * height, 1.2 * height, n)], 1
            )
            for n in rng.integers(3, 30, int(rng.integers(1, 4)))
        ]
        assert geometry.fill_polygons(polygons, height, width) == _page_fill(polygons, height, width)


def test_a_region_is_filled_without_a_page_sized_array() -> None:
    """Evaluating PAGE/ALTO ground truth filled and encoded a whole page per region (8.7 million pixels at
    300 dpi, for a line of text): only the region's box is allocated now."""
    height, width = 3508, 2480
    line = geometry.box_polygon(300, 1000, 2100, 1060)
    tracemalloc.start()
    try:
        rle = geometry.fill_polygons([line], height, width)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rle == _page_fill([line], height, width)
    assert peak < height * width / 10


def test_split_sizes_add_up_and_ignore_input_order() -> None:
    names = [f"p{i:02d}.png" for i in range(11)]
    fractions = split.parse_split("train=8,val=1,test=1")
    first = split.assign(names, fractions, seed=5)
    assert [len(first[s]) for s in ("train", "val", "test")] == [9, 1, 1]
    assert split.assign(list(reversed(names)), fractions, seed=5) == first
    assert sorted(n for group in first.values() for n in group) == names
    for bad in ("train=0.8,train=0.2", "train", "../x=1", "a=-1", "a=0,b=0", "val=0.3"):
        with pytest.raises(ValueError):
            split.parse_split(bad)


def test_class_filter_maps_then_keeps_and_drops() -> None:
    classes = ClassFilter(parse_mapping(["heading=title,caption=text"]), frozenset({"noise"}), None)
    assert [classes.apply(n) for n in ("heading", "caption", "noise", "text\nline")] == [
        "title",
        "text",
        None,
        "text line",
    ]
    with pytest.raises(ValueError):
        parse_mapping(["heading"])


def test_a_class_given_two_new_names_is_refused() -> None:
    """`--map text=body --map text=para` (convert-dataset and evaluate) kept the last and dropped `body`
    without a word; two new names for one class are refused, the same one given twice is taken."""
    with pytest.raises(ValueError, match=r"^'text' is renamed twice, to 'body' and 'para': give it one new"):
        parse_mapping(["text=body", "text=para"])
    with pytest.raises(ValueError, match="'a b' is renamed twice"):
        parse_mapping(["a  b=x,a b=y"])  # blanks inside a name read as one space, as classes are
    assert parse_mapping(["text=body", "text=body,title=head"]) == {"text": "body", "title": "head"}


def test_commas_and_equals_signs_inside_class_names_are_escaped_with_a_backslash() -> None:
    """Sources name classes `text, body` or `a=b` (COCO categories, PAGE custom types): they can still be
    mapped, dropped or kept."""
    from docsam_cli.datasets.classes import parse_names

    assert parse_names([r"text\, body,figure", "table"]) == ["text, body", "figure", "table"]
    assert parse_mapping([r"a\=b=ab,x=y", r"c\,d=e\\f"]) == {"a=b": "ab", "x": "y", "c,d": "e\\f"}
    classes = ClassFilter(parse_mapping([r"a\=b=ab"]), frozenset(parse_names([r"text\, body"])), None)
    assert [classes.apply(name) for name in ("a=b", "text, body", "figure")] == ["ab", None, "figure"]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/data/Layout/DocLayNet/data/DocLayNet_core/train", "DocLayNet DocLayNet_core"),
        ("/data/Layout/PubLayNet/data/PubLayNet/val", "PubLayNet"),
        ("/data/Table/STDW/data/STDW", "STDW "),
        ("/d/SceneText/ICDAR_2019_RRC_LSVT/data/LSVT-2019/train_full", "ICDAR_2019_RRC_LSVT "),
        # Folders above the data root named like split or category folders: the nearest ones count (the
        # first ones gave 'PubLayNet me' and 'sets M6Doc', prompting with that name).
        ("/home/me/test/data/Layout/PubLayNet/data/PubLayNet/train", "PubLayNet"),
        ("/srv/Table/sets/Layout/M6Doc/data/M6Doc/val", "M6Doc"),
        ("/val/Layout/test/data/test/train", "test"),
        # A set without a split folder below a data root that has one above it (`/srv/train/data`): the
        # reference, reading `Table/STDW/data/STDW`, finds none; the one above gave 'STDW train'.
        ("/srv/train/data/Table/STDW/data/STDW", "STDW "),
        ("/home/test/data/SceneText/ShopSign/data/ShopSign_1265", "ShopSign "),
        ("/data/val/Table/ICDAR2013/data/ICDAR2013/competition-dataset", "ICDAR2013 "),
    ],
)
def test_reference_dataset_names(path: str, name: str) -> None:
    assert layout.reference_dataset_name(PurePosixPath(path)) == name
    assert layout.background_prompt(name) == f"{name} _background_"


def test_a_split_given_as_dot_or_dot_dot_has_the_name_of_the_folder_it_is(tmp_path, monkeypatch) -> None:
    """`docsam finetune .` inside a split folder read `dataset.json` from the split folder only (the parent
    of `.` is `.`), and without one the reference's rule took `..` of `../train` as the folder before the
    split folder: the sets were prompted as ' PubLayNet _background_' and 'PubLayNet .. _background_'."""
    sets = tmp_path / "Layout" / "PubLayNet" / "data" / "PubLayNet"
    for folder in ("train", "val"):
        (sets / folder).mkdir(parents=True)
    monkeypatch.chdir(sets / "val")
    assert [layout.dataset_name(Path(path)) for path in (".", "../train")] == ["PubLayNet", "PubLayNet"]
    (sets / "dataset.json").write_text('{"name": "Mine", "class_names": ["table"]}')
    assert [layout.dataset_name(Path(path)) for path in (".", "../train")] == ["Mine", "Mine"]
    assert layout.dataset_class_names(Path(".")) == ["table"]


def test_written_split_reads_back_with_the_reference_category_rules(tmp_path) -> None:
    source = tmp_path / "src"
    write_image(source / "p.png", 60, 40)
    regions = [
        ("TableRegion", None, "1,1 30,1 30,20 1,20"),
        ("TextRegion", "heading", "2,25 40,25 40,35 2,35"),
    ]
    (source / "p.xml").write_text(page_xml("p.png", 60, 40, regions))
    out = tmp_path / "Layout" / "Mine" / "data" / "set" / "train"
    arguments = ("--map", "heading=text word", "--dataset-name", "Mine set")
    assert run_cli("convert-dataset", source, "--from", "page", "--out", out, *arguments).exit_code == 0
    truth = load_ground_truth(out, "unified", frozenset({"regions"}))
    assert not truth.errors and len(truth.images) == 1 and truth.images[0].image == out / "image" / "p.png"
    assert Counter(a.category for a in truth.images[0].annotations) == Counter({"table": 1})  # no "text word"
    assert layout.dataset_name(out) == "Mine set"
    assert layout.reference_dataset_name(out) == "Mine set"


def test_polygons_far_off_the_page_are_rasterised_by_their_part_near_it() -> None:
    """pycocotools rasterises a COCO polygon by walking each edge in fifths of a pixel: ground truth or
    predictions with corners at 1e8 or 1e300 (a stranger's file, or one made to break readers) on a 60x40
    page asked it for gigabytes or crashed it ('Segmentation fault', evaluate without a message). A polygon
    is now cut to a few pages around the page first (run in a process of its own, held to 4 GB, which the
    crash ended); one within that reach is rasterised as before, pixel for pixel."""
    import subprocess
    import sys

    script = (
        "import resource, numpy as np\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from pycocotools import mask\n"
        "from docsam_cli.datasets.geometry import polygons_rle\n"
        "for far in (1e8, 1e300):\n"
        "    square = np.array([[0, 0], [far, 0], [far, far], [0, far]])\n"
        "    wedge = np.array([[-far, 20], [far, 20], [30, -far]])\n"
        "    areas = (mask.area(polygons_rle([shape], 40, 60)) for shape in (square, wedge))\n"
        "    print(*map(int, areas))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split("\n") == ["2400 1200", "2400 1200", ""]
    rng = np.random.default_rng(0)
    for _ in range(100):
        polygon = rng.uniform((-230, -150), (290, 190), (int(rng.integers(3, 8)), 2))  # within 4 pages
        direct = mask_utils.merge(mask_utils.frPyObjects([polygon.reshape(-1).tolist()], 40, 60))
        assert geometry.polygons_rle([polygon], 40, 60) == direct


@pytest.mark.parametrize(
    ("points", "crosses"),
    [
        ([(0, 0), (10, 0), (10, 10), (0, 10)], False),  # a square: its edges meet at its corners only
        ([(0, 0), (10, 10), (10, 0), (0, 10)], True),  # a figure-eight
        ([(0, 0), (10, 0), (10, 10), (5, 0), (0, 10)], False),  # a vertex on another edge: touching
        ([(0, 0), (10, 0), (10, 5), (20, 5), (10, 5), (10, 10), (0, 10)], False),  # a spike, out and back
    ],
)
def test_only_edges_that_properly_cross_make_a_polygon_self_intersecting(points, crosses: bool) -> None:
    """`self_intersects`: two edges crossing each other make an outline to repair; edges that only touch
    (adjacent edges at their corner, a vertex on another edge, a spike along one line) rasterise to the
    intended region and are left alone."""
    assert geometry.self_intersects(np.array(points, dtype=float)) is crosses
