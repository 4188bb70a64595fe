"""convert-dataset finds images where people put them: sibling folders, Transkribus exports, `--images`.

The layouts are built from the real PAGE ground truth in ../shared/data/pages with links to its images.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from convert_helpers import (
    layout_counts,
    minimal_pdf,
    page_region_counts,
    page_xml,
    run_cli,
    write_image,
)
from lxml import etree
from PIL import Image

from docsam_cli.datasets.ground_truth import load_ground_truth

SEARCHED = "image found by its name elsewhere under the source folder"


def _structure_pages(shared_data: Path) -> list[tuple[Path, Path]]:
    """(PAGE file, image) of the OCR-D structure set: 11 pages of 4 works."""
    pairs = []
    for xml in sorted((shared_data / "pages/ocrd-gt-structure-text/data").glob("*/GT-PAGE/*.xml")):
        reference = etree.parse(str(xml)).getroot().find("{*}Page").get("imageFilename")
        pairs.append((xml, xml.parent.parent / reference))
    assert len(pairs) == 11 and all(image.is_file() for _, image in pairs)
    return pairs


def _with_image_name(xml: Path, target: Path, image_filename: str) -> None:
    """A copy of the PAGE file `xml` at `target` whose imageFilename is `image_filename`."""
    document = etree.parse(str(xml))
    document.getroot().find("{*}Page").set("imageFilename", image_filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    document.write(str(target), xml_declaration=True, encoding="UTF-8")


def _link(image: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(image.resolve(), target)


def _expected(pairs: list[tuple[Path, Path]]) -> Counter:
    return sum((page_region_counts(xml) for xml, _ in pairs), Counter())


@pytest.mark.slow  # 11 scans of up to 14 Mpx are decoded, twice
def test_newspaper_layout_xml_and_img_in_sibling_folders(shared_data: Path, tmp_path: Path) -> None:
    """`xml/<collection>/` beside `img/`, the XML naming its image as its own export wrote it."""
    pairs = _structure_pages(shared_data)
    root = tmp_path / "gt"
    for xml, image in pairs:
        collection = xml.parent.parent.name
        (root / "xml" / collection).mkdir(parents=True, exist_ok=True)
        (root / "xml" / collection / xml.name).write_bytes(xml.read_bytes())  # "GT-PAGE/<name>.jpg"
        _link(image, root / "img" / image.name)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "-o", out, "--symlink")
    assert result.exit_code == 0, result.stderr
    counts, documents = layout_counts(out)
    assert len(documents) == 11 and counts == _expected(pairs)
    report = json.loads((out / "convert_report.json").read_text())
    assert report["fixed"][SEARCHED] == 11  # found by a search: said so in the report

    named = tmp_path / "named"  # the XML folder alone, the images named with --images
    result = run_cli("convert-dataset", root / "xml", "--from", "page", "-o", named, "--images", root / "img")
    assert result.exit_code == 0, result.stderr
    assert layout_counts(named) == (counts, documents)
    assert SEARCHED not in json.loads((named / "convert_report.json").read_text())["fixed"]


def test_transkribus_export_images_one_level_above_the_xml(shared_data: Path, tmp_path: Path) -> None:
    """Transkribus: `<doc>/page/<name>.xml` naming `<name>.jpg`, which lies in `<doc>/`."""
    pairs = [pair for pair in _structure_pages(shared_data) if "laube_europa" in str(pair[0])]
    document = tmp_path / "export" / "laube_europa"
    for xml, image in pairs:
        _with_image_name(xml, document / "page" / xml.name, image.name)
        _link(image, document / image.name)
    (document / "mets.xml").write_text('<mets:mets xmlns:mets="http://www.loc.gov/METS/"/>')
    for source in (tmp_path / "export", document / "page"):  # the export, or its XML folder alone
        out = tmp_path / f"out-{source.name}"
        result = run_cli("convert-dataset", source, "--from", "page", "-o", out, "--symlink")
        assert result.exit_code == 0, result.stderr
        counts, documents = layout_counts(out)
        assert len(documents) == len(pairs) == 5 and counts == _expected(pairs)
        assert "fixed" not in result.stderr  # the usual place: no guess to report
    single = document / "page" / pairs[0][0].name  # one XML file named on the command line
    result = run_cli("convert-dataset", single, "--from", "page", "-o", tmp_path / "single", "--symlink")
    assert result.exit_code == 0, result.stderr


def test_collections_with_the_same_image_names_are_told_apart(tmp_path: Path) -> None:
    root = tmp_path / "gt"
    for collection, width in (("c1", 40), ("c2", 50)):
        write_image(root / "img" / collection / "0001.png", width, 30)
        regions = [("TextRegion", None, "1,1 9,1 9,9")]
        (root / "xml" / collection).mkdir(parents=True)
        (root / "xml" / collection / "0001.xml").write_text(page_xml("0001.png", width, 30, regions))
    result = run_cli("convert-dataset", root, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr  # each XML found the image of its own collection
    (root / "xml" / "c3").mkdir()
    (root / "xml" / "c3" / "0001.xml").write_text(page_xml("0001.png", 40, 30, []))
    result = run_cli("convert-dataset", root, "--from", "page", "-o", tmp_path / "again")
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "c3/0001.xml" in line and "2 files of that name" in line and "--images" in line


def test_two_annotation_files_of_one_image_are_one_page_and_an_error(tmp_path: Path) -> None:
    """An OCR-D workspace with two PAGE file groups of the same scans (regions in one, lines in the other):
    each scan was written twice, `0001.png` and `0001-2.png`, each copy without the other's instances
    (training on each that the other's are background) and, with --split, often in train and val alike.
    The image is converted with the first file; the second is an error line naming both, as `evaluate`
    refuses a second ground truth of an image."""
    root = tmp_path / "data"
    write_image(root / "OCR-D-IMG" / "0001.png", 40, 30)
    for group, element in (("OCR-D-GT-SEG-BLOCK", "TextRegion"), ("OCR-D-GT-SEG-LINE", "TextLine")):
        (root / group).mkdir()
        xml = page_xml("OCR-D-IMG/0001.png", 40, 30, [(element, None, "1,1 9,1 9,9")])
        (root / group / "0001.xml").write_text(xml)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "--level", "regions,lines", "-o", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "OCR-D-GT-SEG-LINE/0001.xml" in line and "OCR-D-GT-SEG-BLOCK/0001.xml" in line
    assert "0001.png was converted already" in line
    counts, documents = layout_counts(out)
    assert list(documents) == ["0001.png"] and counts == {"text": 1}


def test_an_image_saved_since_under_any_extension_segment_reads_is_found(tmp_path: Path) -> None:
    """The PAGE file names `0001.png`; the scan beside it was saved since as `0001.jfif` (a JPEG under an
    extension `docsam segment` reads too): found as the same stem in another format, and said so."""
    root = tmp_path / "gt"
    image = write_image(root / "0001.png", 40, 30)
    image.rename(root / "0001.jfif")
    (root / "0001.xml").write_text(page_xml("0001.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    result = run_cli("convert-dataset", root, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    counts, documents = layout_counts(tmp_path / "out")
    assert len(documents) == 1 and sum(counts.values()) == 1


@pytest.mark.parametrize("beside", [True, False])
def test_a_name_in_another_unicode_normalization_is_found(tmp_path: Path, beside: bool) -> None:
    """The PAGE file names `Brief_für.png` with a composed `ü`; the scan's name on disk has `u` and a
    combining accent (as macOS writes names, kept by archives and copies): the same name to the user, and
    it was 'not found' beside the XML and in the search under the source folder alike."""
    root = tmp_path / "gt"
    composed = unicodedata.normalize("NFC", "Brief_für.png")
    folder = root if beside else root / "scans"
    write_image(folder / unicodedata.normalize("NFD", composed), 40, 30)
    (root / "p.xml").write_text(page_xml(composed, 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert unicodedata.normalize("NFC", (out / "list.txt").read_text().strip()) == composed
    note = "image file name differs in letter case or Unicode normalization" if beside else SEARCHED
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {note: 1}


def test_percent_encoded_references_are_found(tmp_path: Path) -> None:
    """An older `docsam segment` named a scan whose file name is not UTF-8 (`scan<0xFF>.png`) `scan%FF.png`
    in its PAGE, ALTO and COCO output, and URL-style references write `Brief_für.png` as `Brief_f%C3%BCr.png`:
    read back, such a page was 'not found'. A name found as written (`100%25.png` on disk) still wins."""
    root = tmp_path / "gt"
    pages = {  # reference: (file name on disk, width)
        "scan%FF.png": (os.fsdecode(b"scan\xff.png"), 41),
        "Brief_f%C3%BCr.png": ("Brief_f\u00fcr.png", 42),
        "100%25.png": ("100%25.png", 43),
        "file:///elsewhere/scan%FE.png": (os.fsdecode(b"scan\xfe.png"), 44),
    }
    write_image(root / "scans" / "100%.png", 10, 10)  # what decoding "100%25.png" gives: not that page
    for index, (reference, (name, width)) in enumerate(pages.items()):
        write_image(root / "scans" / name, width, 30)
        xml = page_xml(reference, width, 30, [("TextRegion", None, "1,1 9,1 9,9")])
        (root / f"{index}.xml").write_text(xml, encoding="utf-8")
    result = run_cli("convert-dataset", root, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    counts, documents = layout_counts(tmp_path / "out")
    assert len(documents) == 4 and sum(counts.values()) == 4


def test_names_told_apart_only_by_unicode_normalization_get_their_own_output_names(tmp_path: Path) -> None:
    """Two scans named `für.png`, one composed and one decomposed, in two folders: they were written as two
    files whose names macOS (and SMB shares) take for one, so a copy of the dataset there lost a page."""
    root = tmp_path / "gt"
    for folder, form in (("a", "NFC"), ("b", "NFD")):
        name = unicodedata.normalize(form, "für.png")
        write_image(root / folder / name, 40, 30)
        xml = page_xml(name, 40, 30, [("TextRegion", None, "1,1 9,1 9,9")])
        (root / folder / "p.xml").write_text(xml, encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "-o", out)
    assert result.exit_code == 0, result.stderr
    names = [unicodedata.normalize("NFC", name) for name in (out / "list.txt").read_text().split()]
    assert names == ["für.png", "für-2.png"]


def test_a_page_name_in_every_volume_is_told_apart_in_a_few_looks_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive numbers the pages of each volume `0001.tif`, `0002.tif`...: the n-th volume's `0001.png`
    was named by trying `0001.png`, `0001-2.png`, ... up to `0001-n.png`, so naming took time in the square
    of the volumes (40,000 pages of 800 volumes: 73 s). Each name now starts after the last one given for
    it; the names are the same (a source's own `0001-3.png` is passed over as before)."""
    from docsam_cli.datasets import pipeline

    root = tmp_path / "archive"
    volumes = [f"v{index:02d}" for index in range(12)]
    for volume in volumes:
        name = "0001-3.png" if volume == "v00" else "0001.png"
        write_image(root / volume / name, 40, 30)
        xml = page_xml(name, 40, 30, [("TextRegion", None, "1,1 9,1 9,9")])
        (root / volume / "p.xml").write_text(xml, encoding="utf-8")
    stem_key, looked = pipeline.stem_key, []

    def counting(stem: str) -> str:
        looked.append(stem)
        return stem_key(stem)

    monkeypatch.setattr(pipeline, "stem_key", counting)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "-o", out)
    assert result.exit_code == 0, result.stderr
    expected = ["0001-3.png", "0001.png", *(f"0001-{number}.png" for number in (2, *range(4, 13)))]
    assert (out / "list.txt").read_text().split() == expected
    assert len(looked) <= 3 * len(volumes)


