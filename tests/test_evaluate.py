"""`docsam evaluate` and `evaluation.evaluate`: self-scores, known perturbations, pycocotools agreement."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from convert_helpers import assert_one_page_refused, page_xml, run_cli, write_image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from docsam_cli.datasets.classes import parse_mapping
from docsam_cli.datasets.ground_truth import load_ground_truth
from docsam_cli.evaluation import GtAnnotation, GtImage, evaluate
from model.instances import PageInstances

SIZE = 200
# Ground truth per image: (class, x0, y0, x1, y1) rectangles (exclusive ends), widths divisible by 5.
TRUTH = {
    "one": [("A", 10, 10, 60, 40), ("A", 100, 10, 150, 40), ("B", 10, 100, 90, 150)],
    "two": [("A", 20, 20, 80, 60), ("B", 100, 100, 180, 140), ("B", 20, 120, 70, 190)],
}


def _mask(x0: int, y0: int, x1: int, y1: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask))


def _truth() -> list[GtImage]:
    return [
        GtImage(name, SIZE, SIZE, [GtAnnotation(c, _rle(_mask(*box)), _xywh(box)) for c, *box in items])
        for name, items in TRUTH.items()
    ]


def _xywh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _page(items: list[tuple[str, int, int, int, int, float]], size: int = SIZE) -> PageInstances:
    """Predictions (class, box, score); semantic maps = union of the instances scoring >= 0.5."""
    names = sorted({item[0] for item in items})
    masks = [_mask(*item[1:5], size=size) for item in items]
    semantic = []
    for name in names:
        union = np.zeros((size, size), dtype=np.uint8)
        for item, mask in zip(items, masks, strict=True):
            if item[0] == name and item[5] >= 0.5:
                union |= mask
        semantic.append(_rle(union))
    return PageInstances(
        size,
        size,
        names,
        [_rle(mask) for mask in masks],
        np.array([item[1:5] for item in items], dtype=np.float64).reshape(-1, 4),
        np.array([item[5] for item in items], dtype=np.float64),
        np.array([names.index(item[0]) for item in items], dtype=np.int64),
        semantic,
    )


def _area(items) -> dict[str, int]:
    totals: dict[str, int] = {}
    for c, x0, y0, x1, y1 in items:
        totals[c] = totals.get(c, 0) + (x1 - x0) * (y1 - y0)
    return totals


def test_ground_truth_against_itself_scores_one() -> None:
    predictions = {name: _page([(c, *box, 1.0) for c, *box in items]) for name, items in TRUTH.items()}
    result = evaluate(_truth(), predictions)
    assert result.mask == result.box == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    assert result.maf == 1.0 and result.miou == 1.0


def test_dropped_instances() -> None:
    kept = {"one": TRUTH["one"][1:], "two": TRUTH["two"]}  # one of the three A instances is missing
    predictions = {name: _page([(c, *box, 1.0) for c, *box in items]) for name, items in kept.items()}
    result = evaluate(_truth(), predictions)
    recall_thresholds = np.linspace(0, 1, 101)
    ap_a = float(np.mean(recall_thresholds <= 2 / 3 + 1e-12))  # precision 1 up to recall 2/3, then 0
    assert result.per_class["A"].ap == pytest.approx(ap_a) and result.per_class["B"].ap == pytest.approx(1.0)
    assert result.mask["AP"] == pytest.approx((ap_a + 1) / 2) and result.box["AP"] == pytest.approx(
        (ap_a + 1) / 2
    )
    counts = {name: (scores.gt, scores.predictions) for name, scores in result.per_class.items()}
    assert counts == {"A": (3, 2), "B": (3, 3)}
    assert result.per_class["A"].f1 == pytest.approx(2 * 2 / (3 + 2))
    assert result.maf == pytest.approx((0.8 + 1) / 2)
    all_a = sum(_area(items)["A"] for items in TRUTH.values())
    kept_a = sum(_area(items)["A"] for items in kept.values())
    assert result.per_class["A"].iou == pytest.approx(kept_a / all_a)


def test_shifted_boxes() -> None:
    """Every prediction shifted right by a fifth of its width: IoU exactly 2/3 for masks and boxes."""
    shifted = {
        name: [(c, x0 + (x1 - x0) // 5, y0, x1 + (x1 - x0) // 5, y1) for c, x0, y0, x1, y1 in items]
        for name, items in TRUTH.items()
    }
    predictions = {name: _page([(c, *box, 1.0) for c, *box in items]) for name, items in shifted.items()}
    result = evaluate(_truth(), predictions)
    thresholds = np.linspace(0.5, 0.95, 10)
    share = float(np.mean(thresholds <= 2 / 3))  # 0.50, 0.55, 0.60, 0.65 match: 0.4
    assert result.mask == pytest.approx({"AP": share, "AP50": 1.0, "AP75": 0.0})
    assert result.box == pytest.approx({"AP": share, "AP50": 1.0, "AP75": 0.0})
    assert result.maf == pytest.approx(share)
    # mIoU from pixel counts per class, summed over images
    expected = []
    for name in ("A", "B"):
        a = b = c = 0
        for image in TRUTH:
            gt = np.zeros((SIZE, SIZE), bool)
            dt = np.zeros((SIZE, SIZE), bool)
            for item in TRUTH[image]:
                gt |= _mask(*item[1:]).astype(bool) & (item[0] == name)
            for item in shifted[image]:
                dt |= _mask(*item[1:]).astype(bool) & (item[0] == name)
            a, b, c = a + gt.sum(), b + dt.sum(), c + (gt & dt).sum()
        expected.append(c / (a + b - c))
    assert result.miou == pytest.approx(np.mean(expected))


def test_trainings_validation_counts_a_false_positive_whose_regressed_box_is_inverted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The box head moves each corner on its own, so `segment_pages` can give a box with x2 < x1. pycocotools
    takes a detection's area from its box (here negative) and ignores an unmatched detection outside the
    area range: `docsam train`'s validation, which scored the raw boxes, did not count such a false
    positive ranked first and gave mAP 1.0 (and so picked `best/` on it), where `evaluate --weights`
    gives 0.67. The validation now scores the boxes as segment writes them, as `evaluate --weights` does."""
    from docsam_cli.training import validation

    page = _page([("A", 10, 160, 60, 190, 0.95)] + [(c, *box, 0.9) for c, *box in TRUTH["one"] if c == "A"])
    page.boxes[0] = page.boxes[0][[2, 1, 0, 3]]  # x1 = 60, x2 = 10
    monkeypatch.setattr(validation, "segment_pages", lambda *args, **kwargs: [page])
    truth = [
        replace(image, annotations=[a for a in image.annotations if a.category == "A"]) for image in _truth()
    ]
    validator = object.__new__(validation.LayoutValidator)
    validator.geometry = None
    scores = validator._score(None, "set", [(np.zeros((SIZE, SIZE, 3), np.uint8), truth[0], ["A"])])
    assert scores["mAP"] == pytest.approx(2 / 3)  # the false positive first: precision 2/3 at full recall


