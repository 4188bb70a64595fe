"""convert-dataset from Pascal VOC, YOLO, LabelMe and the ICDAR 2013 table competition format."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import (
    coco_source,
    dark_box,
    layout_counts,
    minimal_pdf,
    run_cli,
    write_image,
    write_rotated_jpeg,
)

from docsam_cli.inputs.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    load_frame,
    max_image_pixels,
    set_max_image_pixels,
)


def _only_annotations(out: Path) -> dict[str, list[dict]]:
    """Class name → annotations over all per-image jsons of a split folder."""
    found: dict[str, list[dict]] = {}
    for path in sorted((out / "coco").glob("*.json")):
        document = json.loads(path.read_text())
        names = {category["id"]: category["name"] for category in document["categories"]}
        for annotation in document["annotations"]:
            found.setdefault(names[annotation["category_id"]], []).append(annotation)
    return found


def test_voc_boxes_are_one_based_and_difficult_is_crowd(tmp_path: Path) -> None:
    root = tmp_path / "VOC"
    write_image(root / "JPEGImages" / "p1.jpg", 100, 80)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "p1.xml").write_text(
        "<annotation><filename>p1.jpg</filename><size><width>100</width><height>80</height></size>"
        "<object><name>table</name><difficult>0</difficult>"
        "<bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>stamp</name><difficult>1</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>"
        "</annotation>"
    )
    out = tmp_path / "out"
    assert run_cli("convert-dataset", root, "--from", "voc", "--out", out).exit_code == 0
    found = _only_annotations(out)
    assert found["table"][0]["bbox"] == [10, 20, 40, 40] and found["table"][0]["iscrowd"] == 0
    assert found["stamp"][0]["bbox"] == [0, 0, 99, 79] and found["stamp"][0]["iscrowd"] == 1  # clamped to W-1


@pytest.mark.parametrize("width", ["inf", "1e999", "nan", "wide"])
def test_a_voc_size_that_is_no_pixel_count_is_taken_from_the_image(tmp_path: Path, width: str) -> None:
    """A `<width>` of `inf` or `1e999` (a hand-edited file, one made to break readers) ended convert-dataset
    as an internal error, 'a bug' with exit 3 ('OverflowError: cannot convert float infinity to integer');
    it is left to the image, as a `nan` or a word there is."""
    root = tmp_path / "VOC"
    write_image(root / "p1.jpg", 100, 80)
    (root / "p1.xml").write_text(
        f"<annotation><filename>p1.jpg</filename><size><width>{width}</width><height>80</height></size>"
        "<object><name>table</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax>"
        "</bndbox></object></annotation>"
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "voc", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert _only_annotations(out)["table"][0]["bbox"] == [10, 20, 40, 40]


def test_yolo_boxes_polygons_negatives_and_class_list(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    write_image(root / "images" / "train" / "a.png", 200, 100)
    write_image(root / "images" / "train" / "empty.png", 200, 100)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n7 0.5 0.5 0.1 0.1\n"
    )
    (root / "data.yaml").write_text("path: .\nnames:\n  0: table\n  1: figure\n")
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "yolo", "--out", out)
    assert result.exit_code == 0, result.stderr
    found = _only_annotations(out)
    assert found["table"][0]["bbox"] == [80, 30, 40, 40]
    assert found["figure"][0]["segmentation"] == [[20, 10, 60, 10, 60, 50, 20, 50]]
    assert sorted((out / "list.txt").read_text().split()) == ["a.png", "empty.png"]  # negatives kept
    report = json.loads((out / "convert_report.json").read_text())
    assert report["dropped"] == {"class index not in the class list": 1} and report["empty_images"] == 1
    (root / "data.yaml").unlink()
    missing = run_cli("convert-dataset", root, "--from", "yolo", "--out", tmp_path / "none")
    failed = missing.error_lines()
    assert missing.exit_code == 1 and len(failed) == 2 and all("no class list" in line for line in failed)
    assert "no image read" in missing.stderr and not (tmp_path / "none").exists()


def test_a_yolo_class_list_naming_a_class_twice_is_one_class_with_a_warning(tmp_path: Path) -> None:
    """A class list naming `table` twice merged its two ids into one class without a word; as two COCO
    categories of one name, they are one class (classes are names), with one warning naming the file and
    both ids, however many pages use the list."""
    root = tmp_path / "yolo"
    (root / "labels").mkdir(parents=True)
    for page in ("a", "b"):
        write_image(root / "images" / f"{page}.png", 200, 100)
        (root / "labels" / f"{page}.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n")
    (classes := tmp_path / "classes.txt").write_text("table\ntable\nfigure\n")
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "yolo", "--classes", classes, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert {name: len(found) for name, found in _only_annotations(out).items()} == {"table": 4}
    warning = f"{classes}: class 1 is named 'table', as class 0 is: classes are names, so both are one class"
    assert [line for line in result.stderr.splitlines() if "named" in line] == [f"warning: {warning}"]
    assert json.loads((out / "convert_report.json").read_text())["warnings"] == [warning]


def test_a_blank_line_in_a_yolo_class_list_keeps_the_ids_of_the_classes_after_it(tmp_path: Path) -> None:
    """YOLO numbers a class list's lines, blank ones too (darknet reads obj.names line by line), and a
    data.yaml's `names` entries, empty or null ones too. A blank line was skipped, shifting every class
    after it: label 2 (`figure`) became class 1's and label 1 was read as `figure`. Now a blank line (an empty
    or null entry) is a class without a name: the ids after it are kept, its labels are dropped and counted,
    and one warning names the file and the id. Blank lines at the end of the file are no classes."""
    root = tmp_path / "yolo"
    (root / "labels").mkdir(parents=True)
    write_image(root / "images" / "a.png", 200, 100)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n2 0.8 0.2 0.1 0.1\n")
    warning = "class 1 has no name (a blank line or entry): its labels are dropped, and the classes after it"
    warning += " keep their ids, as in YOLO"
    for name, text in (
        ("classes.txt", "table\n\nfigure\n\n\n"),
        ("data.yaml", "names: [table, null, figure]"),
    ):
        (classes := tmp_path / name).write_text(text)
        out = tmp_path / f"out-{name}"
        result = run_cli("convert-dataset", root, "--from", "yolo", "--classes", classes, "--out", out)
        assert result.exit_code == 0, result.stderr
        found = _only_annotations(out)
        assert {name: len(found) for name, found in found.items()} == {"table": 1, "figure": 1}
        assert found["figure"][0]["bbox"] == [150, 15, 20, 10]
        assert [line for line in result.stderr.splitlines() if "no name" in line] == [
            f"warning: {classes}: {warning}"
        ]
        report = json.loads((out / "convert_report.json").read_text())
        assert report["dropped"] == {"class without a name in the class list": 1}


def test_a_yolo_class_list_nested_too_deeply_is_one_error(tmp_path: Path) -> None:
    """A data.yaml nested deeper than Python's YAML reader goes ended convert-dataset as 'error: internal
    error: RecursionError: maximum recursion depth exceeded while calling a Python object' (exit 3); it is
    one error per page naming the file, as a data.yaml that is not YAML is."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "a.png", 200, 100)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (root / "data.yaml").write_text("names: " + "[" * 100_000 + "]" * 100_000)
    result = run_cli("convert-dataset", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert "data.yaml: cannot read the class list: nested too deeply" in line


def test_yolo_files_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    """A class list and labels saved as 'UTF-8 with BOM' (Windows editors) read as without it."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "a.png", 200, 100)
    (root / "labels").mkdir()
    rows = "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.5\n"
    (root / "labels" / "a.txt").write_text(rows, encoding="utf-8-sig")
    (root / "classes.txt").write_text("table\nfigure\n", encoding="utf-8-sig")
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "yolo", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert {name: len(found) for name, found in _only_annotations(out).items()} == {"table": 1, "figure": 1}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_yolo_files_saved_in_utf16_with_its_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    """A class list typed in PowerShell 5 (`"table", "Überschrift" > classes.txt` writes UTF-16 with its
    mark) was refused: 'cannot read the class list: 'utf-8' codec can't decode byte 0xff in position 0'."""
    root = tmp_path / "yolo"
    write_image(root / "images" / "a.png", 200, 100)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_bytes("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.5\n".encode(encoding))
    (root / "classes.txt").write_bytes("table\r\nÜberschrift\r\n".encode(encoding))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "yolo", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert {name: len(found) for name, found in _only_annotations(out).items()} == {
        "table": 1,
        "Überschrift": 1,
    }


def test_labelme_shapes_groups_and_embedded_image(tmp_path: Path) -> None:
    root = tmp_path / "labelme"
    image = write_image(tmp_path / "elsewhere" / "scan.png", 120, 90)
    shapes = [
        {"label": "figure", "points": [[10, 10], [40, 30]], "shape_type": "rectangle"},
        {"label": "figure", "points": [[60, 10], [70, 10], [70, 20]], "shape_type": "polygon", "group_id": 1},
        {"label": "figure", "points": [[80, 10], [90, 10], [90, 20]], "shape_type": "polygon", "group_id": 1},
        {"label": "stamp", "points": [[60, 60], [70, 60]], "shape_type": "circle"},
        {"label": "rule", "points": [[0, 80], [100, 80]], "shape_type": "line"},
    ]
    document = {
        "shapes": shapes,
        "imagePath": "..\\missing\\scan.png",  # Windows path to an image that is not there
        "imageData": base64.b64encode(image.read_bytes()).decode(),
        "imageHeight": 90,
        "imageWidth": 120,
    }
    root.mkdir()
    (root / "scan.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "labelme", "--out", out)
    assert result.exit_code == 0, result.stderr
    found = _only_annotations(out)
    assert sorted(len(a["segmentation"]) for a in found["figure"]) == [1, 2]  # the group is one instance
    assert found["figure"][0]["bbox"] == [10, 10, 30, 20]
    (stamp,) = found["stamp"]
    assert abs(stamp["area"] - np.pi * 100) < 2 and stamp["bbox"] == [50, 50, 20, 20]
    assert (out / "image" / "scan.png").read_bytes() == image.read_bytes()
    report = json.loads((out / "convert_report.json").read_text())
    assert report["dropped"] == {"'line' shape is not an area": 1}


def test_icdar2013_pdf_points_map_onto_the_rendered_page(tmp_path: Path) -> None:
    """A table drawn in the PDF must lie exactly under its converted box: MediaBox offset, /Rotate and
    CropBox (the page as viewers and `segment` show it: the MediaBox was rendered, so segment's pages of the
    same PDF had another size and were stretched onto these in evaluate)."""
    source = tmp_path / "icdar"
    source.mkdir()
    rect = (60, 100, 100, 50)  # x, y, w, h in PDF user space (origin bottom left)
    cells = [(60, 100, 110, 150), (110, 100, 160, 150)]
    crops = {"cropped": (40, 80, 210, 200)}
    for name, rotate in (("upright", 0), ("turned", 90), ("cropped", 0)):
        (source / f"{name}.pdf").write_bytes(minimal_pdf((10, 20, 310, 420), rotate, rect, crops.get(name)))
        (source / f"{name}-reg.xml").write_text(
            f'<?xml version="1.0"?><document filename="{name}.pdf"><table id="1"><region id="1" page="1">'
            '<bounding-box x1="60" y1="100" x2="160" y2="150"/></region></table></document>'
        )
        cell_xml = "".join(
            f'<cell id="{i}" start-col="{i}" start-row="0">'
            f'<bounding-box x1="{a}" y1="{b}" x2="{c}" y2="{d}"/><content>x</content></cell>'
            for i, (a, b, c, d) in enumerate(cells)
        )
        (source / f"{name}-str.xml").write_text(
            f'<document filename="{name}.pdf"><table id="1"><region id="1" page="1">{cell_xml}</region>'
            "</table></document>"
        )
    out = tmp_path / "out"
    result = run_cli(
        "convert-dataset",
        source,
        "--from",
        "icdar2013",
        "--out",
        out,
        "--dpi",
        "144",
        "--level",
        "regions,cells",
    )
    assert result.exit_code == 0, result.stderr
    assert layout_counts(out)[0] == Counter({"table": 3, "table cell": 6})
    for name, size in (("upright", (600, 800)), ("turned", (800, 600)), ("cropped", (340, 240))):
        document = json.loads((out / "coco" / f"{name}_p0001.json").read_text())
        image = document["images"][0]
        assert (image["width"], image["height"]) == size
        names = {category["id"]: category["name"] for category in document["categories"]}
        (table,) = [a for a in document["annotations"] if names[a["category_id"]] == "table"]
        x, y, w, h = table["bbox"]
        x0, y0, x1, y1 = dark_box(out / "image" / f"{name}_p0001.png")
        assert (
            abs(x - x0) <= 1
            and abs(y - y0) <= 1
            and abs(x + w - (x1 + 1)) <= 1
            and abs(y + h - (y1 + 1)) <= 1
        )
        cells_found = [a for a in document["annotations"] if names[a["category_id"]] == "table cell"]
        assert sum(a["area"] for a in cells_found) == table["area"]


def test_icdar2013_pages_over_the_pixel_limit_can_be_let_through_as_the_error_says(tmp_path: Path) -> None:
    """A PDF page over the pixel limit at --dpi is refused with "raise the limit with --max-image-pixels":
    convert-dataset had no such option, so the advice ended in a usage error and the page could not be
    converted at all."""
    source = tmp_path / "icdar"
    source.mkdir()
    # 300 x 400 pt: 120,000 pixels at 72 dpi
    (source / "map.pdf").write_bytes(minimal_pdf((0, 0, 300, 400), 0, (60, 100, 100, 50)))
    (source / "map-reg.xml").write_text(
        '<document filename="map.pdf"><table id="1"><region id="1" page="1">'
        '<bounding-box x1="60" y1="100" x2="160" y2="150"/></region></table></document>'
    )
    saved = max_image_pixels()
    try:
        arguments = ("convert-dataset", source, "--from", "icdar2013", "--dpi", "72")
        refused = run_cli(*arguments, "--out", tmp_path / "refused", "--max-image-pixels", "100000")
        assert refused.exit_code == 1
        (line,) = refused.error_lines()
        assert (
            "map.pdf (page 1): 300x400 = 120000 pixels exceeds the decompression-bomb limit of 100000 "
            in line
        )
        assert "--max-image-pixels" in line
        result = run_cli(*arguments, "--out", tmp_path / "out", "--max-image-pixels", "0")
        assert result.exit_code == 0, result.stderr
        assert layout_counts(tmp_path / "out")[0] == Counter({"table": 1})
        assert run_cli(*arguments, "--out", tmp_path / "default").exit_code == 0
        assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS  # a run without the option: the default
    finally:
        set_max_image_pixels(saved)


def test_images_over_the_pixel_limit_are_refused_saying_how_to_let_them_through(tmp_path: Path) -> None:
    """An image over the pixel limit was refused in Pillow's words ("image too large (Image size (2400
    pixels) exceeds limit of 2000 pixels, could be decompression bomb DOS attack.)"), naming no way
    through, while --help gave convert-dataset's --max-image-pixels to PDF pages alone: the refusal now
    reads as segment's and training's, naming the option, which lets the image through."""
    source = coco_source(tmp_path / "coco")
    saved = max_image_pixels()
    try:
        arguments = ("convert-dataset", source / "annotations.json", "--from", "coco")
        refused = run_cli(*arguments, "--out", tmp_path / "refused", "--max-image-pixels", "2000")
        assert refused.exit_code == 1
        lines = refused.error_lines()
        assert len(lines) == 2, lines
        for line, name in zip(lines, ("a.png", "b.png"), strict=True):
            assert line == (
                f"error: {source / name}: 2400 pixels exceeds the decompression-bomb limit of 2000 pixels "
                "(raise the limit with --max-image-pixels if the file is trusted)"
            )
        result = run_cli(*arguments, "--out", tmp_path / "out", "--max-image-pixels", "2400")
        assert result.exit_code == 0, result.stderr
    finally:
        set_max_image_pixels(saved)


def test_an_image_one_pixel_over_an_odd_pixel_limit_is_refused(tmp_path: Path) -> None:
    """Reading an image for its size left the limit to Pillow, which checks twice its own limit, half of
    ours rounded up: under an odd --max-image-pixels (2399) an image one pixel over it (60x40 = 2400) was
    converted, then refused by training and segment under that same limit. It is refused here too."""
    source = coco_source(tmp_path / "coco")
    saved = max_image_pixels()
    try:
        arguments = ("convert-dataset", source / "annotations.json", "--from", "coco", "--out")
        refused = run_cli(*arguments, tmp_path / "refused", "--max-image-pixels", "2399")
        assert refused.exit_code == 1, refused.stderr
        assert [line.split(": ", 2)[2] for line in refused.error_lines()] == [
            "60x40 = 2400 pixels exceeds the decompression-bomb limit of 2399 pixels (raise the limit with "
            "--max-image-pixels if the file is trusted)"
        ] * 2
    finally:
        set_max_image_pixels(saved)


def test_text_detection_labels_of_three_datasets(tmp_path: Path) -> None:
    root = tmp_path / "text"
    for name in ("img_1.jpg", "img2.jpg", "0003.jpg"):
        write_image(root / "images" / name, 300, 200)
    labels = root / "labels"
    labels.mkdir()
    (labels / "gt_img_1.txt").write_text(
        "\ufeff10,10,60,10,60,30,10,30,Hello, world\n70,10,90,10,90,30,70,30,###\n", encoding="utf-8"
    )
    (labels / "poly_gt_img2.txt").write_text(
        "x: [[115 203 194 115]], y: [[22 46 126 104]], ornt: [u'm'], transcriptions: [u'nauGHTY']\n"
    )
    curve = ",".join(f"{20 + 10 * i},{50 + (i % 2)}" for i in range(7))
    back = ",".join(f"{80 - 10 * i},{90}" for i in range(7))
    (labels / "0003.txt").write_text(f"{curve},{back},####curved text\n")
    (root / "README.txt").write_text("Labels for the test set.\n")  # not a label file: skipped
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "textdet", "--out", out)
    assert result.exit_code == 0, result.stderr
    found = _only_annotations(out)["text"]
    assert len(found) == 4 and sorted(a["iscrowd"] for a in found) == [0, 0, 0, 1]
    points = sorted(len(a["segmentation"][0]) // 2 for a in found)
    assert points == [4, 4, 4, 14]
    assert sorted((out / "list.txt").read_text().split()) == ["0003.jpg", "img2.jpg", "img_1.jpg"]


def _upright_dark_box(image: Path) -> tuple[int, int, int, int]:
    """Inclusive box of the dark pixels as docsam's loader (training, segment) decodes the image."""
    gray = load_frame(image).min(axis=2)
    ys, xs = np.nonzero(gray < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_exif_rotated_photo_is_converted_upright(tmp_path: Path) -> None:
    """A 300x200 JPEG tagged "rotate 90°" is the 200x300 page annotation tools and the loader show: LabelMe
    states that size, YOLO's fractions scale onto it, and the copied image is read upright, under its box."""
    # Raw box x 20..80, y 30..70 of the 300x200 grid: upright x 130..170, y 20..80 of 200x300.
    labelme, yolo = tmp_path / "labelme", tmp_path / "yolo"
    write_rotated_jpeg(labelme / "phone.jpg", 300, 200, (20, 30, 80, 70))
    shape = {"label": "table", "points": [[130, 20], [170, 80]], "shape_type": "rectangle"}
    document = {"shapes": [shape], "imagePath": "phone.jpg", "imageWidth": 200, "imageHeight": 300}
    (labelme / "phone.json").write_text(json.dumps(document))
    write_rotated_jpeg(yolo / "phone.jpg", 300, 200, (20, 30, 80, 70))
    (yolo / "classes.txt").write_text("table\n")
    (yolo / "phone.txt").write_text(f"0 0.75 {50 / 300} 0.2 0.2\n")
    for source, fmt in ((labelme, "labelme"), (yolo, "yolo")):
        out = tmp_path / f"out-{fmt}"
        result = run_cli("convert-dataset", source, "--from", fmt, "--out", out)
        assert result.exit_code == 0, result.stderr
        document = json.loads((out / "coco" / "phone.json").read_text())
        assert (document["images"][0]["width"], document["images"][0]["height"]) == (200, 300)
        (table,) = _only_annotations(out)["table"]
        assert table["bbox"] == [130, 20, 40, 60]
        x0, y0, x1, y1 = _upright_dark_box(out / "image" / "phone.jpg")
        assert max(abs(x0 - 130), abs(y0 - 20), abs(x1 - 169), abs(y1 - 79)) <= 2, (x0, y0, x1, y1)


def test_labelme_four_point_rectangles_and_rotations_are_polygons(tmp_path: Path) -> None:
    """X-AnyLabeling writes a rectangle's four corners, and a rotated box as a `rotation` shape."""
    root = tmp_path / "xany"
    write_image(root / "scan.png", 120, 90)
    diamond = [[60, 10], [80, 30], [60, 50], [40, 30]]
    shapes = [
        {"label": "table", "points": [[10, 10], [40, 10], [40, 30], [10, 30]], "shape_type": "rectangle"},
        {"label": "stamp", "points": diamond, "shape_type": "rotation", "direction": 0.785},
    ]
    (root / "scan.json").write_text(json.dumps({"shapes": shapes, "imagePath": "scan.png"}))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "labelme", "--out", out)
    assert result.exit_code == 0, result.stderr
    found = _only_annotations(out)
    assert found["table"][0]["bbox"] == [10, 10, 30, 20] and found["table"][0]["area"] == 600
    (stamp,) = found["stamp"]
    assert stamp["segmentation"] == [[60, 10, 80, 30, 60, 50, 40, 30]] and stamp["area"] == 800
    shapes[0]["points"] = shapes[0]["points"][:3]
    (root / "scan.json").write_text(json.dumps({"shapes": shapes, "imagePath": "scan.png"}))
    result = run_cli("convert-dataset", root, "--from", "labelme", "--out", tmp_path / "three")
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "shapes[0].points" in line and "2 or 4 points for a rectangle" in line


def test_text_detection_numeric_transcription_with_commas(tmp_path: Path) -> None:
    """ICDAR 2015 `...,374,170,1,000`: the transcription "1,000" is not two more coordinates."""
    root = tmp_path / "icdar"
    write_image(root / "images" / "img_1.jpg", 600, 400)
    (root / "gt").mkdir()
    (root / "gt" / "gt_img_1.txt").write_text(
        "377,117,463,117,465,130,378,130,Genaxis Theatre\n"
        "493,115,519,115,519,131,493,131,###\n"
        "374,155,409,155,409,170,374,170,1,000\n"
        "100,300,200,300,200,340,100,340,2015\n"
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "textdet", "--out", out)
    assert result.exit_code == 0, result.stderr
    polygons = sorted(a["segmentation"][0] for a in _only_annotations(out)["text"])
    assert [374, 155, 409, 155, 409, 170, 374, 170] in polygons
    assert all(len(polygon) == 8 for polygon in polygons)
