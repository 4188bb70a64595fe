"""Baselines of written text lines (`writers/baselines`): where they lie, PAGE `Baseline` and ALTO `BASELINE`,
and OCR-D's `--check-baseline` on ragged real lines."""

from __future__ import annotations

import re

import numpy as np
import pytest
import shapely
from instances_factory import make_instances, rect_mask
from lxml import etree
from ocrd_validators.page_validator import PageValidator
from test_writers_real_pages import OCRD_PAGES, ragged_ground_truth

from docsam_cli.polygons import mask_polygons
from docsam_cli.writers.alto import alto_string
from docsam_cli.writers.baselines import line_baseline
from docsam_cli.writers.page_xml import page_xml_string
from docsam_cli.writers.shapes import PageShapes


def page_points(text: str) -> np.ndarray:
    return np.array([[int(v) for v in pair.split(",")] for pair in text.split()], dtype=np.int64)


def kraken_points(text: str) -> np.ndarray:
    """ALTO points as Kraken reads them (`parse_alto_pointstype`: every number, in pairs)."""
    return np.array(re.findall(r"-?\d+(?:\.\d+)?", text), dtype=np.float64).reshape(-1, 2)


def test_a_rectangular_line_rests_on_its_bottom_row_from_end_to_end():
    rectangle = np.array([[10, 5], [19, 5], [19, 24], [10, 24]])
    assert line_baseline(rectangle).tolist() == [[10, 24], [19, 24]]


def test_a_slanted_line_gets_a_straight_baseline_along_its_lower_edge():
    band = np.array([[0, 10], [100, 0], [100, 10], [0, 20]])  # rises 10 px over 100
    assert line_baseline(band).tolist() == [[0, 20], [100, 10]]


def test_a_slanted_line_rising_to_its_top_corner_keeps_its_baseline_to_the_end():
    """The baseline runs over every column where it stays in the line, the window's top row included: a
    line whose lower edge rises to its top right corner gets it from end to end (a mutant leaving the top
    row out stopped it 5 px short, at [95, 1], and passed the tests)."""
    wedge = np.array([[0, 10], [90, 0], [100, 0], [0, 20]])
    assert line_baseline(wedge).tolist() == [[0, 20], [100, 0]]


@pytest.mark.parametrize("degrees", [0.5, 1, 3, 5, 8])
def test_a_skewed_line_rests_on_its_lower_edge_not_halfway_up(degrees):
    """A line turned by a few degrees (every line of a deskewed OCR-D page): the columns its short sides
    span have their bottoms on those sides, which lifted the baseline to mid-height (30 of 60 px)."""
    turn = np.radians(degrees)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    corners = np.array([[0, 0], [500, 0], [500, 60], [0, 60]]) @ rotation.T + [100, 300]
    polygon = np.rint(corners).astype(np.int64)
    baseline = line_baseline(polygon)
    left, right = polygon[3].astype(float), polygon[2].astype(float)  # the lower edge
    normal = np.array([left[1] - right[1], right[0] - left[0]]) / np.linalg.norm(right - left)
    assert np.abs((baseline - left) @ normal).max() <= 1.5
    assert baseline[-1, 0] - baseline[0, 0] >= 0.9 * 500 * np.cos(turn)


def test_a_skewed_line_whose_fit_ends_below_its_polygon_keeps_a_straight_baseline():
    """A text line of a page deskewed by 10° (ocrd-docsam-segment): the fitted line leaves the polygon
    below its lowest row at the right end. Those columns were taken as inside the line (the check looked at
    the bottom row instead), so the straight baseline was refused and the fallback ran along the bottom and
    16 px up the line's right end; it now stops where it leaves the line and stays straight."""
    line = np.array([[112, 7], [110, 22], [323, 60], [330, 60], [332, 44], [114, 5]])
    baseline = line_baseline(line)
    assert len(baseline) == 2 and baseline[-1, 0] - baseline[0, 0] >= 0.9 * (332 - 110)
    assert shapely.linestrings(baseline.astype(float)).within(shapely.Polygon(line).buffer(0.5))
    slope = (60 - 22) / (323 - 110)  # along the lower edge
    assert abs((baseline[1, 1] - baseline[0, 1]) / (baseline[1, 0] - baseline[0, 0]) - slope) < 0.02


def test_a_bump_below_the_line_does_not_pull_the_baseline_out_of_it():
    """A descender-like bump in the lower edge: the fitted line is lifted to rest on the edge elsewhere,
    staying inside the line."""
    outline = np.array([[0, 0], [100, 0], [100, 20], [52, 20], [50, 26], [48, 20], [0, 20]])
    baseline = line_baseline(outline)
    assert baseline[0, 0] == 0 and baseline[-1, 0] == 100
    assert shapely.linestrings(baseline.astype(float)).within(shapely.Polygon(outline).buffer(0.5))
    assert (baseline[:, 1] >= 19).all()  # at the bottom of the line body, not its middle


