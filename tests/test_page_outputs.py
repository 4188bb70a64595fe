"""Everything one page writes (`PageWriter`): each mask decoded once for all formats, every requested file,
file names that are not UTF-8, and the run-level files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from instances_factory import make_instances, rect_mask
from lxml import etree
from pycocotools import mask as mask_utils

import docsam_cli.writers.page_outputs as page_outputs
import model.instances
from docsam_cli.writers.formats import FORMATS
from docsam_cli.writers.jsonl import dumps_record
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter

CLASSES = ("paragraph", "table", "figure", "text line")


def crowded_page(count: int = 40, height: int = 400, width: int = 300):
    """`count` instances on a grid: text regions with a line each, tables and figures."""
    masks, labels = [], []
    for index in range(count // 2):
        x, y = 5 + (index % 5) * 58, 5 + (index // 5) * 78
        masks.append(rect_mask(height, width, x, y, x + 50, y + 70))
        labels.append(index % 3)
        masks.append(rect_mask(height, width, x + 3, y + 5, x + 45, y + 12))
        labels.append(3)
    return make_instances(masks, labels, CLASSES, scores=np.linspace(0.99, 0.5, count))


def settings(out: Path, formats=FORMATS, **options) -> OutputSettings:
    return OutputSettings(out_dir=out, formats=frozenset(formats), class_names=CLASSES, **options)


def test_all_formats_decode_each_mask_once_and_only_its_window(tmp_path, monkeypatch):
    instances = crowded_page()
    whole: list[bytes] = []
    windows: list[bytes] = []
    decode, decode_window = mask_utils.decode, model.instances.decode_rle_window

    def counting_decode(rle):
        whole.append(rle["counts"])
        return decode(rle)

    def counting_window(rle, *box):
        windows.append(rle["counts"])
        return decode_window(rle, *box)

    monkeypatch.setattr(mask_utils, "decode", counting_decode)
    monkeypatch.setattr(model.instances, "decode_rle_window", counting_window)
    writer = PageWriter(settings(tmp_path, mask_format="polygon"))
    source = PageSource(tmp_path / "p.png", None, "p", np.full((400, 300, 3), 255, np.uint8))
    writer.write(source, instances, {})
    assert sorted(windows) == sorted(rle["counts"] for rle in instances.masks)  # one each, for every format
    assert len(instances) == 40
    assert len(whole) == len(CLASSES)  # the whole page only for the semantic map, one per class


class _Killed(BaseException):
    """The run dies where it is (SIGKILL, the out-of-memory killer): nothing handles it."""


def sizes_named(files) -> dict[str, tuple[int, int]]:
    """The (width, height) each of the page's files that is there gives its image: PAGE, ALTO, label map."""
    sizes = {}
    if files.page_xml.exists():
        page = etree.parse(str(files.page_xml)).getroot().find("{*}Page")
        sizes["page"] = (int(page.get("imageWidth")), int(page.get("imageHeight")))
    if files.alto.exists():
        page = etree.parse(str(files.alto)).getroot().find("{*}Layout/{*}Page")
        sizes["alto"] = (int(page.get("WIDTH")), int(page.get("HEIGHT")))
    if files.semantic.exists():
        height, width = cv2.imread(str(files.semantic), cv2.IMREAD_UNCHANGED).shape
        sizes["semantic"] = (width, height)
    return sizes


def test_a_page_killed_once_its_image_is_replaced_leaves_no_file_of_the_old_image(tmp_path, monkeypatch):
    """A PDF page redone from a changed image (another --dpi with --overwrite, a re-exported PDF) replaced
    `image/<id>.png` first and its PAGE, ALTO and label map after it: killed in between (SIGKILL, the
    out-of-memory killer), it left those of the 300x400 image naming, or lying over, the new 600x800 one
    until a rerun redid the page. They are now removed before the image is replaced."""
    writer = PageWriter(settings(tmp_path))
    source = PageSource(tmp_path / "doc.pdf", 1, "doc_p0001", np.full((400, 300, 3), 255, np.uint8))
    writer.write(source, crowded_page(6), {})
    files = writer.files("doc_p0001")
    assert set(sizes_named(files).values()) == {(300, 400)}
    write_png = page_outputs._write_png

    def killed_once_written(path, image, dpi=None):
        write_png(path, image, dpi)
        raise _Killed

    monkeypatch.setattr(page_outputs, "_write_png", killed_once_written)
    larger = PageSource(tmp_path / "doc.pdf", 1, "doc_p0001", np.full((800, 600, 3), 255, np.uint8))
    with pytest.raises(_Killed):
        writer.write(larger, crowded_page(6, 800, 600), {})

    assert cv2.imread(str(files.image)).shape[:2] == (800, 600)
    assert sizes_named(files) == {}


