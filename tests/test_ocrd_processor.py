"""`ocrd-docsam-segment` on OCR-D workspaces of real pages, with the tiny parity model.

End to end: a workspace made with `ocrd workspace init` / `ocrd workspace add` from two pages of OCR-D's
structure ground truth (a colour JPEG and a 1-bit TIFF), the processor run as a real process, then the
output file group checked in the METS and each PAGE file against the 2019 page_schema, OCR-D's own PAGE
validator, and what `docsam segment --format page` writes for the same images. In-process (one processor,
one model load): a page that cannot be read under each OCRD_MISSING_OUTPUT policy, and a ground-truth PAGE
with a Border as input, its regions kept.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import PROJECT_ROOT, run_docsam
from inputs_corpus import write_bomb_png
from instances_factory import make_instances, rect_mask
from lxml import etree
from PIL import Image
from segment_helpers import run_segment

pytest.importorskip("ocrd", reason="the OCR-D processor needs the `ocrd` extra: pip install '.[test,ocrd]'")

from click.testing import CliRunner
from ocrd import Resolver, Workspace
from ocrd.cli import cli as ocrd_cli
from ocrd_models.ocrd_page import parse
from ocrd_utils import MIMETYPE_PAGE, polygon_from_points
from ocrd_validators import PageValidator
from shapely.geometry import Polygon

from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from docsam_cli.ocrd.processor import DocsamSegment, SetupError
from docsam_cli.writers.page_map import REGION_ELEMENTS
from model.instances import PageInstances

GT = Path("pages/ocrd-gt-structure-text/data")
PAGES = [  # (physical page id, image) from the structure ground truth
    ("PHYS_0001", GT / "laube_europa0202_1837/GT-PAGE/laube_europa0202_1837_0007.jpg"),
    ("PHYS_0002", GT / "bebel_frau_1879/GT-PAGE/bebel_frau_1879_0146.tif"),
]
MIMETYPES = {".jpg": "image/jpeg", ".tif": "image/tiff"}
CLASSES = "text,title,table,figure,separator,text line"
# Small and fast: the tiny model on a 192-pixel short side in 192-pixel windows.
FAST = {"device": "cpu", "short_side": 192, "window": 192, "classes": CLASSES}
OUTPUT = "OCR-D-SEG-DOCSAM"


def ocrd(*args: str) -> None:
    """`ocrd ARGS` (OCR-D's own command line, in this process)."""
    result = CliRunner().invoke(ocrd_cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def make_workspace(directory: Path, shared_data: Path, pages=PAGES, replace: dict | None = None) -> Path:
    """A workspace with the page images in OCR-D-IMG (`replace`: page id → bytes to store instead)."""
    (directory / "OCR-D-IMG").mkdir(parents=True)
    ocrd("workspace", "-d", str(directory), "init")
    for number, (page_id, image) in enumerate(pages, 1):
        local = Path("OCR-D-IMG") / f"OCR-D-IMG_{number:04}{image.suffix}"
        data = (replace or {}).get(page_id) or (shared_data / image).read_bytes()
        (directory / local).write_bytes(data)
        ocrd(
            "workspace", "-d", str(directory), "add", "-G", "OCR-D-IMG", "-i", f"OCR-D-IMG_{number:04}",
            "-g", page_id, "-m", MIMETYPES[image.suffix], str(directory / local),
        )  # fmt: skip
    return directory / "mets.xml"


def processor_command() -> list[str]:
    """The installed `ocrd-docsam-segment` beside this Python (`pip install '.[ocrd]'`, as in CI), else the
    same command line through `python -m docsam_cli.ocrd` (a checkout on PYTHONPATH)."""
    script = Path(sys.executable).parent / "ocrd-docsam-segment"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "docsam_cli.ocrd"]


def parameter_options(parameters: dict) -> list[str]:
    return [item for name, value in parameters.items() for item in ("-P", name, str(value))]


def region_elements(page: etree._Element) -> list[etree._Element]:
    return [element for element in page if etree.QName(element).localname in REGION_ELEMENTS]


def check_page_file(
    path: Path,
    page_schema: etree.XMLSchema,
    image: Path,
    ours: Callable[[str], bool] = lambda region_id: True,
) -> etree._Element:
    """The PAGE file is valid against the schema and describes `image`, and the regions it says are ours
    (default: all) and their lines pass OCR-D's PAGE validator with its coordinate checks (inside the
    Border, lines inside their regions; text consistency is not docsam's business) and have valid
    polygons inside the page. Returns the Page element."""
    document = etree.parse(str(path))
    page_schema.assertValid(document)
    page = document.getroot().find("{*}Page")
    with Image.open(image) as opened:
        width, height = opened.size
    assert (int(page.get("imageWidth")), int(page.get("imageHeight"))) == (width, height)
    checked = [region for region in region_elements(page) if ours(region.get("id"))]
    checked += [line for region in checked for line in region.findall("{*}TextLine")]
    for element in checked:
        points = np.asarray(polygon_from_points(element.find("{*}Coords").get("points")))
        assert Polygon(points).is_valid, element.get("id")
        assert points.min() >= 0 and points[:, 0].max() < width and points[:, 1].max() < height
    report = PageValidator.validate(filename=str(path), page_textequiv_consistency="off", check_coords=True)
    errors = [str(error) for error in report.errors]
    about_ours = [error for error in errors if any(f"ID '{el.get('id')}'" in error for el in checked)]
    assert not about_ours
    if all(ours(region.get("id")) for region in region_elements(page)):
        assert report.is_valid, report.to_xml()
    return page


def page_document(page_attributes: str, content: str = "") -> str:
    """A PAGE 2019 document of one Page element with these attributes (XML text) and content."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"><Metadata>'
        "<Creator>test</Creator><Created>2024-01-01T00:00:00</Created>"
        "<LastChange>2024-01-01T00:00:00</LastChange></Metadata>"
        f"<Page {page_attributes}>{content}</Page></PcGts>"
    )


def reading_order(page: etree._Element) -> list[str]:
    references = page.findall("{*}ReadingOrder//{*}RegionRefIndexed")
    return [ref.get("regionRef") for ref in sorted(references, key=lambda ref: int(ref.get("index")))]


def summary(region: etree._Element) -> tuple:
    """Element, type, class, points and confidence of a region and its lines (ids aside)."""
    coords = region.find("{*}Coords")
    lines = [summary(line) for line in region.findall("{*}TextLine")]
    kind = (etree.QName(region).localname, region.get("type"), region.get("custom"))
    return (*kind, coords.get("points"), float(coords.get("conf")), lines)


@pytest.mark.slow  # two processes that each load the model: about half a minute on a 2-core CPU
def test_end_to_end_on_a_workspace(tmp_path, tiny_weights, reference_fixtures, shared_data, page_schema):
    mets = make_workspace(tmp_path / "workspace", shared_data)
    parameters = {"weights": tiny_weights, "model_config": reference_fixtures / "tiny-config.json", **FAST}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # the shared CI machine: no thread oversubscription
    }
    completed = subprocess.run(
        [*processor_command(), "-m", str(mets), "-I", "OCR-D-IMG", "-O", OUTPUT,
         *parameter_options(parameters)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]

    workspace = Resolver().workspace_from_url(str(mets))
    files = list(workspace.mets.find_files(fileGrp=OUTPUT))
    assert [file.pageId for file in files] == [page_id for page_id, _ in PAGES]
    assert all(file.mimetype == MIMETYPE_PAGE for file in files)

    out = tmp_path / "docsam-segment"
    images = [str(shared_data / image) for _, image in PAGES]
    geometry = ["--short-side", "192", "--window", "192"]  # as FAST (these replace its own)
    code, _, stderr = run_segment(
        tiny_weights, out, *images, *geometry, "--classes", CLASSES, "--format", "page"
    )
    assert code == 0, stderr
    for file, (_, image) in zip(files, PAGES, strict=True):
        path = Path(workspace.directory) / file.local_filename
        page = check_page_file(path, page_schema, shared_data / image)
        source = next(iter(workspace.mets.find_files(fileGrp="OCR-D-IMG", pageId=file.pageId)))
        assert page.get("imageFilename") == source.local_filename
        steps = page.getparent().findall("{*}Metadata/{*}MetadataItem")
        assert any(step.get("value") == "ocrd-docsam-segment" for step in steps)
        regions = region_elements(page)
        assert regions, f"no regions on {image.name}"
        # The same regions, types and reading order as `docsam segment --format page` on the image.
        expected = etree.parse(str(out / "page" / f"{image.stem}.xml")).getroot().find("{*}Page")
        assert sorted(map(summary, regions)) == sorted(map(summary, region_elements(expected)))
        assert reading_order(page) == reading_order(expected)


@pytest.fixture(scope="module")
def processor(tiny_weights) -> DocsamSegment:
    """One processor (one model load) for the in-process tests; each sets its workspace and groups.
    Existing regions are kept (pages given as images have none)."""
    return DocsamSegment(None, parameter={"weights": str(tiny_weights), "existing_regions": "keep", **FAST})


def process(processor: DocsamSegment, workspace: Workspace, input_group: str, output_group: str) -> None:
    processor.workspace, processor.page_id = workspace, None
    processor.input_file_grp, processor.output_file_grp = input_group, output_group
    processor.process_workspace(workspace)
    workspace.save_mets()  # as OCR-D core does after a run that did not stop


@pytest.mark.slow  # the module's processor loads the model; then a page per policy
@pytest.mark.parametrize("policy", ["SKIP", "COPY", "ABORT"])
def test_a_page_that_cannot_be_read_follows_ocrd_missing_output(
    policy, processor, tmp_path, shared_data, page_schema, monkeypatch
):
    image = PAGES[0][1]
    truncated = (shared_data / image).read_bytes()[:30_000]  # a JPEG header, then the data stops
    pages = [("PHYS_0001", image), ("PHYS_0002", image)]
    mets = make_workspace(tmp_path / "workspace", shared_data, pages, replace={"PHYS_0002": truncated})
    workspace = Resolver().workspace_from_url(str(mets))
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", policy)
    monkeypatch.setenv("OCRD_MAX_MISSING_OUTPUTS", "-1")  # no limit on the share of failed pages

    if policy == "ABORT":
        with pytest.raises(OSError, match="truncated"):
            process(processor, workspace, "OCR-D-IMG", OUTPUT)
        # The run stops at the failed page; the page done before it stays in the METS, on disk.
        saved = Resolver().workspace_from_url(str(mets)).mets
        assert [file.pageId for file in saved.find_files(fileGrp=OUTPUT)] == ["PHYS_0001"]
        return
    process(processor, workspace, "OCR-D-IMG", OUTPUT)
    outputs = {file.pageId: file for file in workspace.mets.find_files(fileGrp=OUTPUT)}
    expected_pages = {"SKIP": {"PHYS_0001"}, "COPY": {"PHYS_0001", "PHYS_0002"}}[policy]
    assert set(outputs) == expected_pages
    done = Path(workspace.directory) / outputs["PHYS_0001"].local_filename
    assert region_elements(check_page_file(done, page_schema, shared_data / image))
    if policy == "COPY":  # the failed page's input, unchanged: a PAGE without regions
        copied = etree.parse(str(Path(workspace.directory) / outputs["PHYS_0002"].local_filename))
        page_schema.assertValid(copied)
        assert not region_elements(copied.getroot().find("{*}Page"))


@pytest.mark.parametrize(("name", "content"), [("page.png", b"not an image"), ("page.xml", b"<PcGts><Page")])
def test_under_copy_a_page_whose_input_cannot_be_read_is_left_out_and_the_run_goes_on(
    name, content, processor, tmp_path, monkeypatch
):
    """OCRD_MISSING_OUTPUT=COPY, the second of three pages an image Pillow cannot identify or PAGE XML that
    does not parse: there is no input PAGE to copy. OCR-D core's copy raised the reading error again, which
    ended the whole run there (the third page never done); the page is now left without output, as SKIP
    leaves it, and counted as failed."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "COPY")
    monkeypatch.setenv("OCRD_MAX_MISSING_OUTPUTS", "-1")
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    image = np.full((60, 40, 3), 235, np.uint8)
    image[20:30, 10:30] = 0
    mimetype = MIMETYPE_PAGE if name.endswith(".xml") else "image/png"
    for number in (1, 2, 3):
        local = f"{number}-{name}"
        if number == 2:
            (directory / local).write_bytes(content)
        elif mimetype == MIMETYPE_PAGE:
            Image.fromarray(image).save(directory / f"{number}.png")
            document = page_document(f'imageFilename="{number}.png" imageWidth="40" imageHeight="60"')
            (directory / local).write_text(document, encoding="utf-8")
        else:
            Image.fromarray(image).save(directory / local)
        workspace.add_file(
            "INPUT", file_id=f"IN_{number}", page_id=f"P{number}", mimetype=mimetype, local_filename=local
        )

    process(processor, workspace, "INPUT", OUTPUT)

    assert [file.pageId for file in workspace.mets.find_files(fileGrp=OUTPUT)] == ["P1", "P3"]


@pytest.mark.slow  # the model on a page
def test_a_cropped_page_keeps_its_regions_and_gets_new_ones_inside_its_border(
    processor, tmp_path, shared_data, page_schema
):
    """Input: ground truth PAGE with regions and a Border, here with its lower right corner cut off (the
    image is cropped to the Border's box, the corner filled, before the model sees it). Output: the
    regions kept, the new ones in page coordinates inside the Border."""
    folder = GT / "laube_europa0202_1837/GT-PAGE"
    name = "laube_europa0202_1837_0007"
    directory = tmp_path / "workspace"
    (directory / "GT-PAGE").mkdir(parents=True)
    shutil.copy(shared_data / folder / f"{name}.jpg", directory / "GT-PAGE" / f"{name}.jpg")
    page_xml = (shared_data / folder / f"{name}.xml").read_text(encoding="utf-8")
    rectangle = 'points="1271,1820 1271,41 25,41 25,1820"'
    assert rectangle in page_xml
    cut = page_xml.replace(rectangle, 'points="1271,1300 1271,41 25,41 25,1820 800,1820"')
    (directory / "GT-PAGE" / f"{name}.xml").write_text(cut, encoding="utf-8")
    ocrd("workspace", "-d", str(directory), "init")
    for group, suffix, mimetype in [
        ("OCR-D-IMG", ".jpg", "image/jpeg"),
        ("OCR-D-GT-SEG", ".xml", MIMETYPE_PAGE),
    ]:
        local = directory / "GT-PAGE" / f"{name}{suffix}"
        ocrd("workspace", "-d", str(directory), "add", "-G", group, "-i", f"{group}_0001", "-g", "PHYS_0001",
             "-m", mimetype, str(local))  # fmt: skip
    workspace = Resolver().workspace_from_url(str(directory / "mets.xml"))
    ground_truth = etree.parse(str(directory / "GT-PAGE" / f"{name}.xml")).getroot().find("{*}Page")
    old_ids = [region.get("id") for region in region_elements(ground_truth)]

    process(processor, workspace, "OCR-D-GT-SEG", OUTPUT)

    (output,) = workspace.mets.find_files(fileGrp=OUTPUT)
    image = directory / "GT-PAGE" / f"{name}.jpg"
    # The ground truth's own regions do not all pass OCR-D's validator (one lies outside the Border).
    page = check_page_file(
        Path(workspace.directory) / output.local_filename, page_schema, image, lambda id_: id_ not in old_ids
    )
    ids = [region.get("id") for region in region_elements(page)]
    new_ids = [region_id for region_id in ids if region_id not in old_ids]
    assert set(old_ids) <= set(ids) and new_ids
    border = Polygon(polygon_from_points(page.find("{*}Border/{*}Coords").get("points")))
    for region in region_elements(page):
        if region.get("id") in new_ids:
            outline = Polygon(polygon_from_points(region.find("{*}Coords").get("points")))
            assert outline.within(border.buffer(1.5)), region.get("id")  # OCR-D's validator's slack


def dark_pixels_as_text(model, bgr: np.ndarray, classes: list[str], **options) -> PageInstances:
    """Stands in for the model: the image's dark pixels are one instance of the first class."""
    mask = bgr.mean(axis=2) < 100
    ys, xs = np.nonzero(mask)
    return make_instances([mask], [0], classes, boxes=[[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])


def _workspace_with_a_dark_box(directory: Path) -> tuple[Workspace, np.ndarray]:
    """A new workspace in `directory` and its `page.png` (not yet added): 400x500, light grey, with a black
    box at x 100..249, y 200..299, which `dark_pixels_as_text` finds."""
    workspace = Resolver().workspace_from_nothing(str(directory))
    image = np.full((500, 400, 3), 235, np.uint8)
    image[200:300, 100:250] = 0
    Image.fromarray(image).save(directory / "page.png")
    return workspace, image


@pytest.mark.slow  # the module's processor loads the model (the page itself skips it)
def test_a_dewarped_page_image_is_passed_over_for_the_original(processor, tmp_path, monkeypatch):
    """A dewarped AlternativeImage is no affine map of the page: regions found on it (here: the content
    moved down by 80 px) would land in the wrong place. The original image is segmented instead."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    directory = tmp_path / "workspace"
    workspace, image = _workspace_with_a_dark_box(directory)
    height, width = image.shape[:2]
    dewarped = np.full_like(image, 235)
    dewarped[80:] = image[:-80]
    Image.fromarray(dewarped).save(directory / "dewarped.png")
    workspace.add_file(
        "OCR-D-IMG", file_id="IMG_1", page_id="P1", mimetype="image/png", local_filename="page.png"
    )
    (directory / "dewarped.xml").write_text(
        page_document(
            f'imageFilename="page.png" imageWidth="{width}" imageHeight="{height}"',
            '<AlternativeImage filename="dewarped.png" comments="dewarped"/>',
        ),
        encoding="utf-8",
    )
    workspace.add_file(
        "OCR-D-DEWARP",
        file_id="DEWARP_1",
        page_id="P1",
        mimetype=MIMETYPE_PAGE,
        local_filename="dewarped.xml",
    )

    process(processor, workspace, "OCR-D-DEWARP", OUTPUT)

    assert _only_region_extent(workspace) == ([100, 200], [249, 299])


@pytest.mark.slow  # the module's processor loads the model (the page itself skips it)
def test_regions_traced_along_a_skewed_border_stay_inside_it(processor, tmp_path, monkeypatch, page_schema):
    """A skewed Border (a page cropped and deskewed by a few degrees) cuts the masks along a staircase. A
    one-pixel rule along its edge became its bounding rectangle, and a part joined to the rest by a
    one-pixel neck was widened by a pixel: both reached past the Border by more than the 1.5 px OCR-D's
    validator allows. Each region is now cut to the Border."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    width, height = 400, 500
    border = "100,50 350,80 330,450 80,420"
    image = np.full((height, width, 3), 235, np.uint8)
    cv2.line(image, (98, 80), (84, 400), (0, 0, 0), 1)  # a rule a pixel or two inside the Border's left edge
    Image.fromarray(image).save(directory / "page.png")
    workspace.add_file(
        "OCR-D-IMG", file_id="IMG_1", page_id="P1", mimetype="image/png", local_filename="page.png"
    )
    (directory / "page.xml").write_text(
        page_document(
            f'imageFilename="page.png" imageWidth="{width}" imageHeight="{height}"',
            f'<Border><Coords points="{border}"/></Border>',
        ),
        encoding="utf-8",
    )
    workspace.add_file(
        "OCR-D-BORDER", file_id="BORDER_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="page.xml"
    )

    process(processor, workspace, "OCR-D-BORDER", OUTPUT)

    (output,) = workspace.mets.find_files(fileGrp=OUTPUT)
    path = Path(workspace.directory) / output.local_filename
    assert len(region_elements(check_page_file(path, page_schema, directory / "page.png"))) == 1


def upright_layout(model, bgr: np.ndarray, classes: list[str], **options) -> PageInstances:
    """Stands in for the model on the derived (upright) image: a block holding one text line across the
    top, then a left and a right column."""
    height, width = bgr.shape[:2]
    boxes = [(0.2, 0.1, 0.8, 0.3), (0.25, 0.15, 0.75, 0.2), (0.1, 0.4, 0.45, 0.9), (0.55, 0.4, 0.9, 0.9)]
    masks, pixel_boxes = [], []
    for x0, y0, x1, y1 in boxes:
        box = [round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)]
        masks.append(rect_mask(height, width, *box))
        pixel_boxes.append(box)
    labels = [classes.index(name) for name in ("text", "text line", "text", "text")]
    return make_instances(masks, labels, classes, boxes=pixel_boxes)


@pytest.mark.slow  # the module's processor loads the model (the page itself skips it)
@pytest.mark.parametrize("orientation", [0, 90, 180, 270, 8, -20, 30, 45, 135, 260])
def test_a_turned_page_is_read_and_baselined_as_its_text_runs(
    processor, tmp_path, monkeypatch, page_schema, orientation
):
    """Page/@orientation 90: OCR-D hands over the page turned upright. The reading order and the
    baselines were worked out on the unturned page, so the right column came first and a line's baseline
    ran across it; they follow the text now, in page coordinates. At other angles (8°, 30°, 45°, 135°: a
    deskewed page) the reading order was worked out on the regions' boxes on the skewed page, which overlap
    across the gutter: the right column came first, or a column before the block across the top; it is
    worked out on the deskewed image now."""
    monkeypatch.setattr("model.inference.segment_page", upright_layout)
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    width, height = 400, 300
    Image.fromarray(np.full((height, width, 3), 235, np.uint8)).save(directory / "page.png")
    workspace.add_file(
        "OCR-D-IMG", file_id="IMG_1", page_id="P1", mimetype="image/png", local_filename="page.png"
    )
    (directory / "turned.xml").write_text(
        page_document(
            f'imageFilename="page.png" imageWidth="{width}" imageHeight="{height}" '
            f'orientation="{orientation}"'
        ),
        encoding="utf-8",
    )
    workspace.add_file(
        "OCR-D-TURN", file_id="TURN_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="turned.xml"
    )

    process(processor, workspace, "OCR-D-TURN", OUTPUT)

    (output,) = workspace.mets.find_files(fileGrp=OUTPUT)
    path = Path(workspace.directory) / output.local_filename
    page = check_page_file(path, page_schema, directory / "page.png")
    report = PageValidator.validate(filename=str(path), page_textequiv_consistency="off", check_baseline=True)
    assert report.is_valid, report.to_xml()
    turned = parse(str(directory / "turned.xml"), silence=True)
    _, coords, _ = workspace.image_from_page(turned.get_Page(), "P1")

    def upright(points: str) -> np.ndarray:  # page points where the derived (upright) image shows them
        page_points = np.asarray(polygon_from_points(points), dtype=np.float64)
        return page_points @ coords["transform"][:2, :2].T + coords["transform"][:2, 2]

    regions = {region.get("id"): region for region in region_elements(page)}
    order = reading_order(page)
    lefts = [upright(regions[region_id].find("{*}Coords").get("points"))[:, 0].min() for region_id in order]
    assert len(order) == 3 and lefts[1] < lefts[2]  # the upright left column before the right one
    assert regions[order[0]].find("{*}TextLine") is not None  # after the block across the top
    (line,) = page.iter("{*}TextLine")
    baseline = upright(line.find("{*}Baseline").get("points"))
    line_points = upright(line.find("{*}Coords").get("points"))
    assert baseline[-1, 0] - baseline[0, 0] >= 0.9 * np.ptp(line_points[:, 0])  # left to right, whole line
    assert abs(baseline[:, 1].mean() - line_points[:, 1].max()) <= 1.5  # on the line's lower edge


@pytest.mark.slow  # the module's processor loads the model (the page itself skips it)
@pytest.mark.parametrize("orientation", [0, 90, 180, 270, -90])
@pytest.mark.parametrize("derived", [False, True], ids=["turned-by-core", "turned-image-file"])
def test_a_turned_page_s_regions_cover_the_same_pixels_of_the_page(
    processor, tmp_path, monkeypatch, orientation, derived
):
    """Page/@orientation a quarter or half turn, the page turned by core or read from a turned and
    cropped AlternativeImage file: the regions found on the turned image are turned back onto exactly the
    page's pixels. OCR-D's transform turns the page about its centre in coordinates where pixel x spans
    x..x+1; taken as a map of pixel indices, it put every region a pixel off (x 101..250 for pixels
    100..249 at 180°)."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    directory = tmp_path / "workspace"
    workspace, image = _workspace_with_a_dark_box(directory)
    height, width = image.shape[:2]
    attributes = (
        f'imageFilename="page.png" imageWidth="{width}" imageHeight="{height}" orientation="{orientation}"'
    )
    border = '<Border><Coords points="50,40 370,40 370,460 50,460"/></Border>'
    (directory / "turned.xml").write_text(page_document(attributes, border), encoding="utf-8")
    if derived:  # an earlier step saved the cropped, turned image, as OCR-D's processors do
        turned = parse(str(directory / "turned.xml"), silence=True)
        derived_image, coords, _ = workspace.image_from_page(turned.get_Page(), "P1")
        derived_image.save(directory / "derived.png")
        alternative = f'<AlternativeImage filename="derived.png" comments="{coords["features"]}"/>'
        document = page_document(attributes, alternative + border)
        (directory / "turned.xml").write_text(document, encoding="utf-8")
    workspace.add_file(
        "OCR-D-TURN", file_id="TURN_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="turned.xml"
    )

    process(processor, workspace, "OCR-D-TURN", OUTPUT)

    assert _only_region_extent(workspace) == ([100, 200], [249, 299])


def test_a_page_without_a_size_fails_naming_it(processor, tmp_path, monkeypatch):
    """imageWidth/imageHeight 0 (kraken's zero_dims.xml): the page fails with its reason; OpenCV would
    read a 0x0 target as the image's own size and write regions outside the declared page."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    Image.fromarray(np.full((50, 40, 3), 235, np.uint8)).save(directory / "page.png")
    (directory / "page.xml").write_text(
        page_document('imageFilename="page.png" imageWidth="0" imageHeight="0"'),
        encoding="utf-8",
    )
    workspace.add_file(
        "OCR-D-GT", file_id="GT_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="page.xml"
    )
    with pytest.raises(ValueError, match="PAGE imageWidth x imageHeight is 0x0, not a page size"):
        process(processor, workspace, "OCR-D-GT", OUTPUT)


@pytest.fixture
def pixel_limit_restored():
    """A processor's run sets the pixel limit process-wide (as it would for its one run); the tests
    after this one get the default back."""
    yield
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


def image_workspace(directory: Path, write_image: Callable[[Path], object]) -> Workspace:
    """A workspace of one page given as an image, `page.png`, in OCR-D-IMG."""
    workspace = Resolver().workspace_from_nothing(str(directory))
    write_image(directory / "page.png")
    workspace.add_file(
        "OCR-D-IMG", file_id="IMG_1", page_id="P1", mimetype="image/png", local_filename="page.png"
    )
    return workspace


@pytest.mark.slow  # the processor loads the model
def test_a_page_image_over_the_pixel_limit_fails_naming_the_parameter_that_raises_it(
    tiny_weights, tmp_path, monkeypatch, pixel_limit_restored
):
    """A 400-megapixel PNG of a few dozen KB (a 600-dpi newspaper scan is 243 Mpx) failed in Pillow's
    words, "could be decompression bomb DOS attack", with no way to raise the limit; it fails naming the
    parameter that does, before any pixel is decoded."""
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    workspace = image_workspace(tmp_path / "workspace", write_bomb_png)
    processor = DocsamSegment(None, parameter={"weights": str(tiny_weights), **FAST})
    expected = (
        "the page image of 400000000 pixels exceeds the decompression-bomb limit of 178956970 pixels "
        r"\(raise the limit with the parameter max_image_pixels, 0 for none, if the file is trusted\)$"
    )
    with pytest.raises(ValueError, match=expected):
        process(processor, workspace, "OCR-D-IMG", OUTPUT)


@pytest.mark.slow  # a processor (a model load) per limit; the page itself skips the model
@pytest.mark.parametrize(("limit", "processed"), [(1999, False), (2000, True), (0, True)])
def test_max_image_pixels_sets_the_largest_page_image_processed(
    limit, processed, tiny_weights, tmp_path, monkeypatch, pixel_limit_restored
):
    """A 50 x 40 page (2000 pixels) under max_image_pixels 1999, 2000 and 0 (no limit)."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    page = np.full((40, 50, 3), 235, np.uint8)
    page[10:30, 10:40] = 0
    workspace = image_workspace(tmp_path / "workspace", Image.fromarray(page).save)
    parameters = {"weights": str(tiny_weights), **FAST, "max_image_pixels": limit}
    processor = DocsamSegment(None, parameter=parameters)
    if not processed:
        with pytest.raises(
            ValueError, match="2000 pixels exceeds the decompression-bomb limit of 1999 pixels"
        ):
            process(processor, workspace, "OCR-D-IMG", OUTPUT)
        return
    process(processor, workspace, "OCR-D-IMG", OUTPUT)
    (output,) = workspace.mets.find_files(fileGrp=OUTPUT)
    assert region_elements(etree.parse(str(Path(workspace.directory) / output.local_filename)).getroot()[1])


@pytest.mark.slow  # a second processor loads the model; the pages skip it
def test_each_run_of_a_cached_processor_keeps_its_own_pixel_limit(
    processor, tiny_weights, tmp_path, monkeypatch, pixel_limit_restored
):
    """An OCR-D processing worker keeps a processor per parameter set and runs each again for later jobs
    without setting it up anew: a run of the default limit, after a processor of max_image_pixels 1999
    was set up, failed its 100 x 80 page, "8000 pixels exceeds the decompression-bomb limit of 178956970
    pixels", Pillow's process-wide limit being the one set up last. Each run applies its own limit."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    page = np.full((80, 100, 3), 235, np.uint8)
    page[10:70, 10:90] = 0
    workspace = image_workspace(tmp_path / "workspace", Image.fromarray(page).save)
    strict = DocsamSegment(None, parameter={"weights": str(tiny_weights), **FAST, "max_image_pixels": 1999})
    process(processor, workspace, "OCR-D-IMG", OUTPUT)
    assert [file.pageId for file in workspace.mets.find_files(fileGrp=OUTPUT)] == ["P1"]
    with pytest.raises(ValueError, match="8000 pixels exceeds the decompression-bomb limit of 1999 pixels"):
        process(strict, workspace, "OCR-D-IMG", "OCR-D-STRICT")


@pytest.mark.parametrize(
    "points", ["10,10 10,10 10,10 10,10", "5,10 20,10 35,10 20,10", "10,5 10,50", "50,70 90,70 90,90 50,90"]
)
def test_a_border_that_encloses_no_area_of_the_page_fails_the_page_saying_so(
    points, processor, tmp_path, monkeypatch
):
    """A Border whose points are all equal, on one line or off the page: core crops the image to nothing,
    and the page failed with "page has an empty side: (0, 0)"; it fails naming its Border now."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    Image.fromarray(np.full((60, 40, 3), 235, np.uint8)).save(directory / "page.png")
    (directory / "page.xml").write_text(
        page_document(
            'imageFilename="page.png" imageWidth="40" imageHeight="60"',
            f'<Border><Coords points="{points}"/></Border>',
        ),
        encoding="utf-8",
    )
    workspace.add_file(
        "OCR-D-GT", file_id="GT_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="page.xml"
    )
    message = f"^PAGE Border '{points}' encloses no area of the 40x60 page, so there is nothing to segment"
    with pytest.raises(ValueError, match=message):
        process(processor, workspace, "OCR-D-GT", OUTPUT)


@pytest.mark.parametrize(
    ("version", "border"),
    [
        (
            "2010-03-19",
            '<Border><Coords><Point x="0" y="0"/><Point x="39" y="0"/><Point x="39" y="59"/></Coords>'
            "</Border>",
        ),
        ("2019-07-15", "<Border/>"),
        ("2019-07-15", '<Border><Coords points=""/></Border>'),
    ],
)
def test_a_border_without_points_fails_the_page_saying_so(version, border, processor, tmp_path, monkeypatch):
    """PAGE 2010's Border gives its points as `Point` elements, which OCR-D's object model does not read:
    the page failed with "'NoneType' object has no attribute 'split'"."""
    monkeypatch.setattr("model.inference.segment_page", dark_pixels_as_text)
    monkeypatch.setenv("OCRD_MISSING_OUTPUT", "ABORT")
    directory = tmp_path / "workspace"
    workspace = Resolver().workspace_from_nothing(str(directory))
    Image.fromarray(np.full((60, 40, 3), 235, np.uint8)).save(directory / "page.png")
    document = page_document('imageFilename="page.png" imageWidth="40" imageHeight="60"', border)
    (directory / "page.xml").write_text(document.replace("2019-07-15", version), encoding="utf-8")
    workspace.add_file(
        "OCR-D-GT", file_id="GT_1", page_id="P1", mimetype=MIMETYPE_PAGE, local_filename="page.xml"
    )
    with pytest.raises(
        ValueError, match=r"^PAGE Border has no Coords/@points, so the page's area is unknown"
    ):
        process(processor, workspace, "OCR-D-GT", OUTPUT)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"classes": "table,table"}, "classes names a class twice"),
        ({"classes": "table", "preset": "doclaynet"}, "give either classes or preset, not both"),
        (
            {"model_config": "/nonexistent.json"},
            "model_config /nonexistent.json: cannot read it \\(No such file",
        ),
    ],
)
def test_setup_errors_name_the_parameters_not_segments_options(tiny_weights, parameters, message):
    given = {"weights": str(tiny_weights), "device": "cpu", **parameters}
    with pytest.raises(SetupError, match=message) as caught:
        DocsamSegment(None, parameter=given).setup()
    assert "--" not in str(caught.value)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"weights": "/runs/large--window-1024/model.pth"}, "/runs/large--window-1024/model.pth: no such"),
        ({"weights": "--stride/model.pth"}, "--stride/model.pth: no such weights file"),
        ({"model_config": "/configs/base--keep-size.json"}, "model_config /configs/base--keep-size.json: "),
    ],
)
def test_setup_errors_name_paths_holding_a_parameters_option_as_given(tiny_weights, parameters, message):
    """A path with `--window` in it (a run folder `large--window-1024`) was named in the error without its
    `--`, as if it were the option: '/runs/largewindow-1024/model.safetensors: no such weights file', a
    path the user never gave."""
    given = {"weights": str(tiny_weights), "device": "cpu", **parameters}
    with pytest.raises(SetupError) as caught:
        DocsamSegment(None, parameter=given)
    assert str(caught.value).startswith(message)


def test_a_page_map_naming_a_class_not_segmented_is_a_warning_naming_the_parameter(tiny_weights, caplog):
    """`-P classes table,figure -P page_map '{"Tabel": "GraphicRegion:stamp"}'` (a typo, or a class of
    another run's list) wrote the tables as TableRegions without a word, the entry left unused; the
    processor warns at setup as `docsam segment --page-map` does, naming its parameter."""
    given = {
        "weights": str(tiny_weights),
        "device": "cpu",
        "classes": "table,figure",
        "page_map": {"Tabel": "GraphicRegion:stamp", "FIGURE": "ImageRegion"},
    }
    with caplog.at_level(logging.WARNING):
        DocsamSegment(None, parameter=given)  # core sets the processor up as its parameters are set
    assert [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING] == [
        "page_map names a class that the run does not segment, which it leaves unused: 'Tabel' "
        "(the classes: table, figure)"
    ]


@pytest.mark.slow
def test_weights_in_a_folder_that_may_not_be_searched_are_a_setup_error(tmp_path):
    """`Path.exists()` raises for a path in a folder without search permission: the processor ended in a
    PermissionError traceback instead of its one line."""
    closed = tmp_path / "closed"
    closed.mkdir()
    weights = closed / "model.safetensors"
    prelude = (
        "from docsam_cli.ocrd.processor import DocsamSegment, SetupError\n"
        "try:\n"
        f"    DocsamSegment(None, parameter={{'weights': {str(weights)!r}, 'device': 'cpu'}}).setup()\n"
        "except SetupError as error:\n"
        "    raise SystemExit(f'SetupError: {error}')\n"
        "raise SystemExit('no error')"
    )
    closed.chmod(0o600)  # readable, not searchable
    try:
        completed = run_docsam(prelude=prelude, obey_permissions=True)
    finally:
        closed.chmod(0o755)
    assert completed.stderr.splitlines() == [f"SetupError: {weights}: Permission denied"]


def test_weights_installed_in_ocrds_resource_locations_are_found_by_name(tiny_weights, tmp_path, monkeypatch):
    """`-L` lists what `ocrd resmgr` put in $XDG_DATA_HOME/ocrd-resources/ocrd-docsam-segment/: the
    `weights` parameter finds it by name too (it was "no such weights file")."""
    resources = tmp_path / "data" / "ocrd-resources" / "ocrd-docsam-segment"
    resources.mkdir(parents=True)
    (resources / "mymodel.safetensors").symlink_to(tiny_weights)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    processor = DocsamSegment(None, parameter={"weights": "mymodel.safetensors", "device": "cpu"})
    processor.setup()
    assert processor.loaded is not None
    with pytest.raises(SetupError, match=r"nothing\.safetensors: no such weights file"):
        DocsamSegment(None, parameter={"weights": "nothing.safetensors", "device": "cpu"}).setup()


def test_a_model_zoo_name_installed_in_ocrds_resource_locations_is_found_there(
    tiny_weights, tmp_path, monkeypatch
):
    """`-L` lists `docsam-base`, installed with `ocrd resmgr`, and docsam's own cache lacks it: the resource
    is used (it was "docsam-base: not downloaded yet")."""
    resources = tmp_path / "data" / "ocrd-resources" / "ocrd-docsam-segment"
    resources.mkdir(parents=True)
    (resources / "docsam-base").symlink_to(tiny_weights)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    processor = DocsamSegment(None, parameter={"weights": "docsam-base", "device": "cpu"})
    processor.setup()
    assert processor.loaded is not None


class Terminated(Exception):
    """What SIGTERM or SIGHUP raises in the test below where the processor leaves it alone (it would end
    pytest)."""


def terminated(number: int, frame) -> None:
    raise Terminated


@pytest.mark.slow  # the module's processor loads the model (the pages themselves skip it)
@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM", "SIGHUP"])
def test_pages_done_before_ctrl_c_sigterm_or_sighup_stay_listed_in_the_mets(
    stop, processor, tmp_path, shared_data, monkeypatch
):
    """Ctrl-C, SIGTERM (`timeout`, a scheduler's time limit) or SIGHUP (the terminal closed under a run not
    started with `nohup`) on the second page: the first page's PAGE file was written, and the METS lists it
    (it listed no page at all, the files done left on disk unknown to the workspace; SIGTERM and SIGHUP
    ended the process at once)."""
    pages = [("PHYS_0001", PAGES[0][1]), ("PHYS_0002", PAGES[0][1])]
    mets = make_workspace(tmp_path / "workspace", shared_data, pages)
    calls = []

    def interrupted_on_the_second(model, bgr: np.ndarray, classes: list[str], **options) -> PageInstances:
        calls.append(1)
        if len(calls) == 2 and stop == "Ctrl-C":
            raise KeyboardInterrupt
        if len(calls) == 2:
            os.kill(os.getpid(), getattr(signal, stop))
        return dark_pixels_as_text(model, bgr, classes)

    previous = {number: signal.signal(number, terminated) for number in (signal.SIGTERM, signal.SIGHUP)}

    monkeypatch.setattr("model.inference.segment_page", interrupted_on_the_second)
    try:
        with pytest.raises(KeyboardInterrupt):
            process(processor, Resolver().workspace_from_url(str(mets)), "OCR-D-IMG", OUTPUT)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    saved = Resolver().workspace_from_url(str(mets)).mets
    assert [file.pageId for file in saved.find_files(fileGrp=OUTPUT)] == ["PHYS_0001"]


def test_an_interrupted_run_exits_130_as_docsam_does(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM (the METS saved first, as above) ends the processor with the shell's 130, as
    `docsam` commands end; it was click's 'Aborted!' and exit status 1, which reads as a failed page."""
    from docsam_cli.ocrd import processor as module

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "ocrd_cli_wrap_processor", interrupted)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(module.cli, ["-I", "OCR-D-IMG", "-O", OUTPUT])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr


def _only_region_extent(workspace) -> tuple[list[int], list[int]]:
    """The least and greatest page pixel (x, y) of the one region the processor wrote into OUTPUT."""
    (output,) = workspace.mets.find_files(fileGrp=OUTPUT)
    page = etree.parse(str(Path(workspace.directory) / output.local_filename)).getroot().find("{*}Page")
    (region,) = region_elements(page)
    points = np.asarray(polygon_from_points(region.find("{*}Coords").get("points")))
    return points.min(axis=0).tolist(), points.max(axis=0).tolist()