def test_relabelled_classes_and_class_mapping() -> None:
    """A's predictions come out as B (score 0.5), B's own as "b-pred" mapped to B, plus an unknown class."""
    predictions = {}
    for name, items in TRUTH.items():
        relabelled = [("B" if c == "A" else "b-pred", *box, 0.5 if c == "A" else 1.0) for c, *box in items]
        predictions[name] = _page([*relabelled, ("C", 0, 0, 5, 5, 0.9)])
    result = evaluate(_truth(), predictions, {"b-pred": "B"})
    assert result.per_class["A"].ap == 0.0  # no detection of A left
    assert result.per_class["B"].ap == pytest.approx(1.0)  # the false positives rank below every hit
    assert result.mask["AP"] == pytest.approx(0.5)
    assert result.per_class["A"].f1 == 0.0 and result.per_class["B"].f1 == pytest.approx(2 * 3 / (3 + 6))
    assert result.maf == pytest.approx(1 / 3)
    area_a = sum(_area(items)["A"] for items in TRUTH.values())
    area_b = sum(_area(items)["B"] for items in TRUTH.values())
    assert result.per_class["A"].iou == 0.0
    assert result.per_class["B"].iou == pytest.approx(area_b / (area_a + area_b))
    assert result.ignored_predictions == {"C": 2}


def test_class_names_differing_only_in_blanks_are_one_class_as_convert_dataset_names_them() -> None:
    """segment's files of `--classes 'running\ttitle'` (a tab inside the name, as docsam wrote it before
    collapsing such blanks) name the class so, while their conversion with convert-dataset names it
    'running title': evaluate of the converted dataset against those files ignored every prediction of
    the class and scored it as all missed, and the `--map` its `ignored:` line gave changed nothing, as
    --map collapses the blanks of the names it is given. Names are compared as convert-dataset writes them."""
    truth = [
        GtImage(
            image.name,
            image.height,
            image.width,
            [replace(a, category=f"{a.category}  x") for a in image.annotations],
        )
        for image in _truth()
    ]
    predictions = {
        name: _page([(f"{c}\tx", *box, 1.0) for c, *box in items]) for name, items in TRUTH.items()
    }
    result = evaluate(truth, predictions, declared=["A \n x"])
    assert result.classes == ["A x", "B x"] and result.ignored_predictions == {}
    assert result.mask == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    relabelled = {name: _page([("a", *box, 1.0) for _, *box in items]) for name, items in TRUTH.items()}
    assert evaluate(truth, relabelled, parse_mapping(["a=A  x"])).per_class["A x"].predictions == 6


