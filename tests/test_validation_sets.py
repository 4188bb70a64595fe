"""Validation metrics of several `--val` sets: each set's own, and the mean over the sets' own results, also
when two sets have the same name (they used to overwrite each other's keys, and the mean read them back)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from instances_factory import empty_instances
from pycocotools import mask as mask_utils

from docsam_cli.evaluation import GtAnnotation, GtImage
from docsam_cli.training import validation
from docsam_cli.training.validation import LayoutValidator, mean_metrics, unique_labels
from model.inference import Geometry
from model.instances import PageInstances


def scored_validator(monkeypatch: pytest.MonkeyPatch, sets: list[tuple[str, float]]) -> LayoutValidator:
    """A validator over one-page sets whose evaluation scores each page with its set's `score`."""
    validator = LayoutValidator([], Geometry((176, 176), (128, 128)), max_images=1)
    pages = {}
    for index, (name, score) in enumerate(sets):
        truth = SimpleNamespace(name=f"page{index}")
        pages[truth.name] = score
        validator.sets.append((name, [(np.zeros((4, 4, 3), np.uint8), truth, ["text"])]))

    def evaluate(truths, predictions, declared=()):
        (truth,) = truths
        score = pages[truth.name]
        mask = {"AP": score, "AP50": score, "AP75": None}  # None (no ground truth) counts as 0
        return SimpleNamespace(mask=mask, maf=score / 2, miou=score / 4)

    monkeypatch.setattr(
        validation, "segment_pages", lambda *args, **kwargs: [empty_instances(4, 4, ["text"])]
    )
    monkeypatch.setattr(validation, "evaluate", evaluate)
    return validator


def test_sets_of_the_same_name_keep_their_own_scores_and_count_in_the_mean(monkeypatch):
    metrics = scored_validator(monkeypatch, [("A", 0.9), ("A", 0.1)])(model=None)
    assert metrics["A/mAP"] == 0.9 and metrics["A#2/mAP"] == 0.1
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["mAF"] == pytest.approx(0.25) and metrics["mIoU"] == pytest.approx(0.125)
    assert metrics["AP75"] == 0.0


def test_the_mean_is_unweighted_over_the_sets(monkeypatch):
    metrics = scored_validator(monkeypatch, [("A", 0.6), ("B", 0.2), ("A", 0.4)])(model=None)
    assert [key for key in metrics if key.endswith("/mAP")] == ["A/mAP", "B/mAP", "A#2/mAP"]
    assert metrics["mAP"] == pytest.approx(0.4)


def test_duplicate_names_are_numbered_without_clashing_with_given_ones():
    assert unique_labels(["A", "B", "A", "A"]) == ["A", "B", "A#2", "A#3"]
    assert unique_labels(["A", "A#2", "A"]) == ["A", "A#2", "A#3"]
    assert unique_labels([]) == []


def test_mean_metrics_of_per_set_results():
    scores = [dict.fromkeys(("mAP", "AP50", "AP75", "mAF", "mIoU"), value) for value in (1.0, 0.0, 0.5)]
    assert mean_metrics(scores) == dict.fromkeys(("mAP", "AP50", "AP75", "mAF", "mIoU"), 0.5)


def test_a_split_pairs_images_and_jsons_by_its_list_not_by_the_jsons_file_name(tmp_path):
    """The layout names a page's image in list.txt (`image/<name>`) and its json `coco/<stem>.json`; the
    reference's loader and training never read the json's `file_name`. `--val` (and `evaluate`) keyed the
    ground truth by it: a split whose pages were renamed or converted (`scan_0001.tif` in the json,
    `v1.png` in the list) stopped the run with 'no ground truth for v1.png', and `evaluate --weights` did
    not find the image."""
    from training_helpers import write_layout

    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.training.datasets import LayoutDataset

    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "scans/scan_0001.tif"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}],
    }
    root = write_layout(tmp_path / "val", {"v1": (np.full((60, 80, 3), 200, np.uint8), document)})
    (truth,) = load_ground_truth(root, "unified", frozenset()).images
    assert (truth.name, truth.image) == ("v1", root / "image" / "v1.png")
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    ((_, gt, names),) = validator.sets[0][1]
    assert gt.name == "v1" and len(gt.annotations) == 1 and names == ["table"]


