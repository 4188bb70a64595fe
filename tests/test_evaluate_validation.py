"""evaluate checks every JSON field it reads (ground truth, predictions, results lists, the unified layout):
one `error:` line naming the file and the field, exit 1, and the rest is scored."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path

import pytest
from convert_helpers import (
    DELETE,
    NAN,
    assert_one_error,
    coco_cases,
    coco_document,
    coco_source,
    mutated,
    page_xml,
    run_cli,
    write_image,
)

from docsam_cli.app import load_command
from docsam_cli.writers.page_outputs import STATE_DIR


def _files(folder: Path, truth: object, predictions: object) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truth.json").write_text(json.dumps(truth))
    (folder / "pred.json").write_text(json.dumps(predictions))
    return folder / "truth.json", folder / "pred.json"


def test_the_valid_documents_score_one(tmp_path: Path) -> None:
    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 2 and report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0


@pytest.mark.parametrize(("field", "value", "where"), coco_cases("truth"))
def test_malformed_ground_truth(tmp_path: Path, field: str, value: object, where: str) -> None:
    truth, predictions = _files(tmp_path, mutated(coco_document(), field, value), coco_document())
    assert_one_error(run_cli("evaluate", truth, "--pred", predictions), "truth.json", where)


@pytest.mark.parametrize(("field", "value", "where"), coco_cases("predictions"))
def test_malformed_predictions(tmp_path: Path, field: str, value: object, where: str) -> None:
    truth, predictions = _files(tmp_path, coco_document(), mutated(coco_document(), field, value))
    assert_one_error(run_cli("evaluate", truth, "--pred", predictions), "pred.json", where)


def test_a_broken_ground_truth_image_is_left_out_and_the_rest_scored(tmp_path: Path) -> None:
    truth, predictions = _files(
        tmp_path, mutated(coco_document(), "images[1].height", "tall"), coco_document()
    )
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 1 and len(result.error_lines()) == 1
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0)


def test_a_page_with_unreadable_predictions_is_left_out_not_scored_as_misses(tmp_path: Path) -> None:
    predictions = mutated(coco_document(), "annotations[2].score", "sure")
    truth, predictions = _files(tmp_path, coco_document(), predictions)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(result, "pred.json", "annotations[2].score")
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0


def _page_files(folder: Path, region: str = "10,10 50,10 50,30 10,30") -> Path:
    """PAGE files a.xml and b.xml of images a.png and b.png in `folder`, each with one paragraph."""
    for name in ("a", "b"):
        write_image(folder / f"{name}.png", 60, 40)
        regions = [("TextRegion", "paragraph", region)]
        (folder / f"{name}.xml").write_text(page_xml(f"{name}.png", 60, 40, regions))
    return folder


def _alto_file(path: Path, image: str) -> Path:
    """An ALTO file of `image` (60x40) with one text block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        "<MeasurementUnit>pixel</MeasurementUnit><sourceImageInformation>"
        f"<fileName>{image}</fileName></sourceImageInformation></Description>"
        '<Layout><Page WIDTH="60" HEIGHT="40"><PrintSpace>'
        '<TextBlock ID="b1" HPOS="10" VPOS="10" WIDTH="40" HEIGHT="20"/></PrintSpace></Page></Layout></alto>'
    )
    return path


