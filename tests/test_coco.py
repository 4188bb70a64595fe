"""COCO output: per-page parts assembled into a dataset JSON and a results list that pycocotools accepts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import shapely
from instances_factory import empty_instances, make_instances, rect_mask
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import docsam_cli.writers.coco as coco_writer
from docsam_cli.polygons import mask_edge_polygons
from docsam_cli.writers.coco import CocoRun, page_annotations
from docsam_cli.writers.shapes import PageShapes

CLASSES = ["text", "table", "figure"]


def quiet_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def pages():
    """Three pages: two instances (one box regressed past the page, inverted), none, and a two-part mask."""
    first = make_instances(
        [rect_mask(80, 60, 5, 5, 55, 30), rect_mask(80, 60, 10, 40, 50, 75)],
        [0, 1],
        CLASSES,
        scores=[0.95, 0.8],
        boxes=[[4.0, 5.0, 55.0, 30.0], [70.0, 90.0, -3.0, 38.5]],
    )
    second = empty_instances(40, 30, CLASSES)
    parts = rect_mask(50, 50, 2, 2, 12, 12) | rect_mask(50, 50, 30, 30, 48, 45)
    third = make_instances([parts], [2], CLASSES, scores=[0.6])
    return {"a": first, "b": second, "c_p0001": third}


def write_run(tmp_path, pages, mask_format="rle"):
    run = CocoRun(tmp_path / "parts", CLASSES, mask_format=mask_format)
    for page_id, instances in pages.items():
        run.add_page(page_id, PageShapes(instances), f"{page_id}.png", extra={"page_id": page_id})
    counts = run.write(list(pages), tmp_path / "coco.json", tmp_path / "results.json")
    return run, counts


def test_dataset_loads_in_pycocotools_with_exact_rle_masks(tmp_path, pages):
    _, counts = write_run(tmp_path, pages)
    assert (counts.images, counts.annotations) == (3, 3)
    coco = quiet_coco(tmp_path / "coco.json")
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (1, "text"),
        (2, "table"),
        (3, "figure"),
    ]
    images = coco.loadImgs(coco.getImgIds())
    assert [(i["id"], i["file_name"], i["width"], i["height"], i["page_id"]) for i in images] == [
        (1, "a.png", 60, 80, "a"),
        (2, "b.png", 30, 40, "b"),
        (3, "c_p0001.png", 50, 50, "c_p0001"),
    ]
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in annotations] == [
        (1, 1, 1, 0),
        (2, 1, 2, 0),
        (3, 3, 3, 0),
    ]
    originals = [pages["a"].decode_mask(0), pages["a"].decode_mask(1), pages["c_p0001"].decode_mask(0)]
    for annotation, original in zip(annotations, originals, strict=True):
        assert isinstance(annotation["segmentation"]["counts"], str)
        assert (coco.annToMask(annotation).astype(bool) == original).all()
        assert annotation["area"] == original.sum()
    assert annotations[0]["score"] == pytest.approx(0.95)


def test_result_boxes_are_the_model_boxes_sorted_and_clipped_to_the_page(tmp_path, pages):
    write_run(tmp_path, pages)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results[0]["bbox"] == [4.0, 5.0, 51.0, 25.0]
    assert results[1]["bbox"] == [0.0, 38.5, 60.0, 41.5]  # from x 70..-3, y 90..38.5 on a 60 x 80 page


@pytest.mark.parametrize("mask_format", ["rle", "polygon"])
def test_dataset_boxes_are_the_mask_boxes_whatever_the_model_box(tmp_path, pages, mask_format):
    """COCO ground truth's `bbox` is its object's box, and its readers take it for that: FiftyOne's
    `_coco_segmentation_to_mask` (fiftyone/utils/coco.py) cuts the mask to the box,
    `mask[round(y):round(y + h), round(x):round(x + w)]`. The model's box of page a's second instance
    (x 0..60, y 38.5..80) left out rows 38.5..40 of nothing but also misplaced the instance; a box regressed
    off the page collapses to nothing, and FiftyOne kept nothing of its mask."""
    pages["off"] = make_instances(
        [rect_mask(40, 30, 2, 3, 20, 30)], [0], CLASSES, boxes=[[35.0, 5.0, 50.0, 25.0]]
    )
    write_run(tmp_path, pages, mask_format=mask_format)
    coco = quiet_coco(tmp_path / "coco.json")
    boxes = [annotation["bbox"] for annotation in coco.loadAnns(coco.getAnnIds())]
    assert boxes == [[5, 5, 50, 25], [10, 40, 40, 35], [2, 2, 46, 43], [2, 3, 18, 27]]
    for annotation in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(annotation).astype(bool)
        x, y, w, h = annotation["bbox"]
        kept = mask[round(y) : round(y + h), round(x) : round(x + w)]
        assert kept.sum() == mask.sum() == annotation["area"]


def test_a_part_written_without_the_mask_box_gets_it_from_its_rle(tmp_path, pages):
    run, _ = write_run(tmp_path, pages)
    for page_id in pages:
        part = json.loads(run.part_path(page_id).read_text())
        for annotation in part["annotations"]:
            del annotation["mask_bbox"]
        run.part_path(page_id).write_text(json.dumps(part))
    run.write(list(pages), tmp_path / "again.json")
    annotations = json.loads((tmp_path / "again.json").read_text())["annotations"]
    assert [a["bbox"] for a in annotations] == [[5, 5, 50, 25], [10, 40, 40, 35], [2, 2, 46, 43]]


def test_an_empty_mask_keeps_the_model_box_in_the_dataset(tmp_path):
    instances = make_instances([np.zeros((20, 30), bool)], [1], CLASSES, boxes=[[3.0, 4.0, 13.0, 9.0]])
    write_run(tmp_path, {"p": instances})
    (annotation,) = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert (annotation["bbox"], annotation["area"]) == ([3.0, 4.0, 10.0, 5.0], 0)


def test_results_load_with_load_res_and_score_perfectly_against_the_dataset(tmp_path, pages):
    write_run(tmp_path, pages)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "coco.json"))
        evaluation = COCOeval(coco, coco.loadRes(str(tmp_path / "results.json")), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # the same masks: AP 1.0


def test_polygon_mode_writes_one_flat_polygon_per_component(tmp_path, pages):
    write_run(tmp_path, pages, mask_format="polygon")
    coco = quiet_coco(tmp_path / "coco.json")
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [len(a["segmentation"]) for a in annotations] == [1, 1, 2]
    for annotation in annotations:
        for polygon in annotation["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
    original = pages["c_p0001"].decode_mask(0)
    decoded = coco.annToMask(annotations[2]).astype(bool)
    assert (decoded == original).all()  # outlines along the pixel edges: rectangles come back exactly
    assert annotations[2]["area"] == original.sum()  # the area stays the mask's
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(isinstance(result["segmentation"]["counts"], str) for result in results)  # loadRes needs RLE


def blob(height: int, width: int, seed: int) -> np.ndarray:
    """Irregular blobs: smoothed noise over a threshold."""
    noise = np.random.default_rng(seed).random((height // 10, width // 10))
    noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.2), (width, height), interpolation=cv2.INTER_CUBIC)
    return noise > np.quantile(noise, 0.7)


def ellipse(height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.ellipse(canvas, (width // 2, height // 2), (width // 3, height // 3), 15, 0, 360, 1, -1)
    return canvas.astype(bool)


POLYGON_MASKS = {  # (mask, the least IoU pycocotools' rasterisation of the polygons must have with it)
    "block 10 x 20": (rect_mask(60, 80, 10, 20, 30, 30), 1.0),
    "line 1 px high": (rect_mask(60, 400, 20, 30, 320, 31), 1.0),
    "line 2 px high": (rect_mask(60, 400, 20, 30, 320, 32), 1.0),
    "line 3 px high": (rect_mask(60, 400, 20, 30, 320, 33), 1.0),
    "line 4 px high": (rect_mask(60, 400, 20, 30, 320, 34), 1.0),
    "whole page": (np.ones((30, 40), bool), 1.0),
    "parts meeting at a corner": (rect_mask(40, 40, 5, 5, 15, 15) | rect_mask(40, 40, 15, 15, 25, 25), 1.0),
    "ellipse": (ellipse(120, 400), 0.98),
    **{f"blob {seed}": (blob(120, 400, seed), 0.98) for seed in range(4)},
}


@pytest.mark.parametrize("name", POLYGON_MASKS)
def test_polygon_mode_polygons_rasterise_back_into_the_mask(name):
    """pycocotools counts pixel i as [i, i + 1): polygons through the boundary pixels' centres came back
    half a pixel short all round (a 10 x 20 block: IoU 0.855, a 4 px line 0.748)."""
    mask, least = POLYGON_MASKS[name]
    height, width = mask.shape
    (annotation,) = page_annotations(PageShapes(make_instances([mask], [0], CLASSES)), "polygon")
    polygons = annotation["polygons"]
    for flat in polygons:
        points = np.reshape(flat, (-1, 2))
        assert len(points) >= 3 and shapely.Polygon(points).is_valid
        assert (points >= 0).all() and (points[:, 0] <= width).all() and (points[:, 1] <= height).all()
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(
        bool
    )
    assert (decoded & mask).sum() / (decoded | mask).sum() >= least


def test_polygon_mode_part_keeps_the_rle_of_a_mask_without_polygon():
    instances = make_instances([np.zeros((20, 20), bool)], [0], CLASSES)
    (annotation,) = page_annotations(PageShapes(instances), "polygon")
    assert annotation["polygons"] == [] and annotation["area"] == 0
    assert mask_utils.area({"size": annotation["rle"]["size"], "counts": annotation["rle"]["counts"]}) == 0


@pytest.mark.parametrize("earlier", ["rle", "polygon"])
def test_polygon_dataset_leaves_out_empty_masks_the_results_keep(tmp_path, earlier):
    """An empty mask has no polygon: its RLE in a polygon coco.json made detectron2's MASK_FORMAT=polygon
    refuse the dataset, and `[]` fails in pycocotools. It is left out there (also from a converted page),
    not from the results list, which is the same in both formats; RLE's coco.json keeps it."""
    masks = [rect_mask(40, 60, 5, 5, 30, 20), np.zeros((40, 60), bool), rect_mask(40, 60, 40, 25, 60, 40)]
    instances = make_instances(masks, [0, 1, 2], CLASSES, scores=[0.9, 0.8, 0.7])
    CocoRun(tmp_path / "parts", CLASSES, mask_format=earlier).add_page("a", PageShapes(instances), "a.png")
    for mask_format in ("polygon", "rle"):
        run = CocoRun(tmp_path / "parts", CLASSES, mask_format=mask_format)
        counts = run.write(["a"], tmp_path / f"{mask_format}.json", tmp_path / f"{mask_format}-results.json")
        coco = quiet_coco(tmp_path / f"{mask_format}.json")
        kept = [1, 3] if mask_format == "polygon" else [1, 2, 3]  # the categories of the masks kept
        assert counts.annotations == len(coco.anns) == len(kept)
        assert [a["id"] for a in coco.dataset["annotations"]] == list(range(1, len(kept) + 1))
        assert [a["category_id"] for a in coco.dataset["annotations"]] == kept
        types = {type(a["segmentation"]) for a in coco.dataset["annotations"]}
        assert types == ({list} if mask_format == "polygon" else {dict})
        assert all(coco.annToMask(a).sum() == a["area"] for a in coco.dataset["annotations"])
        with contextlib.redirect_stdout(io.StringIO()):
            results = coco.loadRes(str(tmp_path / f"{mask_format}-results.json"))
        assert [a["category_id"] for a in results.dataset["annotations"]] == [1, 2, 3]
    assert (tmp_path / "polygon-results.json").read_text() == (tmp_path / "rle-results.json").read_text()