def test_every_format_is_written_and_the_semantic_classes_are_cocos(tmp_path):
    instances = crowded_page(10)
    writer = PageWriter(settings(tmp_path))
    writer.start()
    image = np.full((400, 300, 3), 255, np.uint8)
    record = writer.write(
        PageSource(tmp_path / "doc.pdf", 2, "doc_p0002", image), instances, {"model_s": 1.0}
    )
    writer.finish(["doc_p0002"])
    files = writer.files("doc_p0002")
    assert files.image in files.required(in_document=True)
    assert all(path.is_file() for path in files.required(in_document=True)[1:])  # the record: batch's
    assert set(record["outputs"]) == {"image", "coco", "page", "alto", "overlay", "semantic"}
    page_image = etree.parse(str(files.page_xml)).getroot().find("{*}Page").get("imageFilename")
    alto_image = (
        etree.parse(str(files.alto))
        .getroot()
        .findtext("{*}Description/{*}sourceImageInformation/{*}fileName")
    )
    assert page_image == alto_image == "../image/doc_p0002.png"  # the rendered PDF page
    alto_page = etree.parse(str(files.alto)).getroot().find("{*}Layout/{*}Page")
    assert alto_page.get("PHYSICAL_IMG_NR") == "2"

    coco = json.loads((tmp_path / "coco.json").read_text())
    table = json.loads((tmp_path / "semantic" / "classes.json").read_text())
    assert table["categories"] == [{"id": c["id"], "name": c["name"]} for c in coco["categories"]]
    labels = cv2.imread(str(files.semantic), cv2.IMREAD_UNCHANGED)
    claimed = np.zeros(labels.shape, bool)
    for category in coco["categories"]:  # in id order: where maps overlap, the first class has the pixel
        in_map = mask_utils.decode(instances.semantic_masks[category["id"] - 1]).astype(bool)
        assert in_map.any() and (labels[in_map & ~claimed] == category["id"]).all()
        claimed |= in_map
    assert (labels[~claimed] == 0).all()


def test_only_the_requested_files_are_needed(tmp_path):
    writer = PageWriter(settings(tmp_path, formats=("alto", "jsonl")))
    files = writer.files("a")
    assert files.required() == [files.record, files.alto]
    assert files.required(in_document=True) == [files.record, files.alto, files.image]
    record = writer.write(
        PageSource(tmp_path / "a.png", None, "a", np.zeros((400, 300, 3), np.uint8)), crowded_page(4), {}
    )
    assert set(record["outputs"]) == {"alto"} and not (tmp_path / "image").exists()
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == ["a.xml"]


def test_file_names_that_are_not_utf8_are_percent_encoded_inside_outputs(tmp_path):
    name = os.fsdecode(b"scan\xff")  # what Python makes of the byte 0xFF in a file name
    path = tmp_path / f"{name}.png"
    path.write_bytes(
        cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    )  # (cv2.imwrite crashes)
    writer = PageWriter(settings(tmp_path / "out", formats=("coco", "page", "alto", "jsonl")))
    record = writer.write(
        PageSource(path, None, name, np.zeros((400, 300, 3), np.uint8)), crowded_page(4), {}
    )
    writer.finish([name])
    line = dumps_record(record)
    assert "scan%FF" in line and "\udcff" not in line
    line.encode("utf-8")  # a valid UTF-8 line: no lone surrogate left
    files = writer.files(name)
    for xml in (files.page_xml, files.alto):
        text = xml.read_bytes().decode("utf-8")  # the file exists under its byte name, and is UTF-8
        assert "scan%FF.png" in text and "\udcff" not in text
    coco = json.loads((tmp_path / "out" / "coco.json").read_bytes().decode("utf-8"))
    assert coco["images"][0]["file_name"] == "scan%FF.png"


def test_an_image_the_outputs_cannot_name_is_saved_and_named_by_every_format(tmp_path):
    """A Latin-1 file name from an old archive (`M\xfcller.png`) is written percent-encoded, `M%FCller.png`:
    PAGE, ALTO and COCO named a file that does not exist, so OCR-D and Kraken found no image. The page is
    now saved as `image/<id>.png`, as a PDF page is, and every format names that."""
    name = os.fsdecode(b"M\xfcller")
    path = tmp_path / "scans" / f"{name}.png"
    path.parent.mkdir()
    page = np.full((400, 300, 3), 200, np.uint8)
    path.write_bytes(cv2.imencode(".png", page)[1].tobytes())  # (cv2.imwrite crashes)
    out = tmp_path / "out"
    writer = PageWriter(settings(out, formats=("coco", "page", "alto")))
    record = writer.write(PageSource(path, None, "M%FCller", page), crowded_page(4), {})
    writer.finish(["M%FCller"])
    image = out / "image" / "M%FCller.png"
    assert record["outputs"]["image"] == str(image)
    assert np.array_equal(cv2.imread(str(image)), page)
    files = writer.files("M%FCller")
    page_file = etree.parse(str(files.page_xml)).getroot().find("{*}Page").get("imageFilename")
    alto = etree.parse(str(files.alto)).getroot()
    alto_file = alto.find("{*}Description/{*}sourceImageInformation/{*}fileName").text
    coco = json.loads((out / "coco.json").read_text(encoding="utf-8"))["images"][0]
    for folder, reference in (
        (files.page_xml.parent, page_file),
        (files.alto.parent, alto_file),
        (out, coco["path"]),
    ):
        assert (folder / reference).resolve() == image.resolve()
    assert coco["file_name"] == "M%FCller.png" and coco["source"] == "../scans/M%FCller.png"