def test_ap_uses_4000_detections_per_image_and_rescales_predictions() -> None:
    """One true detection ranked below 150 false ones: AP@100 would be 0, AP@4000 is 1/151."""
    truth = [
        GtImage("p", SIZE, SIZE, [GtAnnotation("A", _rle(_mask(100, 100, 150, 150)), (100, 100, 50, 50))])
    ]
    corners = [(i % 15 * 6, i // 15 * 6) for i in range(150)]  # 150 small boxes, none near the truth
    false = [("A", x, y, x + 4, y + 4, 0.9 - i * 0.001) for i, (x, y) in enumerate(corners)]
    result = evaluate(truth, {"p": _page([*false, ("A", 100, 100, 150, 150, 0.1)])})
    assert result.mask["AP"] == pytest.approx(1 / 151) and result.box["AP"] == pytest.approx(1 / 151)
    half = _page([("A", 50, 50, 75, 75, 1.0)], size=SIZE // 2)
    rescaled = evaluate(truth, {"p": half})
    assert rescaled.rescaled_predictions == 1  # 100 x 100 masks, nearest-upsampled: the same rectangle
    assert rescaled.mask["AP"] == pytest.approx(1.0) and rescaled.miou == 1.0  # pycocotools: tp/(tp+eps)


def test_ap_counts_the_4000th_detection_of_an_image_and_not_the_4001st() -> None:
    """AP is read at maxDets 4000: of two true detections ranked 4000th and 4001st (below 3999 false ones),
    only the first is found: recall 1/2 at precision 1/4000, AP = 51/101 recall thresholds x 1/4000."""
    size = 64
    truth = [
        GtImage(
            "p",
            size,
            size,
            [
                GtAnnotation("A", _rle(_mask(40, 40, 60, 60, size=size)), (40, 40, 20, 20)),
                GtAnnotation("A", _rle(_mask(40, 5, 60, 25, size=size)), (40, 5, 20, 20)),
            ],
        )
    ]
    corners = [(i % 17 * 2, i // 17 % 30 * 2) for i in range(3999)]  # 2 x 2 boxes left of the truth
    false = [("A", x, y, x + 2, y + 2, 0.45 - i * 1e-5) for i, (x, y) in enumerate(corners)]
    hits = [("A", 40, 40, 60, 60, 0.3), ("A", 40, 5, 60, 25, 0.2)]
    result = evaluate(truth, {"p": _page([*false, *hits], size=size)})
    assert result.mask["AP"] == pytest.approx(51 / 101 / 4000) and result.box["AP"] == pytest.approx(
        51 / 101 / 4000
    )


def test_cli_self_scores_and_agrees_with_pycocotools(shared_data: Path, tmp_path: Path) -> None:
    truth_path = shared_data / "pages/publaynet/annotations.json"
    result = run_cli("evaluate", truth_path, "--pred", truth_path, "--json", tmp_path / "self.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "self.json").read_text())
    assert report["mask"] == report["box"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    assert report["mAF"] == 1.0 and report["mIoU"] == 1.0

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(truth_path))
    rng = np.random.default_rng(7)
    results = []
    for annotation in gt.dataset["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        image = gt.imgs[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        dx, dy = rng.normal(0, 0.08 * w), rng.normal(0, 0.08 * h)
        box = [x + dx, y + dy, w * rng.uniform(0.85, 1.15), h * rng.uniform(0.85, 1.15)]
        mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
        mask[y0 : int(box[1] + box[3]), x0 : int(box[0] + box[2])] = 1
        rle = _rle(mask)
        rle["counts"] = rle["counts"].decode()
        category = annotation["category_id"] if rng.random() > 0.1 else rng.integers(1, 6)
        results.append(
            {"image_id": annotation["image_id"], "category_id": int(category), "bbox": box,
             "segmentation": rle, "score": float(rng.random())}
        )  # fmt: skip
    predictions = tmp_path / "results.json"
    predictions.write_text(json.dumps(results))
    result = run_cli("evaluate", truth_path, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    ours = json.loads(result.stdout)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(predictions))
        for iou_type, key in (("segm", "mask"), ("bbox", "box")):
            direct = COCOeval(gt, dt, iou_type)  # stock maxDets [1, 10, 100]: no image has 100 detections
            direct.evaluate()
            direct.accumulate()
            direct.summarize()
            assert ours[key]["AP"] == pytest.approx(direct.stats[0], abs=1e-9)
            assert ours[key]["AP50"] == pytest.approx(direct.stats[1], abs=1e-9)
            assert ours[key]["AP75"] == pytest.approx(direct.stats[2], abs=1e-9)
    assert 0.2 < ours["mask"]["AP"] < 0.9


def test_page_ground_truth_and_predictions(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "pages/ocrd-gt-structure-text"
    unified = tmp_path / "unified"
    assert run_cli("convert-dataset", folder, "--from", "page", "--out", unified).exit_code == 0
    for path, gt_format in ((folder, "page"), (unified, "unified")):
        images = load_ground_truth(path, gt_format, frozenset({"regions"})).images
        assert len(images) == 11 and all(image.image and image.image.is_file() for image in images)
    for truth in (folder, unified):
        result = run_cli("evaluate", truth, "--pred", folder, "--json", "-")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["images"] == 11 and report["images_without_predictions"] == []
        assert report["mask"]["AP"] == pytest.approx(1.0) and report["mAF"] == 1.0 and report["mIoU"] == 1.0
    broken = tmp_path / "pred"
    broken.mkdir()
    (broken / "bad.xml").write_text("<PcGts")
    result = run_cli("evaluate", folder, "--pred", broken, "--pred-format", "page", "--json", "-")
    assert result.exit_code == 1 and len(result.error_lines()) == 1 and "bad.xml" in result.error_lines()[0]
    assert json.loads(result.stdout)["mask"]["AP"] == 0.0
    assert run_cli("evaluate", folder, "--pred", folder, "--gt-format", "xml").exit_code == 2


def test_predictions_that_match_no_ground_truth_page_are_an_error(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "pages/ocrd-gt-structure-text"
    other = shared_data / "pages/publaynet/annotations.json"
    result = run_cli("evaluate", folder, "--gt-format", "page", "--pred", other, "--json", "-")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.error_lines() == [
        f"error: {other}: none of its 10 predicted pages is an image of the ground truth (pages are matched"
        " by file name)"
    ]
    alto = tmp_path / "alto"
    alto.mkdir()
    for source in sorted((shared_data / "pages/ocrd-assets").rglob("*.xml")):
        if b"alto" in source.read_bytes()[:2000].lower():
            (alto / source.name).write_bytes(source.read_bytes())
    assert any(alto.iterdir())
    result = run_cli("evaluate", folder, "--gt-format", "page", "--pred", alto)
    assert result.exit_code == 1
    assert [line.split(" (")[0] for line in result.error_lines()] == [
        f"error: {alto}: no predicted page read from it"
    ]


def _coco_eval(truth: Path, results: Path) -> dict[str, dict[str, float]]:
    """AP, AP50 and AP75 of pycocotools itself (stock maxDets: the cases have a few detections)."""
    scores = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(truth))
        dt = gt.loadRes(str(results))
        for iou_type, key in (("segm", "mask"), ("bbox", "box")):
            direct = COCOeval(gt, dt, iou_type)
            direct.evaluate()
            direct.accumulate()
            direct.summarize()
            scores[key] = dict(zip(("AP", "AP50", "AP75"), direct.stats[:3], strict=True))
    return scores


_TABLE = [10, 10, 50, 10, 50, 50, 10, 50]  # the one ground-truth table of each page, and its hit
_ELSEWHERE = [100, 10, 190, 10, 190, 90, 100, 90]  # a false positive, larger than the table


@pytest.mark.parametrize(
    ("image_ids", "results", "expected_ap"),
    [
        # One page: the hit comes first in the results file, then a false positive of the same score.
        ([1], [(1, _TABLE), (1, _ELSEWHERE)], 1.0),
        # Two pages listed by descending id: pycocotools takes them by id, so the hit on page 1 ranks
        # before the false positive on page 2 that the results file lists first.
        ([2, 1], [(2, _ELSEWHERE), (1, _TABLE)], 51 / 101),
    ],
)
def test_tied_scores_rank_as_pycocotools_ranks_them(
    tmp_path: Path, image_ids: list[int], results: list, expected_ap: float
) -> None:
    truth = {
        "images": [{"id": i, "file_name": f"p{i}.png", "width": 200, "height": 100} for i in image_ids],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 40, 40], "segmentation": [_TABLE],
             "area": 1600, "iscrowd": 0}
            for i in image_ids
        ],
        "categories": [{"id": 1, "name": "table"}],
    }  # fmt: skip
    (truth_path := tmp_path / "truth.json").write_text(json.dumps(truth))
    entries = [
        {"image_id": i, "category_id": 1, "bbox": [p[0], p[1], p[4] - p[0], p[5] - p[1]], "segmentation": [p],
         "score": 1.0}
        for i, p in results
    ]  # fmt: skip
    (results_path := tmp_path / "results.json").write_text(json.dumps(entries))
    result = run_cli("evaluate", truth_path, "--pred", results_path, "--json", "-")
    assert result.exit_code == 0, result.stderr
    ours = json.loads(result.stdout)
    reference = _coco_eval(truth_path, results_path)
    assert reference["mask"]["AP"] == pytest.approx(expected_ap)
    for key in ("mask", "box"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9)


def test_predictions_of_a_declared_class_without_ground_truth_are_false_positives() -> None:
    """C is a class of the ground truth that none of its images shows: predicting it costs its mAF and
    mIoU terms. D, declared too but neither annotated nor predicted, counts nowhere."""
    predictions = {
        name: _page([*[(c, *box, 1.0) for c, *box in items], ("C", 0, 0, 5, 5, 0.9)])
        for name, items in TRUTH.items()
    }
    result = evaluate(_truth(), predictions, declared=["A", "B", "C", "D"])
    assert result.classes == ["A", "B", "C"] and result.ignored_predictions == {}
    c = result.per_class["C"]
    assert (c.gt, c.predictions, c.ap, c.f1, c.iou) == (0, 2, None, 0.0, 0.0)
    assert result.mask["AP"] == pytest.approx(1.0)  # AP averages over classes with ground truth
    assert result.maf == pytest.approx(2 / 3) and result.miou == pytest.approx(2 / 3)


def test_a_declared_class_painted_only_in_the_semantic_map_costs_its_miou_term() -> None:
    """A model's semantic map (evaluate --weights) may paint a class that no instance predicts: the
    reference averages IoU over every class with pixels in the ground truth or the prediction, so C,
    declared but not annotated, scores IoU 0 and halves the mIoU."""
    page = _page([("A", 10, 10, 60, 40, 1.0)])
    page.class_names.append("C")
    page.semantic_masks.append(_rle(_mask(100, 100, 150, 150)))
    truth = [GtImage("p", SIZE, SIZE, [GtAnnotation("A", _rle(_mask(10, 10, 60, 40)), (10, 10, 50, 30))])]
    result = evaluate(truth, {"p": page}, declared=["A", "C"])
    assert result.classes == ["A", "C"]
    c = result.per_class["C"]
    assert (c.gt, c.predictions, c.ap, c.f1, c.iou) == (0, 0, None, None, 0.0)
    assert result.miou == 0.5 and result.maf == 1.0 and result.mask["AP"] == pytest.approx(1.0)


def test_the_command_counts_the_categories_of_the_ground_truth(tmp_path: Path) -> None:
    truth = {
        "images": [{"id": 1, "file_name": "p.png", "width": 200, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                         "segmentation": [_TABLE], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "text"}, {"id": 2, "name": "table"}, {"id": 3, "name": "unused"}],
    }  # fmt: skip
    (truth_path := tmp_path / "truth.json").write_text(json.dumps(truth))
    results = [
        {"image_id": 1, "category_id": category, "segmentation": [polygon], "score": 0.9}
        for category, polygon in ((1, _TABLE), (2, _ELSEWHERE))
    ]
    (results_path := tmp_path / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", truth_path, "--pred", results_path, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == ["table", "text"] and report["ignored_predictions"] == {}
    assert report["mAF"] == 0.5 and report["mIoU"] == 0.5 and report["mask"]["AP"] == pytest.approx(1.0)


def _one_page_split(tmp_path: Path, annotations: list[dict]) -> Path:
    """A unified split of one 100 x 100 page `a.png` whose json holds `annotations` (ids, image id, class
    `figure` and iscrowd 0 filled in)."""
    split = tmp_path / "split"
    (split / "coco").mkdir(parents=True)
    write_image(split / "image" / "a.png", 100, 100)
    (split / "list.txt").write_text("a.png\n")
    truth = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "annotations": [
            {"id": index, "image_id": 1, "category_id": 1, "iscrowd": 0, **annotation}
            for index, annotation in enumerate(annotations, 1)
        ],
        "categories": [{"id": 1, "name": "figure"}],
    }
    (split / "coco" / "a.json").write_text(json.dumps(truth))
    return split


def test_a_split_with_only_list_val_is_evaluated_and_one_without_it_or_list_txt_is_refused(
    tmp_path: Path,
) -> None:
    """A split listing its pages in list_val.txt (and list_train.txt) but no list.txt, as the reference
    reads it, was no ground truth at all ('cannot tell the format of split', exit 2; with --gt-format
    unified, 'list.txt: cannot read it'). evaluate reads list_val.txt, else list.txt; a split with neither
    is refused, exit 2, naming the folder and both lists."""
    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40]}])
    results = [{"file_name": "a.png", "category_id": "figure", "bbox": [20, 20, 40, 40], "score": 0.9}]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    (split / "list.txt").rename(split / "list_val.txt")
    result = run_cli("evaluate", split, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["box"]["AP"] == pytest.approx(1.0)
    (split / "list_val.txt").rename(split / "list_train.txt")
    for fmt in ("auto", "unified"):
        result = run_cli("evaluate", split, "--gt-format", fmt, "--pred", predictions)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"error: {split}: no list_val.txt or list.txt (the lists of its images this command reads)"
        ]


def test_a_split_without_any_list_is_refused_naming_the_lists(tmp_path: Path) -> None:
    """A split of coco/ and image/ whose list.txt was lost (or never written, a split made by hand) was
    refused as no ground truth at all, 'cannot tell the format of split', without saying what it lacks;
    it is refused as the split it is, naming the folder and the lists evaluate reads, exit 2."""
    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40]}])
    (split / "list.txt").unlink()
    results = [{"file_name": "a.png", "category_id": "figure", "bbox": [20, 20, 40, 40], "score": 0.9}]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", split, "--pred", predictions)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {split}: no list_val.txt or list.txt (the lists of its images this command reads)"
    ]


