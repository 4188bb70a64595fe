"""`docsam evaluate` reads ground truth the way conversion does: ignore regions (VOC `difficult`, text
detection's `###`) stay ignore regions, and a COCO image without `width` and `height` takes its file's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from convert_helpers import assert_one_page_refused, coco_document, page_xml, run_cli, write_image
from PIL import Image, ImageFile

from docsam_cli.datasets.ground_truth import load_ground_truth

_SCORES = ("images", "mask", "box", "mAF", "mIoU", "per_class")


def _report(*args: object) -> dict:
    result = run_cli("evaluate", *args, "--json", "-")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _converted(tmp_path: Path, source: Path, fmt: str) -> Path:
    out = tmp_path / f"{fmt}-unified"
    result = run_cli("convert-dataset", source, "--from", fmt, "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


def _voc_table_and_difficult_table(tmp_path: Path) -> Path:
    """A VOC set of one page: a table at (11, 11)-(60, 50) and a `difficult` one at (101, 11)-(150, 50)."""
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "p1.jpg", 200, 100)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "p1.xml").write_text(
        "<annotation><filename>p1.jpg</filename><size><width>200</width><height>100</height></size>"
        "<object><name>table</name><difficult>0</difficult>"
        "<bndbox><xmin>11</xmin><ymin>11</ymin><xmax>60</xmax><ymax>50</ymax></bndbox></object>"
        "<object><name>table</name><difficult>1</difficult>"
        "<bndbox><xmin>101</xmin><ymin>11</ymin><xmax>150</xmax><ymax>50</ymax></bndbox></object>"
        "</annotation>"
    )
    return root


def test_voc_difficult_objects_are_ignore_regions(tmp_path: Path) -> None:
    """A prediction of the one real table scores 1; missing the difficult one costs nothing, as after
    conversion (where it is `iscrowd`)."""
    root = _voc_table_and_difficult_table(tmp_path)
    (predictions := tmp_path / "pred.json").write_text(
        json.dumps(
            [{"file_name": "p1.jpg", "category_id": "table", "bbox": [10, 10, 50, 40], "score": 0.9,
              "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]}]
        )
    )  # fmt: skip
    direct = _report(root / "Annotations", "--gt-format", "voc", "--pred", predictions)
    assert direct["mask"] == direct["box"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    assert direct["mAF"] == 1.0
    unified = _report(_converted(tmp_path, root, "voc"), "--pred", predictions)
    assert {key: direct[key] for key in _SCORES} == {key: unified[key] for key in _SCORES}


def test_predictions_of_ignore_regions_are_not_false_positives(tmp_path: Path) -> None:
    """COCO ignores a detection that falls on a crowd region, and so does mAF: predicting both the real
    table and the difficult one (the ground truth against itself) scores 1, not an F1 of 2/3."""
    root = _voc_table_and_difficult_table(tmp_path)
    results = [
        {"file_name": "p1.jpg", "category_id": "table", "score": 0.9, "segmentation": [polygon]}
        for polygon in ([10, 10, 60, 10, 60, 50, 10, 50], [100, 10, 150, 10, 150, 50, 100, 50])
    ]
    (predictions := tmp_path / "pred.json").write_text(json.dumps(results))
    report = _report(root / "Annotations", "--gt-format", "voc", "--pred", predictions)
    assert report["mask"]["AP"] == pytest.approx(1.0)
    assert report["mAF"] == 1.0


def test_text_detection_dont_care_text_is_an_ignore_region(tmp_path: Path) -> None:
    root = tmp_path / "text"
    write_image(root / "images" / "img_1.jpg", 300, 200)
    (root / "labels").mkdir()
    (root / "labels" / "gt_img_1.txt").write_text(
        "10,10,150,10,150,90,10,90,Hello\n160,10,290,10,290,90,160,90,###\n10,100,290,100,290,190,10,190,world\n"
    )
    results = [  # large enough for mask IoU >= 0.95 whatever the rasterisation
        {"file_name": "img_1.jpg", "category_id": "text", "score": 0.9, "segmentation": [polygon]}
        for polygon in ([10, 10, 150, 10, 150, 90, 10, 90], [10, 100, 290, 100, 290, 190, 10, 190])
    ]
    (predictions := tmp_path / "pred.json").write_text(json.dumps(results))
    direct = _report(root / "labels", "--gt-format", "textdet", "--pred", predictions)
    assert direct["mask"]["AP"] == pytest.approx(1.0) and direct["mAF"] == 1.0
    unified = _report(_converted(tmp_path, root, "textdet"), "--pred", predictions)
    assert {key: direct[key] for key in _SCORES} == {key: unified[key] for key in _SCORES}


def _unsized(document: dict) -> dict:
    """`document` with no `width` and `height` in its images."""
    images = [{key: value for key, value in image.items() if key not in ("width", "height")}
              for image in document["images"]]  # fmt: skip
    return {**document, "images": images}


def test_coco_ground_truth_without_sizes_takes_them_from_the_images(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, 60, 40)
    (sized := tmp_path / "sized.json").write_text(json.dumps(coco_document()))
    (unsized := tmp_path / "unsized.json").write_text(json.dumps(_unsized(coco_document())))
    images = load_ground_truth(unsized, "coco", frozenset()).images
    assert [(image.name, image.height, image.width) for image in images] == [("a", 40, 60), ("b", 40, 60)]
    expected = _report(sized, "--pred", sized)
    assert _report(unsized, "--pred", sized) == expected
    assert expected["images"] == 2 and expected["mask"]["AP"] == pytest.approx(1.0)


def test_ground_truth_without_sizes_reads_only_its_images_headers(tmp_path: Path, monkeypatch) -> None:
    """Each image of a COCO file without sizes, or of YOLO's fractions, was decoded whole to learn its
    size: minutes for 10,000 scans of 300 dpi (`evaluate` of 200 copies of a 3508x4961 JPEG took 24-64 s,
    2 s from the headers), where the pixels are not scored; the sizes are the same."""
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, 60, 40)
    (unsized := tmp_path / "unsized.json").write_text(json.dumps(_unsized(coco_document())))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "labels" / "classes.txt").write_text("table\n")

    def decode(image: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{image.filename} decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    images = load_ground_truth(unsized, "coco", frozenset()).images
    assert [(image.name, image.height, image.width) for image in images] == [("a", 40, 60), ("b", 40, 60)]
    yolo = load_ground_truth(tmp_path / "labels", "yolo", frozenset(), images=tmp_path).images
    assert [(image.name, image.height, image.width) for image in yolo] == [("a", 40, 60), ("b", 40, 60)]


def test_coco_2017_ground_truth_takes_its_sizes_from_its_split_folder(tmp_path: Path) -> None:
    """`annotations/instances_val2017.json` without sizes, its images in `val2017/` beside `annotations/`
    (`train2017/` holding other images of the same names): the sizes are those of `val2017/`'s images."""
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "val2017" / name, 60, 40)
        write_image(tmp_path / "train2017" / name, 61, 40)
    (tmp_path / "annotations").mkdir()
    (unsized := tmp_path / "annotations" / "instances_val2017.json").write_text(
        json.dumps(_unsized(coco_document()))
    )
    images = load_ground_truth(unsized, "coco", frozenset()).images
    assert [(image.name, image.height, image.width) for image in images] == [("a", 40, 60), ("b", 40, 60)]
    (sized := tmp_path / "sized.json").write_text(json.dumps(coco_document()))
    assert _report(unsized, "--pred", sized)["mask"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("size_of_a", "line"),
    [
        ((60, 40), "images[1].width: missing, and file_name 'b.png' not found (looked in "),
        ((61, 40), "annotations[1].segmentation.size: [40, 60] is not the image's [height, width] [40, 61]"),
    ],
)
def test_coco_ground_truth_without_a_size_and_without_a_usable_image(
    tmp_path: Path, size_of_a: tuple[int, int], line: str
) -> None:
    """No image to take the size from (b.png is missing), or one of another size than the image's RLE
    mask (a.png): an error of that image only, the other is scored."""
    write_image(tmp_path / "a.png", *size_of_a)
    if size_of_a != (60, 40):
        write_image(tmp_path / "b.png", 60, 40)
    (truth := tmp_path / "truth.json").write_text(json.dumps(_unsized(coco_document())))
    (predictions := tmp_path / "pred.json").write_text(json.dumps(coco_document()))
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert result.exit_code == 1 and len(result.error_lines()) == 1
    assert result.error_lines()[0].startswith(f"error: {truth}: {line}")
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["mask"]["AP"] == pytest.approx(1.0)