def test_not_found_names_the_file_and_where_it_looked(tmp_path: Path) -> None:
    source = tmp_path / "xml"
    (source / "c1").mkdir(parents=True)
    (source / "c1" / "p.xml").write_text(page_xml("scans/p.png", 40, 30, []))
    result = run_cli("convert-dataset", source, "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert re.search(r"p\.xml: imageFilename 'scans/p\.png' not found \(looked in .*c1, .*xml", line), line
    assert "by name under" in line and "--images DIR" in line


def test_icdar2013_names_the_pdf_it_looked_for(tmp_path: Path) -> None:
    """The -reg file names itself in `filename`; the PDF is <doc>.pdf, found in --images."""
    source = tmp_path / "eu-dataset"
    source.mkdir()
    (source / "bm_eu-009-reg.xml").write_text(
        '<?xml version="1.0"?><document filename="bm_eu-009-reg.xml"><table id="1"><region id="1" page="1">'
        '<bounding-box x1="60" y1="100" x2="160" y2="150"/></region></table></document>'
    )
    result = run_cli("convert-dataset", source, "--from", "icdar2013", "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "bm_eu-009-reg.xml: PDF 'bm_eu-009.pdf' not found (looked in" in line, line
    assert "'bm_eu-009-reg.xml' not found" not in line
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "bm_eu-009.pdf").write_bytes(minimal_pdf((0, 0, 300, 400), 0, (60, 100, 100, 50)))
    out = tmp_path / "found"
    result = run_cli("convert-dataset", source, "--from", "icdar2013", "-o", out, "--images", pdfs)
    assert result.exit_code == 0, result.stderr
    assert layout_counts(out)[0] == Counter({"table": 1})


def _page(source: Path) -> list[str]:
    # Not "scans/p.png": relative to the XML folder's parent (an OCR-D workspace) that would be found.
    (source / "p.xml").write_text(page_xml("img/p.png", 60, 40, [("TableRegion", None, "1,1 30,1 30,20")]))
    return []


def _alto(source: Path) -> list[str]:
    (source / "p.xml").write_text(
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description><MeasurementUnit>pixel'
        "</MeasurementUnit><sourceImageInformation><fileName>p.png</fileName></sourceImageInformation>"
        '</Description><Layout><Page WIDTH="60" HEIGHT="40"><PrintSpace><Illustration ID="i1" HPOS="1" '
        'VPOS="1" WIDTH="20" HEIGHT="10"/></PrintSpace></Page></Layout></alto>'
    )
    return []


def _coco(source: Path) -> list[str]:
    document = {
        "images": [{"id": 1, "file_name": "p.png", "width": 60, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 10]}],
        "categories": [{"id": 1, "name": "table"}],
    }
    (source / "annotations.json").write_text(json.dumps(document))
    return []


def _voc(source: Path) -> list[str]:
    (source / "p.xml").write_text(
        "<annotation><filename>p.png</filename><object><name>table</name>"
        "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>10</ymax></bndbox></object></annotation>"
    )
    return []


def _yolo(source: Path) -> list[str]:
    (source / "p.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (source / "classes.txt").write_text("table\n")
    return []


def _labelme(source: Path) -> list[str]:
    shapes = [{"label": "table", "points": [[1, 1], [20, 10]], "shape_type": "rectangle"}]
    (source / "p.json").write_text(json.dumps({"shapes": shapes, "imagePath": "p.png", "imageData": None}))
    return []


def _icdar2013(source: Path) -> list[str]:
    (source / "p-reg.xml").write_text(
        '<document filename="p-reg.xml"><table id="1"><region id="1" page="1">'
        '<bounding-box x1="10" y1="10" x2="40" y2="30"/></region></table></document>'
    )
    return ["--dpi", "72"]


def _textdet(source: Path) -> list[str]:
    (source / "gt_p.txt").write_text("1,1,20,1,20,10,1,10,text\n")
    return []


SOURCES = {
    "page": _page,
    "alto": _alto,
    "coco": _coco,
    "voc": _voc,
    "yolo": _yolo,
    "labelme": _labelme,
    "icdar2013": _icdar2013,
    "textdet": _textdet,
}


@pytest.mark.parametrize("fmt", SOURCES)
def test_images_option_for_every_format(fmt: str, tmp_path: Path) -> None:
    """Annotations in `src/`, their image (or PDF) in `scans/`: found only when --images says so."""
    source = tmp_path / "src"
    source.mkdir()
    arguments = SOURCES[fmt](source)
    scans = tmp_path / "scans"
    if fmt == "icdar2013":
        scans.mkdir()
        (scans / "p.pdf").write_bytes(minimal_pdf((0, 0, 60, 40), 0, (10, 10, 30, 20)))
    else:
        write_image(scans / "p.png", 60, 40)
    alone = run_cli("convert-dataset", source, "--from", fmt, "-o", tmp_path / "alone", *arguments)
    if fmt == "yolo":  # YOLO walks the images: without them there is nothing to convert
        assert alone.exit_code == 2 and "no image read" in alone.error_lines()[0]
        assert not (tmp_path / "alone").exists()
    else:
        assert alone.exit_code == 1 and "not found" in alone.error_lines()[0]
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", fmt, "-o", out, "--images", scans, *arguments)
    assert result.exit_code == 0, result.stderr
    counts, documents = layout_counts(out)
    assert len(documents) == 1 and sum(counts.values()) == 1


def test_evaluate_finds_ground_truth_images_with_images_option(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _coco(source)
    write_image(tmp_path / "scans" / "p.png", 60, 40)
    alone = load_ground_truth(source / "annotations.json", "coco", frozenset({"regions"}))
    assert alone.images[0].image is None
    found = load_ground_truth(source / "annotations.json", "coco", frozenset({"regions"}), tmp_path / "scans")
    assert found.images[0].image == tmp_path / "scans" / "p.png"


def test_ocrd_workspace_page_files_given_as_files(tmp_path: Path) -> None:
    """OCR-D: `data/OCR-D-GT-PAGE/p.xml` names `OCR-D-IMG/p.png`, relative to the workspace `data/`; found
    when the XML files are named one by one too, but not by climbing above the workspace."""
    workspace = tmp_path / "data"
    write_image(workspace / "OCR-D-IMG" / "p.png", 40, 30)
    pages = workspace / "OCR-D-GT-PAGE"
    pages.mkdir()
    (pages / "p.xml").write_text(page_xml("OCR-D-IMG/p.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    result = run_cli("convert-dataset", pages / "p.xml", "--from", "page", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "list.txt").read_text().split() == ["p.png"]
    assert "fixed" not in result.stderr  # an exact path, not a guess
    write_image(tmp_path / "up" / "q.png", 40, 30)
    (pages / "q.xml").write_text(page_xml("../up/q.png", 40, 30, []))
    result = run_cli("convert-dataset", pages / "q.xml", "--from", "page", "-o", tmp_path / "q")
    assert result.exit_code == 1 and "outside the source folder" in result.error_lines()[0]


def test_ocrd_assets_workspace(shared_data: Path, tmp_path: Path) -> None:
    """The real sample: the PAGE files of an OCR-D workspace named on the command line."""
    (workspace,) = {mets.parent for mets in (shared_data / "pages" / "ocrd-assets").rglob("mets.xml")}
    files = sorted((workspace / "OCR-D-GT-PAGE").glob("*.xml"))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", *files, "--from", "page", "-o", out, "--symlink")
    assert result.exit_code == 0, result.stderr
    assert len((out / "list.txt").read_text().split()) == len(files) == 2


def test_references_climbing_out_of_the_source_are_found_under_images(tmp_path: Path) -> None:
    """segment's PAGE files name `../../scans/vol1/p.png` from `out/page/`: read back with `out` as the
    source, the images are looked for under `--images` (where the reference points, then its trailing
    folders: the scans moved, then its name), and refused without it, saying to use --images."""
    write_image(tmp_path / "scans" / "p0.png", 40, 30)
    write_image(tmp_path / "scans" / "vol1" / "p.png", 40, 30)
    write_image(tmp_path / "scans" / "vol2" / "p.png", 40, 31)  # the same name in another folder
    pages = tmp_path / "out" / "page"
    pages.mkdir(parents=True)
    for stem, reference, height in (
        ("p0", "p0.png", 30),
        ("vol1__p", "vol1/p.png", 30),
        ("vol2__p", "vol2/p.png", 31),
    ):
        region = [("TextRegion", None, "1,1 9,1 9,9")]
        (pages / f"{stem}.xml").write_text(page_xml(f"../../scans/{reference}", 40, height, region))
    result = run_cli("convert-dataset", tmp_path / "out", "--from", "page", "-o", tmp_path / "none")
    assert result.exit_code == 1 and len(result.error_lines()) == 3
    assert all("outside the source folder" in line and "--images" in line for line in result.error_lines())
    for images in (tmp_path / "scans", tmp_path / "moved"):
        if images.name == "moved":
            (tmp_path / "scans").rename(images)
        target = tmp_path / f"from-{images.name}"
        result = run_cli(
            "convert-dataset", tmp_path / "out", "--from", "page", "--images", images, "-o", target
        )
        assert result.exit_code == 0, result.stderr
        assert "fixed" not in result.stderr  # exact paths, not guesses
        heights = sorted(Image.open(image).size[1] for image in (target / "image").iterdir())
        assert heights == [30, 30, 31]  # vol2's page is vol2's image, not vol1's of the same name


def test_each_folder_is_listed_once_however_many_images_are_looked_up_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive's PAGE files name the TIFF masters (`0001.tif`) beside which lie their PNG derivatives:
    each image is found under its other extension. Every lookup listed the images' folder again, so a
    conversion of N pages read N² folder entries (2,000 pages: 40 s against 13 s for exact names, and
    growing); each folder is now listed once per run."""
    images = tmp_path / "png"
    for index in range(12):
        write_image(images / f"{index:04d}.png", 40, 30)
        regions = [("TextRegion", None, "1,1 9,1 9,9")]
        (tmp_path / "gt" / f"{index:04d}.xml").parent.mkdir(exist_ok=True)
        (tmp_path / "gt" / f"{index:04d}.xml").write_text(page_xml(f"{index:04d}.tif", 40, 30, regions))
    listed: Counter = Counter()
    listdir, scandir = os.listdir, os.scandir

    def counting_listdir(path=".", *args):
        listed[os.path.realpath(path)] += 1
        return listdir(path, *args)

    def counting_scandir(path=".", *args):
        listed[os.path.realpath(path)] += 1
        return scandir(path, *args)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    monkeypatch.setattr(os, "scandir", counting_scandir)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path / "gt", "--from", "page", "--images", images, "-o", out)
    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    assert len(layout_counts(out)[1]) == 12
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {
        "image found under another file extension": 12
    }
    assert listed[os.path.realpath(images)] == 1 and max(listed.values()) <= 2, listed  # and a walk


def test_images_in_a_folder_linked_into_the_source_are_found_by_name(tmp_path: Path) -> None:
    """PAGE files naming their image alone (`0001.png`), whose images lie in a box of scans linked into the
    source folder (`gt/img/box3 -> /mnt/nas/box3`): the walk that reads the PAGE files follows such links,
    but the search for an image by its name did not, and every page failed with "image '0001.png' not
    found", though `segment -r gt` reads those images. The search follows them as the walk does, each real
    folder once (the box linked in twice is no second file of that name)."""
    nas = tmp_path / "nas" / "box3"
    write_image(nas / "0001.png", 40, 30)
    root = tmp_path / "gt"
    (root / "img").mkdir(parents=True)
    (root / "img" / "box3").symlink_to(nas, target_is_directory=True)
    (root / "img" / "again").symlink_to(nas, target_is_directory=True)
    (root / "img" / "loop").symlink_to(root, target_is_directory=True)
    (root / "xml").mkdir()
    (root / "xml" / "0001.xml").write_text(
        page_xml("0001.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")])
    )
    out = tmp_path / "out"
    result = run_cli("convert-dataset", root, "--from", "page", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "convert_report.json").read_text())["fixed"] == {SEARCHED: 1}