def test_a_thin_tapered_end_neither_lifts_nor_carries_the_baseline():
    """Real line outlines start with a sliver: the baseline rests on the body, not on the sliver's bottom,
    and leaves out the columns where it would run outside the line."""
    outline = np.array([[0, 0], [3, 0], [3, 2], [100, 2], [100, 30], [3, 30], [3, 4], [0, 4]])
    baseline = line_baseline(outline)
    assert baseline.tolist() == [[3, 30], [100, 30]]


def test_a_curved_line_follows_its_lower_boundary():
    xs = np.arange(0, 101, 5)
    top = np.stack([xs, 30 - (xs - 50) ** 2 // 100], axis=1)
    bottom = np.stack([xs, 40 - (xs - 50) ** 2 // 100], axis=1)[::-1]
    outline = np.concatenate([top, bottom])
    baseline = line_baseline(outline)
    assert baseline.tolist() == bottom[::-1].tolist()  # the boundary itself, left to right


def test_a_curved_lines_baseline_does_not_depend_on_where_or_which_way_its_ring_runs():
    """The lower boundary is the stretch between the bottom-left and bottom-right points that lies lower,
    whichever way the ring runs (OCR-D and other producers' PAGE run either way) and wherever it starts."""
    xs = np.arange(0, 101, 5)
    top = np.stack([xs, 30 - (xs - 50) ** 2 // 100], axis=1)
    bottom = np.stack([xs, 40 - (xs - 50) ** 2 // 100], axis=1)[::-1]
    outline = np.concatenate([top, bottom])
    for ring in (outline, outline[::-1], np.roll(outline, 7, axis=0), np.roll(outline[::-1], 30, axis=0)):
        assert line_baseline(ring).tolist() == bottom[::-1].tolist()


def test_a_straight_baseline_keeps_to_the_longest_run_of_columns_it_stays_in():
    """A notch cut up from the bottom ends the first, longer run: the baseline spans that run, not the
    shorter one after the notch (nor falls back to the lower boundary, which runs up into the notch)."""
    notched = np.array([[0, 0], [59, 0], [59, 9], [46, 9], [46, 2], [38, 2], [38, 9], [0, 9]]) + np.array(
        [20, 30]
    )
    assert line_baseline(notched).tolist() == [[20, 39], [58, 39]]


def test_a_straight_baseline_is_used_over_at_least_half_the_lines_width():
    """The module's rule: the straight line is the baseline where the run of columns it stays in is at
    least half the line's width (30 of 60 columns here), else the lower boundary, which runs up into the
    notch, is (29 of 60). A mutant reading "more than half" passed the tests."""
    half = np.array([[0, 0], [59, 0], [59, 9], [40, 9], [40, 2], [29, 2], [29, 9], [0, 9]]) + np.array(
        [20, 30]
    )
    assert line_baseline(half).tolist() == [[20, 39], [49, 39]]
    under_half = np.array([[0, 0], [59, 0], [59, 9], [40, 9], [40, 2], [28, 2], [28, 9], [0, 9]]) + np.array(
        [20, 30]
    )
    assert line_baseline(under_half).tolist() == [[20, 39], [48, 39], [48, 32], [60, 32], [60, 39], [79, 39]]


@pytest.mark.parametrize(
    ("steps", "step_width", "height", "drop"),
    [(5, 40, 20, 10), (4, 100, 30, 25), (8, 50, 16, 12), (3, 200, 40, 39)],
)
@pytest.mark.parametrize("rising", [False, True])
def test_a_stepped_line_gets_a_baseline_ocrd_and_kraken_accept(steps, step_width, height, drop, rising):
    """A staircase line (words set at different heights, or a skewed line's mask): what OCR-D's
    --check-baseline and Kraken read from it: at least 2 points, left to right, within the line as OCR-D
    simplifies it, over at least half its width (README: the straight line over the columns it stays in,
    else the stepped lower boundary)."""
    mask = np.zeros((400, 1000), np.uint8)
    for step in range(steps):
        top = 50 + (steps - 1 - step if rising else step) * drop
        mask[top : top + height, 20 + step * step_width : 20 + (step + 1) * step_width] = 1
    (polygon,) = mask_polygons(mask)
    baseline = line_baseline(polygon)
    assert len(baseline) >= 2 and (np.diff(baseline[:, 0]) >= 0).all() and baseline[-1, 0] > baseline[0, 0]
    checked = shapely.Polygon(polygon).simplify(1.0).buffer(1.5)  # OCR-D: POLY_TOLERANCE, PARENT_SLACK
    assert shapely.LineString(baseline).within(checked)
    assert baseline[-1, 0] - baseline[0, 0] + 1 >= 0.5 * np.ptp(polygon[:, 0])


def test_a_ragged_line_gets_a_baseline_that_ocrd_accepts_after_simplifying():
    """Found by fuzzing the writers: shapely's topology-preserving simplifier, which OCR-D's validator runs
    on a line's polygon before checking its baseline, moved this ragged ring by 1.51 px, and the lower
    boundary (the baseline) left the simplified polygon widened by 1.5 px: --check-baseline refused it."""
    polygon = np.array(
        [[40, 25], [40, 26], [68, 51], [76, 40], [74, 39], [70, 41], [68, 40], [68, 38], [67, 37], [67, 35],
         [67, 34], [68, 33], [69, 30], [71, 31], [72, 32], [71, 35], [78, 35], [79, 35], [83, 29], [80, 27],
         [82, 23], [82, 18], [81, 18], [80, 19], [77, 17], [75, 16], [75, 19], [74, 20], [73, 20], [72, 20],
         [72, 19], [70, 17], [68, 16], [68, 15], [49, 15], [45, 15], [43, 13], [39, 13], [37, 21]]
    )  # fmt: skip
    baseline = line_baseline(polygon)
    checked = shapely.Polygon(polygon).simplify(1.0).buffer(1.5)  # OCR-D: POLY_TOLERANCE, PARENT_SLACK
    assert shapely.LineString(baseline).within(checked)
    assert baseline[0, 0] < baseline[-1, 0]  # left to right
    assert shapely.LineString(baseline).within(shapely.Polygon(polygon).buffer(1.5))


def _lines_page() -> PageShapes:
    masks = [
        rect_mask(120, 200, 10, 10, 190, 110),  # a paragraph holding two lines
        rect_mask(120, 200, 15, 20, 180, 35),
        rect_mask(120, 200, 15, 50, 185, 62),
        rect_mask(120, 200, 0, 112, 60, 120),  # a line no region holds
    ]
    return PageShapes(make_instances(masks, [0, 1, 1, 1], ["paragraph", "text line"]))


def test_page_lines_have_a_baseline_after_their_coords(page_schema):
    document = etree.fromstring(page_xml_string(_lines_page(), "p.png").encode())
    assert page_schema.validate(document), page_schema.error_log
    lines = list(document.iter("{*}TextLine"))
    assert len(lines) == 3
    for line in lines:
        assert [etree.QName(child).localname for child in line] == ["Coords", "Baseline"]
        outline = page_points(line.find("{*}Coords").get("points"))
        baseline = page_points(line.find("{*}Baseline").get("points"))
        assert baseline.tolist() == line_baseline(outline).tolist()
    assert page_points(lines[0].find("{*}Baseline").get("points")).tolist() == [[15, 34], [179, 34]]


def test_alto_lines_have_the_page_baseline_as_a_points_list(alto_schema):
    shapes = _lines_page()
    alto = etree.fromstring(alto_string(shapes, "p.png").encode())
    assert alto_schema.validate(alto), alto_schema.error_log
    page = etree.fromstring(page_xml_string(shapes, "p.png").encode())
    expected = [page_points(line.find("{*}Baseline").get("points")) for line in page.iter("{*}TextLine")]
    written = [line.get("BASELINE") for line in alto.iter("{*}TextLine")]
    assert written[0] == "15 34 179 34"  # as POINTS: the form Kraken and eScriptorium write and read
    assert [kraken_points(text).tolist() for text in written] == [points.tolist() for points in expected]


@pytest.mark.slow  # 3 real pages of ragged regions and lines
def test_ocrd_accepts_the_baselines_of_ragged_real_lines(shared_data, tmp_path):
    """OCR-D's validator with --check-baseline and --check-coords: every baseline lies in its line."""
    rng = np.random.default_rng(5)
    sources = sorted((shared_data / OCRD_PAGES).glob("*/GT-PAGE/*.xml"))[:3]
    baselines = 0
    for number, source in enumerate(sources):
        path = tmp_path / f"{number}.xml"
        path.write_text(page_xml_string(PageShapes(ragged_ground_truth(source, rng)), source.name))
        baselines += len(etree.parse(str(path)).findall(".//{*}Baseline"))
        report = PageValidator.validate(
            filename=str(path), page_textequiv_consistency="off", check_baseline=True, check_coords=True
        )
        assert not [str(error) for error in report.errors if "Baseline" in str(error)], source.name
    assert baselines > 50