def test_a_page_folder_holding_image_and_coco_folders_is_read_as_page(tmp_path: Path) -> None:
    """A team's PAGE ground truth beside its scans in image/ and a COCO export in coco/ was taken for a
    unified split without lists and refused ('no list_val.txt or list.txt', exit 2), though its PAGE files
    were read before. Its XML files tell its format."""
    truth = tmp_path / "gt"
    write_image(truth / "image" / "p.png", 100, 100)
    (truth / "coco").mkdir()
    (truth / "coco" / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    regions = [("TableRegion", None, "20,20 39,20 39,39 20,39")]
    (truth / "p.xml").write_text(page_xml("image/p.png", 100, 100, regions))
    results = [{"file_name": "p.png", "category_id": "table", "bbox": [20, 20, 20, 20], "score": 0.9}]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["images"], report["images_without_predictions"]) == (1, [])


def test_a_page_a_split_lists_twice_is_scored_once_with_a_warning(tmp_path: Path) -> None:
    """A list naming a page twice (lists joined) gave an error about another image that does not exist,
    'coco/a.json: images[0].file_name: another image is also named 'a'' (the split's json file names
    are not even read), and exit 1, the page scored once all the same. It is now a warning naming the
    list, and the exit code is 0."""
    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40]}])
    (split / "list.txt").write_text("a.png\r\n\na.png \n")
    results = [{"file_name": "a.png", "category_id": "figure", "bbox": [20, 20, 40, 40], "score": 0.9}]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", split, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    warning = f"warning: {split / 'list.txt'}: a.png is listed 2 times, scored once"
    assert warning in result.stderr.splitlines() and "error" not in result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["box"]["AP"] == pytest.approx(1.0)