@pytest.mark.parametrize("pred", ["docsam", "docsam/page", "docsam/page/a.xml"])
def test_predictions_inside_the_ground_truths_folder_are_not_read_as_ground_truth(
    tmp_path: Path, pred: str
) -> None:
    """segment's output kept under the ground truth's folder (books/docsam beside books/gt): the walk read
    the predicted PAGE files as ground truth too, and those it met first (docsam sorts before gt) were
    scored against themselves, AP 1.0, the real ground truth an error. Given its page/ folder, the walk
    still read its alto/ beside it, taken for the ground truth's format."""
    books = tmp_path / "books"
    _page_files(books / "gt")
    _page_files(books / "docsam" / "page", region="0,0 5,0 5,5 0,5")  # misses every paragraph
    for name in ("a", "b"):
        _alto_file(books / "docsam" / "alto" / f"{name}.xml", f"../gt/{name}.png")
    (books / "docsam" / STATE_DIR).mkdir()  # segment's bookkeeping: its output folder
    result = run_cli("evaluate", books, "--pred", books / pred, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 2
    assert report["mask"]["AP"] == 0.0 and report["per_class"]["paragraph"]["gt"] == 2


def test_a_results_list_beside_the_ground_truths_page_files_leaves_them_read(tmp_path: Path) -> None:
    """A results list kept in the folder of the PAGE ground truth, under the folder evaluated: that folder
    was left out of the walk as the predictions', so no ground truth was found at all ('cannot tell the
    format'); only segment's output folder (or a --pred folder) is left out."""
    books = tmp_path / "books"
    _page_files(books / "gt")
    entry = {"category_id": "paragraph", "bbox": [10, 10, 41, 21], "score": 0.9}
    entry["segmentation"] = [[10, 10, 50, 10, 50, 30, 10, 30]]
    results = [{**entry, "file_name": "a.png"}, {**entry, "file_name": "b.png"}]
    (books / "gt" / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", books, "--pred", books / "gt" / "results.json", "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 2 and report["per_class"]["paragraph"]["gt"] == 2
    assert report["per_class"]["paragraph"]["predictions"] == 2 and report["mask"]["AP"] > 0.5


@pytest.mark.parametrize(
    ("page", "alto"),
    [("doc/page/0001.xml", "doc/alto/0001.xml"), ("OCR-D-GT-PAGE/0001.xml", "OCR-D-GT-ALTO/0001.xml")],
)
def test_a_folder_of_page_files_and_their_alto_needs_the_format_said(
    tmp_path: Path, page: str, alto: str
) -> None:
    """A Transkribus export with ALTO (alto/ beside page/) or an OCR-D workspace with both file groups of
    ground truth: auto took the format of the first XML file found, ALTO (alto/ sorts before page/), and
    scored against its untyped blocks without a word, the PAGE files and their classes left out. It is now
    a usage error naming one file of each; --gt-format page scores the PAGE files."""
    export = tmp_path / "export"
    write_image(export / "doc" / "0001.png", 60, 40)
    (export / page).parent.mkdir(parents=True)
    (export / page).write_text(
        page_xml("0001.png", 60, 40, [("TextRegion", "heading", "10,10 50,10 50,30 10,30")])
    )
    _alto_file(export / alto, "0001.png")
    predictions = tmp_path / "run"
    predictions.mkdir()
    (predictions / "0001.xml").write_text((export / page).read_text())
    result = run_cli("evaluate", export, "--pred", predictions)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert f"({page}, ...)" in line and f"({alto}, ...)" in line and "--gt-format page" in line
    result = run_cli("evaluate", export, "--pred", predictions, "--gt-format", "page", "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0)
    assert list(report["per_class"]) == ["heading"]


def test_a_page_whose_page_file_cannot_be_read_is_left_out_not_scored_as_misses(tmp_path: Path) -> None:
    """segment names a page's PAGE file after the page: a truncated one is an error of that page, which is
    left out as with an unreadable COCO prediction (it used to be scored as a page with no predictions)."""
    truth, predictions = _page_files(tmp_path / "truth"), _page_files(tmp_path / "pred")
    (predictions / "b.xml").write_text((predictions / "b.xml").read_text()[:200])
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(result, "b.xml", "invalid XML")
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["images_without_predictions"] == []
    assert report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0


def test_a_predicted_region_without_coords_is_warned_of_and_its_page_scored(tmp_path: Path) -> None:
    """eScriptorium's PAGE export puts the lines that are in no region into a TextRegion `eSc_dummyblock_`
    without Coords: such a page was an error and left out of the scores (an export scored against itself
    scored nothing); the region, which predicts no shape, is left out with a warning, as in the ground
    truth, and the page is scored."""
    truth, predictions = _page_files(tmp_path / "truth"), _page_files(tmp_path / "pred")
    dummy = '<TextRegion id="eSc_dummyblock_"><TextLine id="l1"><Coords points="5,32 55,32 55,38 5,38"/>'
    page = (predictions / "b.xml").read_text().replace("</Page>", f"{dummy}</TextLine></TextRegion></Page>")
    (predictions / "b.xml").write_text(page)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {predictions / 'b.xml'}: TextRegion eSc_dummyblock_: no Coords, left out"]
    report = json.loads(result.stdout)
    assert report["images"] == 2 and report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0


def test_predicted_pages_that_are_no_ground_truth_image_are_named_not_dropped_silently(
    tmp_path: Path,
) -> None:
    """A coco.json or PAGE folder of more pages than the ground truth (the whole book against its val
    split, or ground truth that lost pages): the extra pages were dropped without a word; they are still not
    scored, and now counted on stderr and named in the report, as pages without predictions are."""
    predictions = coco_document()
    predictions["images"].append({"id": 3, "file_name": "c.png", "width": 60, "height": 40})
    predictions["annotations"].append(
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0, "score": 0.7}
    )
    truth, predictions = _files(tmp_path, coco_document(), predictions)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert "1 predicted pages are not images of the ground truth (not scored)" in result.stderr
    report = json.loads(result.stdout)
    assert report["predictions_without_ground_truth"] == ["c"] and report["images"] == 2
    assert report["mask"]["AP"] == pytest.approx(1.0) and report["images_without_predictions"] == []


@pytest.mark.parametrize("fmt", ["page", "coco", "results"])
def test_a_page_whose_ground_truth_cannot_be_read_is_that_error_only(tmp_path: Path, fmt: str) -> None:
    """A broken ground truth of page b (a truncated b.xml, a COCO entry of a bad height) with predictions of
    b: besides b's error, b was counted among the 'predicted pages not images of the ground truth' and named
    in `predictions_without_ground_truth`, pointing at the predictions; b's error is all that is said now.
    A results list naming b (by image id or file name) was a second error, "2 is not an image of the ground
    truth"."""
    if fmt == "page":
        truth, predictions = _page_files(tmp_path / "truth"), _page_files(tmp_path / "pred")
        (truth / "b.xml").write_text((truth / "b.xml").read_text()[:200])
        file_name, where = "b.xml", "invalid XML"
    else:
        broken = mutated(coco_document(), "images[1].height", "tall")
        truth, predictions = _files(tmp_path, broken, coco_document() if fmt == "coco" else _results())
        file_name, where = "truth.json", "images[1].height"
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(result, file_name, where)
    assert "not images of the ground truth" not in result.stderr
    report = json.loads(result.stdout)
    assert report["predictions_without_ground_truth"] == [] and report["images"] == 1


def test_predictions_of_two_images_of_the_same_name_are_left_out_not_mixed(tmp_path: Path) -> None:
    """segment's coco.json names `vol1/0001.png` and `vol2/0001.png` both `0001.png`: which one is the
    ground truth's cannot be told, so neither is scored (the last one used to win, without a word)."""
    predictions = coco_document()
    predictions["images"][1]["file_name"] = "vol2/a.png"  # another page named like the ground truth's a.png
    predictions["images"].append({"id": 3, "file_name": "b.png", "width": 60, "height": 40})
    predictions["annotations"].append(
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0, "score": 0.7}
    )
    truth, predictions = _files(tmp_path, coco_document(), predictions)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(
        result,
        "pred.json",
        "images[1].file_name 'vol2/a.png': another image has the name 'a' too (extensions and folders aside)",
    )
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0)