def test_a_split_with_list_val_is_scored_on_the_pages_list_val_names(tmp_path):
    """`--val` validates the pages of `list_val.txt` (the reference's test-stage list) but read their
    ground truth from `list.txt`: a split whose lists name different pages stopped the run with 'no ground
    truth for b.png', and `evaluate` scored other pages than the reference's test stage does."""
    from training_helpers import write_layout

    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.training.datasets import LayoutDataset

    def page(stem: str) -> tuple:
        document = {
            "images": [{"id": 1, "height": 60, "width": 80, "file_name": f"{stem}.png"}],
            "categories": [{"id": 1, "name": "table"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}],
        }
        return np.full((60, 80, 3), 200, np.uint8), document

    root = write_layout(tmp_path / "split", {"a": page("a"), "b": page("b")})
    (root / "list.txt").write_text("a.png\n")
    (root / "list_val.txt").write_text("b.png\n")
    assert [image.name for image in load_ground_truth(root, "unified", frozenset()).images] == ["b"]
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    assert [truth.name for _, truth, _ in validator.sets[0][1]] == ["b"]


def test_a_prompted_class_no_validated_page_annotates_is_a_false_positive_as_in_evaluate(monkeypatch):
    """The page is prompted with `text` and `figure` but annotates only `text`: a predicted figure costs the
    page's mAF and mIoU as `docsam evaluate` counts it, rather than being ignored as an unknown class."""

    def rle(x0: int, x1: int) -> dict:
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, x0:x1] = 1
        return mask_utils.encode(np.asfortranarray(mask))

    truth = GtImage("page", 40, 40, [GtAnnotation("text", rle(5, 15), (5.0, 5.0, 10.0, 10.0))])
    predicted = PageInstances(
        40,
        40,
        ["figure", "text"],
        [rle(5, 15), rle(25, 35)],
        np.array([[5, 5, 15, 15], [25, 5, 35, 15]], dtype=np.float64),
        np.array([1.0, 1.0]),
        np.array([1, 0]),
        [rle(25, 35), rle(5, 15)],
    )
    validator = LayoutValidator([], Geometry((176, 176), (128, 128)), max_images=1)
    validator.sets.append(("set", [(np.zeros((40, 40, 3), np.uint8), truth, ["figure", "text"])]))
    monkeypatch.setattr(validation, "segment_pages", lambda *args, **kwargs: [predicted])
    metrics = validator(object())
    assert metrics["mAF"] == pytest.approx(0.5) and metrics["mIoU"] == pytest.approx(0.5)


def _two_page_split(tmp_path):
    """A unified split of two pages, a.png and b.png, each with one table, listed by no list yet."""
    from training_helpers import write_layout

    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}],
    }
    image = np.full((60, 80, 3), 200, np.uint8)
    return write_layout(tmp_path / "split", {"a": (image, document), "b": (image, document)})


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_list_written_on_windows_names_its_pages(tmp_path, encoding):
    """A list.txt saved by Notepad (UTF-8 with a byte order mark) or by PowerShell (`> list.txt`: UTF-16)
    was read as plain UTF-8: the first page became '\\ufeffa.png', whose json training (`error: …/coco/
    \\ufeffa.json: cannot read the annotations`) and evaluate did not find, and a UTF-16 list stopped
    training with an error naming no file (exit 1) and evaluate with an internal error. The mark announces
    the encoding, as in segment's path lists; a list that is not in it is one error naming the list."""
    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.errors import InputError
    from docsam_cli.training.datasets import LayoutDataset

    root = _two_page_split(tmp_path)
    (root / "list.txt").write_text("a.png\r\nb.png\r\n", encoding=encoding)
    dataset = LayoutDataset(root)
    assert dataset.image_names == ["a.png", "b.png"]
    assert dataset.load(0)[1].instances and dataset.category_count() == 1
    truth = load_ground_truth(root, "unified", frozenset())
    assert [image.name for image in truth.images] == ["a", "b"] and not truth.errors

    (root / "list.txt").write_bytes(b"\xff\xfea\x00.")  # UTF-16's mark, then an odd byte count
    with pytest.raises(InputError, match=r"list\.txt: it opens with UTF-16's byte order mark"):
        LayoutDataset(root)
    with pytest.raises(InputError, match=r"list\.txt: it opens with UTF-16's byte order mark"):
        load_ground_truth(root, "unified", frozenset())