def test_a_splits_annotation_without_an_image_id_is_the_region_of_its_jsons_page(tmp_path: Path) -> None:
    """Training reads every annotation of a page's json, image_id or not (the reference's loader does not
    look at it to find the page's regions); evaluate reported each annotation without one as an error
    ('annotations[0].image_id: missing', exit 1) and scored the page without its regions, and --val
    validated it against no region at all, without a word. It is now the region of the json's one image;
    in a plain COCO file, with many images, image_id stays required."""
    from docsam_cli.training.datasets import LayoutDataset
    from docsam_cli.training.validation import LayoutValidator

    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40]}, {"bbox": [70, 70, 20, 20]}])
    document = json.loads((split / "coco" / "a.json").read_text())
    del document["annotations"][0]["image_id"]
    document["annotations"][1]["image_id"] = None
    (split / "coco" / "a.json").write_text(json.dumps(document))
    ground_truth = load_ground_truth(split, "unified", frozenset())
    assert not ground_truth.errors and [len(image.annotations) for image in ground_truth.images] == [2]
    ((_, truth, _),) = LayoutValidator([LayoutDataset(split, stage="test")], None, 1).sets[0][1]  # type: ignore[arg-type]
    assert len(truth.annotations) == 2
    plain = load_ground_truth(split / "coco" / "a.json", "coco", frozenset())
    assert str(plain.errors[0]).endswith("annotations[0].image_id: missing")


def test_a_splits_annotation_whose_image_id_is_the_images_id_as_a_string_is_its_images(
    tmp_path: Path,
) -> None:
    """The reference's loader converts image and annotation ids to strings, and training reads every
    annotation of a page's json: an annotation with `image_id` "1" on image 1 is that page's region. evaluate
    took it for an annotation of no image ('"1" is not the id of an image', exit 1) and scored the page
    without it, and --val validated the page without it, without a word."""
    from docsam_cli.training.datasets import LayoutDataset
    from docsam_cli.training.validation import LayoutValidator

    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40], "image_id": "1"}])
    ground_truth = load_ground_truth(split, "unified", frozenset())
    assert not ground_truth.errors and [len(image.annotations) for image in ground_truth.images] == [1]
    ((_, truth, _),) = LayoutValidator([LayoutDataset(split, stage="test")], None, 1).sets[0][1]  # type: ignore[arg-type]
    assert len(truth.annotations) == 1
    (plain,) = load_ground_truth(split / "coco" / "a.json", "coco", frozenset()).images  # COCO: ids as typed
    assert plain.annotations == []