def test_coco_predictions_without_a_size_whose_rle_is_of_another_size(tmp_path: Path) -> None:
    """Predictions stating no page size (a COCO dataset whose images lack width and height) are made at the
    ground truth's: an RLE mask of another size (predicted on a resized copy of the page) is an error naming
    the annotation and its size, and its page is left out of the scores, not scored as all missed."""
    document = coco_document()
    truth_document = {
        **document,
        "images": [{**document["images"][0], "height": 50}, document["images"][1]],
        "annotations": [a for a in document["annotations"] if "counts" not in str(a)],
    }
    (truth := tmp_path / "truth.json").write_text(json.dumps(truth_document))
    (predictions := tmp_path / "pred.json").write_text(json.dumps(_unsized(document)))
    result = run_cli("evaluate", truth, "--pred", predictions, "--json", "-")
    assert_one_page_refused(
        result,
        f"error: {predictions}: annotations[1].segmentation.size: [40, 60] is not the page's [height, width] "
        "[50, 60]",
        "mask",
    )


def test_ground_truth_regions_left_out_are_warned_of_by_file(tmp_path: Path) -> None:
    """A PAGE ground-truth region without usable Coords (or wholly off the page) cannot be scored: each one
    is a warning naming the file and the region, as conversion reports it, not a silent gain in the scores."""
    write_image(tmp_path / "gt" / "p1.png", 200, 100)
    regions = [
        ("TableRegion", None, "10,10 60,10 60,50 10,50"),
        ("TextRegion", "paragraph", "10,a 60,10 60,50"),
        ("TextRegion", "heading", "300,300 400,300 400,400 300,400"),
    ]
    (tmp_path / "gt" / "p1.xml").write_text(page_xml("p1.png", 200, 100, regions))
    (tmp_path / "gt" / "p1.xml").write_text(
        (tmp_path / "gt" / "p1.xml").read_text().replace("</Page>", '<TextRegion id="bare"/></Page>')
    )
    (predictions := tmp_path / "pred.json").write_text(
        json.dumps(
            [{"file_name": "p1.png", "category_id": "table", "bbox": [10, 10, 50, 40], "score": 0.9,
              "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]}]
        )
    )  # fmt: skip
    result = run_cli("evaluate", tmp_path / "gt", "--pred", predictions)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, result.stderr
    assert all("p1.xml" in line for line in warnings)
    for region, reason in (
        ("r1", "invalid Coords points"),
        ("r2", "outside the page"),
        ("bare", "no Coords"),
    ):
        assert any(f"TextRegion {region}" in line and reason in line for line in warnings), result.stderr


def test_xml_files_with_an_upper_case_suffix_are_told_apart_as_conversion_reads_them(tmp_path: Path) -> None:
    """Exports named `P1.XML` (older Windows tools) are PAGE to the format detection of the ground truth
    and of `--pred`, as they are to `convert-dataset`'s walk."""
    write_image(tmp_path / "gt" / "p1.png", 200, 100)
    document = page_xml("p1.png", 200, 100, [("TableRegion", None, "10,10 60,10 60,50 10,50")])
    (tmp_path / "gt" / "P1.XML").write_text(document)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "P1.XML").write_text(document)
    report = _report(tmp_path / "gt", "--pred", tmp_path / "pred")
    assert report["images"] == 1 and report["mAF"] == 1.0


def test_a_table_scores_alike_from_page_and_from_abbyys_alto(tmp_path: Path) -> None:
    """One table of two cells, as PAGE writes it (a TableRegion around TextRegion cells) and as ABBYY
    FineReader's ALTO does (a `ComposedBlock TYPE="table"` around one TextBlock per cell, in mm10): the
    ALTO cells were scored as two text regions the table prediction missed; both now score the table
    alone, and the cells with `--level cells`."""
    cells = ("10,10 35,10 35,50 10,50", "35,10 60,10 60,50 35,50")
    write_image(tmp_path / "page" / "p1.png", 200, 100)
    document = page_xml("p1.png", 200, 100, [("TableRegion", None, "10,10 60,10 60,50 10,50")])
    body = "".join(
        f'<TextRegion id="c{i}"><Coords points="{points}"/></TextRegion>' for i, points in enumerate(cells)
    )
    (tmp_path / "page" / "p1.xml").write_text(document.replace("</TableRegion>", body + "</TableRegion>"))
    write_image(tmp_path / "alto" / "p1.png", 200, 100)
    (tmp_path / "alto" / "p1.xml").write_text(  # 1 px = 10 mm10: the page is 2000 x 1000
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v2#"><Description>'
        "<MeasurementUnit>mm10</MeasurementUnit><sourceImageInformation><fileName>p1.png</fileName>"
        '</sourceImageInformation><OCRProcessing ID="o1"><ocrProcessingStep><processingSoftware>'
        "<softwareCreator>ABBYY</softwareCreator><softwareName>ABBYY FineReader Engine</softwareName>"
        "</processingSoftware></ocrProcessingStep></OCRProcessing></Description>"
        '<Layout><Page ID="P1" WIDTH="2000" HEIGHT="1000" PHYSICAL_IMG_NR="1">'
        '<PrintSpace HPOS="0" VPOS="0" WIDTH="2000" HEIGHT="1000">'
        '<ComposedBlock ID="t1" TYPE="table" HPOS="100" VPOS="100" WIDTH="500" HEIGHT="400">'
        '<TextBlock ID="c0" HPOS="100" VPOS="100" WIDTH="250" HEIGHT="400"/>'
        '<TextBlock ID="c1" HPOS="350" VPOS="100" WIDTH="250" HEIGHT="400"/>'
        "</ComposedBlock></PrintSpace></Page></Layout></alto>"
    )
    (predictions := tmp_path / "pred.json").write_text(
        json.dumps(
            [{"file_name": "p1.png", "category_id": "table", "bbox": [10, 10, 50, 40], "score": 0.9,
              "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]}]
        )
    )  # fmt: skip
    page = _report(tmp_path / "page", "--pred", predictions)
    alto = _report(tmp_path / "alto", "--pred", predictions)
    assert {key: page[key] for key in _SCORES} == {key: alto[key] for key in _SCORES}
    assert list(alto["per_class"]) == ["table"] and alto["mask"]["AP"] == pytest.approx(1.0)
    page = _report(tmp_path / "page", "--pred", predictions, "--level", "cells")
    alto = _report(tmp_path / "alto", "--pred", predictions, "--level", "cells")
    assert {key: page[key] for key in _SCORES} == {key: alto[key] for key in _SCORES}
    assert alto["per_class"]["table cell"]["gt"] == 2


def test_yolo_ground_truth_scores_as_its_conversion_does(tmp_path: Path) -> None:
    """YOLO's 6-decimal fractions put box edges a hair short of whole pixels (y = 49.99992); conversion
    writes them rounded (50), while evaluate filled them unrounded, truncating a row further, so the same
    boxes scored lower straight from their labels (mask AP 0.864) than from their conversion (0.890)."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "p1.png", 640, 480)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("table\n")
    boxes = [(10 + 37 * i, 10 + 29 * i, 11 + 7 * i, 5 + 13 * i) for i in range(12)]  # x, y, w, h in pixels
    (root / "labels" / "p1.txt").write_text(
        "".join(
            f"0 {(x + w / 2) / 640:.6f} {(y + h / 2) / 480:.6f} {w / 640:.6f} {h / 480:.6f}\n"
            for x, y, w, h in boxes
        )
    )
    results = [
        {"file_name": "p1.png", "category_id": "table", "score": 0.9, "bbox": [x, y, w, h],
         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
        for x, y, w, h in boxes
    ]  # fmt: skip
    (predictions := tmp_path / "pred.json").write_text(json.dumps(results))
    images = ("--images", root / "images")
    direct = _report(root / "labels", "--gt-format", "yolo", *images, "--pred", predictions)
    result = run_cli("convert-dataset", root / "labels", "--from", "yolo", *images, "--out", tmp_path / "u")
    assert result.exit_code == 0, result.stderr
    unified = _report(tmp_path / "u", "--pred", predictions)
    assert {key: direct[key] for key in _SCORES} == {key: unified[key] for key in _SCORES}


def test_yolo_split_of_an_export_with_its_class_list_above(tmp_path: Path) -> None:
    """Roboflow's, CVAT's and Label Studio's YOLO exports keep `data.yaml` (`obj.names`, `classes.txt`)
    in the export's folder, above its split folders (`valid/images`, `valid/labels`): one split, given
    alone, reads its classes from there, for conversion and for evaluate (which has no --classes)."""
    export = tmp_path / "export"
    write_image(export / "valid" / "images" / "p1.png", 200, 100)
    (export / "valid" / "labels").mkdir(parents=True)
    (export / "valid" / "labels" / "p1.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    data = "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['figure', 'table']\n"
    (export / "data.yaml").write_text(data)
    result = run_cli("convert-dataset", export / "valid", "--from", "yolo", "--out", tmp_path / "u")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "u" / "dataset.json").read_text())["class_names"] == ["table"]
    results = [{"file_name": "p1.png", "category_id": "table", "score": 0.9, "bbox": [80, 30, 40, 40]}]
    (predictions := tmp_path / "pred.json").write_text(json.dumps(results))
    report = _report(export / "valid", "--gt-format", "yolo", "--pred", predictions)
    assert report["classes"] == ["table"] and report["box"]["AP"] == pytest.approx(1.0)


def test_yolo_ground_truth_with_its_class_list_elsewhere(tmp_path: Path) -> None:
    """An Ultralytics dataset's `data.yaml` lies where its user keeps it, not beside the images: evaluate
    takes it as conversion does, with --classes (which the 'no class list' error names), for YOLO ground
    truth only."""
    root = tmp_path / "coco8"
    write_image(root / "images" / "val" / "p1.png", 200, 100)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "p1.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (classes := tmp_path / "cfg" / "coco8.yaml").parent.mkdir()
    classes.write_text("path: ../coco8\nval: images/val\nnames:\n  0: figure\n  1: table\n")
    results = [{"file_name": "p1.png", "category_id": "table", "score": 0.9, "bbox": [80, 30, 40, 40]}]
    (predictions := tmp_path / "pred.json").write_text(json.dumps(results))
    missing = run_cli("evaluate", root, "--gt-format", "yolo", "--pred", predictions)
    assert missing.exit_code == 1 and "no class list: pass --classes FILE" in missing.stderr
    report = _report(root, "--gt-format", "yolo", "--classes", classes, "--pred", predictions)
    assert report["classes"] == ["table"] and report["box"]["AP"] == pytest.approx(1.0)
    other = run_cli(
        "evaluate", root / "labels", "--gt-format", "page", "--classes", classes, "--pred", predictions
    )
    assert other.exit_code == 2 and "--classes" in other.stderr


def test_yolo_ground_truth_naming_a_class_twice_warns_as_its_conversion_does(tmp_path: Path) -> None:
    """A class list naming `table` twice: its two ids are one class, as in conversion, and evaluate says
    so with conversion's warning (it said nothing)."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "p1.png", 200, 100)
    (root / "labels").mkdir()
    (root / "labels" / "p1.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n")
    (classes := tmp_path / "classes.txt").write_text("table\ntable\n")
    truth = load_ground_truth(root, "yolo", frozenset(), classes=classes)
    warning = f"{classes}: class 1 is named 'table', as class 0 is: classes are names, so both are one class"
    assert truth.warnings == [warning]


def test_yolo_ground_truth_with_a_blank_line_in_its_class_list_keeps_the_ids_after_it(tmp_path: Path) -> None:
    """A blank line in classes.txt shifted every class after it, so that evaluate scored label 2 as class 1's
    name; as in conversion (and YOLO), the ids are the lines', the blank line's labels are left out, with
    conversion's warning."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "p1.png", 200, 100)
    (root / "labels").mkdir()
    (root / "labels" / "p1.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n2 0.8 0.2 0.1 0.1\n")
    (classes := tmp_path / "classes.txt").write_text("table\n\nfigure\n")
    truth = load_ground_truth(root, "yolo", frozenset(), classes=classes)
    (image,) = truth.images
    assert [(a.category, a.bbox) for a in image.annotations] == [
        ("table", (80.0, 30.0, 40.0, 40.0)),
        ("figure", (150.0, 15.0, 20.0, 10.0)),
    ]
    assert [warning for warning in truth.warnings if "no name" in warning] == [
        f"{classes}: class 1 has no name (a blank line or entry): its labels are dropped, and the classes"
        " after it keep their ids, as in YOLO"
    ]


def test_page_ground_truth_of_size_0_whose_image_is_missing_is_an_error_of_that_page(tmp_path: Path) -> None:
    """A PAGE file stating imageWidth/imageHeight 0 takes its size from its image: where that image is not
    there, the page cannot be scored, and it is an error naming the PAGE file and saying why (`page size
    unknown: ...`); the other pages are read."""
    regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
    write_image(tmp_path / "p1.png", 60, 40)
    (tmp_path / "p1.xml").write_text(page_xml("p1.png", 60, 40, regions))
    (tmp_path / "p2.xml").write_text(page_xml("p2.png", 0, 0, regions))
    truth = load_ground_truth(tmp_path, "page", frozenset({"regions"}))
    assert [image.name for image in truth.images] == ["p1"] and truth.unreadable == {"p2"}
    (error,) = truth.errors
    assert error.path == tmp_path / "p2.xml" and error.reason.startswith("page size unknown: "), error


# vol1/0001 and vol2/0001 (archives number pages per volume): another height and table in each volume
_VOLUMES = (("vol1", 60, (10, 10, 50, 40)), ("vol2", 61, (30, 20, 70, 50)))


def _two_volumes(root: Path) -> Path:
    """`_VOLUMES`' pages, PAGE ground truth beside each image."""
    for volume, height, (x0, y0, x1, y1) in _VOLUMES:
        write_image(root / volume / "0001.png", 80, height, ((x0, y0, x1, y1),))
        points = f"{x0},{y0} {x1 - 1},{y0} {x1 - 1},{y1 - 1} {x0},{y1 - 1}"
        (root / volume / "0001.xml").write_text(
            page_xml("0001.png", 80, height, [("TableRegion", None, points)])
        )
    return root


def test_pages_of_one_name_at_different_depths_are_each_named_by_their_shortest_distinct_end(
    tmp_path: Path,
) -> None:
    """Three pages named 0001 at different depths (x/DEEP/v, y/DEEP/v and v, DEEP being 12 folders): each is
    named by the shortest end of its path that no other page's path ends with (v/0001 is an end of the other
    two as well, so the third is named with its folder's parent). Ends are looked for up to the longest
    path's length: a search stopping at the shortest one's would leave the two deeper pages, told apart
    only 15 parts from the end, without a name (a KeyError)."""
    regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
    deep = "/".join("abcdefghijkl")
    for folder in (f"x/{deep}/v", f"y/{deep}/v", "v"):
        write_image(tmp_path / folder / "0001.png", 60, 40)
        (tmp_path / folder / "0001.xml").write_text(page_xml("0001.png", 60, 40, regions))
    truth = load_ground_truth(tmp_path, "page", frozenset({"regions"}))
    names = sorted(image.name for image in truth.images)
    assert names == sorted([f"{tmp_path.name}/v/0001", f"x/{deep}/v/0001", f"y/{deep}/v/0001"])
    assert not truth.errors


def _segment(tiny_weights: Path, run: Path, *inputs: str | Path) -> None:
    """segment `inputs` (paths, and options such as -r) into `run` with the tiny model: PAGE and COCO."""
    segmented = run_cli(
        "segment", *inputs, "--weights", tiny_weights, "--out", run, "--format", "page,coco",
        "--classes", "table", "--short-side", "192", "--window", "224,192", "--device", "cpu",
    )  # fmt: skip
    assert segmented.exit_code == 0, segmented.stderr


def test_pages_of_one_name_in_two_volumes_are_each_scored_against_their_own_ground_truth(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """Ground truth of vol1/0001.xml and vol2/0001.xml: the second was an error ("image '0001' already has
    ground truth"), and segment's predictions of both (page/vol1__0001.xml, vol2__0001.xml; coco.json's two
    `0001.png` told apart by their `path`) were left out as two of one page, so nothing was scored. Pages
    sharing a name are now matched by their path, each against its own ground truth."""
    truth = _two_volumes(tmp_path / "gt")
    run = tmp_path / "run"
    _segment(tiny_weights, run, "-r", truth)
    for pred in (run / "page", run / "coco.json", run / "coco_results.json"):
        report = _report(truth, "--pred", pred)
        assert report["images"] == 2, pred
        assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
        assert report["rescaled_predictions"] == 0, pred  # each volume's page at its own size
    itself = _report(truth, "--pred", truth)  # each page against its own regions, not the other volume's
    assert itself["images"] == 2 and itself["mask"]["AP"] == pytest.approx(1.0)
    results = [
        {"file_name": f"{volume}/0001.png", "category_id": "table", "bbox": box, "score": 0.9}
        for volume, box in (("vol1", [10, 10, 40, 30]), ("vol2", [30, 20, 40, 30]))
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert _report(truth, "--pred", tmp_path / "results.json")["box"]["AP50"] == pytest.approx(1.0)
    bare = [{"file_name": "0001.png", "category_id": "table", "bbox": [10, 10, 40, 30], "score": 0.9}]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    result = run_cli("evaluate", truth, "--pred", tmp_path / "bare.json")  # vol1's or vol2's? Not scored
    assert result.exit_code == 1 and result.error_lines()[0] == (
        f"error: {tmp_path / 'bare.json'}: [0].file_name: '0001.png': '0001' is the name of 2 pages of the "
        "ground truth (vol1/0001, vol2/0001), and which one is meant cannot be told from the image's path: "
        "they are left out"
    )


def test_a_prediction_naming_its_image_by_another_path_to_the_same_file_is_scored_against_its_page(
    tmp_path: Path,
) -> None:
    """Pages of one name in two volumes (vol1/0001, vol2/0001), predictions naming their images through
    links (`links/a/0001.png` is vol1's file): the path's end tells no page, the file does, and each
    prediction is scored against its own page."""
    truth = _two_volumes(tmp_path / "gt")
    (tmp_path / "links").mkdir()
    for link, volume in (("a", "vol1"), ("b", "vol2")):
        (tmp_path / "links" / link).symlink_to(truth / volume, target_is_directory=True)
    results = [
        {"file_name": f"links/{link}/0001.png", "category_id": "table", "bbox": box, "score": 0.9}
        for link, box in (("a", [10, 10, 40, 30]), ("b", [30, 20, 40, 30]))
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = _report(truth, "--pred", tmp_path / "results.json")
    assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
    assert report["box"]["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize("pred_kind", ["page", "coco dataset", "results list"])
def test_a_prediction_named_as_two_ground_truth_pages_leaves_both_out_in_any_format(
    tmp_path: Path, pred_kind: str
) -> None:
    """Ground truth of vol1/0001.png and vol2/0001.png: a prediction of '0001.png' alone (a PAGE file, a
    COCO dataset's image, a results entry) may be of either, so it is an error naming both, and both pages
    are left out of the scores rather than scored as all missed; the other page is scored."""
    images = [("vol1/0001.png", 1), ("vol2/0001.png", 2), ("c.png", 3)]
    truth_document = {
        "images": [{"id": i, "file_name": name, "width": 60, "height": 40} for name, i in images],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0}
                        for _, i in images],
        "categories": [{"id": 1, "name": "table"}],
    }  # fmt: skip
    (truth := tmp_path / "truth.json").write_text(json.dumps(truth_document))
    if pred_kind == "page":
        (pred := tmp_path / "pred").mkdir()
        box = [("TableRegion", None, "5,5 24,5 24,14 5,14")]  # the truth's box, boundary included
        for name in ("0001", "c"):
            (pred / f"{name}.xml").write_text(page_xml(f"{name}.png", 60, 40, box))
        where = pred / "0001.xml"
    elif pred_kind == "coco dataset":
        named = [{"id": 1, "file_name": "0001.png", "width": 60, "height": 40}, truth_document["images"][2]]
        annotations = [{**a, "score": 0.9} for a in truth_document["annotations"] if a["image_id"] != 2]
        (pred := tmp_path / "pred.json").write_text(
            json.dumps({**truth_document, "images": named, "annotations": annotations})
        )
        where = f"{pred}: images[0].file_name '0001.png'"
    else:
        results = [{"file_name": name, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9}
                   for name in ("0001.png", "c.png")]  # fmt: skip
        (pred := tmp_path / "results.json").write_text(json.dumps(results))
        where = f"{pred}: [0].file_name: '0001.png'"
    result = run_cli("evaluate", truth, "--pred", pred, "--json", "-")
    assert_one_page_refused(
        result,
        f"error: {where}: '0001' is the name of 2 pages of the ground truth (vol1/0001, vol2/0001), and "
        "which one is meant cannot be told from the image's path: they are left out",
        "mask",
    )


def _camera_volumes_run(tmp_path: Path, tiny_weights: Path) -> tuple[Path, Path]:
    """vol1/0001.jpg and vol2/0001.jpg stored turned, with EXIF orientation 6 (as cameras write them), with
    PAGE ground truth beside each, and segment's run of them (`page,coco`): (ground truth, run)."""
    truth = tmp_path / "gt"
    orientation = Image.Exif()
    orientation[0x0112] = 6  # the stored pixels turned a quarter to the left: upright 80 wide, 60 high
    for volume, _, (x0, y0, x1, y1) in _VOLUMES:
        upright = Image.open(write_image(tmp_path / f"{volume}.png", 80, 60, ((x0, y0, x1, y1),)))
        (truth / volume).mkdir(parents=True)
        upright.transpose(Image.Transpose.ROTATE_90).save(truth / volume / "0001.jpg", exif=orientation)
        points = f"{x0},{y0} {x1 - 1},{y0} {x1 - 1},{y1 - 1} {x0},{y1 - 1}"
        (truth / volume / "0001.xml").write_text(
            page_xml("0001.jpg", 80, 60, [("TableRegion", None, points)])
        )
    run = tmp_path / "run"
    _segment(tiny_weights, run, "-r", truth)
    assert sorted(path.name for path in (run / "image").iterdir()) == ["vol1__0001.png", "vol2__0001.png"]
    return truth, run


def test_camera_pages_of_one_name_in_two_volumes_are_each_scored_against_their_own_ground_truth(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """segment names the upright copies of `_camera_volumes_run`'s pages image/vol1__0001.png and
    image/vol2__0001.png in every file, so `evaluate GT --pred run/page` (or `run/coco.json`) found no image
    of the ground truth among the predictions ("none of its 2 predicted pages is an image of the ground
    truth", exit 1). A copy is now taken for its input, named by the page's record or by `coco.json`'s
    `source`."""
    truth, run = _camera_volumes_run(tmp_path, tiny_weights)
    for pred in (run / "page", run / "coco.json", run / "coco_results.json"):
        report = _report(truth, "--pred", pred)
        assert report["images"] == 2, pred
        assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == [], pred


def test_an_upright_copy_of_one_volume_segmented_alone_is_scored_against_its_own_ground_truth(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """`segment GT/vol1` alone names its upright copy image/0001.png, the name of two pages of the
    ground truth (vol1/0001, vol2/0001): its PAGE file (and, before, its coco.json entry) was read by that
    name, which cannot tell them apart ("they are left out", exit 1). The input it was made from does."""
    truth, _ = _camera_volumes_run(tmp_path, tiny_weights)
    run = tmp_path / "vol1-run"
    _segment(tiny_weights, run, truth / "vol1")
    assert [path.name for path in (run / "image").iterdir()] == ["0001.png"]
    for pred in (run / "page", run / "coco.json", run / "coco_results.json"):
        report = _report(truth, "--pred", pred)
        assert report["images_without_predictions"] == ["vol2/0001"], pred


def test_upright_copies_are_scored_against_a_ground_truth_that_names_them(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """A ground truth made from segment's own PAGE files (corrected by hand) names the upright copies,
    pages vol1__0001 and vol2__0001: another run's coco.json was matched to them by its `source`, the turned
    input, so that both were left out ("another image has the name '0001' too"). They are its pages."""
    _, run = _camera_volumes_run(tmp_path, tiny_weights)
    for pred in (run / "page", run / "coco.json", run / "coco_results.json"):
        report = _report(run / "page", "--pred", pred)
        assert report["images"] == 2, pred
        assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == [], pred


def write_volumes_json(path: Path, volumes: list[str]) -> None:
    """A COCO ground truth at `path` of one page per volume, each `<volume>/0001.png`, without instances."""
    document = {
        "images": [
            {"id": index, "file_name": f"{volume}/0001.png", "width": 20, "height": 10}
            for index, volume in enumerate(volumes, start=1)
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "table"}],
    }
    path.write_text(json.dumps(document))


def test_a_coco_file_of_pages_of_one_name_in_two_volumes_scores_each_against_its_own_ground_truth(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """A COCO file of vol1/0001.png and vol2/0001.png (file names with folders, as CVAT and Label Studio
    export them): the second was an error ("another image is also named '0001'"), so segment's predictions
    of vol2's page were scored against vol1's ground truth, or not at all. Its pages are now keyed by their
    path, as the pages of PAGE ground truth are, each scored against its own."""
    annotations = []
    for index, (volume, height, (x0, y0, x1, y1)) in enumerate(_VOLUMES, start=1):
        write_image(tmp_path / "images" / volume / "0001.png", 80, height, ((x0, y0, x1, y1),))
        annotations.append(
            {"id": index, "image_id": index, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
        )  # fmt: skip
    document = {
        "images": [
            {"id": index, "file_name": f"{volume}/0001.png", "width": 80, "height": height}
            for index, (volume, height, _) in enumerate(_VOLUMES, start=1)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "table"}],
    }
    (truth := tmp_path / "annotations" / "instances_default.json").parent.mkdir()
    truth.write_text(json.dumps(document))
    run = tmp_path / "run"
    _segment(tiny_weights, run, "-r", tmp_path / "images")
    for pred in (run / "page", run / "coco.json", run / "coco_results.json"):
        for images in ((), ("--images", tmp_path / "images")):
            report = _report(truth, "--pred", pred, *images)
            assert report["images"] == 2, (pred, images)
            assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
            assert report["rescaled_predictions"] == 0, (pred, images)  # each page at its own size
    itself = _report(truth, "--pred", truth)  # each page against its own table, not the other volume's
    assert itself["images"] == 2 and itself["mask"]["AP"] == pytest.approx(1.0)


def test_a_prediction_of_a_page_whose_name_many_volumes_share_is_keyed_without_a_look_at_each_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive's ground truth numbers its pages per volume (vol000/0001.png ... vol029/0001.png): every
    prediction of such a page compared its image with each volume's on disk, two `stat` calls per volume,
    so scoring took time in volumes x predictions (2,000 pages of 1,000 volumes: 125 s against 33 s for
    the same pages in 10). Each volume's image is now looked at once, and each prediction's once."""
    volumes = [f"vol{index:03d}" for index in range(30)]
    for volume in volumes:
        write_image(tmp_path / volume / "0001.png", 20, 10)
    write_volumes_json(tmp_path / "gt.json", volumes)
    truth = load_ground_truth(tmp_path / "gt.json", "coco", frozenset({"regions"}))
    stats = 0
    stat = os.stat

    def counting_stat(*args, **kwargs):
        nonlocal stats
        stats += 1
        return stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    for volume in volumes:
        image = tmp_path / volume / "0001.png"
        assert truth.page_key("0001", image, f"{volume}/0001.png") == f"{volume}/0001"
        assert truth.page_key("0001", None, f"../{volume}/0001.png") == f"{volume}/0001"
    monkeypatch.undo()
    assert stats <= 2 * len(volumes), stats


class _CountedPart(str):
    """A path part that counts its comparisons with other parts."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedPart.compared += 1
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__


def test_pages_of_a_name_that_many_volumes_share_are_keyed_in_time_linear_in_the_volumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keying the pages of one name (vol000/0001 ... vol059/0001) compared each page's path with every
    other's, in time growing with the square of the volumes (3,000 volumes of 10 pages: 14 s before a
    single page was scored); the ends of the paths are now counted once per length."""
    from docsam_cli.datasets import ground_truth

    volumes = [f"vol{index:03d}" for index in range(60)]
    write_volumes_json(tmp_path / "gt.json", volumes)
    key_parts = ground_truth._key_parts
    _CountedPart.compared = 0
    monkeypatch.setattr(
        ground_truth, "_key_parts", lambda path: tuple(_CountedPart(part) for part in key_parts(path))
    )
    truth = load_ground_truth(tmp_path / "gt.json", "coco", frozenset({"regions"}))
    assert [image.name for image in truth.images] == [f"{volume}/0001" for volume in volumes]
    assert _CountedPart.compared <= 10 * len(volumes), _CountedPart.compared


def test_predictions_of_pages_named_in_another_unicode_normalization_are_scored(tmp_path: Path) -> None:
    """Ground truth naming `été.png` in NFC (as Linux tools and most exports write it) and predictions
    of the images copied through macOS, whose names came back decomposed (NFD), as segment names them: the
    same name, yet every page was 'without predictions' and every prediction 'not an image of the ground
    truth'. A prediction now goes to the page whose name differs from its own only in normalization."""
    import unicodedata

    document = coco_document()
    for image, name in zip(document["images"], ("\u00e9t\u00e9.png", "M\u00fcller.png"), strict=True):
        image["file_name"] = name
    (truth := tmp_path / "truth.json").write_text(json.dumps(document))
    for image in document["images"]:
        image["file_name"] = unicodedata.normalize("NFD", image["file_name"])
    (predicted := tmp_path / "predicted.json").write_text(json.dumps(document))
    report = _report(truth, "--pred", predicted)
    assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
    assert report["mask"]["AP"] == pytest.approx(_report(truth, "--pred", truth)["mask"]["AP"])


def test_predictions_of_a_page_whose_name_is_not_utf8_are_scored(tmp_path: Path) -> None:
    """An image named in Latin-1 (`Stra\\xdfe.png`, from an old Windows share), its PAGE ground truth naming
    it percent-encoded (`Stra%DFe.png`, which conversion finds): segment's outputs name it percent-encoded
    too, as every UTF-8 output must, and the page was 'without predictions' and its prediction 'not an image
    of the ground truth'. A prediction now goes to the page whose name it writes so."""
    document = coco_document()
    truth = tmp_path / "truth"
    truth.mkdir()
    latin = os.fsdecode(b"Stra\xdfe.png")
    for image, name in zip(document["images"], ("Stra%DFe.png", "b.png"), strict=True):
        write_image(truth / (latin if name.startswith("Stra") else name), 60, 40)
        regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
        (truth / f"{Path(name).stem}.xml").write_text(page_xml(name, 60, 40, regions))
        image["file_name"] = name  # as segment's coco.json writes it
    (predicted := tmp_path / "predicted.json").write_text(json.dumps(document))
    report = _report(truth, "--gt-format", "page", "--pred", predicted)
    assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []


def test_the_report_names_a_page_whose_name_is_not_utf8_percent_encoded(tmp_path: Path) -> None:
    """The JSON report listed a Latin-1 page without predictions as Python's lone surrogate escape
    (`"Stra\\udcdfe"`), which JSON readers (jq, browsers) turn into U+FFFD, losing the name. It is now
    written percent-encoded (`Stra%DFe`), as segment's outputs write such names."""
    truth = tmp_path / "truth"
    truth.mkdir()
    write_image(truth / os.fsdecode(b"Stra\xdfe.png"), 60, 40)
    regions = [("TableRegion", None, "10,10 40,10 40,30 10,30")]
    (truth / "a.xml").write_text(page_xml("Stra%DFe.png", 60, 40, regions))
    write_image(truth / "b.png", 60, 40)
    (truth / "b.xml").write_text(page_xml("b.png", 60, 40, regions))
    predicted = tmp_path / "predicted.json"  # of b.png alone
    image = {"id": 1, "file_name": "b.png", "width": 60, "height": 40}
    predicted.write_text(json.dumps({"images": [image], "annotations": [], "categories": []}))
    result = run_cli("evaluate", truth, "--gt-format", "page", "--pred", predicted, "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert '"Stra%DFe"' in result.stdout, result.stdout


LABEL_STUDIO_NAMES = (
    "/data/local-files/?d=scans/Seite%201.png",
    "http://localhost:8080/data/local-files/?d=scans%2Fp2.png",
)


def _label_studio_export(path: Path) -> Path:
    """A COCO file as Label Studio exports its local storage: one table on each of `LABEL_STUDIO_NAMES`."""
    document = {
        "images": [
            {"id": i, "file_name": name, "width": 60, "height": 40}
            for i, name in enumerate(LABEL_STUDIO_NAMES)
        ],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 0, "bbox": [10, 10, 20, 20], "iscrowd": 0} for i in (0, 1)
        ],
        "categories": [{"id": 0, "name": "table"}],
    }
    path.write_text(json.dumps(document))
    return path


def test_a_label_studio_export_of_its_local_storage_is_keyed_by_the_paths_it_names(tmp_path: Path) -> None:
    """Label Studio names its local storage's images `/data/local-files/?d=PATH`, PATH percent-encoded, or
    that as a full URL: the pages were keyed by what follows the last slash ('Seite%201',
    '?d=scans%2Fp2'), so that predictions of 'Seite 1.png' and 'p2.png' were of no page of the ground truth
    and its pages all missed. They are now keyed by the paths they name, as conversion finds them."""
    truth = _label_studio_export(tmp_path / "result.json")
    results = [
        {"file_name": name, "category_id": "table", "bbox": [10, 10, 20, 20], "score": 0.9}
        for name in ("Seite 1.png", "scans/p2.png")
    ]
    (predictions := tmp_path / "results.json").write_text(json.dumps(results))
    report = _report(truth, "--pred", predictions)
    assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
    assert report["box"]["AP"] == pytest.approx(1.0)


def test_predictions_naming_pages_by_the_ground_truths_urls_are_of_its_pages(tmp_path: Path) -> None:
    """Predictions that name their pages as a Label Studio export does (`/data/local-files/?d=PATH`, a
    URL), the export itself or a results list copying its `file_name`s, were keyed by what follows the
    last slash ('Seite%201', '?d=scans%2Fp2') while the ground truth's pages are keyed by the paths named:
    'none of its 2 predicted pages is an image of the ground truth', even for the export against itself."""
    truth = _label_studio_export(tmp_path / "result.json")
    box = [10, 10, 20, 20]
    results = [
        {"file_name": name, "category_id": 0, "bbox": box, "score": 0.9} for name in LABEL_STUDIO_NAMES
    ]
    (listed := tmp_path / "results.json").write_text(json.dumps(results))
    for predictions in (truth, listed):
        report = _report(truth, "--pred", predictions)
        assert report["images_without_predictions"] == report["predictions_without_ground_truth"] == []
        assert report["box"]["AP"] == pytest.approx(1.0)


def test_a_predicted_image_of_no_stated_size_that_is_no_ground_truth_page_is_passed_over(
    tmp_path: Path,
) -> None:
    """A COCO dataset of predictions with an extra image that states no size and is no page of the ground
    truth: nothing to make its masks at, nothing to score it against; the pages of the ground truth score as
    they are, and no error is said."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    document = coco_document()
    document["images"].append({"id": 3, "file_name": "z.png"})
    document["annotations"].append({"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]})
    (predictions := tmp_path / "pred.json").write_text(json.dumps(document))
    report = _report(truth, "--pred", predictions)
    assert report["images"] == 2 and report["predictions_without_ground_truth"] == []
    assert report["mask"]["AP"] == pytest.approx(1.0)