@pytest.mark.parametrize("formats", [("page",), ("coco", "jsonl"), ("overlay", "semantic")])
def test_any_mix_of_formats_writes_its_own_files(tmp_path, formats):
    writer = PageWriter(settings(tmp_path, formats=formats))
    source = PageSource(tmp_path / "x.png", None, "x", np.zeros((400, 300, 3), np.uint8))
    record = writer.write(source, crowded_page(6), {})
    writer.finish(["x"])
    assert set(record["outputs"]) == {name for name in formats if name != "jsonl"}
    assert all(path.is_file() for path in writer.files("x").required()[1:])


def test_coco_images_say_which_page_and_file_they_are(tmp_path):
    """Two `scan.png` of different folders share a `file_name`; `page_id` and `path` (relative to
    coco.json) tell them apart, and a PDF page also names its source file and page number."""
    out = tmp_path / "out"
    writer = PageWriter(settings(out, formats=("coco",)))
    image = np.zeros((400, 300, 3), np.uint8)
    sources = [
        PageSource(tmp_path / "a" / "scan.png", None, "a__scan", image),
        PageSource(tmp_path / "b" / "scan.png", None, "b__scan", image),
        PageSource(tmp_path / "doc.pdf", 3, "doc_p0003", image),
    ]
    for source in sources:
        writer.write(source, crowded_page(2), {})
    writer.finish([source.page_id for source in sources])
    images = json.loads((out / "coco.json").read_text())["images"]
    assert [image["file_name"] for image in images] == ["scan.png", "scan.png", "doc_p0003.png"]
    assert [image["page_id"] for image in images] == ["a__scan", "b__scan", "doc_p0003"]
    assert [(out / image["path"]).resolve() for image in images] == [
        (tmp_path / "a" / "scan.png").resolve(),
        (tmp_path / "b" / "scan.png").resolve(),
        (out / "image" / "doc_p0003.png").resolve(),
    ]
    assert (out / images[2]["path"]).is_file()
    assert [(image.get("source"), image.get("page")) for image in images] == [
        (None, None),
        (None, None),
        ("../doc.pdf", 3),
    ]


def test_earlier_pages_alike_in_natural_order_keep_their_place_however_the_records_are_listed(
    tmp_path, request
):
    """The COCO files put the pages of earlier runs first, in natural order, where `p1` and `p01` are one:
    they came in the order the file system listed the records, so two copies of a folder could number
    the same pages' images otherwise."""
    writer = PageWriter(settings(tmp_path, formats=("coco",)))
    for page_id in ("p1", "p01", "P2"):
        writer.write(
            PageSource(tmp_path / f"{page_id}.png", None, page_id, np.zeros((40, 30, 3), np.uint8)),
            crowded_page(2, 40, 30),
            {},
        )
        writer.files(page_id).record.parent.mkdir(parents=True, exist_ok=True)
        writer.files(page_id).record.write_text("{}")

    def page_ids() -> list[str]:
        writer.finish([])
        return [image["page_id"] for image in json.loads((tmp_path / "coco.json").read_text())["images"]]

    assert page_ids() == ["p01", "p1", "P2"]
    request.getfixturevalue("folders_listed_backwards")
    assert page_ids() == ["p01", "p1", "P2"]


def test_references_lead_to_the_image_from_an_output_folder_behind_a_link(tmp_path):
    """`--out results` where `results` links to `disk/deep/results`: every reference is read from the real
    folder of the file holding it, so it must lead to the image from there (a linked scan stays a link)."""
    real_out = tmp_path / "disk" / "deep" / "results"
    real_out.mkdir(parents=True)
    out = tmp_path / "results"
    out.symlink_to(real_out)
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = scans / "scan.png"
    cv2.imwrite(str(scan), np.full((400, 300, 3), 255, np.uint8))
    linked = scans / "linked.png"
    linked.symlink_to(scan)
    writer = PageWriter(settings(out, formats=("coco", "page", "alto")))
    for path in (scan, linked):
        writer.write(
            PageSource(path, None, path.stem, np.full((400, 300, 3), 255, np.uint8)), crowded_page(2), {}
        )
    writer.finish(["scan", "linked"])

    for stem, image in (("scan", scan), ("linked", linked)):
        page = etree.parse(str(real_out / "page" / f"{stem}.xml")).getroot().find("{*}Page")
        assert os.path.normpath(real_out / "page" / page.get("imageFilename")) == str(image)
        alto = etree.parse(str(real_out / "alto" / f"{stem}.xml")).getroot()
        file_name = alto.find("{*}Description/{*}sourceImageInformation/{*}fileName").text
        assert os.path.normpath(real_out / "alto" / file_name) == str(image)
    coco = json.loads((real_out / "coco.json").read_text())
    assert [os.path.normpath(real_out / image["path"]) for image in coco["images"]] == [
        str(scan),
        str(linked),
    ]