def test_a_split_is_scored_on_its_jsons_clamped_into_the_page_as_the_reference_rectifies_them(
    tmp_path: Path,
) -> None:
    """The reference evaluates a unified split on its per-image jsons rectified: boxes and polygon points
    clamped into [0, W-1] x [0, H-1]. A figure running off the right edge of a 100 x 100 page (box
    [60, 20, 100, 50], top edge slanting to x = 160) is the box [60, 20, 39, 50] and the polygon cut at
    x = 99 there; evaluate kept the box as written (box IoU 0.39 with the reference's) and the polygon's
    slant."""
    polygon = [[60, 20], [160, 40], [160, 70], [60, 70]]
    split = _one_page_split(
        tmp_path, [{"bbox": [60, 20, 100, 50], "segmentation": [np.ravel(polygon).tolist()], "area": 4000}]
    )
    mask = np.zeros((100, 100), dtype=np.uint8)
    cv2.fillPoly(mask, [np.clip(np.array(polygon, dtype=np.int32), 0, 99)], 1)
    rle = _rle(mask)
    rle["counts"] = rle["counts"].decode()
    results = [{"file_name": "a.png", "category_id": "figure", "bbox": [60, 20, 39, 50], "segmentation": rle,
                "score": 0.9}]  # fmt: skip
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    result = run_cli("evaluate", split, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["box"]["AP"] == pytest.approx(1.0) and report["mask"]["AP"] == pytest.approx(1.0)
    assert report["mAF"] == 1.0 and report["mIoU"] == 1.0


def test_a_splits_poly_wins_over_its_segmentation_as_in_training_and_a_coco_files_does_not(
    tmp_path: Path,
) -> None:
    """The reference's loader (and training) reads an annotation's `poly` as its segmentation where a
    per-image json has both; evaluate read the `segmentation`, scoring another region than was trained.
    In a plain COCO file `poly` is no field, and `segmentation` stays the region."""
    split = _one_page_split(
        tmp_path, [{"segmentation": [[0, 0, 9, 0, 9, 9, 0, 9]], "poly": [20, 20, 60, 20, 60, 60, 20, 60]}]
    )
    (annotation,) = load_ground_truth(split, "unified", frozenset()).images[0].annotations
    assert annotation.bbox == (20.0, 20.0, 41.0, 41.0) and mask_utils.area(annotation.rle) == 41 * 41
    (plain,) = load_ground_truth(split / "coco" / "a.json", "coco", frozenset()).images[0].annotations
    assert mask_utils.toBbox(plain.rle).tolist() == [0.0, 0.0, 9.0, 9.0]


def test_a_splits_pre_resized_copies_are_its_images_and_its_ground_truth_is_scaled_to_them(
    tmp_path: Path,
) -> None:
    """The reference's loader and training read `image_resize/<name>` where it exists, rescaling the
    json's coordinates to it; evaluate ran the model on `image/<name>` (and found no image where only the
    copy was there). Page a has both, page b only the copy, half the json's 200 x 100."""
    split = tmp_path / "split"
    (split / "coco").mkdir(parents=True)
    write_image(split / "image" / "a.png", 200, 100)
    (split / "list.txt").write_text("a.png\nb.png\n")
    for image_id, name in enumerate("ab", 1):
        write_image(split / "image_resize" / f"{name}.png", 100, 50)
        truth = {
            "images": [{"id": image_id, "file_name": f"{name}.png", "width": 200, "height": 100}],
            "annotations": [{"id": 1, "image_id": image_id, "category_id": 1, "bbox": [20, 20, 40, 40],
                             "segmentation": [[20, 20, 60, 20, 60, 60, 20, 60]], "area": 1600, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "figure"}],
        }  # fmt: skip
        (split / "coco" / f"{name}.json").write_text(json.dumps(truth))
    images = load_ground_truth(split, "unified", frozenset()).images
    assert [image.image for image in images] == [
        split / "image_resize" / "a.png",
        split / "image_resize" / "b.png",
    ]
    for image in images:
        (annotation,) = image.annotations
        assert (image.width, image.height, image.missing) == (100, 50, None)
        assert annotation.bbox == (10.0, 10.0, 20.0, 20.0) and annotation.area == 400
        assert mask_utils.area(annotation.rle) == 21 * 21  # the reference's fill: boundary pixels included


def test_a_splits_pre_resized_copy_over_the_pixel_limit_is_refused_and_its_page_left_out(
    tmp_path: Path,
) -> None:
    """A split's page is scored at the size of its `image_resize/` copy, read from the copy's header, and
    its masks are made at that size: the copy was held to no limit, unlike the sizes the jsons state (a
    copy of 100 x 50 scored under --max-image-pixels 2000 with exit 0; a header stating 100000 x 100000
    asks for gigabytes). It is now refused as those are, naming the copy, and its page left out of the
    scores, the other page scored as before."""
    from docsam_cli.inputs.images import max_image_pixels, set_max_image_pixels

    split = tmp_path / "split"
    (split / "coco").mkdir(parents=True)
    (split / "list.txt").write_text("a.png\nb.png\n")
    for image_id, (name, copy_size) in enumerate([("a", (100, 50)), ("b", (20, 10))], 1):
        write_image(split / "image_resize" / f"{name}.png", *copy_size)
        truth = {
            "images": [{"id": image_id, "file_name": f"{name}.png", "width": 20, "height": 10}],
            "annotations": [{"id": 1, "image_id": image_id, "category_id": 1, "bbox": [2, 2, 8, 4],
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "figure"}],
        }  # fmt: skip
        (split / "coco" / f"{name}.json").write_text(json.dumps(truth))
    results = [{"file_name": "b.png", "category_id": "figure", "bbox": [2, 2, 8, 4], "score": 0.9}]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    saved = max_image_pixels()
    try:
        result = run_cli("evaluate", split, "--pred", predictions, "--json", "-", "--max-image-pixels", 2000)
    finally:
        set_max_image_pixels(saved)
    assert_one_page_refused(
        result,
        f"error: {split / 'image_resize' / 'a.png'}: 100x50 = 5000 pixels exceeds the decompression-bomb "
        "limit of 2000 pixels (raise the limit with --max-image-pixels if the file is trusted)",
        "box",
    )


def test_a_pred_folder_of_coco_predictions_only_is_refused_naming_its_coco_json(tmp_path: Path) -> None:
    """`--pred OUT`, segment's output folder of a run with `--format coco` (no page/ in it), was refused
    with 'cannot tell the format of OUT', which left the user to guess that a folder is read as PAGE files.
    The refusal now names the file that would be scored, OUT/coco.json, which then scores."""
    write_image(tmp_path / "a.png", 60, 40)
    document = {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0,
                         "score": 0.9}],
        "categories": [{"id": 1, "name": "table"}],
    }  # fmt: skip
    (truth := tmp_path / "truth.json").write_text(json.dumps(document))
    (run := tmp_path / "run").mkdir()
    (run / "coco.json").write_text(json.dumps(document))
    refused = run_cli("evaluate", truth, "--pred", run)
    assert refused.exit_code == 2
    assert refused.error_lines() == [
        f"error: invalid value: {run} holds no PAGE files: --pred {run / 'coco.json'} scores its COCO "
        "predictions (see 'docsam evaluate --help')"
    ]
    assert run_cli("evaluate", truth, "--pred", run / "coco.json").exit_code == 0