def test_lists_saved_on_windows_and_joined_name_their_pages(tmp_path):
    """Two lists saved by Notepad (each opening with a byte order mark) and joined (`type a.txt b.txt >
    list.txt`, `cat`) hold the mark at the start of the second's first line: training stopped with
    'list.txt names 2 files that are not there: …/image/b.png, …/coco/b.json' (the mark invisible in the
    names), and evaluate left the page out. The mark is no part of a name, wherever a line opens with it."""
    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.training.datasets import LayoutDataset

    root = _two_page_split(tmp_path)
    (root / "list.txt").write_bytes("a.png\r\n".encode("utf-8-sig") + "b.png\r\n".encode("utf-8-sig"))
    dataset = LayoutDataset(root)
    assert dataset.image_names == ["a.png", "b.png"]
    dataset.check_files()
    truth = load_ground_truth(root, "unified", frozenset())
    assert [image.name for image in truth.images] == ["a", "b"] and not truth.errors


def test_a_page_listed_twice_is_validated_once_as_evaluate_scores_it(tmp_path):
    """Lists joined (`cat a.txt b.txt`) may name a page twice: `evaluate` scores it once, but `--val`
    validated it twice, the page weighing double in the split's figures (and taking a place of the
    `--val-images` pages)."""
    from docsam_cli.training.datasets import LayoutDataset

    root = _two_page_split(tmp_path)
    (root / "list.txt").write_text("a.png\na.png\nb.png\n")
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 2)
    assert [truth.name for _, truth, _ in validator.sets[0][1]] == ["a", "b"]


def test_a_validation_page_whose_json_evaluate_cannot_read_says_why(tmp_path):
    """A `--val` page whose json evaluate's reader refuses (here `"iscrowd": "0"`, which training reads)
    stopped the run with '…/val: no ground truth for a.png' although coco/a.json is there; the error now
    adds the reason evaluate gives, naming the json and the field."""
    from training_helpers import write_layout

    from docsam_cli.training.datasets import DatasetError, LayoutDataset

    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "iscrowd": "0"}
    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [annotation],
    }
    root = write_layout(tmp_path / "val", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    with pytest.raises(DatasetError) as raised:
        LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    message = str(raised.value)
    assert message.startswith(f"{root}: no ground truth for a.png: ")
    assert "coco/a.json: annotations[0].iscrowd: expected 0 or 1, got '0'" in message


def test_a_split_listing_images_in_folders_reads_their_jsons_where_training_does(tmp_path):
    """A list naming `vol1/a.png` (the reference's lists name images relative to image/) has its json at
    coco/vol1/a.json, where training and the reference's loader read it; evaluate and --val read
    coco/a.json, so the run stopped with '…/val: no ground truth for vol1/a.png' and evaluate left the
    page out."""
    from training_helpers import write_layout

    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.training.datasets import LayoutDataset

    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}],
    }
    root = write_layout(tmp_path / "val", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    for part, name in (("image", "a.png"), ("coco", "a.json")):
        (root / part / "vol1").mkdir()
        (root / part / name).rename(root / part / "vol1" / name)
    (root / "list.txt").write_text("vol1/a.png\n")
    truth = load_ground_truth(root, "unified", frozenset())
    assert not truth.errors and [(image.name, image.image) for image in truth.images] == [
        ("a", root / "image" / "vol1" / "a.png")
    ]
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    ((_, gt, names),) = validator.sets[0][1]
    assert gt.name == "a" and len(gt.annotations) == 1 and names == ["table"]


def test_pages_of_one_name_in_two_folders_are_not_validated_against_one_ground_truth(tmp_path):
    """`vol1/a.png` and `vol2/a.png` (a list naming images in folders): evaluate keys images by their stem
    and refuses the second 'a', and --val, looking pages up by that key, validated vol2/a.png against
    vol1/a.png's ground truth without a word. The page now has none, and the run says why."""
    import json

    from training_helpers import write_layout

    from docsam_cli.training.datasets import DatasetError, LayoutDataset

    def document(boxes: int) -> dict:
        annotations = [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [10 + 30 * i, 10, 20, 20]}
            for i in range(boxes)
        ]
        image = {"id": 1, "height": 60, "width": 80, "file_name": "a.png"}
        return {"images": [image], "categories": [{"id": 1, "name": "table"}], "annotations": annotations}

    root = write_layout(tmp_path / "val", {"a": (np.full((60, 80, 3), 200, np.uint8), document(1))})
    for volume, boxes in (("vol1", 1), ("vol2", 2)):
        (root / "image" / volume).mkdir()
        (root / "image" / volume / "a.png").write_bytes((root / "image" / "a.png").read_bytes())
        (root / "coco" / volume).mkdir()
        (root / "coco" / volume / "a.json").write_text(json.dumps(document(boxes)))
    (root / "list.txt").write_text("vol1/a.png\nvol2/a.png\n")
    with pytest.raises(DatasetError) as raised:
        LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 2)
    assert str(raised.value) == (
        f"{root}: no ground truth for vol2/a.png: {root / 'coco' / 'vol2' / 'a.json'}: images[0].file_name: "
        "another image is also named 'a'"
    )


