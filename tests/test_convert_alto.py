"""convert-dataset --from alto: SegmOnto-tagged ALTO v4 from eScriptorium/YALTAi, v2 from OCR-D, units."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from convert_helpers import layout_counts, run_cli, write_image
from lxml import etree
from PIL import Image

from docsam_cli.datasets.convert.alto import read_alto

ALTO4 = "http://www.loc.gov/standards/alto/ns-v4#"
_DEFAULTS = {"TextBlock": "text", "Illustration": "illustration", "GraphicalElement": "graphic"}


def _block_counts(path: Path) -> Counter:
    """Blocks per class, read independently: the LABEL of the block's first tag reference, if any."""
    root = etree.parse(str(path)).getroot()
    labels = {tag.get("ID"): tag.get("LABEL") for tag in root.iter("{*}OtherTag")}
    counts: Counter = Counter()
    for name, default in _DEFAULTS.items():
        for block in root.iter(f"{{*}}{name}"):
            references = [labels[r] for r in block.get("TAGREFS", "").split() if r in labels]
            counts[references[0] if references else default] += 1
    return counts


def test_alto_sets_convert_and_images_missing_are_one_line_errors(shared_data: Path, tmp_path: Path) -> None:
    pages = shared_data / "pages"
    out = tmp_path / "alto"
    result = run_cli("convert-dataset", pages, "--from", "alto", "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    lines = result.error_lines()
    assert len(lines) == 3  # OCR-D's two ALTO pages name no image; kraken's names one that is absent
    assert sum("PAGE_00" in line and "no sourceImageInformation/fileName" in line for line in lines) == 2
    assert sum("bsb00084914_00007.xml" in line and "not found" in line for line in lines) == 1
    yaltai = sorted((pages / "yaltai-alto-pages").rglob("*.xml"))
    expected = sum((_block_counts(path) for path in yaltai), Counter())
    counts, documents = layout_counts(out)
    assert counts == expected and len(documents) == 3
    assert expected["Decoration"] == 2 and expected["MainZone-P"] == 4  # SegmOnto labels kept as written


def test_tag_references_pick_the_layout_label(shared_data: Path) -> None:
    path = shared_data / "pages/kraken-test-pages/tests/resources/alto/bsb00084914_00007.xml"
    page = read_alto(path, path.parent, frozenset({"regions", "lines"}))
    by_id = {instance.where.split()[-1]: instance.category for instance in page.instances}
    assert by_id["eSc_textblock_10523"] == "Main"  # "BT2 lang_0": the language tag is not a label
    assert by_id["eSc_line_192896"] == "heading"  # TYPE="type"
    assert by_id["eSc_line_192883"] == "text line"  # only TYPE="label_0"/"label_1" tags
    assert by_id["eSc_line_192889"] == "text line"  # only a split tag
    assert by_id["eSc_textblock_11226"] == "Paratext"


def _alto(unit: str, page_size: tuple[int, int], block: tuple[int, int, int, int], image: str) -> str:
    x, y, w, h = block
    return (
        f'<alto xmlns="{ALTO4}"><Description><MeasurementUnit>{unit}</MeasurementUnit>'
        f"<sourceImageInformation><fileName>{image}</fileName></sourceImageInformation></Description>"
        f'<Layout><Page WIDTH="{page_size[0]}" HEIGHT="{page_size[1]}"><PrintSpace>'
        f'<Illustration ID="i1" HPOS="{x}" VPOS="{y}" WIDTH="{w}" HEIGHT="{h}"/>'
        "</PrintSpace></Page></Layout></alto>"
    )


def test_mm10_is_scaled_and_pixel_size_mismatch_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_image(source / "a.png", 200, 100)
    write_image(source / "b.png", 200, 100)
    (source / "a.xml").write_text(_alto("mm10", (2000, 1000), (200, 100, 400, 200), "a.png"))
    (source / "b.xml").write_text(_alto("pixel", (201, 100), (20, 10, 40, 20), "b.png"))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "alto", "--out", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "b.xml" in line and "200x100" in line and "201x100" in line
    document = json.loads((out / "coco" / "a.json").read_text())
    (annotation,) = document["annotations"]
    assert annotation["bbox"] == [20, 10, 40, 20]
    assert document["categories"] == [{"id": 1, "name": "illustration", "supercategory": ""}]


def test_a_composed_block_with_a_type_is_a_region_of_that_type(tmp_path: Path) -> None:
    """ABBYY FineReader and PRImA's PAGE-to-ALTO stylesheet write a table as `<ComposedBlock TYPE="table">`
    around its cells' `TextBlock`s: the table is a region named by its TYPE (ALTO: "the type of composed
    block (e.g. table, advertisement, ...)"); an untyped, untagged one (Tesseract's) stays a container.
    TYPE is a user-defined string, and was taken as written: "Table" (other producers) and the Library of
    Congress's "Illustration" made classes apart from "table" and from the `Illustration` element's
    "illustration", names the model reads as one; it is now read in lower case. The cells were read as
    "text" regions, so every cell of an ABBYY table counted as a text region in evaluate and training, where
    PAGE's cells of a TableRegion are `--level cells`; they are now cells too, also inside an untyped row."""
    write_image(tmp_path / "p.png", 200, 100)
    (tmp_path / "p.xml").write_text(
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v2#"><Description>'
        "<MeasurementUnit>pixel</MeasurementUnit><sourceImageInformation><fileName>p.png</fileName>"
        '</sourceImageInformation></Description><Layout><Page WIDTH="200" HEIGHT="100"><PrintSpace>'
        '<ComposedBlock ID="t1" TYPE="Table" HPOS="10" VPOS="10" WIDTH="100" HEIGHT="50">'
        '<TextBlock ID="c1" HPOS="10" VPOS="10" WIDTH="50" HEIGHT="50"/>'
        '<ComposedBlock ID="row" HPOS="60" VPOS="10" WIDTH="50" HEIGHT="50">'
        '<TextBlock ID="c2" HPOS="60" VPOS="10" WIDTH="50" HEIGHT="50"/></ComposedBlock></ComposedBlock>'
        '<ComposedBlock ID="cb" HPOS="120" VPOS="10" WIDTH="50" HEIGHT="50">'
        '<TextBlock ID="b1" HPOS="120" VPOS="10" WIDTH="50" HEIGHT="50"/></ComposedBlock>'
        '<ComposedBlock ID="i1" TYPE="Illustration" HPOS="10" VPOS="70" WIDTH="50" HEIGHT="20">'
        '<GraphicalElement ID="g1" HPOS="10" VPOS="70" WIDTH="50" HEIGHT="20"/></ComposedBlock>'
        "</PrintSpace></Page></Layout></alto>"
    )
    page = read_alto(tmp_path / "p.xml", tmp_path, frozenset({"regions", "cells"}))
    by_id = {instance.where: instance.category for instance in page.instances}
    assert by_id == {
        "ComposedBlock t1": "table",
        "TextBlock c1": "table cell",
        "TextBlock c2": "table cell",
        "TextBlock b1": "text",
        "ComposedBlock i1": "illustration",
        "GraphicalElement g1": "graphic",
    }
    regions = read_alto(tmp_path / "p.xml", tmp_path, frozenset({"regions"}))
    assert [instance.where for instance in regions.instances] == [
        "ComposedBlock t1", "TextBlock b1", "ComposedBlock i1", "GraphicalElement g1"
    ]  # fmt: skip


def _filled(polygons: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    """Polygons drawn as the reference draws a split's annotations (int32 points, boundary included)."""
    mask = np.zeros(size, dtype=np.uint8)
    cv2.fillPoly(mask, [np.asarray(p).reshape(-1, 2).astype(np.int32) for p in polygons], 1)
    return mask


def test_an_ellipse_or_circle_shape_keeps_its_outline(tmp_path: Path) -> None:
    """ALTO's `Shape/Ellipse` (centre HPOS/VPOS, width HLENGTH, height VLENGTH) and `Shape/Circle` (centre,
    RADIUS) are the region: a stamp or seal converts as that round area, not as its bounding box (which
    covers a quarter more: IoU 0.79), and a block with only the shape is no longer dropped."""
    write_image(tmp_path / "p.png", 400, 300)
    (tmp_path / "p.xml").write_text(
        f'<alto xmlns="{ALTO4}"><Description><MeasurementUnit>pixel</MeasurementUnit>'
        "<sourceImageInformation><fileName>p.png</fileName></sourceImageInformation></Description>"
        '<Layout><Page WIDTH="400" HEIGHT="300"><PrintSpace>'
        '<Illustration ID="e" HPOS="50" VPOS="20" WIDTH="200" HEIGHT="120">'
        '<Shape><Ellipse HPOS="150" VPOS="80" HLENGTH="200" VLENGTH="120"/></Shape></Illustration>'
        '<GraphicalElement ID="c"><Shape><Circle HPOS="300" VPOS="200" RADIUS="80"/></Shape>'
        "</GraphicalElement>"
        "</PrintSpace></Page></Layout></alto>"
    )
    out = tmp_path / "out"
    assert run_cli("convert-dataset", tmp_path / "p.xml", "--from", "alto", "--out", out).exit_code == 0
    document = json.loads((out / "coco" / "p.json").read_text())
    names = {category["id"]: category["name"] for category in document["categories"]}
    written = {
        names[a["category_id"]]: _filled(a["segmentation"], (300, 400)) for a in document["annotations"]
    }
    expected = {name: np.zeros((300, 400), dtype=np.uint8) for name in ("illustration", "graphic")}
    cv2.ellipse(expected["illustration"], (150, 80), (100, 60), 0, 0, 360, 1, -1)
    cv2.circle(expected["graphic"], (300, 200), 80, 1, -1)
    assert written.keys() == expected.keys()
    for name, mask in expected.items():
        iou = (mask & written[name]).sum() / (mask | written[name]).sum()
        assert iou > 0.97, (name, iou)


def test_mm10_without_a_page_size_is_scaled_by_the_image_resolution(tmp_path: Path) -> None:
    """ALTO relates mm10 and inch1200 to pixels by the image's resolution; `Page` WIDTH/HEIGHT are optional.
    Such a file with a 300-dpi scan converts (a block at 254 mm10 = 1 inch is at pixel 300), where it was
    refused; with a scan stating no resolution it is still one error line saying what is missing."""
    for name, dpi in (("a.png", (300, 300)), ("b.png", None)):
        Image.new("RGB", (600, 450), "white").save(tmp_path / name, **({"dpi": dpi} if dpi else {}))
    for stem, unit, scale in (("a", "mm10", 254 / 300), ("b", "inch1200", 4)):
        x, y, w, h = (round(v * scale, 3) for v in (300, 150, 150, 75))
        _write_unsized_alto(tmp_path / f"{stem}.xml", unit, f"{stem}.png", (x, y, w, h))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path, "--from", "alto", "--out", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "b.xml" in line and "resolution" in line and "inch1200" in line
    (annotation,) = json.loads((out / "coco" / "a.json").read_text())["annotations"]
    assert np.allclose(annotation["bbox"], [300, 150, 150, 75], atol=0.01)


def test_mm10_without_a_page_size_is_scaled_by_a_jpegs_exif_resolution_as_exif_states_it(
    tmp_path: Path,
) -> None:
    """A camera's or scanner's JPEG states its resolution in EXIF alone (XResolution, YResolution and
    ResolutionUnit, inches where it is not stated). Pillow reads such a file as 72 dpi where it states no
    unit and takes XResolution for both axes, so the page's regions were scaled 300/72 too small or by
    the wrong height; ResolutionUnit 1 (no absolute unit) states no resolution, as in a TIFF."""
    for name, resolution, unit in (
        ("a", (300.0, 300.0), None),
        ("b", (300.0, 150.0), 2),
        ("c", (300.0, 300.0), 1),
    ):
        exif = Image.Exif()
        exif[282], exif[283] = resolution
        if unit is not None:
            exif[296] = unit
        Image.new("RGB", (600, 450), "white").save(tmp_path / f"{name}.jpg", exif=exif)
        x, y, w, h = (
            round(value * 254 / dpi, 3)
            for value, dpi in zip((300, 150, 150, 75), resolution * 2, strict=True)
        )
        _write_unsized_alto(tmp_path / f"{name}.xml", "mm10", f"{name}.jpg", (x, y, w, h))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path, "--from", "alto", "--out", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "c.xml" in line and "resolution" in line
    for name in ("a", "b"):
        (annotation,) = json.loads((out / "coco" / f"{name}.json").read_text())["annotations"]
        assert np.allclose(annotation["bbox"], [300, 150, 150, 75], atol=0.01), (name, annotation["bbox"])


def test_mm10_without_a_page_size_and_an_unreadable_image_names_the_image(tmp_path: Path) -> None:
    """Scaling mm10 by the image's resolution opens the image: one that cannot be read was reported as a
    missing resolution ('<Page> WIDTH/HEIGHT (or an image stating its resolution) are needed'), the damaged
    file unnamed. The error now names the image and why it cannot be read."""
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "c.xml").write_text(
        f'<alto xmlns="{ALTO4}"><Description><MeasurementUnit>mm10</MeasurementUnit>'
        "<sourceImageInformation><fileName>c.png</fileName></sourceImageInformation></Description>"
        '<Layout><Page ID="p"><PrintSpace><TextBlock ID="t" HPOS="10" VPOS="10" WIDTH="50" HEIGHT="50"/>'
        "</PrintSpace></Page></Layout></alto>"
    )
    result = run_cli("convert-dataset", tmp_path, "--from", "alto", "--out", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert f"{tmp_path / 'c.png'}: not an image" in line and "WIDTH/HEIGHT" not in line, line


def _write_unsized_alto(path: Path, unit: str, image: str, box: tuple[float, float, float, float]) -> None:
    """An ALTO file in `unit` whose Page states no size, with one TextBlock at `box` (HPOS, VPOS, WIDTH,
    HEIGHT) on the image file named `image`."""
    x, y, w, h = box
    path.write_text(
        f'<alto xmlns="{ALTO4}"><Description><MeasurementUnit>{unit}</MeasurementUnit>'
        f"<sourceImageInformation><fileName>{image}</fileName></sourceImageInformation>"
        f'</Description><Layout><Page ID="p"><PrintSpace><TextBlock ID="t" HPOS="{x}" VPOS="{y}" '
        f'WIDTH="{w}" HEIGHT="{h}"/></PrintSpace></Page></Layout></alto>'
    )