def test_results_of_two_images_of_the_same_name_are_left_out_not_merged(tmp_path: Path) -> None:
    """A results list naming `vol1/a.png` and `vol2/a.png` by file name: their predictions were scored
    together as the ground truth's page a (false positives of the other page), exit 0. Now as for a
    dataset: one error, the page left out, the others scored; one file named twice (b.png, ./b.png) is one
    page."""
    results = [
        {"file_name": "vol1/a.png", "category_id": "table", "bbox": [10, 10, 30, 20], "score": 0.9},
        {"file_name": "vol2\\a.jpg", "category_id": "table", "bbox": [0, 0, 5, 5], "score": 0.95},
        {"file_name": "vol1/a.png", "category_id": "figure", "bbox": [10, 5, 20, 15], "score": 0.8},
        {"file_name": "b.png", "category_id": "table", "bbox": [5, 5, 20, 10], "score": 0.7},
        {"file_name": "./b.png", "category_id": "table", "bbox": [40, 20, 10, 10], "score": 0.6},
    ]
    truth, predictions = _files(tmp_path, coco_document(), results)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(
        result,
        "pred.json",
        "[1].file_name: 'vol2\\\\a.jpg': another prediction names 'vol1/a.png', an image of the name 'a' too",
    )
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["per_class"]["table"]["gt"] == 1
    assert report["per_class"]["table"]["predictions"] == 2 and report["mask"]["AP50"] == pytest.approx(1.0)


def test_two_page_files_of_one_page_are_left_out_not_one_taken(tmp_path: Path) -> None:
    """A --pred folder holding two runs (run1/a.xml, run2/a.xml): which one to score cannot be told, so
    the page is left out with an error, as for coco.json (the last file read used to win, without a word)."""
    truth = _page_files(tmp_path / "truth")
    predictions = tmp_path / "pred"
    _page_files(predictions / "run1")
    _page_files(predictions / "run2", region="0,0 5,0 5,5 0,5").joinpath("b.xml").unlink()
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(result, str(predictions / "run2" / "a.xml"), "another PAGE file")
    assert str(predictions / "run1" / "a.xml") in result.error_lines()[0]
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0


def _results() -> list[dict]:
    """A results list of the two pages of `coco_document`, by image id, with ids and a class name."""
    document = coco_document()
    return [
        {
            key: annotation[key]
            for key in ("image_id", "category_id", "segmentation", "bbox", "score")
            if key in annotation
        }
        for annotation in document["annotations"]
    ] + [{"file_name": "b.png", "category_id": "table", "bbox": [30, 20, 10, 10], "score": 0.2}]


# (field, value, the field named, pages scored): a page with an unreadable prediction is left out of the
# scores; an entry that names no page of the ground truth (or none at all) costs no page.
RESULTS_CASES = [
    ("[0].image_id", DELETE, "[0].image_id", 2),
    ("[0].image_id", 99, "[0].image_id", 2),
    ("[0].image_id", {}, "[0].image_id", 2),
    ("[3].file_name", 3, "[3].file_name", 2),
    ("[3].file_name", "c.png", "[3].file_name", 2),
    ("[0].category_id", 99, "[0].category_id", 1),
    ("[0].category_id", {}, "[0].category_id", 1),
    ("[0].score", "x", "[0].score", 1),
    ("[0].score", NAN, "[0].score", 1),
    ("[1].segmentation.size", DELETE, "[1].segmentation.size", 1),
    ("[1].segmentation.size", [40, 61], "[1].segmentation.size", 1),
    ("[1].segmentation.counts", "!!", "[1].segmentation.counts", 1),
    ("[0].segmentation", [[1, 2, 3]], "[0].segmentation[0]", 1),
    ("[2].bbox", [1, 2], "[2].bbox", 1),
    ("[2]", "x", "[2]", 2),
]


def test_the_valid_results_list_scores(tmp_path: Path) -> None:
    truth, predictions = _files(tmp_path, coco_document(), _results())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["per_class"]["table"]["predictions"] == 3 and report["mAF"] == 1.0


@pytest.mark.parametrize(("field", "value", "where", "scored"), RESULTS_CASES)
def test_malformed_results_list(tmp_path: Path, field: str, value: object, where: str, scored: int) -> None:
    truth, predictions = _files(tmp_path, coco_document(), mutated(_results(), field, value))
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_error(result, "pred.json", where)
    report = json.loads(result.stdout)
    assert report["images"] == scored
    if scored == 1:  # the other page is scored with all its predictions
        assert report["mask"]["AP"] == pytest.approx(1.0)


def _segment_folder(tmp_path: Path) -> tuple[Path, Path]:
    """The ground truth of `coco_document`, and a segment output folder holding its predictions as a
    coco.json that numbers pages and classes otherwise (b.png is its image 1, table its category 2), a
    third page the ground truth lacks, and the coco_results.json of that coco.json."""
    truth = coco_source(tmp_path / "gt") / "annotations.json"
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    document = coco_document()
    images = {1: 2, 2: 1}  # the ground truth's image id → segment's: b.png is segment's image 1
    classes = {1: 2, 2: 1}  # table is segment's category 2
    segment = {
        "images": [
            {"id": 1, "file_name": "b.png", "width": 60, "height": 40},
            {"id": 2, "file_name": "a.png", "width": 60, "height": 40},
            {"id": 3, "file_name": "c.png", "width": 60, "height": 40},
        ],
        "categories": [{"id": 1, "name": "figure"}, {"id": 2, "name": "table"}],
        "annotations": [
            {**a, "image_id": images[a["image_id"]], "category_id": classes[a["category_id"]]}
            for a in document["annotations"]
        ],
    }
    (out / "coco.json").write_text(json.dumps(segment))
    results = [
        {k: v for k, v in a.items() if k not in ("id", "area", "iscrowd")} for a in segment["annotations"]
    ]
    (out / "coco_results.json").write_text(json.dumps(results))
    return truth, out


