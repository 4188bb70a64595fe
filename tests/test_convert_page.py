"""convert-dataset --from page on the real PAGE sets in ../shared/data/pages, and on broken inputs."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import layout_counts, page_region_counts, page_xml, run_cli, write_image
from inputs_corpus import planar_tiff, premultiplied_grey_alpha_tiff
from lxml import etree
from PIL import Image
from pycocotools.coco import COCO

from docsam_cli.datasets.geometry import self_intersects

# The PAGE files that cannot convert, with the reason the error line must give.
BROKEN = {
    "kraken-test-pages/tests/resources/page/cPAS-2000.xml": "imageFilename 'cPAS-2000.jpg' not found",
    "kraken-test-pages/tests/resources/page/invalid/dims.xml": "imageWidth 'foo' is not a whole number",
    "kraken-test-pages/tests/resources/page/invalid/image.xml": "no imageFilename",
}


def _page_files(pages: Path) -> list[Path]:
    return [
        path
        for path in sorted(pages.rglob("*.xml"))
        if etree.QName(etree.parse(str(path)).getroot()).localname == "PcGts"
    ]


@pytest.fixture(scope="module")
def converted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("page") / "out"
    result = run_cli("convert-dataset", shared_data / "pages", "--from", "page", "--out", out)
    return out, result


def test_every_page_set_converts_with_independent_counts(shared_data: Path, converted) -> None:
    out, _ = converted
    pages = shared_data / "pages"
    expected: Counter = Counter()
    good = [path for path in _page_files(pages) if str(path.relative_to(pages)) not in BROKEN]
    for path in good:
        expected += page_region_counts(path)
    counts, documents = layout_counts(out)
    assert counts == expected
    assert len(documents) == len(good) == 18
    # The OCR-D structure set alone, against the numbers of its own file listing (11 pages present).
    ocrd = [path for path in good if "ocrd-gt-structure-text" in str(path)]
    assert len(ocrd) == 11
    report = json.loads((out / "convert_report.json").read_text())
    assert report["images"] == 18 and report["instances"] == dict(sorted(expected.items()))


def test_output_loads_with_pycocotools_per_image(converted) -> None:
    out, _ = converted
    class_names = (out / "class_name").glob("*.txt")
    names = (out / "list.txt").read_text().split("\n")[:-1]
    seen_ids: set[int] = set()
    for name in names:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out / "coco" / f"{Path(name).stem}.json"))
        (image,) = coco.dataset["images"]
        with Image.open(out / "image" / name) as picture:
            assert picture.size == (image["width"], image["height"])
        categories = [category["name"] for category in coco.dataset["categories"]]
        assert categories == sorted(categories) and [c["id"] for c in coco.dataset["categories"]] == list(
            range(1, len(categories) + 1)
        )
        for annotation in coco.dataset["annotations"]:
            assert annotation["id"] not in seen_ids
            seen_ids.add(annotation["id"])
            mask = coco.annToMask(annotation)
            assert mask.shape == (image["height"], image["width"]) and mask.any()
            x, y, w, h = annotation["bbox"]
            assert 0 <= x <= x + w <= image["width"] - 1 and 0 <= y <= y + h <= image["height"] - 1
    background = [path.read_text().splitlines()[-1] for path in class_names]
    assert set(background) == {"out _background_"}


def test_broken_files_give_one_line_each_and_exit_1(converted) -> None:
    _, result = converted
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    lines = result.error_lines()
    assert len(lines) == len(BROKEN)
    for relative, reason in BROKEN.items():
        assert sum(relative in line and reason in line for line in lines) == 1, (relative, lines)


def test_lines_and_words_levels(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "pages/ocrd-assets/data/kant_aufklaerung_1784-page-region-line-word_glyph/data"
    out = tmp_path / "kant"
    result = run_cli("convert-dataset", folder, "--from", "page", "--out", out, "--level", "lines,words")
    assert result.exit_code == 0, result.stderr
    expected: Counter = Counter()
    for path in (folder / "OCR-D-GT-PAGE").glob("*.xml"):
        root = etree.parse(str(path)).getroot()
        expected["text line"] += len(root.findall(".//{*}TextLine/{*}Coords"))
        expected["word"] += len(root.findall(".//{*}Word/{*}Coords"))
    counts, _ = layout_counts(out)
    assert counts == expected == Counter({"text line": 55, "word": 419})


def test_table_cells_are_their_own_level(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "pages/prima-page-examples/documentation/example/SimplePage.xml"
    out = tmp_path / "cells"
    assert (
        run_cli("convert-dataset", source, "--from", "page", "--out", out, "--level", "cells").exit_code == 0
    )
    counts, _ = layout_counts(out)
    table = etree.parse(str(source)).getroot().find(".//{*}TableRegion")
    assert (
        counts == Counter({"table cell": len(table.findall("{*}TextRegion"))}) and counts["table cell"] == 9
    )


def test_path_traversal_is_refused_and_the_rest_converts(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_image(tmp_path / "secret.png", 40, 30)  # exists, but outside the source folder
    write_image(source / "ok.png", 40, 30)
    (source / "evil.xml").write_text(page_xml("../secret.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    (source / "ok.xml").write_text(page_xml("ok.png", 40, 30, [("TableRegion", None, "1,1 20,1 20,20 1,20")]))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "page", "--out", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "evil.xml" in line and "outside the source folder" in line
    assert sorted(p.name for p in (out / "image").iterdir()) == ["ok.png"]
    assert layout_counts(out)[0] == Counter({"table": 1})


def test_size_mismatch_and_unreadable_image_are_errors(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_image(source / "a.png", 40, 30)
    (source / "a.xml").write_text(page_xml("a.png", 41, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    (source / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    (source / "b.xml").write_text(page_xml("b.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    (source / "c.xml").write_text("<PcGts><Page")  # not well-formed
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "page", "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    lines = result.error_lines()
    assert len(lines) == 3
    assert any("a.xml" in line and "40x30" in line and "41x30" in line for line in lines)
    assert any("b.png" in line and "truncated or corrupt PNG" in line for line in lines)
    assert any("c.xml" in line and "invalid XML" in line for line in lines)
    assert not out.exists()  # no page read: nothing published
    assert "no image read" in result.stderr and "3 failed, listed above" in result.stderr


def test_images_the_loader_refuses_are_errors(tmp_path: Path) -> None:
    """A TGA (Pillow opens it, docsam's loader does not) and an uncompressed 16-bit TIFF stored plane by
    plane (the loader refuses it rather than misread it) were converted, and the training run or
    `evaluate --weights` failed on them later; each is now an error of its page."""
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (40, 30), "white").save(source / "scan.tga")
    (source / "planar.tif").write_bytes(planar_tiff(np.zeros((3, 30, 40), dtype=np.uint16)))
    (source / "deep.tif").write_bytes(premultiplied_grey_alpha_tiff(np.zeros((30, 40, 2), dtype=np.uint16)))
    write_image(source / "fine.png", 40, 30)
    for name in ("scan.tga", "planar.tif", "deep.tif", "fine.png"):
        xml = page_xml(name, 40, 30, [("TextRegion", None, "1,1 9,1 9,9")])
        (source / f"{Path(name).stem}.xml").write_text(xml)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "page", "--out", out)
    assert result.exit_code == 1
    deep, planar, tga = result.error_lines()
    assert "scan.tga: not an image (or an unsupported format)" in tga
    # a TIFF of a kind Pillow does not read (16-bit grey and alpha) is named as segment names it
    assert "deep.tif: truncated or corrupt TIFF, or a kind of TIFF Pillow cannot read" in deep
    assert "planar.tif" in planar and "PlanarConfiguration 2" in planar
    assert (out / "list.txt").read_text() == "fine.png\n"


def test_clamped_and_self_intersecting_polygons_are_repaired(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_image(source / "p.png", 100, 80)
    bowtie = "10,10 50,50 50,10 10,50"  # two triangles meeting at (30, 30)
    outside = "-5,-5 60,-5 60,20 -5,20"
    (source / "p.xml").write_text(
        page_xml("p.png", 100, 80, [("ImageRegion", None, bowtie), ("TableRegion", None, outside)])
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "page", "--out", out)
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "convert_report.json").read_text())
    assert report["fixed"] == {"clamped to the page": 1, "self-intersecting polygon repaired": 1}
    annotations = json.loads((out / "coco/p.json").read_text())["annotations"]
    image, table = sorted(annotations, key=lambda a: a["category_id"])
    outlines = [np.asarray(polygon, dtype=float).reshape(-1, 2) for polygon in image["segmentation"]]
    assert not any(self_intersects(outline) for outline in outlines)
    assert abs(image["area"] - 2 * 400) < 40  # the two triangles (20 x 40 / 2 each), not 0
    assert min(table["segmentation"][0]) == 0 and table["bbox"] == [0, 0, 60, 20]


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "src"
    write_image(source / "p.png", 40, 30)
    (source / "p.xml").write_text(page_xml("p.png", 40, 30, [("TextRegion", "heading", "1,1 9,1 9,9")]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = run_cli("convert-dataset", source, "--from", "page", "--out", out)
    assert result.exit_code == 2 and (out / "keep.txt").exists()

    from docsam_cli.datasets import layout

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(layout, "write_split", crash)
    crashed = run_cli("convert-dataset", source, "--from", "page", "--out", out, "--overwrite")
    assert crashed.exit_code == 3 and crashed.error_lines() == [
        "error: internal error: RuntimeError: disk full (rerun with --debug for the traceback)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no staging folder left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.undo()
    assert run_cli("convert-dataset", source, "--from", "page", "--out", out, "--overwrite").exit_code == 0
    assert not (out / "keep.txt").exists() and layout_counts(out)[0] == Counter({"heading": 1})


def test_an_image_not_found_is_named_exactly_in_its_error(tmp_path: Path) -> None:
    """A file name with two spaces in a row, a tab or a newline (`Brief  an.png`, as archives' typing has
    them) was shown in the error with one space instead (`imageFilename 'Brief an.png' not found`), naming a
    file that is not the one the PAGE file refers to. It is now shown exactly, a control character escaped
    (`\\t`, `\\n`) to keep the line one line."""
    source = tmp_path / "gt"
    source.mkdir()
    write_image(source / "a.png", 60, 40)
    regions = [("TextRegion", "paragraph", "2,2 20,2 20,20 2,20")]
    (source / "a.xml").write_text(page_xml("a.png", 60, 40, regions))
    for stem, name in (("b", "Brief  an.png"), ("c", "tab&#9;x.png"), ("d", "nl&#10;x.png")):
        (source / f"{stem}.xml").write_text(page_xml(name, 60, 40, regions))
    result = run_cli("convert-dataset", source, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    errors = "\n".join(result.error_lines())
    for shown in ("'Brief  an.png' not found", "'tab\\tx.png' not found", "'nl\\nx.png' not found"):
        assert shown in errors, errors


@pytest.mark.skipif(os.sep != "/", reason="a backslash separates folders there")
def test_an_image_whose_name_holds_a_backslash_is_found_as_named(tmp_path: Path) -> None:
    """A file named `vol1\\p1.png` (Windows zips unpacked on Linux keep the backslash in the name), which
    segment's PAGE file names as it is: conversion read every backslash as Windows' folder separator and
    looked for `vol1/p1.png` and `p1.png` only, so segment's own outputs were 'not found'. A reference is
    now looked for as written first."""
    source = tmp_path / "gt"
    source.mkdir()
    write_image(source / "vol1\\p1.png", 60, 40)
    regions = [("TextRegion", "paragraph", "2,2 20,2 20,20 2,20")]
    (source / "a.xml").write_text(page_xml("vol1\\p1.png", 60, 40, regions))
    result = run_cli("convert-dataset", source, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
