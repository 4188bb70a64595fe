"""convert-dataset --from coco (PubLayNet sample, RLE, class options, splits, links, bad file names)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from convert_helpers import coco_document, coco_source, layout_counts, run_cli, write_image
from PIL import Image
from pycocotools import mask as mask_utils

from docsam_cli.datasets.geometry import fill_polygons


@pytest.fixture(scope="module")
def publaynet(shared_data: Path) -> dict:
    return json.loads((shared_data / "pages/publaynet/annotations.json").read_text())


def test_publaynet_converts_with_its_own_counts_and_geometry(shared_data: Path, publaynet, tmp_path: Path):
    out = tmp_path / "pln"
    result = run_cli("convert-dataset", shared_data / "pages/publaynet", "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    names = {category["id"]: category["name"] for category in publaynet["categories"]}
    expected = Counter(names[annotation["category_id"]] for annotation in publaynet["annotations"])
    counts, documents = layout_counts(out)
    assert counts == expected and sum(expected.values()) == 98
    assert len(documents) == len(publaynet["images"]) == 10
    source = {image["file_name"]: image for image in publaynet["images"]}
    for name, document in documents.items():
        (image,) = document["images"]
        assert (image["width"], image["height"]) == (source[name]["width"], source[name]["height"])
        original = sorted(
            (a for a in publaynet["annotations"] if a["image_id"] == source[name]["id"]),
            key=lambda a: a["bbox"],
        )
        converted = sorted(document["annotations"], key=lambda a: a["bbox"])
        assert len(original) == len(converted)
        for before, after in zip(original, converted, strict=True):
            assert np.allclose(before["bbox"], after["bbox"], atol=0.01)
            assert len(before["segmentation"]) == len(after["segmentation"])
            for a, b in zip(before["segmentation"], after["segmentation"], strict=True):
                # same polygon, up to rounding and dropped repeated points
                assert np.allclose(
                    np.unique(np.round(np.reshape(a, (-1, 2)), 2), axis=0),
                    np.unique(np.reshape(b, (-1, 2)), axis=0),
                )


def _coco_file(folder: Path, annotations: list[dict], names: tuple[str, ...] = ("figure", "table")) -> Path:
    write_image(folder / "images" / "a.png", 60, 40)
    document = {
        "images": [{"id": 7, "file_name": "a.png", "width": 60, "height": 40}],
        "annotations": [{"id": i + 1, "image_id": 7, **a} for i, a in enumerate(annotations)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(document))
    return path


def test_rle_segmentations_become_polygons_of_the_same_mask(tmp_path: Path) -> None:
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:20, 10:30] = 1
    mask[25:35, 40:55] = 1  # two components
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = {"size": [40, 60], "counts": _uncompressed_counts(mask)}
    path = _coco_file(
        tmp_path / "src",
        [
            {"category_id": 1, "segmentation": compressed, "iscrowd": 0},
            {"category_id": 2, "segmentation": uncompressed, "iscrowd": 1},
        ],
    )
    out = tmp_path / "out"
    assert run_cli("convert-dataset", path, "--from", "coco", "--out", out).exit_code == 0
    annotations = json.loads((out / "coco/a.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in annotations] == [0, 1]
    for annotation in annotations:
        polygons = [np.reshape(p, (-1, 2)).astype(float) for p in annotation["segmentation"]]
        assert len(polygons) == 2
        traced = mask_utils.decode(fill_polygons(polygons, 40, 60))
        assert (traced == mask).all()  # contours through boundary pixel centres, filled inclusively
    report = json.loads((out / "convert_report.json").read_text())
    assert report["fixed"] == {"RLE mask traced to polygons": 2}


def test_rle_masks_are_traced_without_decoding_their_page(tmp_path: Path, monkeypatch) -> None:
    """convert-dataset of RLE masks (segment's coco.json: pseudo-labels to fine-tune on), and training on a
    split whose jsons hold them, decoded and traced the whole page for every region, 40 ms a region at 300
    dpi: 20 such pages of 50 regions took 40 s to convert (1.5 s now, the same dataset). Only the region's
    box is decoded now, the polygons the same."""
    from docsam_cli.training.annotations import rectify

    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:20, 10:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    path = _coco_file(tmp_path / "src", [{"category_id": 1, "segmentation": compressed}])
    decode, decoded = mask_utils.decode, []
    monkeypatch.setattr(mask_utils, "decode", lambda rle: decoded.append(rle["size"]) or decode(rle))
    out = tmp_path / "out"
    assert run_cli("convert-dataset", path, "--from", "coco", "--out", out).exit_code == 0
    document = json.loads((out / "coco/a.json").read_text())
    (annotation,) = document["annotations"]
    assert sorted(map(tuple, np.reshape(annotation["segmentation"], (-1, 2)).tolist())) == [
        (10, 5),
        (10, 19),
        (29, 5),
        (29, 19),
    ]
    document["annotations"][0]["segmentation"] = compressed
    (instance,) = rectify(document).instances
    assert sorted(map(tuple, instance.polygons[0].tolist())) == [(10, 5), (10, 19), (29, 5), (29, 19)]
    assert decoded == []


def test_overlapping_polygons_of_one_annotation_keep_their_overlap(tmp_path: Path) -> None:
    """An L-shaped region annotated as two overlapping rectangles (one COCO annotation, the union of its
    polygons as pycocotools reads it): written as two polygons, the reference's loader and docsam's trainer,
    which draw an instance's polygons in one `cv2.fillPoly`, left the overlap out (even-odd rule), a hole
    of 15 x 10 pixels in the region. The polygons are now merged into the outline of their union."""
    parts = [[5, 5, 35, 5, 35, 20, 5, 20], [20, 10, 50, 10, 50, 35, 20, 35]]
    path = _coco_file(tmp_path / "src", [{"category_id": 1, "segmentation": parts, "iscrowd": 0}])
    out = tmp_path / "out"
    assert run_cli("convert-dataset", path, "--from", "coco", "--out", out).exit_code == 0
    (annotation,) = json.loads((out / "coco/a.json").read_text())["annotations"]
    drawn = np.zeros((40, 60), dtype=np.uint8)  # as the reference draws the instance
    cv2.fillPoly(drawn, [np.reshape(p, (-1, 2)).astype(np.int32) for p in annotation["segmentation"]], 1)
    union = mask_utils.decode(fill_polygons([np.reshape(p, (-1, 2)).astype(float) for p in parts], 40, 60))
    assert (drawn == union).all()
    report = json.loads((out / "convert_report.json").read_text())
    assert report["fixed"] == {"overlapping polygons merged": 1}


def _converted_annotation(path: Path, out: Path) -> dict:
    """The one annotation of `convert-dataset` of the COCO file `path` (its image `a.png`) into `out`."""
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    (annotation,) = json.loads((out / "coco/a.json").read_text())["annotations"]
    return annotation


def _box_ap(path: Path, bbox: list[float], results: Path) -> float:
    """`evaluate`'s box AP of the COCO file `path` against one prediction of class 1 at `bbox` (image 7)."""
    results.write_text(json.dumps([{"image_id": 7, "category_id": 1, "bbox": bbox, "score": 0.9}]))
    result = run_cli("evaluate", path, "--pred", results, "--json", "-")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["box"]["AP"]


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_map_drop_keep_and_dataset_name(tmp_path: Path) -> None:
    box = {"bbox": [1, 1, 10, 10], "segmentation": []}
    path = _coco_file(
        tmp_path / "src",
        [{"category_id": 1, **box}, {"category_id": 2, **box}, {"category_id": 3, **box}],
        names=("figure", "table", "_background_"),
    )
    out = tmp_path / "out"
    result = run_cli(
        "convert-dataset", path, "--from", "coco", "--out", out, "--map", "figure=picture",
        "--drop", "table", "--keep", "picture,formula", "--dataset-name", "My Set",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert layout_counts(out)[0] == Counter({"picture": 1})
    assert (out / "class_name/a.txt").read_text() == "picture\nMy Set _background_\n"
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["background"] == "My Set _background_" and dataset["class_names"] == ["picture"]
    report = json.loads((out / "convert_report.json").read_text())
    assert report["dropped"] == {"class '_background_' left out": 1, "class 'table' left out": 1}
    assert report["warnings"] == ["--keep formula matched no class"]


def test_split_is_deterministic_disjoint_and_complete(publaynet, shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "pages/publaynet"
    splits = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        arguments = ["--split", "train=0.6,val=0.2,test=0.2", "--seed", "3", "--symlink"]
        assert run_cli("convert-dataset", source, "--from", "coco", "--out", out, *arguments).exit_code == 0
        splits.append({s: (out / s / "list.txt").read_text().split() for s in ("train", "val", "test")})
    assert splits[0] == splits[1]
    names = [name for split in splits[0].values() for name in split]
    assert sorted(names) == sorted(image["file_name"] for image in publaynet["images"])
    assert [len(splits[0][s]) for s in ("train", "val", "test")] == [6, 2, 2]
    linked = tmp_path / "a" / "train" / "image" / splits[0]["train"][0]
    assert linked.is_symlink() and linked.resolve() == (source / "images" / linked.name).resolve()
    ids = [
        json.loads((tmp_path / "a" / s / "coco" / f"{Path(n).stem}.json").read_text())["images"][0]["id"]
        for s, names in splits[0].items()
        for n in names
    ]
    assert sorted(ids) == list(range(1, 11))  # unique across splits
    seeded = tmp_path / "c"
    arguments = ["--split", "train=0.6,val=0.2,test=0.2", "--seed", "4"]
    assert run_cli("convert-dataset", source, "--from", "coco", "--out", seeded, *arguments).exit_code == 0
    assert (seeded / "train/list.txt").read_text().split() != splits[0]["train"]


def test_file_name_escaping_the_image_folder_is_refused(tmp_path: Path) -> None:
    path = _coco_file(tmp_path / "src", [{"category_id": 1, "bbox": [1, 1, 5, 5]}])
    document = json.loads(path.read_text())
    write_image(tmp_path / "outside.png", 60, 40)
    document["images"].append({"id": 8, "file_name": "../../outside.png", "width": 60, "height": 40})
    document["images"].append({"id": 9, "file_name": "missing.png", "width": 60, "height": 40})
    path.write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", out)
    assert result.exit_code == 1
    lines = result.error_lines()
    assert len(lines) == 2
    assert any("outside.png" in line and "outside the source folder" in line for line in lines)
    assert any("missing.png" in line and "not found" in line for line in lines)
    assert (out / "list.txt").read_text() == "a.png\n"


def test_a_degenerate_polygon_falls_back_to_the_bbox(tmp_path: Path) -> None:
    """A polygon of fewer than 3 points with a valid bbox is the bbox, as `evaluate` reads it; without a bbox
    the annotation is dropped; beside a usable polygon it is left out."""
    box, line, triangle = [10, 5, 20, 10], [10, 5, 30, 15], [30, 20, 50, 20, 50, 35]
    source = _coco_file(
        tmp_path / "src",
        [
            {"category_id": 1, "segmentation": [line], "bbox": box},
            {"category_id": 2, "segmentation": [line]},
            {"category_id": 2, "segmentation": [[1, 1, 5, 1], triangle], "bbox": [1, 1, 49, 34]},
        ],
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "coco", "-o", out)
    assert result.exit_code == 0, result.stderr
    annotations = json.loads((out / "coco" / "a.json").read_text())["annotations"]
    assert [a["category_id"] for a in annotations] == [1, 2]
    assert annotations[0]["bbox"] == box
    assert annotations[0]["segmentation"] == [[10, 5, 30, 5, 30, 15, 10, 15]]
    assert annotations[1]["segmentation"] == [triangle]
    report = json.loads((out / "convert_report.json").read_text())
    assert report["dropped"] == {"fewer than 3 points or no area": 1}
    assert report["fixed"] == {"polygon of fewer than 3 points left out": 2}


def test_an_entry_path_tells_images_of_the_same_name_apart(tmp_path: Path) -> None:
    """segment's coco.json states each image's `path` relative to the json: `scan.png` of `vol2/` is that
    file, not the `Scan.PNG` a guess by file name would take; an entry whose path leads nowhere falls back
    to its file name."""
    write_image(tmp_path / "scans" / "Scan.PNG", 60, 40)
    write_image(tmp_path / "scans" / "vol2" / "scan.png", 60, 41)
    write_image(tmp_path / "out" / "image" / "x.png", 60, 42)
    entries = [
        {"id": 1, "file_name": "Scan.PNG", "path": "../scans/Scan.PNG", "width": 60, "height": 40},
        {"id": 2, "file_name": "scan.png", "path": "../scans/vol2/scan.png", "width": 60, "height": 41},
        {"id": 3, "file_name": "x.png", "path": "gone/x.png", "width": 60, "height": 42},
    ]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in (1, 2, 3)]
    coco = tmp_path / "out" / "coco.json"
    coco.write_text(
        json.dumps({"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "text"}]})
    )
    out = tmp_path / "converted"
    result = run_cli("convert-dataset", coco, "--from", "coco", "--images", tmp_path / "scans", "--out", out)
    assert result.exit_code == 0, result.stderr
    listed = (out / "list.txt").read_text().split()
    heights = [Image.open(out / "image" / name).size[1] for name in listed]
    assert sorted(heights) == [40, 41, 42]


@pytest.mark.parametrize("rendering", ["semantic", "overlay"])
def test_segment_overlays_and_label_maps_are_never_the_image(rendering: str, tmp_path: Path) -> None:
    """segment's coco.json names its inputs beside the output folder (`../scans/p.png`); read back without
    `--images` the name search must not take the page's label map or overlay (of the page's very size:
    an overlay without instances has no legend) for the page: the image is not found, and found with
    `--images`."""
    write_image(tmp_path / "scans" / "p.png", 60, 40)
    out = tmp_path / "out"
    (out / ".docsam").mkdir(parents=True)
    write_image(out / rendering / "p.png", 60, 40)
    entry = {"id": 1, "file_name": "p.png", "path": "../scans/p.png", "width": 60, "height": 40}
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}
    coco = out / "coco.json"
    categories = [{"id": 1, "name": "text"}]
    coco.write_text(json.dumps({"images": [entry], "annotations": [annotation], "categories": categories}))
    result = run_cli("convert-dataset", coco, "--from", "coco", "--out", tmp_path / "none")
    assert result.exit_code == 1 and not (tmp_path / "none").exists()
    (line,) = result.error_lines()
    assert "p.png" in line and "--images" in line
    converted = tmp_path / "converted"
    scans = tmp_path / "scans"
    result = run_cli("convert-dataset", coco, "--from", "coco", "--images", scans, "-o", converted)
    assert result.exit_code == 0, result.stderr
    assert (converted / "image" / "p.png").read_bytes() == (scans / "p.png").read_bytes()


def test_an_empty_polygon_gives_way_to_the_bbox(tmp_path: Path) -> None:
    """`"segmentation": [[]]` beside a bbox (box-only annotations as some exporters write them) is a polygon
    of fewer than 3 points, which gives way to the bbox: it made the whole image fail ('expected a
    polygon ..., got an empty list (its image a.png is left out)')."""
    empty = {"category_id": 1, "segmentation": [[]], "bbox": [10, 5, 20, 10], "iscrowd": 0}
    path = _coco_file(tmp_path / "src", [empty])
    out = tmp_path / "out"
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    (annotation,) = json.loads((out / "coco/a.json").read_text())["annotations"]
    assert annotation["segmentation"] == [[10, 5, 30, 5, 30, 15, 10, 15]]
    report = json.loads((out / "convert_report.json").read_text())
    assert report["fixed"] == {"polygon of fewer than 3 points left out": 1}


def test_an_empty_bbox_beside_a_polygon_is_no_bbox(tmp_path: Path) -> None:
    """`"bbox": []` beside a polygon, as VIA-to-COCO scripts write it: the annotation is its polygon, as
    with no bbox (pycocotools scores its mask, the reference's loader boxes it); it made the whole image
    fail in convert-dataset and evaluate ('bbox: expected [x, y, width, height], got an empty list')."""
    polygon = {"category_id": 1, "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "bbox": [], "iscrowd": 0}
    path = _coco_file(tmp_path / "src", [polygon])
    annotation = _converted_annotation(path, tmp_path / "out")
    assert annotation["segmentation"] == polygon["segmentation"] and annotation["bbox"] == [10, 5, 20, 10]
    assert _box_ap(path, [10, 5, 20, 10], tmp_path / "results.json") == pytest.approx(1.0)


def test_a_cvat_rotated_rectangle_is_read_turned(tmp_path: Path) -> None:
    """CVAT's COCO export writes a rotated rectangle as its unrotated bbox, no segmentation, and the turn
    (degrees clockwise about its centre) in `attributes.rotation`: a text block drawn turned 90° was read,
    converted and scored as the box lying across it. It is now the turned rectangle, its box that one's."""
    turned = {
        "category_id": 1,
        "segmentation": [],
        "bbox": [20, 10, 20, 10],
        "iscrowd": 0,
        "attributes": {"occluded": False, "rotation": 90.0},
    }
    path = _coco_file(tmp_path / "src", [turned])
    annotation = _converted_annotation(path, tmp_path / "out")
    (polygon,) = annotation["segmentation"]
    corners = {tuple(point) for point in np.round(np.reshape(polygon, (-1, 2)), 6).tolist()}
    assert corners == {(35, 5), (35, 25), (25, 25), (25, 5)} and annotation["bbox"] == [25, 5, 10, 20]
    assert _box_ap(path, [25, 5, 10, 20], tmp_path / "results.json") == pytest.approx(1.0)


def test_a_cvat_rotated_rectangle_leaving_the_page_is_boxed_on_it(tmp_path: Path) -> None:
    """A rectangle turned 90° near the page's top, whose turned corners lie 5 pixels above it: its box was
    that of the corners, off the page, so that evaluate scored a prediction of the block as it lies on the
    page (box AP 0.8), as segment clips its boxes, below its conversion, which clamps it (1.0)."""
    turned = {"category_id": 1, "bbox": [0, 10, 40, 10], "iscrowd": 0, "attributes": {"rotation": 90}}
    path = _coco_file(tmp_path / "src", [turned])
    assert _converted_annotation(path, tmp_path / "out")["bbox"] == [15, 0, 10, 35]
    assert _box_ap(path, [15, 0, 10, 35], tmp_path / "results.json") == pytest.approx(1.0)


def test_rle_masks_of_another_size_are_a_size_mismatch(tmp_path: Path) -> None:
    """An image entry without width and height (its image file gives them) whose RLE masks are 30 x 20: the
    masks were of another image (or a scaled one) and were laid onto the 60 x 40 page as they are, where
    `evaluate` refuses them; the page is now one error line, and the other images still convert."""
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:10, 5:20] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    write_image(tmp_path / "a.png", 60, 40)
    write_image(tmp_path / "b.png", 30, 20)
    document = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "segmentation": compressed, "iscrowd": 0}
            for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "figure"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path / "annotations.json", "--from", "coco", "--out", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "a.png is 60x40" in line and "30x20" in line
    counts, documents = layout_counts(out)
    assert list(documents) == ["b.png"] and counts == {"figure": 1}


def test_two_categories_of_one_name_are_one_class_with_a_warning(tmp_path: Path) -> None:
    """Categories 1 and 2 both named 'table' (pycocotools keeps them apart by id) were merged into one
    class without a word, by convert-dataset and evaluate alike. They are still one class (classes are
    names, the model's prompts), and each command now says so, naming the file and both ids."""
    document = coco_document()
    document["categories"] = [{"id": 1, "name": "table"}, {"id": 2, "name": "table"}]
    path = coco_source(tmp_path / "src", document) / "annotations.json"
    warning = (
        f"warning: {path}: categories[1].name: category 2 is named 'table', as category 1 is: classes are "
        "names, so both are one class"
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", path, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert warning in result.stderr.splitlines(), result.stderr
    report = json.loads((out / "convert_report.json").read_text())
    assert report["instances"] == {"table": 3}
    assert report["warnings"] == [warning.removeprefix("warning: ")]
    result = run_cli("evaluate", path, "--pred", path)
    assert result.exit_code == 0, result.stderr
    assert warning in result.stderr.splitlines(), result.stderr


def test_two_categories_of_one_name_in_the_predictions_are_one_class_with_a_warning(tmp_path: Path) -> None:
    """A `--pred` coco.json whose categories 1 and 2 are both 'table' was merged without a word, where the
    same categories in the ground truth are warned of; the warning is given once where one file is both."""
    truth = coco_source(tmp_path / "gt") / "annotations.json"
    document = coco_document()
    document["categories"] = [{"id": 1, "name": "table"}, {"id": 2, "name": "table"}]
    (predictions := tmp_path / "pred.json").write_text(json.dumps(document))
    warning = (
        f"warning: {predictions}: categories[1].name: category 2 is named 'table', as category 1 is: classes "
        "are names, so both are one class"
    )
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert warning in result.stderr.splitlines(), result.stderr
    assert json.loads(result.stdout)["per_class"]["table"]["predictions"] == 3
    result = run_cli("evaluate", predictions, "--pred", predictions)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines().count(warning) == 1, result.stderr


def _split_layout(root: Path, json_path: str, folders: dict[str, str]) -> Path:
    """A COCO dataset under `root`: `json_path` naming `000.png`, and a `000.png` of another height in each
    split folder of `folders` (split → folder relative to `root`), 40 + the folder's rank high."""
    for rank, folder in enumerate(folders.values()):
        write_image(root / folder / "000.png", 60, 40 + rank)
    document = {
        "images": [{"id": 1, "file_name": "000.png", "width": 60, "height": 40 + list(folders).index("val")}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "text"}],
    }
    (root / json_path).parent.mkdir(parents=True, exist_ok=True)
    (root / json_path).write_text(json.dumps(document))
    return root / json_path


@pytest.mark.parametrize(
    ("json_path", "folders"),
    [
        ("annotations/instances_val2017.json", {"train": "train2017", "val": "val2017", "test": "test2017"}),
        ("annotations/instances_val2017.json", {"train": "images/train2017", "val": "images/val2017"}),
        ("val.json", {"train": "train", "val": "val"}),  # PubLayNet
    ],
)
@pytest.mark.parametrize("given", ["json", "root"])
def test_the_images_are_those_of_the_split_the_json_names(
    json_path: str, folders: dict[str, str], given: str, tmp_path: Path
) -> None:
    """COCO 2017 keeps `annotations/instances_val2017.json` beside `val2017/`, PubLayNet `val.json` beside
    `val/`; a name recurs in each split's folder. The json given alone found no image (`--images` was asked
    for), the dataset's folder given the name was in several folders: the json's split names the folder."""
    source = _split_layout(tmp_path / "set", json_path, folders)
    out = tmp_path / "out"
    given_path = source if given == "json" else tmp_path / "set"
    result = run_cli("convert-dataset", given_path, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert Image.open(out / "image" / "000.png").size == (60, 40 + list(folders).index("val"))
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {}


def test_a_json_of_an_annotations_folder_given_alone_finds_its_images_by_name_in_its_dataset(
    tmp_path: Path,
) -> None:
    """COCO's test-dev json (`annotations/image_info_test-dev2017.json`) has its images in `test2017/`, a
    folder its name does not name: found by name in the dataset's folder above `annotations/`, as when
    that folder is given, with a note. Where two of the dataset's folders hold the name, none is taken:
    the error names both and `--images`."""
    found = _split_layout(tmp_path / "coco", "annotations/image_info_test-dev2017.json", {"val": "test2017"})
    out = tmp_path / "out"
    result = run_cli("convert-dataset", found, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert Image.open(out / "image" / "000.png").size == (60, 40)
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {
        "image found by its name elsewhere under the source folder": 1
    }
    folders = {"train": "train", "val": "val"}
    ambiguous = _split_layout(tmp_path / "cvat", "annotations/instances_default.json", folders)
    result = run_cli("convert-dataset", ambiguous, "--from", "coco", "--out", tmp_path / "none")
    assert result.exit_code == 1 and not (tmp_path / "none").exists()
    (line,) = result.error_lines()
    assert "2 files of that name" in line and "--images" in line
    assert (
        str(tmp_path / "cvat" / "train" / "000.png") in line
        and str(tmp_path / "cvat" / "val" / "000.png") in line
    )


@pytest.mark.parametrize("prefix", ["/home/bob/set/", "C:\\Users\\bob\\set\\", "file:///home/bob/set/"])
@pytest.mark.parametrize("images", [False, True])
def test_absolute_file_names_of_another_machine_tell_pages_of_one_name_apart_by_their_folders(
    prefix: str, images: bool, tmp_path: Path
) -> None:
    """`/home/bob/set/vol1/0001.png` and `.../vol2/0001.png`, written on another machine, copied here as
    `vol1/` and `vol2/` beside the json (or under `--images`): each is its own volume's page. Taken by
    file name alone, both were '2 files of that name' (with `--images` too)."""
    dataset = tmp_path / "set"
    write_image(dataset / "vol1" / "0001.png", 60, 40)
    write_image(dataset / "vol2" / "0001.png", 60, 41)
    separator = "\\" if "\\" in prefix else "/"
    document = {
        "images": [
            {
                "id": volume,
                "file_name": f"{prefix}vol{volume}{separator}0001.png",
                "width": 60,
                "height": 39 + volume,
            }
            for volume in (1, 2)
        ],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in (1, 2)],
        "categories": [{"id": 1, "name": "text"}],
    }
    source = (tmp_path / "coco.json") if images else (dataset / "coco.json")
    source.write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli(
        "convert-dataset", source, "--from", "coco", "-o", out, *(["--images", dataset] if images else [])
    )
    assert result.exit_code == 0, result.stderr
    sizes = sorted(Image.open(out / "image" / name).size for name in (out / "list.txt").read_text().split())
    assert sizes == [(60, 40), (60, 41)]


def test_label_studio_local_files_are_the_paths_they_name_under_its_document_root(tmp_path: Path) -> None:
    """Label Studio's COCO export names an image of its local storage `/data/local-files/?d=PATH` (or as a
    full URL), PATH under its document root: beside the json there, `scans/vol1/0001.png` and
    `scans/vol2/0001.png` were '2 files of that name', and the URL, whose query was dropped, not found."""
    write_image(tmp_path / "scans" / "vol1" / "0001.png", 60, 40)
    write_image(tmp_path / "scans" / "vol2" / "0001.png", 60, 41)
    names = [
        "/data/local-files/?d=scans/vol1/0001.png",
        "http://localhost:8080/data/local-files/?d=scans%2Fvol2%2F0001.png",
    ]
    document = {
        "images": [
            {"id": i, "file_name": name, "width": 60, "height": 40 + i} for i, name in enumerate(names)
        ],
        "annotations": [{"id": i, "image_id": i, "category_id": 0, "bbox": [1, 1, 5, 5]} for i in (0, 1)],
        "categories": [{"id": 0, "name": "text"}],
    }
    (tmp_path / "result.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path / "result.json", "--from", "coco", "-o", out)
    assert result.exit_code == 0, result.stderr
    sizes = sorted(Image.open(out / "image" / name).size for name in (out / "list.txt").read_text().split())
    assert sizes == [(60, 40), (60, 41)]


@pytest.mark.parametrize("json_path", ["val.json", "annotations/val.json"])
def test_a_file_name_with_its_split_folder_is_found_under_images(json_path: str, tmp_path: Path) -> None:
    """`file_name` `val2017/000.png` relative to an `images/` folder beside the json (or beside its folder),
    `images/train2017/` holding a `000.png` too: that is `images/val2017/000.png`, where the file name alone
    was '2 files of that name'."""
    source = _split_layout(
        tmp_path / "set", json_path, {"train": "images/train2017", "val": "images/val2017"}
    )
    document = json.loads(source.read_text())
    document["images"][0]["file_name"] = "val2017/000.png"
    source.write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert Image.open(out / "image" / "000.png").size == (60, 41)
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {}


@pytest.mark.parametrize(
    ("json_name", "image_folder"),
    [("instances_val2017.json", "val2017"), ("image_info_test-dev2017.json", "test2017")],
)
def test_a_json_given_by_its_name_from_inside_annotations_finds_its_images(
    json_name: str, image_folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cd annotations; docsam convert-dataset instances_val2017.json`: the json's folder is `.`, whose
    `Path.parent` is `.` again, so the folder above `annotations/` was never looked in (nor searched): every
    image was 'not found', where `annotations/instances_val2017.json` given from above found them."""
    source = _split_layout(tmp_path / "coco", f"annotations/{json_name}", {"val": image_folder})
    monkeypatch.chdir(source.parent)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", json_name, "--from", "coco", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert (out / "image" / "000.png").read_bytes() == (
        tmp_path / "coco" / image_folder / "000.png"
    ).read_bytes()