def test_segments_results_list_is_read_with_the_ids_of_its_coco_json(tmp_path: Path) -> None:
    """segment's coco_results.json names pages and classes by the ids of the coco.json beside it (as
    pycocotools' loadRes reads it against that file), which number them in its own order: read with the
    ground truth's ids, its predictions were scored on other pages and as other classes, without a word.
    It now scores as that coco.json does, and a page segment did beyond the ground truth is only listed."""
    truth, out = _segment_folder(tmp_path)
    reports = []
    for predictions in ("coco.json", "coco_results.json"):
        result = run_cli("evaluate", truth, "--pred", out / predictions, "--json", "-")
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    assert reports[0] == reports[1]
    assert reports[1]["mask"]["AP"] == pytest.approx(1.0) and reports[1]["mAF"] == 1.0
    assert reports[1]["predictions_without_ground_truth"] == ["c"]


def test_segments_results_list_edited_in_place_is_still_read_with_its_coco_json(tmp_path: Path) -> None:
    """A pipeline step that filters coco_results.json in place (`jq 'map(select(.score >= 0.75))'`, then
    renamed over it) leaves a list that still names coco.json's images: it is scored, as what is left."""
    truth, out = _segment_folder(tmp_path)
    results = out / "coco_results.json"
    results.write_text(
        json.dumps([entry for entry in json.loads(results.read_text()) if entry["score"] >= 0.75])
    )
    result = run_cli("evaluate", truth, "--pred", results, "--json", "-")
    assert result.exit_code == 0 and result.error_lines() == [], result.stderr
    report = json.loads(result.stdout)
    assert sum(row["predictions"] for row in report["per_class"].values()) == 2  # b.png's 0.7 is gone
    assert report["images"] == 2 and report["mask"]["AP"] < 1.0


def test_segments_results_list_without_its_coco_json_is_an_error_not_read_with_other_ids(
    tmp_path: Path,
) -> None:
    """segment's coco_results.json whose coco.json is gone (removed, or an earlier docsam killed between
    the two renames, which wrote the list first) was read with the ground truth's image ids: its image 1,
    b.png, scored as the ground truth's image 1, a.png, without a word. It is now an error that says so."""
    truth, out = _segment_folder(tmp_path)
    (out / "coco.json").unlink()
    result = run_cli("evaluate", truth, "--pred", out / "coco_results.json", "--json", "-")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.error_lines() == [
        f"error: {out / 'coco_results.json'}: segment's results list names the images of the coco.json "
        f"beside it, which is not there (run segment into {out} again: it writes both)"
    ]


def test_neither_a_dataset_nor_a_results_list(tmp_path: Path) -> None:
    truth, predictions = _files(tmp_path, coco_document(), {"predictions": []})
    result = run_cli("evaluate", truth, "--pred", predictions)
    assert_one_error(result, "pred.json", "pred.json: expected a COCO dataset")


def test_ground_truth_that_is_not_there_is_named_as_missing(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    result = run_cli("evaluate", tmp_path / "typo", "--pred", tmp_path / "pred")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.error_lines() == [
        f"error: invalid value: {tmp_path / 'typo'}: no such file or folder (see 'docsam evaluate --help')"
    ]


def test_an_image_left_out_for_a_broken_annotation_is_named(tmp_path: Path) -> None:
    truth = coco_document()
    truth["annotations"][1]["category_id"] = 77
    truth, predictions = _files(tmp_path, truth, coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 1
    assert result.error_lines() == [
        f"error: {truth}: annotations[1].category_id: 77 is not the id of a category "
        "(its image a.png is left out)"
    ]
    assert json.loads(result.stdout)["images"] == 1


def test_ground_truth_without_images_is_said_so_not_blamed_on_the_predictions(tmp_path: Path) -> None:
    empty = {**coco_document(), "images": [], "annotations": []}
    truth, predictions = _files(tmp_path, empty, coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions)
    assert_one_error(result, "truth.json", "truth.json: no ground-truth image to score")


def test_an_empty_split_says_why_nothing_is_scored(tmp_path: Path) -> None:
    """`convert-dataset --split train=0.9,val=0.1` of two pages leaves val empty (README's own example on a
    small set); evaluating it said only "no ground-truth image to score", as if the pages had been lost. It
    now names the empty list and what makes one."""
    source, out = coco_source(tmp_path / "src"), tmp_path / "unified"
    split = ("--split", "train=0.9,val=0.1")
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", out, *split)
    assert result.exit_code == 0, result.stderr
    expected = [
        f"error: {out / 'val' / 'list.txt'}: lists no images, so nothing can be scored (a split that "
        "convert-dataset --split left empty: too few images for its fraction; convert again with a larger "
        "fraction or evaluate another split)"
    ]
    result = run_cli("evaluate", out / "val", "--pred", source / "annotations.json")
    assert result.exit_code == 1
    assert result.error_lines() == expected
    # With --weights, the model loaded first (seconds to a minute) and the weights' errors came first.
    result = run_cli("evaluate", out / "val", "--weights", tmp_path / "missing.safetensors")
    assert (result.exit_code, result.error_lines()) == (1, expected)


@pytest.fixture
def unified(tmp_path: Path) -> Path:
    """The two pages of `coco_document` converted into the unified layout."""
    source, out = coco_source(tmp_path / "src"), tmp_path / "unified"
    assert run_cli("convert-dataset", source, "--from", "coco", "--out", out).exit_code == 0
    return out


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("images[0].height", DELETE, "images[0].height"),
        ("images[0].width", "60", "images[0].width"),
        ("images", [], "images"),
        ("categories[0].name", DELETE, "categories[0].name"),
        ("annotations[0].segmentation", [[1, "x", 3, 4, 5, 6]], "annotations[0].segmentation[0][1]"),
        ("annotations[0].category_id", 9, "annotations[0].category_id"),
        ("images[0].width", 10_000_000, "images[0]"),  # 400 million pixels: over the pixel limit
    ],
)
def test_malformed_per_image_json_of_the_unified_layout(unified: Path, field, value, where: str) -> None:
    path = unified / "coco" / "a.json"
    path.write_text(json.dumps(mutated(json.loads(path.read_text()), field, value)))
    result = run_cli(
        "evaluate", unified, "--pred", unified.parent / "src" / "annotations.json", "--json", "-"
    )
    assert_one_error(result, "a.json", where)
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["predictions_without_ground_truth"] == []  # a is that error