def test_a_split_with_pre_resized_copies_is_validated_on_them_as_training_reads_them(tmp_path):
    """A split with `image_resize/` (pre-resized copies, which the reference's loader and training read
    instead of image/) stopped --val with '…/val: no ground truth for a.png': evaluate's ground truth is
    rightly that of the copy, and --val looked for image/a.png. The page is validated on the copy, the
    ground truth rescaled to it (half the json's 80 x 60 here)."""
    import cv2
    from training_helpers import write_layout

    from docsam_cli.training.datasets import LayoutDataset

    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}],
    }
    root = write_layout(tmp_path / "val", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    (root / "image_resize").mkdir()
    cv2.imwrite(str(root / "image_resize" / "a.png"), np.full((30, 40, 3), 200, np.uint8))
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    ((image, gt, names),) = validator.sets[0][1]
    assert image.shape == (30, 40, 3) and (gt.width, gt.height) == (40, 30) and names == ["table"]
    assert gt.image == root / "image_resize" / "a.png" and gt.annotations[0].bbox == (5.0, 5.0, 15.0, 10.0)


def test_a_validation_page_with_an_annotation_evaluate_reports_stops_the_run_naming_it(tmp_path):
    """An annotation of a validated page that evaluate reports as an error and scores the page without
    (here one whose image_id names no image of its json) was left out by --val without a word: the page
    was validated without its region. The run now stops with evaluate's error line, naming the json."""
    from training_helpers import write_layout

    from docsam_cli.training.datasets import DatasetError, LayoutDataset

    document = {
        "images": [{"id": 1, "height": 60, "width": 80, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "table"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [40, 30, 30, 20]},
        ],
    }
    root = write_layout(tmp_path / "val", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    with pytest.raises(DatasetError) as raised:
        LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 1)
    assert (
        str(raised.value)
        == f"{root / 'coco' / 'a.json'}: annotations[1].image_id: 7 is not the id of an image"
    )


def test_validation_reads_the_ground_truth_of_the_pages_it_validates_only(tmp_path, monkeypatch):
    """`--val` validates the first `--val-images` pages (10) of a split, but read and rasterised the ground
    truth of every page the split lists before the first step: a PubLayNet-size val split (11,245 pages)
    held a run for minutes at its start, and the masks of every page in memory for good (10,000 synthetic
    pages of ten regions: 123 s and 152 MiB to validate 10). Only the jsons of the pages validated are
    read, their ground truth as before."""
    from training_helpers import write_layout

    from docsam_cli.datasets import ground_truth
    from docsam_cli.training.datasets import LayoutDataset

    def page(index: int) -> tuple:
        document = {
            "images": [{"id": index, "height": 60, "width": 80, "file_name": f"p{index}.png"}],
            "categories": [{"id": 1, "name": "table"}],
            "annotations": [{"id": index, "image_id": index, "category_id": 1, "bbox": [index, 10, 30, 20]}],
        }
        return np.full((60, 80, 3), 200, np.uint8), document

    root = write_layout(tmp_path / "val", {f"p{index}": page(index) for index in range(1, 7)})
    (root / "list.txt").write_text("p1.png\np1.png\np2.png\np3.png\np4.png\np5.png\np6.png\n")
    every = ground_truth.load_ground_truth(root, "unified", frozenset()).images
    read_dataset, read = ground_truth.read_dataset, []

    def counting(path, **options):
        read.append(path.name)
        return read_dataset(path, **options)

    monkeypatch.setattr(ground_truth, "read_dataset", counting)
    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 2)
    assert read == ["p1.json", "p2.json"]
    assert [truth for _, truth, _ in validator.sets[0][1]] == every[:2]
