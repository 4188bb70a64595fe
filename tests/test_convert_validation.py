"""convert-dataset checks every JSON field it reads: one `error:` line naming the file and the field, exit 1,
and the rest of the batch converts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import (
    DELETE,
    HUGE,
    NAN,
    assert_one_error,
    coco_cases,
    coco_document,
    coco_source,
    layout_counts,
    mutated,
    run_cli,
    write_image,
    write_rotated_jpeg,
)


def test_the_valid_coco_document_converts(tmp_path: Path) -> None:
    source = coco_source(tmp_path / "src")
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    counts, documents = layout_counts(tmp_path / "out")
    assert sorted(documents) == ["a.png", "b.png"] and counts == {"table": 2, "figure": 1}


@pytest.mark.parametrize(("field", "value", "where"), coco_cases("convert"))
def test_a_malformed_coco_field_is_one_error(tmp_path: Path, field: str, value: object, where: str) -> None:
    source = coco_source(tmp_path / "src", mutated(coco_document(), field, value))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", where)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("images[0].width", "600", "images[0].width: expected a positive whole number, got '600'"),  # README
        ("images[0].width", -5, "images[0].width: expected a positive whole number, got -5"),
        (
            "images[0].width",
            -(10**38),
            f"expected a positive whole number, got -1{'0' * 38}",
        ),  # 40 characters
        ("images[0].width", -(10**39), "expected a positive whole number, got a whole number of 40 digits"),
        ("images[0].width", True, "images[0].width: expected a positive whole number, got true"),
        ("images[0].height", NAN, "images[0].height: expected a positive whole number, got NaN"),
        ("images[0].height", float("-inf"), "expected a positive whole number, got -Infinity"),
        ("images[0].width", "w" * 41, f"expected a positive whole number, got '{'w' * 37}...'"),
        ("images[0].file_name", None, "images[0].file_name: expected a non-empty string, got null"),
        ("images[0].file_name", "", "images[0].file_name: expected a non-empty string, got an empty string"),
        (
            "images[0].file_name",
            " \t",
            "images[0].file_name: expected a non-empty string, got a blank string",
        ),
        ("images[0].width", "w" * 40, f"expected a positive whole number, got '{'w' * 40}'"),
        ("categories[0]", ["table", "x"], "categories[0]: expected an object, got a list of 2"),
        (
            "annotations[0].bbox",
            {"x": 1},
            "annotations[0].bbox: expected [x, y, width, height], got an object",
        ),
        ("annotations[0].iscrowd", 2, "annotations[0].iscrowd: expected 0 or 1, got 2"),
    ],
)
def test_an_error_says_what_the_field_holds(tmp_path: Path, field: str, value: object, said: str) -> None:
    """The error names the field and what it holds, as README's example: `images[3].height: expected a
    positive whole number, got '600'` (a string is quoted, and cut after 37 characters past 40)."""
    source = coco_source(tmp_path / "src", mutated(coco_document(), field, value))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", field)
    assert said in result.error_lines()[0], result.error_lines()


@pytest.mark.parametrize(
    ("field", "value", "converted"),
    [
        ("annotations[1].segmentation.size", DELETE, ["b.png"]),  # a's annotation: page a fails
        ("images[1].width", "wide", ["a.png"]),  # b's entry: page b fails
        ("annotations[2].image_id", 99, ["a.png", "b.png"]),  # an annotation of no image: both convert
    ],
)
def test_the_other_pages_of_the_file_convert(tmp_path: Path, field: str, value: object, converted) -> None:
    source = coco_source(tmp_path / "src", mutated(coco_document(), field, value))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", out)
    assert result.exit_code == 1 and len(result.error_lines()) == 1
    assert (out / "list.txt").read_text().split() == converted


def test_an_rle_is_checked_before_pycocotools_decodes_it(tmp_path: Path) -> None:
    """Run lengths that add up to more pixels than the image has would be decoded past the mask."""
    runs = {"size": [40, 60], "counts": [1000, 2000]}
    document = mutated(coco_document(), "annotations[1].segmentation", runs)
    source = coco_source(tmp_path / "src", document)
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", "annotations[1].segmentation.counts")
    assert "3000" in result.error_lines()[0] and "2400" in result.error_lines()[0]


def test_an_rle_of_more_pixels_than_pycocotools_counts_is_one_error(tmp_path: Path) -> None:
    """An RLE of 2^32 pixels or more (a page stated 100000 x 100000, by a stranger's file or one made to
    break readers) ended convert-dataset and evaluate as an internal error, 'a bug' with exit 3: its run
    lengths overflow pycocotools' 32-bit counts ('OverflowError: Python integer 10000000000 out of bounds for
    uint32'). It is now one error naming the file and the field."""
    document = mutated(coco_document(), "images[0].width", 100_000)
    document = mutated(document, "images[0].height", 100_000)
    runs = {"size": [100_000, 100_000], "counts": [10**10]}
    source = coco_source(tmp_path / "src", mutated(document, "annotations[1].segmentation", runs))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", "annotations[1].segmentation.size")
    assert "[100000, 100000]: more pixels than a COCO RLE holds (4294967295)" in result.error_lines()[0]


def test_invalid_json_and_a_json_of_another_kind(tmp_path: Path) -> None:
    path = coco_source(tmp_path / "src") / "annotations.json"
    path.write_text('{"images": [')
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", tmp_path / "a")
    assert_one_error(result, "annotations.json", "invalid JSON")
    path.write_text("[1, 2]")
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", tmp_path / "b")
    assert_one_error(result, "annotations.json", "not a COCO dataset")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "cannot read: JSON nested too deeply"),
        ('{"images": [{"id": ' + "9" * 5000 + "}]}", "cannot read: a number of more than 4300 digits"),
    ],
)
def test_a_json_python_cannot_hold_is_one_error(tmp_path: Path, text: str, reason: str) -> None:
    """A JSON nested deeper than Python's reader goes, or holding a whole number of more digits than it
    converts (a file from a crawl, a stranger's dataset, or one made to break readers), ended convert-dataset
    and evaluate as an internal error, 'a bug' with exit 3 ('RecursionError: maximum recursion depth
    exceeded while decoding a JSON array', 'ValueError: Exceeds the limit (4300 digits) for integer string
    conversion'); it is now one error naming the file, and the rest of the batch goes on."""
    path = coco_source(tmp_path / "src") / "annotations.json"
    path.write_text(text)
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", reason)


def test_a_whole_number_no_float_holds_is_one_error_of_few_words(tmp_path: Path) -> None:
    """A whole number of 309 digits or more (JSON holds it, Python reads it, no float does) as a size, a
    box or a point ended convert-dataset and evaluate as an internal error, 'a bug' with exit 3
    ('OverflowError: int too large to convert to float'); it is one error naming the field, the number told
    by its length."""
    source = coco_source(tmp_path / "src", mutated(coco_document(), "images[0].width", HUGE))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "out")
    assert_one_error(result, "annotations.json", "images[0].width")
    assert "expected a positive whole number, got a whole number of 310 digits" in result.error_lines()[0]


def test_a_size_stated_in_part_is_checked_in_part(tmp_path: Path) -> None:
    """A source may leave the page size to the image; what it does state must match the image."""
    document = mutated(coco_document(), "images[0].height", DELETE)
    source = coco_source(tmp_path / "src", document)
    assert run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "a").exit_code == 0
    (source / "annotations.json").write_text(json.dumps(mutated(document, "images[0].width", 61)))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "b")
    assert_one_error(result, "annotations.json", "a.png is 60x40 but the annotation says 61x40")


def test_a_size_of_the_stored_pixels_of_a_turned_photo_says_so(tmp_path: Path) -> None:
    """Label Studio's COCO export states a phone photo's stored 60x40, which its EXIF orientation turns
    upright to 40x60, as Label Studio showed it: 'image a.jpg is 40x60 but the annotation says 60x40' sent
    the user to a file every tool that ignores the tag says is 60x40. The line now says why."""
    document = mutated(coco_document(), "images[0].file_name", "a.jpg")
    source = coco_source(tmp_path / "src", document)
    write_rotated_jpeg(source / "a.jpg", 60, 40, (10, 10, 20, 20))
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", tmp_path / "o")
    reason = "a.jpg is 40x60 but the annotation says 60x40 (60x40 is the size of its stored pixels, before"
    assert_one_error(result, "annotations.json", f"{reason} its orientation tag turns them upright)")


LABELME = {
    "shapes": [
        {"label": "figure", "points": [[10, 10], [40, 30]], "shape_type": "rectangle", "group_id": None},
        {"label": "figure", "points": [[5, 5], [20, 5], [20, 20]], "shape_type": "polygon", "group_id": 1},
        {"label": "stamp", "points": [[50, 30], [55, 30]], "shape_type": "circle"},
    ],
    "imagePath": "scan.png",
    "imageData": None,
    "imageWidth": 60,
    "imageHeight": 40,
}
LABELME_CASES = [
    ("shapes", {}, "shapes"),
    ("shapes[0]", "figure", "shapes[0]"),
    ("shapes[0].label", DELETE, "shapes[0].label"),
    ("shapes[0].label", 3, "shapes[0].label"),
    ("shapes[0].points", "10,10", "shapes[0].points"),
    ("shapes[0].points", DELETE, "shapes[0].points"),
    ("shapes[0].points", [[1, 1], [2, 2], [3, 3]], "shapes[0].points"),
    ("shapes[1].points", [[5, "5"], [20, 5], [20, 20]], "shapes[1].points[0][1]"),
    ("shapes[1].points", [[5, 5, 5]], "shapes[1].points[0]"),
    ("shapes[0].shape_type", "blob", "shapes[0].shape_type"),
    ("shapes[1].group_id", [1], "shapes[1].group_id"),
    ("imageWidth", "60", "imageWidth"),
    ("imageHeight", -1, "imageHeight"),
    ("imagePath", 5, "imagePath"),
    ("imageData", 5, "imageData"),
]


def test_the_valid_labelme_document_converts(tmp_path: Path) -> None:
    write_image(tmp_path / "src" / "scan.png", 60, 40)
    (tmp_path / "src" / "scan.json").write_text(json.dumps(LABELME))
    result = run_cli("convert-dataset", tmp_path / "src", "--from", "labelme", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert layout_counts(tmp_path / "out")[0] == {"figure": 2, "stamp": 1}


@pytest.mark.parametrize(("field", "value", "where"), LABELME_CASES)
def test_a_malformed_labelme_field_is_one_error(tmp_path: Path, field: str, value: object, where) -> None:
    write_image(tmp_path / "src" / "scan.png", 60, 40)
    (tmp_path / "src" / "scan.json").write_text(json.dumps(mutated(LABELME, field, value)))
    write_image(tmp_path / "src" / "other.png", 60, 40)
    (tmp_path / "src" / "other.json").write_text(json.dumps({**LABELME, "imagePath": "other.png"}))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path / "src", "--from", "labelme", "--out", out)
    assert_one_error(result, "scan.json", where)
    assert (out / "list.txt").read_text().split() == ["other.png"]  # the next file still converts


def test_a_file_gone_since_the_folder_was_walked_is_named_once(tmp_path: Path) -> None:
    """A PAGE, ALTO or JSON file or an image removed after its folder was walked (ground truth or sources
    that change during the run) was 'p.xml: cannot read: [Errno 2] No such file or directory: '/…/p.xml'',
    or 'unreadable image ([Errno 2] …)': the path twice and Python's errno. The line now gives the reason
    once, as for any other file that cannot be read."""
    from docsam_cli.datasets.fields import JsonField
    from docsam_cli.datasets.images import image_size
    from docsam_cli.datasets.xml import parse_xml
    from docsam_cli.errors import InputError

    for read, name in ((parse_xml, "p.xml"), (JsonField.load, "a.json")):
        with pytest.raises(InputError) as caught:
            read(tmp_path / name)
        assert caught.value.reason == "cannot read: No such file or directory"
    with pytest.raises(ValueError, match=r"^unreadable image \(No such file or directory\)$"):
        image_size(path=tmp_path / "a.png")