def test_parts_survive_a_killed_run_and_failed_pages_are_left_out(tmp_path, pages):
    first = CocoRun(tmp_path / "parts", CLASSES)
    first.add_page("a", PageShapes(pages["a"]), "a.png")  # then the run dies before writing anything else
    resumed = CocoRun(tmp_path / "parts", CLASSES)
    assert resumed.has_page("a") and not resumed.has_page("b")
    resumed.add_page("c_p0001", PageShapes(pages["c_p0001"]), "c.png")
    counts = resumed.write(["a", "b", "c_p0001", "a"], tmp_path / "coco.json")  # "b" failed; "a" listed twice
    assert (counts.images, counts.annotations) == (2, 3)
    coco = quiet_coco(tmp_path / "coco.json")
    assert [image["file_name"] for image in coco.loadImgs(coco.getImgIds())] == ["a.png", "c.png"]
    assert not (tmp_path / "results.json").exists()


def test_parts_from_other_classes_are_refused_without_leaving_files(tmp_path, pages):
    CocoRun(tmp_path / "parts", ["paragraph"]).add_page(
        "x", PageShapes(make_instances([rect_mask(9, 9, 0, 0, 3, 3)], [0], ["paragraph"])), "x.png"
    )
    run = CocoRun(tmp_path / "parts", CLASSES)
    with pytest.raises(ValueError, match="'paragraph' is not one of this run's classes"):
        run.write(["x"], tmp_path / "coco.json", tmp_path / "results.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["parts"]


def test_own_only_leaves_out_other_runs_and_unreadable_parts_reading_each_part_twice(
    tmp_path, pages, monkeypatch
):
    """What a run's end assembles (`PageWriter.finish`): the pages of this run's parts, in any mask
    format; one made with other classes, or unreadable, is left out instead of failing the run. Each part
    is read twice (its image, then its annotations): a folder of 100,000 pages is read through twice, not
    three times."""
    run = CocoRun(tmp_path / "parts", CLASSES)
    run.add_page("a", PageShapes(pages["a"]), "a.png")
    CocoRun(tmp_path / "parts", CLASSES, mask_format="polygon").add_page(
        "c", PageShapes(pages["c_p0001"]), "c.png"
    )
    CocoRun(tmp_path / "parts", ["paragraph"]).add_page("other", PageShapes(pages["b"]), "other.png")
    run.part_path("broken").write_text("{")
    reads: list[str] = []
    read = coco_writer._read

    def counting(path):
        reads.append(path.stem)
        return read(path)

    monkeypatch.setattr(coco_writer, "_read", counting)
    pages_asked = ["a", "other", "broken", "missing", "c"]
    counts = run.write(pages_asked, tmp_path / "coco.json", tmp_path / "results.json", own_only=True)
    assert (counts.images, counts.annotations) == (2, 3)
    coco = quiet_coco(tmp_path / "coco.json")
    assert [image["file_name"] for image in coco.loadImgs(coco.getImgIds())] == ["a.png", "c.png"]
    assert sorted(reads) == sorted(["a", "a", "c", "c", "other", "broken", "missing"])  # tried once


# Writes the COCO files of the pages argv[2:] from the parts in argv[1], SIGKILLed after its k-th rename.
_KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from docsam_cli.writers.coco import CocoRun

folder, kill_after, pages = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
renames, rename = [], os.replace

def rename_then_die(source, target):
    rename(source, target)
    renames.append(target)
    if len(renames) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = rename_then_die
run = CocoRun(folder / "parts", ["text", "table", "figure"])
run.write(pages, folder / "coco.json", folder / "results.json")
"""


def coco_pair(folder) -> tuple[list[str], list[dict] | None]:
    """The file names of the images of coco.json and the results list beside it (None where there is none)."""
    images = [image["file_name"] for image in json.loads((folder / "coco.json").read_text())["images"]]
    results = folder / "results.json"
    return images, json.loads(results.read_text()) if results.exists() else None


@pytest.mark.parametrize("kill_after", [1, 2])
def test_a_run_killed_between_the_two_renames_leaves_no_results_list_beside_another_dataset(
    tmp_path, pages, kill_after
):
    """The results list names images by the ids of coco.json. It was renamed into place first, and the
    dataset fsynced and renamed after it: a run killed in between (SIGKILL, the out-of-memory killer, a
    node lost) left the new list beside the old dataset, whose image 1 is another page, and `evaluate` or
    `loadRes` scored every detection on the wrong page without a word until a rerun. Now the old list is
    removed before the dataset is renamed: such a kill leaves the new dataset without a list."""
    write_run(tmp_path, pages)
    old = coco_pair(tmp_path)
    new_order = ["c_p0001", "a"]  # the third page is now image 1, and "b" is gone
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "parts", elsewhere / "parts")
    CocoRun(elsewhere / "parts", CLASSES).write(
        new_order, elsewhere / "coco.json", elsewhere / "results.json"
    )
    new = coco_pair(elsewhere)
    assert old[0] != new[0] and old[1][0]["image_id"] == new[1][0]["image_id"] == 1

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITE, str(tmp_path), str(kill_after), *new_order], check=False
    )

    assert killed.returncode == -signal.SIGKILL
    after = coco_pair(tmp_path)
    assert after == (new if kill_after == 2 else (new[0], None))
    assert after[1] is None or after == new  # never a list beside another dataset's images


def test_a_part_made_with_other_classes_is_not_a_page_of_the_run(tmp_path, pages):
    reordered = CocoRun(tmp_path / "parts", ["figure", "table", "text"])
    reordered.add_page("empty", PageShapes(pages["b"]), "b.png")
    run = CocoRun(tmp_path / "parts", CLASSES)
    assert not run.has_page("empty")  # no annotation, yet other category ids
    run.add_page("a", PageShapes(pages["a"]), "a.png")
    assert run.has_page("a")
    legacy = json.loads(run.part_path("a").read_text())
    del legacy["classes"]  # as written before parts named their classes
    run.part_path("a").write_text(json.dumps(legacy))
    assert run.has_page("a") and not CocoRun(tmp_path / "parts", ["text"]).has_page("a")


def test_a_part_in_another_mask_format_is_not_a_page_of_the_run(tmp_path, pages):
    """A rerun asking for polygons where RLE was written (or back) does the page again."""
    rle, polygon = (CocoRun(tmp_path / "parts", CLASSES, mask_format=name) for name in ("rle", "polygon"))
    rle.add_page("a", PageShapes(pages["a"]), "a.png")
    assert rle.has_page("a") and not polygon.has_page("a")
    polygon.add_page("a", PageShapes(pages["a"]), "a.png")
    assert polygon.has_page("a") and not rle.has_page("a")
    legacy = json.loads(polygon.part_path("a").read_text())
    del legacy["mask_format"]  # as written before parts named it: told by the annotations' polygons
    polygon.part_path("a").write_text(json.dumps(legacy))
    assert polygon.has_page("a") and not rle.has_page("a")


@pytest.mark.parametrize("earlier", ["rle", "polygon"])
def test_pages_of_an_earlier_run_in_the_other_mask_format_are_converted(tmp_path, pages, earlier):
    """A run asks for one mask format, the folder holds pages of an earlier run in the other: coco.json
    still lists them all, each annotation in this run's format, with the polygons polygon mode writes."""
    later = "polygon" if earlier == "rle" else "rle"
    old, new = (CocoRun(tmp_path / "parts", CLASSES, mask_format=name) for name in (earlier, later))
    blobs = make_instances([blob(120, 400, 0), blob(120, 400, 1)], [0, 2], CLASSES)
    old.add_page("earlier", PageShapes(blobs), "earlier.png")
    new.add_page("now", PageShapes(blobs), "now.png")
    assert new.has_page("earlier", any_mask_format=True) and not new.has_page("earlier")

    new.write(["earlier", "now"], tmp_path / "coco.json")

    coco = quiet_coco(tmp_path / "coco.json")
    annotations = [coco.imgToAnns[image_id] for image_id in (1, 2)]
    segmentations = [[a["segmentation"] for a in page] for page in annotations]
    assert segmentations[0] == segmentations[1]  # converted exactly as this run writes them
    assert all(isinstance(s, list if later == "polygon" else dict) for s in segmentations[0])
    for annotation, index in zip(annotations[0], range(2), strict=True):
        iou = mask_utils.iou([mask_utils.encode(np.asfortranarray(coco.annToMask(annotation)))],
                             [blobs.masks[index]], [0])[0][0]  # fmt: skip
        assert iou >= 0.98


def whole_page_edge_polygons(rle) -> list[list[int]]:
    """The conversion as it was: the whole page decoded, then cut to the mask's box."""
    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    x, y, width, height = (int(value) for value in mask_utils.toBbox(encoded))
    window = np.ascontiguousarray(mask_utils.decode(encoded)[y : y + height, x : x + width].astype(bool))
    return [ring.reshape(-1).tolist() for ring in mask_edge_polygons(window, origin=(x, y))]


def random_masks(height: int, width: int, seed: int) -> list[np.ndarray]:
    """Random rectangles and speckle, some touching the page's borders, the whole page and an empty one."""
    rng = np.random.default_rng(seed)
    masks = [np.ones((height, width), bool), np.zeros((height, width), bool)]
    for _ in range(12):
        x0, x1 = sorted(rng.integers(0, width + 1, 2))
        y0, y1 = sorted(rng.integers(0, height + 1, 2))
        mask = rect_mask(height, width, x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
        masks.append(mask ^ (rng.random((height, width)) < 0.05))
    masks += [
        rect_mask(height, width, 0, 0, 1, 1),
        rect_mask(height, width, width - 3, height - 1, width, height),
    ]
    return masks


@pytest.mark.parametrize("seed", range(3))
def test_conversion_decodes_the_mask_box_only_and_writes_the_same_polygons(seed, monkeypatch):
    """A rerun in polygon mode converts earlier RLE parts decoding each mask inside its box, not over the
    whole page (25 ms a mask on a 300-dpi page): the polygons are those of the whole-page decode."""
    rles = [
        page_annotations(PageShapes(make_instances([mask], [0], CLASSES)))[0]["rle"]
        for mask in random_masks(37, 53, seed)
    ]
    expected = [whole_page_edge_polygons(rle) for rle in rles]
    monkeypatch.setattr(mask_utils, "decode", lambda *_: pytest.fail("the whole page was decoded"))
    assert [coco_writer._edge_polygons(rle) for rle in rles] == expected


def test_one_element_per_line(tmp_path, pages):
    write_run(tmp_path, pages)
    lines = (tmp_path / "coco.json").read_text().splitlines()
    assert sum(line.lstrip(",").startswith('{"id":') for line in lines) == 3 + 3  # images and annotations


def test_unknown_mask_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="rle, polygon"):
        CocoRun(tmp_path, CLASSES, mask_format="bitmap")


def detectron2_kept_polygons(segmentation: list[list[float]]) -> list[list[float]]:
    """What detectron2's `load_coco_json` (detectron2/data/datasets/coco.py) keeps of a polygon
    segmentation: `[poly for poly in segm if len(poly) % 2 == 0 and len(poly) >= 6]`; an instance left
    with none is dropped as "without valid segmentation"."""
    return [polygon for polygon in segmentation if len(polygon) % 2 == 0 and len(polygon) >= 6]


def datumaro_problems(dataset: dict) -> list[str]:
    """The checks of Datumaro's COCO reader, which CVAT's COCO 1.0 import runs
    (datumaro/plugins/data_formats/coco/base.py `_parse_item`, `_load_annotations`): field types via
    `_parse_field`, polygons of an even count of at least 6 values, a bbox of 4 values."""
    problems = []
    for image in dataset["images"]:
        if not (isinstance(image["id"], int) and isinstance(image["file_name"], str)):
            problems.append(f"image {image}")
        if not (isinstance(image["width"], int) and isinstance(image["height"], int)):
            problems.append(f"image size {image}")
    for annotation in dataset["annotations"]:
        where = f"annotation {annotation['id']}"
        for key in ("id", "image_id", "category_id", "iscrowd"):
            if not isinstance(annotation[key], int) or isinstance(annotation[key], bool):
                problems.append(f"{where}: {key}")
        if not isinstance(annotation["score"], (int, float)):
            problems.append(f"{where}: score")
        if not isinstance(annotation["bbox"], list) or len(annotation["bbox"]) != 4:
            problems.append(f"{where}: bbox")
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            problems += [f"{where}: polygon" for p in segmentation if len(p) % 2 != 0 or len(p) < 6]
        elif not isinstance(segmentation.get("counts"), str) or len(segmentation["size"]) != 2:
            problems.append(f"{where}: rle")
    return problems


def mmdet_kept(annotation: dict, image: dict) -> bool:
    """Whether MMDetection's `CocoDataset.parse_data_info` (mmdet/datasets/coco.py) keeps an annotation:
    its box must overlap the image, `area > 0` and `w, h >= 1`."""
    x1, y1, w, h = annotation["bbox"]
    inter_w = max(0, min(x1 + w, image["width"]) - max(x1, 0))
    inter_h = max(0, min(y1 + h, image["height"]) - max(y1, 0))
    return inter_w * inter_h > 0 and annotation["area"] > 0 and w >= 1 and h >= 1


@pytest.mark.parametrize("mask_format", ["rle", "polygon"])
def test_every_annotation_passes_the_checks_of_detectron2_cvat_and_mmdetection(tmp_path, pages, mask_format):
    """Page "off"'s model box, regressed past the right edge, collapsed to x 30..30: MMDetection dropped its
    instance (`w < 1`), whose mask covers 18 x 27 pixels."""
    pages["off"] = make_instances(
        [rect_mask(40, 30, 2, 3, 20, 30)], [0], CLASSES, boxes=[[35.0, 5.0, 50.0, 25.0]]
    )
    write_run(tmp_path, pages, mask_format=mask_format)
    dataset = json.loads((tmp_path / "coco.json").read_text())
    images = {image["id"]: image for image in dataset["images"]}
    assert datumaro_problems(dataset) == []
    annotation_ids = [annotation["id"] for annotation in dataset["annotations"]]
    assert len(set(annotation_ids)) == len(annotation_ids)  # detectron2 asserts unique ids
    for annotation in dataset["annotations"]:
        assert mmdet_kept(annotation, images[annotation["image_id"]])
        segmentation = annotation["segmentation"]
        if mask_format == "polygon":
            assert detectron2_kept_polygons(segmentation) == segmentation


def label_studio_polygons(dataset: dict) -> list[list[list[float]]]:
    """The polygon points Label Studio's COCO import makes of a dataset's segmentations, in percent of the
    page (label_studio_sdk/converter/imports/coco.py, `convert_coco_to_ls`: `for single_segmentation in
    annotation["segmentation"]`, then `create_segmentation` pairs its values and divides x by the width, y
    by the height). It reads polygons only: an RLE's keys would be taken for polygons."""
    images = {image["id"]: image for image in dataset["images"]}
    polygons = []
    for annotation in dataset["annotations"]:
        image = images[annotation["image_id"]]
        for single in annotation["segmentation"]:
            points = [list(pair) for pair in zip(*[iter(single)] * 2, strict=True)]
            polygons.append([[x / image["width"] * 100, y / image["height"] * 100] for x, y in points])
    return polygons


def test_a_polygon_dataset_is_read_by_label_studios_coco_import(tmp_path, pages):
    write_run(tmp_path, pages, mask_format="polygon")
    polygons = label_studio_polygons(json.loads((tmp_path / "coco.json").read_text()))
    assert len(polygons) == 4  # one per part: the third page's mask has two
    assert all(len(polygon) >= 4 for polygon in polygons)
    assert all(0 <= value <= 100 for polygon in polygons for point in polygon for value in point)
    rle_run = tmp_path / "rle"
    rle_run.mkdir()
    write_run(rle_run, pages)
    with pytest.raises(TypeError):  # "size" / width: README sends Label Studio users to polygon mode
        label_studio_polygons(json.loads((rle_run / "coco.json").read_text()))


def test_image_fields_keep_numbers_and_write_undecodable_file_name_bytes_as_utf_8_text(tmp_path, pages):
    """`extra` fields of an image entry: a PDF's page number stays a number, and a file name with bytes that
    are not UTF-8 (`os.fsdecode` gives them as lone surrogates) is percent-encoded, so that coco.json stays
    valid UTF-8 (module doc)."""
    run = CocoRun(tmp_path / "parts", CLASSES)
    source = os.fsdecode(b"scan\xff.pdf")
    run.add_page("a", PageShapes(pages["a"]), "a.png", extra={"source": source, "page": 3})
    run.write(["a"], tmp_path / "coco.json")
    (image,) = json.loads((tmp_path / "coco.json").read_bytes().decode("utf-8"))["images"]
    assert (image["source"], image["page"]) == ("scan%FF.pdf", 3)


def test_a_part_that_cannot_be_read_fails_the_whole_write_with_a_value_error_leaving_no_file(tmp_path, pages):
    """Without `own_only` an unreadable part is an error (a JSON one, a ValueError), not a page left out."""
    run = CocoRun(tmp_path / "parts", CLASSES)
    run.add_page("a", PageShapes(pages["a"]), "a.png")
    run.part_path("broken").write_text("{")
    with pytest.raises(ValueError):
        run.write(["a", "broken"], tmp_path / "coco.json", tmp_path / "results.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["parts"]


def test_scores_keep_six_decimals_in_both_files_and_result_boxes_two(tmp_path):
    """Scores rank the detections of an evaluation: six decimals keep 0.1234567 and 0.1234612 apart. The
    results list's boxes (the model's, [x, y, w, h]) keep a hundredth of a pixel."""
    instances = make_instances(
        [rect_mask(20, 20, 0, 0, 5, 5), rect_mask(20, 20, 10, 10, 15, 15)],
        [0, 1],
        CLASSES,
        scores=[0.1234567, 0.1234612],
        boxes=[[0.123, 0.456, 4.987, 5.0], [10.0, 10.0, 15.0, 15.0]],
    )
    run = CocoRun(tmp_path / "parts", CLASSES)
    run.add_page("a", PageShapes(instances), "a.png")
    run.write(["a"], tmp_path / "coco.json", tmp_path / "results.json")
    dataset = json.loads((tmp_path / "coco.json").read_text())
    results = json.loads((tmp_path / "results.json").read_text())
    expected = [0.123457, 0.123461]
    assert [annotation["score"] for annotation in dataset["annotations"]] == expected
    assert [result["score"] for result in results] == expected
    assert results[0]["bbox"] == [0.12, 0.46, 4.86, 4.54]