def test_a_splits_annotation_without_geometry_is_left_out_as_the_reference_loader_drops_it(
    tmp_path: Path,
) -> None:
    """The reference's loader (and training) drops an annotation with neither a bbox of 4 values nor a
    segmentation; evaluate left its whole page out as an error, and train --val stopped at it ('no ground
    truth for a.png'), though the split trains. It is now left out with a warning, the page scored."""
    from docsam_cli.training.datasets import LayoutDataset
    from docsam_cli.training.validation import LayoutValidator

    split = _one_page_split(tmp_path, [{"bbox": [20, 20, 40, 40]}, {"segmentation": [], "bbox": [1, 2]}])
    ground_truth = load_ground_truth(split, "unified", frozenset())
    assert not ground_truth.errors and [len(image.annotations) for image in ground_truth.images] == [1]
    reason = "annotations[1]: neither a bbox of 4 values nor a segmentation, left out"
    assert ground_truth.warnings == [f"{split / 'coco' / 'a.json'}: {reason}"]
    (validated,) = LayoutValidator([LayoutDataset(split, stage="test")], None, 1).sets  # type: ignore[arg-type]
    assert len(validated[1]) == 1


def test_a_page_file_scores_one_against_itself_whatever_its_geometry(tmp_path: Path) -> None:
    """PAGE predictions are cleaned as PAGE ground truth is: regions partly off the page are clamped (their
    boxes too), a region without area is dropped, a self-crossing outline is repaired the same way."""
    write_image(tmp_path / "p.png", 200, 100)
    regions = [
        ("TextRegion", None, "-20,-10 60,-10 60,40 -20,40"),
        ("TextRegion", None, "150,50 260,50 260,140 150,140"),
        ("TextRegion", None, "80,20 120,20 120,20 80,20"),
        ("TextRegion", None, "100,60 140,95 140,60 100,95"),  # a bow-tie
    ]
    (tmp_path / "o.xml").write_text(page_xml("p.png", 200, 100, regions))
    result = run_cli("evaluate", tmp_path, "--pred", tmp_path, "--json", "-")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mask"]["AP"] == pytest.approx(1.0) and report["box"]["AP"] == pytest.approx(1.0)
    assert report["mAF"] == 1.0 and report["mIoU"] == 1.0


@pytest.mark.parametrize("items", [[], [("A", 0, 0, 10, 10, 0.3)]])
def test_nothing_to_find_and_nothing_found_leaves_maf_and_miou_undefined_not_zero(items: list) -> None:
    """A blank page predicted blank (or with predictions below the mAF score, A declared) has no class to
    average: mAF and mIoU are None, as AP is, where they used to read 0, the score of a total miss."""
    result = evaluate([GtImage("blank", SIZE, SIZE, [])], {"blank": _page(items)}, declared=["A"])
    assert result.mask["AP"] is None and result.box["AP"] is None
    assert result.maf is None and result.miou is None


def test_classes_of_one_pixel_score_iou_zero_when_missed_and_one_when_found() -> None:
    """mIoU averages over the classes with pixels in the ground truth or the prediction: a single pixel of
    ground truth that nothing predicts is such a class, IoU 0, not a class left out; one predicted exactly
    scores 1."""
    truth = [
        GtImage(
            "p",
            SIZE,
            SIZE,
            [
                GtAnnotation("A", _rle(_mask(5, 5, 6, 6)), (5, 5, 1, 1)),
                GtAnnotation("B", _rle(_mask(9, 9, 10, 10)), (9, 9, 1, 1)),
            ],
        )
    ]
    result = evaluate(truth, {"p": _page([("B", 9, 9, 10, 10, 1.0)])})
    assert (result.per_class["A"].iou, result.per_class["B"].iou, result.miou) == (0.0, 1.0, 0.5)