def test_results_by_an_image_id_that_per_image_jsons_share_are_an_error_not_given_to_one(
    unified: Path,
) -> None:
    """The reference's layout numbers each per-image json on its own: a results list's `image_id` 1 of
    pages a and b went to whichever json was read last, the other page scored as all missed, exit 0.
    Now one error, both pages left out, and a page of an id of its own (c) is scored."""
    for name, identifier in (("a", 1), ("b", 1), ("c", 3)):
        document = json.loads((unified / "coco" / "a.json").read_text())
        document["images"][0].update(id=identifier, file_name=f"{name}.png")
        for annotation in document["annotations"]:
            annotation["image_id"] = identifier
        (unified / "coco" / f"{name}.json").write_text(json.dumps(document))
    (unified / "image" / "c.png").write_bytes((unified / "image" / "a.png").read_bytes())
    (unified / "list.txt").write_text("a.png\nb.png\nc.png\n")
    results = [
        {key: annotation[key] for key in ("category_id", "segmentation", "bbox") if key in annotation}
        for annotation in json.loads((unified / "coco" / "a.json").read_text())["annotations"]
    ]
    results = [{"image_id": image_id, **entry, "score": 0.9} for image_id in (1, 3) for entry in results]
    predictions = unified.parent / "results.json"
    predictions.write_text(json.dumps(results))
    result = run_cli("evaluate", unified, "--pred", predictions, "--json", "-")
    assert_one_error(
        result, "results.json", "[0].image_id: 1 is the id of 2 images of the ground truth (a, b)"
    )
    assert "(and 1 more predictions)" in result.error_lines()[0]
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["images_without_predictions"] == []
    assert report["mask"]["AP50"] == pytest.approx(1.0) and report["box"]["AP"] == pytest.approx(1.0)