def test_a_prediction_on_a_crowd_region_is_no_false_positive_in_maf() -> None:
    """README: a prediction on an ignore region (COCO `iscrowd`) is no false positive in mAF. "On" is COCO's
    crowd IoU, the share of the prediction inside the region: a prediction 75 % inside is ignored up to the
    threshold 0.75 (as pycocotools matches, at IoU >= the threshold) and a false positive from 0.80. A
    prediction that matches the ground truth counts as a hit even where a crowd region covers it too; a crowd
    region of another class excuses nothing."""
    crowd_a = (100, 100, 150, 150)
    crowd_b = (10, 100, 60, 150)
    truth = [
        GtImage(
            "p",
            SIZE,
            SIZE,
            [
                GtAnnotation("A", _rle(_mask(10, 10, 60, 40)), _xywh((10, 10, 60, 40))),
                GtAnnotation("A", _rle(_mask(0, 0, 70, 50)), _xywh((0, 0, 70, 50)), iscrowd=True),
                GtAnnotation("A", _rle(_mask(*crowd_a)), _xywh(crowd_a), iscrowd=True),
                GtAnnotation("B", _rle(_mask(*crowd_b)), _xywh(crowd_b), iscrowd=True),
            ],
        )
    ]
    predictions = [
        ("A", 10, 10, 60, 40, 1.0),  # the hit, inside the first crowd region too
        ("A", 135, 120, 155, 124, 0.9),  # 15 of its 20 columns inside the second: 75 %
        ("A", 110, 110, 120, 120, 0.8),  # wholly inside the second
        ("A", 20, 110, 30, 120, 0.7),  # wholly inside B's crowd region: a false positive of A
        ("B", 45, 120, 65, 124, 0.9),  # 75 % inside B's crowd region, B has no other ground truth
    ]
    result = evaluate(truth, {"p": _page(predictions)})
    # A: 1 hit of 1 ground truth; counted predictions 2 up to 0.75, 3 from 0.80: F1 2/3 and 1/2
    assert result.per_class["A"].f1 == pytest.approx((6 * 2 / 3 + 4 * 1 / 2) / 10)
    assert result.per_class["B"].f1 == 0.0  # nothing to find, a false positive from 0.80
    assert result.maf == pytest.approx((0.6 + 0) / 2)


def test_a_crowd_regions_pixels_are_void_in_miou() -> None:
    """README: an ignore region (COCO `iscrowd`) costs nothing when missed and is no false positive, in mIoU
    too (as in VOC's and Cityscapes' semantic scores, whose void pixels count nowhere). mIoU counted its
    pixels as ground truth: here, with A's one region found exactly, A scored 0.42 (2100 / 5000) for the
    crowd regions it did not cover. Now the crowd's pixels outside the class's other ground truth are void:
    in neither the ground truth nor the prediction (A: 2000 / 2100, its one false positive off the crowd).
    A crowd region of another class voids nothing, and a class with only a crowd region and no prediction
    has no mIoU term."""
    truth = [
        GtImage(
            "p",
            SIZE,
            SIZE,
            [
                GtAnnotation("A", _rle(_mask(10, 10, 60, 50)), _xywh((10, 10, 60, 50))),
                GtAnnotation("A", _rle(_mask(100, 100, 150, 150)), _xywh((100, 100, 150, 150)), iscrowd=True),
                # overlaps A's region: its pixels there stay ground truth
                GtAnnotation("A", _rle(_mask(50, 10, 70, 50)), _xywh((50, 10, 70, 50)), iscrowd=True),
                GtAnnotation("B", _rle(_mask(150, 10, 190, 50)), _xywh((150, 10, 190, 50)), iscrowd=True),
                GtAnnotation("C", _rle(_mask(10, 150, 50, 190)), _xywh((10, 150, 50, 190)), iscrowd=True),
            ],
        )
    ]
    predictions = [
        ("A", 10, 10, 60, 50, 1.0),  # A's region exactly: 2000 pixels
        ("A", 110, 110, 120, 120, 0.9),  # inside A's first crowd region: void
        ("A", 160, 20, 170, 30, 0.8),  # on B's crowd region: 100 pixels of A where A has no ground truth
        ("B", 150, 10, 190, 50, 0.9),  # B's crowd region exactly: void
    ]
    result = evaluate(truth, {"p": _page(predictions)})
    assert result.per_class["A"].iou == pytest.approx(2000 / 2100)
    assert result.per_class["B"].iou is None and result.per_class["C"].iou is None
    assert result.miou == pytest.approx(2000 / 2100)


def test_a_match_at_exactly_the_iou_threshold_is_a_hit_in_maf_as_in_ap() -> None:
    """A prediction covering half of its ground truth (IoU exactly 0.5) is a hit at 0.5 in mAF, as in AP50
    (pycocotools matches at IoU >= the threshold)."""
    truth = [GtImage("p", SIZE, SIZE, [GtAnnotation("A", _rle(_mask(10, 10, 50, 30)), (10, 10, 40, 20))])]
    result = evaluate(truth, {"p": _page([("A", 10, 10, 30, 30, 1.0)])})
    assert result.mask["AP50"] == pytest.approx(1.0) and result.mask["AP75"] == 0.0
    assert result.maf == pytest.approx(0.1)  # F1 1 at 0.50, 0 at the nine higher thresholds


def test_per_class_mask_and_box_ap_are_scored_on_the_masks_and_the_boxes() -> None:
    """Detections keep their own regressed boxes: exact masks with boxes shifted by a fifth of their width
    (box IoU 2/3) score mask AP 1 and box AP 0.4, overall and per class."""
    items = [(c, *box, 1.0) for c, *box in TRUTH["one"]]
    page = _page(items)
    shift = np.array(
        [[(x1 - x0) // 5, 0, (x1 - x0) // 5, 0] for _, x0, _, x1, _, _ in items], dtype=np.float64
    )
    result = evaluate(_truth()[:1], {"one": replace(page, boxes=page.boxes + shift)})
    assert result.mask["AP"] == pytest.approx(1.0) and result.box["AP"] == pytest.approx(0.4)
    for scores in result.per_class.values():
        assert (scores.ap, scores.ap50, scores.ap75) == pytest.approx((1.0, 1.0, 1.0))
        assert (scores.box_ap, scores.box_ap50, scores.box_ap75) == pytest.approx((0.4, 1.0, 0.0))