def test_per_image_jsons_that_number_their_categories_apart_declare_every_class(unified: Path) -> None:
    """The reference's loader renumbers each json's categories by name, so b.json may number them its own
    way (title 1, table 2, figure 3, where a.json has figure 1, table 2): the first json's ids won, title
    was lost as a declared class (its predictions ignored, not false positives; a model run not prompted
    with it) and a results list's category_id 1 was taken as figure on every page. Now title is declared,
    and id 1 is an error that leaves its page out."""
    path = unified / "coco" / "b.json"
    document = json.loads(path.read_text())
    names = {category["id"]: category["name"] for category in document["categories"]}
    renumbered = {"title": 1, "table": 2, "figure": 3}
    for annotation in document["annotations"]:
        annotation["category_id"] = renumbered[names[annotation["category_id"]]]
    document["categories"] = [{"id": i, "name": name} for name, i in renumbered.items()]
    path.write_text(json.dumps(document))
    results = [
        {"file_name": "a.png", "category_id": "title", "bbox": [40, 30, 10, 5], "score": 0.9},
        {"file_name": "b.png", "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.7},
    ]
    predictions = unified.parent / "results.json"
    predictions.write_text(json.dumps(results))
    result = run_cli("evaluate", unified, "--pred", predictions, "--json", "-")
    assert_one_error(
        result, "results.json", "[1].category_id: 1 is the id of figure, title in the ground truth"
    )
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["ignored_predictions"] == {}
    assert report["per_class"]["title"]["predictions"] == 1 and report["per_class"]["title"]["f1"] == 0.0


def test_text_word_is_dropped_from_the_jsons_that_list_table_as_the_reference_drops_it(unified: Path) -> None:
    """The reference's loader (and training) drops "text word" from a per-image json whose categories list
    "table" too. evaluate dropped it from every page as soon as any page annotated a table, and kept it on
    every page when none did: it scored other classes than the model was trained on."""
    a_path, b_path = unified / "coco" / "a.json", unified / "coco" / "b.json"
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    a["categories"].append({"id": 3, "name": "text word"})  # a lists table: its text word is dropped
    a["annotations"].append({**a["annotations"][0], "id": 9, "category_id": 3})
    b["categories"] = [{"id": 1, "name": "figure"}, {"id": 2, "name": "text word"}]  # b does not list it
    for annotation in b["annotations"]:
        annotation["category_id"] = 2
    a_path.write_text(json.dumps(a))
    b_path.write_text(json.dumps(b))
    (unified.parent / "results.json").write_text("[]")
    result = run_cli("evaluate", unified, "--pred", unified.parent / "results.json", "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {name: scores["gt"] for name, scores in report["per_class"].items()} == {
        "figure": 1,
        "table": 1,
        "text word": 1,
    }


def test_a_missing_per_image_json_is_one_error(unified: Path) -> None:
    (unified / "coco" / "b.json").unlink()
    result = run_cli("evaluate", unified, "--pred", unified.parent / "src" / "annotations.json")
    assert_one_error(result, "b.json", "cannot read")


def test_malformed_page_predictions(tmp_path: Path) -> None:
    """A score that is not a number from 0 to 1 makes the PAGE file unusable, a region without usable
    points makes the region so: either leaves its page out of the scores. Each is one line naming the file
    and the region."""
    truth, _ = _files(tmp_path, coco_document(), [])
    predictions = tmp_path / "page"
    predictions.mkdir()
    regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
    (predictions / "a.xml").write_text(page_xml("a.png", 60, 40, regions).replace("/>", ' conf="high"/>', 1))
    regions = [("TableRegion", None, "5,5 25,5 25,15 5,15"), ("ImageRegion", None, "1,2 3")]
    (predictions / "b.xml").write_text(page_xml("b.png", 60, 40, regions))
    result = run_cli("evaluate", truth, "--pred", predictions / "a.xml", "--json", "-")
    assert_one_error(result, "a.xml", "TableRegion r0: Coords/@conf 'high'")
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["images_without_predictions"] == ["b"]
    result = run_cli("evaluate", truth, "--pred", predictions / "b.xml", "--json", "-")
    assert_one_error(result, "b.xml", "ImageRegion r1")
    assert "Coords" in result.error_lines()[0]
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["images_without_predictions"] == ["a"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [("report", "is a folder"), ("truth.json/report.json", "{tmp}/truth.json is not a folder")],
)
def test_an_unwritable_json_report_is_refused_before_anything_is_read(
    tmp_path: Path, target: str, reason: str
) -> None:
    """Exit 2 and one line naming --json's path, before the ground truth is read (it is broken here, and
    says nothing)."""
    (tmp_path / "report").mkdir()
    truth, predictions = _files(tmp_path, {"images": "none"}, coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", tmp_path / target)
    line = f"error: --json {tmp_path / target}: {reason.format(tmp=tmp_path)}"
    assert result.exit_code == 2 and result.error_lines() == [line]


@pytest.mark.parametrize(("target", "what"), [("pred.json", "--pred"), ("truth.json", "ground truth")])
def test_a_json_report_naming_an_input_is_refused_not_written_over_it(
    tmp_path: Path, target: str, what: str
) -> None:
    """`--json pred.json` (a slip of tab completion) replaced the predictions with the report, exit 0."""
    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    before = (tmp_path / target).read_bytes()
    (tmp_path / "link.json").symlink_to(tmp_path / target)
    for report in (tmp_path / target, tmp_path / "link.json"):
        result = run_cli("evaluate", truth, "--pred", predictions, "--json", report)
        line = f"error: --json {report}: is the {what} file (the report would replace it)"
        assert result.exit_code == 2 and result.error_lines() == [line]
    assert (tmp_path / target).read_bytes() == before


@pytest.mark.parametrize(("target", "what"), [("gt/a.xml", "ground truth"), ("pred/b.xml", "--pred")])
def test_a_json_report_naming_a_file_of_an_input_folder_is_refused_not_written_over_it(
    tmp_path: Path, target: str, what: str
) -> None:
    """`evaluate gt --pred pred --json gt/a.xml` (a slip of tab completion) replaced a ground-truth PAGE
    file with the report, exit 0: only a ground truth or --pred given as one file was checked. An earlier
    report kept in the folder is still replaced."""
    _page_files(tmp_path / "gt")
    _page_files(tmp_path / "pred")
    before = (tmp_path / target).read_bytes()
    result = run_cli("evaluate", tmp_path / "gt", "--pred", tmp_path / "pred", "--json", tmp_path / target)
    folder = tmp_path / target.split("/")[0]
    line = f"error: --json {tmp_path / target}: is a file of the {what} folder {folder} (the report would "
    line += "replace it)"
    assert result.exit_code == 2 and result.error_lines() == [line]
    assert (tmp_path / target).read_bytes() == before
    for _ in range(2):  # a report in the folder, then replaced by the next run's
        report = folder / "report.json"
        result = run_cli("evaluate", tmp_path / "gt", "--pred", tmp_path / "pred", "--json", report)
        assert result.exit_code == 0, result.stderr


def test_a_json_report_naming_an_image_of_the_images_folder_is_refused_not_written_over_it(
    tmp_path: Path,
) -> None:
    """`evaluate gt --images scans --pred pred --json scans/a.png` (tab completion in the wrong folder)
    replaced a scan with the report, exit 0: the folder given by --images was not checked as the ground
    truth's and --pred's are."""
    _page_files(tmp_path / "scans")
    truth = tmp_path / "gt"
    truth.mkdir()
    for name in ("a", "b"):
        (tmp_path / "scans" / f"{name}.xml").rename(truth / f"{name}.xml")
    _page_files(tmp_path / "pred")
    target = tmp_path / "scans" / "a.png"
    before = target.read_bytes()
    result = run_cli(
        "evaluate", truth, "--images", tmp_path / "scans", "--pred", tmp_path / "pred", "--json", target
    )
    line = f"error: --json {target}: is a file of the --images folder {tmp_path / 'scans'} (the report would "
    line += "replace it)"
    assert result.exit_code == 2 and result.error_lines() == [line]
    assert target.read_bytes() == before


def test_a_json_report_naming_the_weights_given_with_a_tilde_is_refused(tmp_path: Path, monkeypatch) -> None:
    """`--weights=~/w.safetensors` (after =, the shell leaves `~`) is the user's file, as `--json` is
    expanded: the report would replace the weights."""
    monkeypatch.setenv("HOME", str(tmp_path))
    truth, _ = _files(tmp_path, coco_document(), coco_document())
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    result = run_cli("evaluate", truth, "--weights=~/w.safetensors", "--json=~/w.safetensors")
    line = f"error: --json {tmp_path / 'w.safetensors'}: is the --weights file (the report would replace it)"
    assert result.exit_code == 2 and result.error_lines() == [line]
    assert (tmp_path / "w.safetensors").read_bytes() == b"weights"


def test_a_json_report_in_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    """The folder's permissions are probed by creating a file in it (root may write anywhere: the probe's
    refusal is simulated)."""
    import errno

    import docsam_cli.atomic

    def refused(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    monkeypatch.setattr(docsam_cli.atomic, "_open_probe", refused)
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", tmp_path / "new" / "report.json")
    line = f"error: --json {tmp_path / 'new' / 'report.json'}: cannot write in {tmp_path}: Permission denied"
    assert result.exit_code == 2 and result.error_lines() == [line]


# Run before the app: the folders taken as ones with no nameless files (NFS, FUSE): O_TMPFILE fails, so that
# the writability probe has a name.
_WITHOUT_NAMELESS_FILES = """
import errno, os
_open = os.open
def _without_nameless_files(path, flags, *args, **kwargs):
    if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), os.fspath(path))
    return _open(path, flags, *args, **kwargs)
os.open = _without_nameless_files
"""

# Run before the app: SIGKILL (what the out-of-memory killer or a scheduler sends) just before the process's
# first file-system change of kind KILL_EVENT (an audit event) in the folder KILL_IN.
_KILL_AT_EVENT = """
import os, signal, sys
def _kill(event, args):
    if event == os.environ["KILL_EVENT"] and os.path.dirname(os.fspath(args[0])) == os.environ["KILL_IN"]:
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(_kill)
"""


@pytest.mark.parametrize(
    ("event", "left"),
    [
        ("os.remove", ".docsam-probe."),  # the writability probe, created and about to be removed
        ("os.rename", ".report.json."),  # the report's temporary, written and about to be renamed
    ],
)
def test_a_run_killed_writing_in_the_reports_folder_leaves_nothing_the_rerun_does_not_clean(
    tmp_path: Path, monkeypatch, event: str, left: str
) -> None:
    """A killed run left `.docsam-probe.<random>.tmp` (a kill during the writability probe, in a folder with
    no nameless files: NFS, FUSE) or `.report.json.<random>.tmp` (during the report's write) in the report's
    folder, the user's, and no rerun removed it."""
    from cli_helpers import run_docsam

    truth, predictions = _files(tmp_path / "in", coco_document(), coco_document())
    folder = tmp_path / "reports"
    folder.mkdir()
    monkeypatch.setenv("KILL_EVENT", event)
    monkeypatch.setenv("KILL_IN", str(folder))
    command = ["evaluate", str(truth), "--pred", str(predictions), "--json", str(folder / "report.json")]
    killed = run_docsam(*command, prelude=_WITHOUT_NAMELESS_FILES + _KILL_AT_EVENT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (temporary,) = folder.iterdir()
    assert temporary.name.startswith(left) and temporary.name.endswith(".tmp")

    rerun = run_docsam(*command, prelude=_WITHOUT_NAMELESS_FILES)

    assert rerun.returncode == 0, rerun.stderr
    assert [path.name for path in folder.iterdir()] == ["report.json"]
    assert json.loads((folder / "report.json").read_text())["images"] == 2


def test_a_json_report_that_cannot_be_written_is_an_error_line(tmp_path: Path, monkeypatch) -> None:
    """The disk fills up after the check: the scores are shown, then one line, exit 1."""
    import errno

    from docsam_cli.commands import evaluate

    def full(path: object, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(evaluate, "atomic_write_text", full)
    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", tmp_path / "report.json")
    assert result.exit_code == 1 and "AP50" in result.stderr  # the tables came first
    assert result.error_lines() == [
        f"error: --json {tmp_path / 'report.json'}: cannot write: No space left on device"
    ]


def test_an_empty_json_report_name_is_refused_not_ignored(tmp_path: Path) -> None:
    """`--json "$REPORT"` with REPORT unset ran and wrote no report, exit 0."""
    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "")
    assert result.exit_code == 2 and len(result.error_lines()) == 1
    assert "--json" in result.error_lines()[0] and "an empty file name" in result.error_lines()[0]


@pytest.mark.parametrize(
    ("truth", "options", "reason"),
    [
        ("unified", ("--level", "lines"), "a unified split is scored with the elements it holds"),
        ("coco", ("--level", "regions,words"), "a COCO file is scored with the elements it holds"),
        ("voc", ("--gt-format", "voc", "--level", "lines"), "voc ground truth supports regions"),
        (
            "icdar",
            ("--gt-format", "icdar2013", "--level", "lines"),
            "icdar2013 ground truth supports cells, regions",
        ),
    ],
)
def test_a_level_that_selects_nothing_is_refused_not_ignored(
    unified: Path, truth: str, options: tuple[str, ...], reason: str
) -> None:
    """`--level lines` against a unified split or a COCO file scored its regions, exit 0, as if lines had
    been scored; a level the ground truth's format has not was ignored likewise (convert-dataset refuses
    both)."""
    source = unified.parent / "src" / "annotations.json"
    result = run_cli("evaluate", unified if truth == "unified" else source, "--pred", source, *options)
    assert result.exit_code == 2 and len(result.error_lines()) == 1
    assert "--level" in result.error_lines()[0] and reason in result.error_lines()[0]


def test_the_level_help_names_every_ground_truth_format_it_chooses_from(unified: Path) -> None:
    """`evaluate --help` said --level chooses PAGE/ALTO elements, yet ICDAR 2013 ground truth is read at it
    too (`--level cells` scores its table cells), as README and the error of a level that selects nothing
    say."""
    source = unified.parent / "src" / "annotations.json"
    result = run_cli("evaluate", source, "--pred", source, "--gt-format", "icdar2013", "--level", "cells")
    assert not any("--level" in line for line in result.error_lines())  # taken (the file is no ICDAR XML)
    (level,) = [param for param in load_command("evaluate").params if param.name == "level"]
    assert level.help.startswith("PAGE, ALTO or ICDAR 2013 elements to score")


def test_images_elsewhere_are_refused_for_a_unified_split_not_ignored(unified: Path) -> None:
    """`--images DIR` with a unified split was ignored without a word (a model run then looked for the
    pages in the split's image/ folder all the same)."""
    source = unified.parent / "src"
    result = run_cli("evaluate", unified, "--pred", source / "annotations.json", "--images", source)
    assert result.exit_code == 2 and len(result.error_lines()) == 1
    assert "--images" in result.error_lines()[0] and "image/ folder" in result.error_lines()[0]


def test_levels_choose_what_is_read_from_page_predictions_of_a_unified_split(unified: Path) -> None:
    """The split may hold lines: `--level` then says what to read from the PAGE predictions."""
    predictions = unified.parent / "page"
    predictions.mkdir()
    for name in ("a", "b"):
        regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
        (predictions / f"{name}.xml").write_text(page_xml(f"{name}.png", 60, 40, regions))
    result = run_cli("evaluate", unified, "--pred", predictions, "--level", "regions,lines", "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["per_class"]["table"]["predictions"] == 2


def test_page_predictions_of_a_split_with_lines_are_read_with_its_lines(tmp_path: Path) -> None:
    """README's flow: `convert-dataset gt/ --from page --level regions,lines --split ...`, then `evaluate
    data/x/val --pred results/page`: segment writes the `text line` class as TextLines, but PAGE predictions
    were read at regions only unless --level was typed again, so every line of the ground truth counted
    as missed (AP 0). They are now read at the levels the split records in its dataset.json; --level
    still chooses."""
    line = '<TextLine id="l1"><Coords points="12,12 38,12 38,18 12,18"/></TextLine>'
    document = page_xml("a.png", 60, 40, [("TextRegion", "paragraph", "10,10 40,10 40,30 10,30")])
    document = document.replace("</Coords></TextRegion>", "").replace(
        '"/></TextRegion>', f'"/>{line}</TextRegion>'
    )
    pages = tmp_path / "gt"
    (pages / "a.xml").parent.mkdir()
    (pages / "a.xml").write_text(document)
    write_image(pages / "a.png", 60, 40)
    split = tmp_path / "data"
    converted = run_cli("convert-dataset", pages, "--from", "page", "--level", "regions,lines", "-o", split)
    assert converted.exit_code == 0, converted.stderr
    result = run_cli("evaluate", split, "--pred", pages, "--json", "-")
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)["per_class"]
    assert scores["text line"]["predictions"] == 1 and scores["text line"]["ap"] == pytest.approx(1.0)
    regions_only = run_cli("evaluate", split, "--pred", pages, "--level", "regions", "--json", "-")
    assert json.loads(regions_only.stdout)["per_class"]["text line"]["predictions"] == 0


def test_long_class_names_are_whole_in_the_table(tmp_path: Path) -> None:
    """The table on stderr (80 columns where it is no terminal: a log file) cut a class name longer than
    its column to 'MarginTextZone:Foo…', so two classes of one prefix read alike; a long name now wraps."""
    names = ["MarginTextZone:FootnoteContinued", "MarginTextZone:FootnoteOriginal"]
    document = coco_document()
    document["categories"] = [{"id": i, "name": name} for i, name in enumerate(names, 1)]
    truth, predictions = _files(tmp_path, document, document)
    result = run_cli("evaluate", truth, "--pred", predictions)
    assert result.exit_code == 0, result.stderr
    first_column = "".join(line.split("│")[1].strip() for line in result.stderr.splitlines() if "│" in line)
    assert all(name in first_column for name in names), result.stderr


def test_predictions_of_a_class_the_ground_truth_spells_in_another_case_say_which_map_scores_them(
    tmp_path: Path,
) -> None:
    """Ground truth labelled 'Table' (an ALTO tag, a COCO file) against segment's 'table', the same name to
    the model: the predictions were ignored with a bare 'see --map'; the line now gives the --map."""
    truth = coco_document()
    truth["categories"][0]["name"] = "Table"
    truth, predictions = _files(tmp_path, truth, coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions)
    assert result.exit_code == 0, result.stderr
    assert (
        "ignored: 2 predictions of class 'table' (not in the ground truth; the model reads it as the ground "
        "truth's 'Table': --map table=Table)"
    ) in result.stderr.splitlines()
    result = run_cli("evaluate", truth, "--pred", predictions, "--map", "table=Table", "--json", "-")
    assert json.loads(result.stdout)["mask"]["AP"] == pytest.approx(1.0)


def test_the_map_an_ignored_line_gives_is_quoted_for_the_shell(tmp_path: Path) -> None:
    """Ground truth labelled "Editor's note" against predictions of "editor's note": the line gave
    `--map 'editor's note=Editor's note'`, an unterminated quote once pasted into a shell. It is quoted
    for the shell now, and pasted back it scores the predictions."""
    truth, predictions = coco_document(), coco_document()
    truth["categories"][0]["name"] = "Editor's note"
    predictions["categories"][0]["name"] = "editor's note"
    truth, predictions = _files(tmp_path, truth, predictions)
    result = run_cli("evaluate", truth, "--pred", predictions)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ignored:")]
    suggested = line.partition("the ground truth's 'Editor's note': ")[2].removesuffix(")")
    assert shlex.split(suggested) == ["--map", "editor's note=Editor's note"]
    result = run_cli("evaluate", truth, "--pred", predictions, *shlex.split(suggested), "--json", "-")
    assert json.loads(result.stdout)["mask"]["AP"] == pytest.approx(1.0)


def test_a_map_holding_a_byte_that_is_not_utf8_is_refused_before_scoring(tmp_path: Path) -> None:
    """`--map $'table=\\xdcberschrift'` (typed in a Latin-1 terminal; Python carries the byte as a lone
    surrogate) scored the pages, printed the tables and then ended in 'error: internal error: TypeError:
    TextInputSequence must be str' (exit 3), the 'ignored:' line reading the name as the model would. It is
    a usage error naming the option, before anything is read, as `--domain` and `segment --classes` are."""
    truth, predictions = _files(tmp_path, coco_document(), coco_document())
    result = run_cli("evaluate", truth, "--pred", predictions, "--map", "table=\udcdcberschrift")
    assert result.exit_code == 2, result.stderr
    assert "--map 'table=\\xdcberschrift' holds a byte that is not UTF-8" in result.stderr
    assert "AP" not in result.stderr


def test_results_of_a_split_page_whose_json_cannot_be_used_are_that_error_only(unified: Path) -> None:
    """As for a COCO file: a results list by image id naming the page whose per-image json cannot be used
    (a bad height) gave a second error, 'N is not an image of the ground truth'."""
    path = unified / "coco" / "b.json"
    document = json.loads(path.read_text())
    identifier = document["images"][0]["id"]
    path.write_text(json.dumps(mutated(document, "images[0].height", "tall")))
    results = [
        {"image_id": identifier, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9},
    ]
    predictions = unified.parent / "results.json"
    predictions.write_text(json.dumps(results))
    result = run_cli("evaluate", unified, "--pred", predictions, "--json", "-")
    assert_one_error(result, "b.json", "images[0].height")
    assert json.loads(result.stdout)["images"] == 1
