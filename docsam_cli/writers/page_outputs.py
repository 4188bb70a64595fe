"""Everything one segmented page writes, and the run-level files.

`PageWriter.write` writes a page's outputs (each file atomically) and returns its JSON-lines record; the
batch runner stores that record last, which marks the page done. `PageWriter.start` writes the run-level
file the settings decide (the label maps' class table) before any page, `PageWriter.finish` those made
from the pages (the COCO files) after them. Which files a page needs is `PageFiles`, so that the runner
can tell a finished page from one to do. All writers of a page share one `PageShapes`: each mask is
decoded, and traced into polygons, once.

This module is light to import (the batch runner imports it before any page is written): the writers, and
the OpenCV, pycocotools and shapely they use, are imported only when a page is written.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docsam_cli.atomic import atomic_open
from docsam_cli.inputs.sources import natural_key
from docsam_cli.names import xml_text
from docsam_cli.writers.formats import MaskFormat

if TYPE_CHECKING:
    import numpy as np

    from docsam_cli.writers.class_map import ClassMap
    from docsam_cli.writers.coco import CocoRun
    from model.instances import PageInstances

STATE_DIR = ".docsam"  # records and COCO parts: the run's bookkeeping inside the output folder
COCO_FILE = "coco.json"  # the run's COCO dataset, and its detections as a results list with its ids
RESULTS_FILE = "coco_results.json"
COCO_PARTS = "coco-parts"  # in STATE_DIR: one COCO part per page (`writers.coco.part_file`)
RECORDS = "records"  # in STATE_DIR: one record per page done, written last
# In a stored record only (not in its JSON line): the input's absolute path, which names it from any folder.
STORED_INPUT = "input_absolute"
IMAGE_DIR = "image"  # a page's own image, where the input is no image the other files can name
_IMAGE_REFERENCES = frozenset({"coco", "page", "alto"})  # formats naming the page image


@dataclass(frozen=True)
class OutputSettings:
    out_dir: Path
    formats: frozenset[str]
    class_names: tuple[str, ...]
    mask_format: MaskFormat = "rle"
    page_map: ClassMap | None = None
    alto_map: ClassMap | None = None
    overlay_suffix: str = ".png"


@dataclass(frozen=True)
class PageSource:
    """Where a page came from: `page` is 1-based inside a PDF / multi-page TIFF, None for a single image;
    `unlike_file`: a single image that is not the first image its file stores (`inputs.tasks.Page`);
    `dpi`: the resolution (x, y) of `image` where known (`inputs.tasks.Page.dpi`), kept in its own image."""

    path: Path
    page: int | None
    page_id: str
    image: np.ndarray  # BGR uint8, the page as segmented
    unlike_file: bool = False
    dpi: tuple[float, float] | None = None

    @property
    def own_image(self) -> bool:
        """Whether the outputs name the page's own image (`image/<id>.png`) rather than the input: a PDF or
        TIFF page, or a single image unlike its file's first stored image, which readers (OCR-D, Kraken,
        Tesseract, ignoring EXIF) would take for the page: turned against its coordinates and
        `imageWidth`/`imageHeight`, or a thumbnail before the page; or an image the outputs cannot name
        (`nameable`)."""
        return self.page is not None or self.unlike_file or not nameable(self.path)


def nameable(path: Path) -> bool:
    """Whether PAGE, ALTO and COCO can name the image at `path` as it is: its real path (which references
    are made from) holds no byte that is not UTF-8 and no character XML forbids. They write those
    percent-encoded (`names.xml_text`), so a Latin-1 `M\xfcller.png` would be named `M%FCller.png`, a
    file that does not exist (or another one)."""
    real = os.path.join(os.path.realpath(path.parent), path.name)
    return xml_text(real) == real


class PageFiles:
    """Where the outputs of one page go."""

    def __init__(self, settings: OutputSettings, page_id: str) -> None:
        out = settings.out_dir
        self.settings = settings
        self.page_id = page_id
        self.record = out / STATE_DIR / RECORDS / f"{page_id}.json"
        self.page_xml = out / "page" / f"{page_id}.xml"
        self.alto = out / "alto" / f"{page_id}.xml"
        self.overlay = out / "overlay" / f"{page_id}{settings.overlay_suffix}"
        self.semantic = self.semantic_map(out, page_id)
        self.image = out / IMAGE_DIR / f"{page_id}.png"  # the page's own image (`PageSource.own_image`)

    @staticmethod
    def semantic_map(out_dir: Path, page_id: str) -> Path:
        return out_dir / "semantic" / f"{page_id}.png"

    def listed(self, in_document: bool = False) -> dict[str, Path]:
        """The files a JSON line names under `outputs`, by format (`in_document` as for `required`)."""
        formats, out = self.settings.formats, self.settings.out_dir
        listed = {"image": self.image} if in_document and formats & _IMAGE_REFERENCES else {}
        if "coco" in formats:
            listed["coco"] = out / COCO_FILE
        per_format = {
            "page": self.page_xml,
            "alto": self.alto,
            "overlay": self.overlay,
            "semantic": self.semantic,
        }
        return listed | {name: path for name, path in per_format.items() if name in formats}

    def on_the_image(self) -> list[Path]:
        """The files of the requested formats that state the size of the page's own image and place shapes
        on it (`image/<id>.png`): PAGE, ALTO, the label map. They are removed before the image is replaced,
        so that a page redone from a changed image (another --dpi, a re-exported PDF) and killed before
        they are written again leaves none of the old image's beside the new one."""
        on_the_image = {"page": self.page_xml, "alto": self.alto, "semantic": self.semantic}
        return [path for name, path in on_the_image.items() if name in self.settings.formats]

    def required(self, in_document: bool = False) -> list[Path]:
        """The files that exist once the page is done (the record last); `in_document`: the page has its
        own image (`PageSource.own_image`: a PDF or TIFF page, an image saved upright or a TIFF's page after
        a thumbnail), which the formats that name it get beside them."""
        listed = self.listed(in_document)
        listed.pop("coco", None)  # the run's file, written at its end from the pages' parts
        image = listed.pop("image", None)
        return [self.record, *listed.values(), *([image] if image else [])]


RENDERING_FOLDERS = ("overlay", "semantic")
"""The folders under `--out` of pictures drawn from the pages (overlays, label maps): never a page image."""
_PAGE_FOLDERS = ("page", "alto", *RENDERING_FOLDERS, "image")
"""The folders under `--out` that hold the pages' files, one per page and format."""


def page_folders(out_dir: Path) -> list[Path]:
    """Where the pages' files go: what a run that scans its own output folder must not take for inputs."""
    return [out_dir / name for name in _PAGE_FOLDERS]


def drop_label_maps(out_dir: Path) -> None:
    """Remove the semantic maps of the pages done in `out_dir`, before a run gives the folder other classes
    (`--overwrite`): their pixels number the classes they were made with, and `semantic/classes.json` then
    lists the new ones, as which a page left with the old classes would be read. Such a page is done
    again when named (its record keeps the old classes)."""
    for record in (out_dir / STATE_DIR / RECORDS).glob("*.json"):
        PageFiles.semantic_map(out_dir, record.name.removesuffix(".json")).unlink(missing_ok=True)


def written_folders(out_dir: Path, formats: frozenset[str]) -> list[Path]:
    """The folders under `out_dir` a run writing `formats` puts files in, each after the folder holding it."""
    state = out_dir / STATE_DIR
    folders = [state, state / RECORDS, *([state / COCO_PARTS] if "coco" in formats else [])]
    folders += [folder for folder in page_folders(out_dir) if folder.name in formats]
    return folders + ([out_dir / "image"] if formats & _IMAGE_REFERENCES else [])


def output_folders(out_dir: Path) -> list[Path]:
    """Every folder the writers put files in (for cleaning temporaries a killed run left behind)."""
    state = out_dir / STATE_DIR
    return [out_dir, *page_folders(out_dir), state, state / RECORDS, state / COCO_PARTS]


class PageWriter:
    """Writes the per-page outputs of a run, its class table first and its COCO files at the end."""

    def __init__(self, settings: OutputSettings) -> None:
        self.settings = settings
        self.coco: CocoRun | None = None
        if "coco" in settings.formats:
            from docsam_cli.writers.coco import CocoRun

            self.coco = CocoRun(
                settings.out_dir / STATE_DIR / COCO_PARTS,
                list(settings.class_names),
                mask_format=settings.mask_format,
            )

    def files(self, page_id: str) -> PageFiles:
        return PageFiles(self.settings, page_id)

    def recorded(self) -> list[str]:
        """The ids of the pages with a record in the output folder (done by this run or an earlier one)."""
        records = self.settings.out_dir / STATE_DIR / RECORDS
        return [path.name.removesuffix(".json") for path in records.glob("*.json")]

    def is_done(self, page_id: str, in_document: bool = False) -> bool:
        """Every output the settings ask for exists (a page done by an earlier run; `in_document` as for
        `PageFiles.required`)."""
        complete = all(path.is_file() for path in self.files(page_id).required(in_document))
        return complete and (self.coco is None or self.coco.has_page(page_id))

    def write(self, source: PageSource, instances: PageInstances, timing: Mapping[str, float]) -> dict:
        """Write the page's outputs; return its JSON-lines record, which the caller stores last."""
        from docsam_cli.writers.alto import write_alto
        from docsam_cli.writers.jsonl import page_record
        from docsam_cli.writers.overlay import write_overlay
        from docsam_cli.writers.page_xml import write_page_xml
        from docsam_cli.writers.semantic import write_label_map
        from docsam_cli.writers.shapes import PageShapes

        settings, formats = self.settings, self.settings.formats
        files = self.files(source.page_id)
        shapes = PageShapes(instances)
        outputs = files.listed(in_document=source.own_image)
        if "image" in outputs:
            for path in files.on_the_image():
                path.unlink(missing_ok=True)
            _write_png(files.image, source.image, source.dpi)
        if self.coco is not None:
            fields = _coco_image_fields(source, files, outputs["coco"])
            self.coco.add_page(source.page_id, shapes, _image_name(source, files), fields)
        else:  # an earlier run's part would pass for this segmentation's in a later run with coco
            from docsam_cli.writers.coco import part_file

            part_file(settings.out_dir / STATE_DIR / COCO_PARTS, source.page_id).unlink(missing_ok=True)
        if "page" in formats:
            reference = _image_reference(source, files, files.page_xml)
            write_page_xml(files.page_xml, shapes, reference, settings.page_map)
        if "alto" in formats:
            reference = _image_reference(source, files, files.alto)
            write_alto(
                files.alto,
                shapes,
                reference,
                page_number=source.page or 1,
                alto_map=settings.alto_map,
                page_map=settings.page_map,
            )
        if "overlay" in formats:
            write_overlay(files.overlay, source.image, shapes)
        if "semantic" in formats:
            write_label_map(files.semantic, instances)
        return page_record(
            input_path=str(source.path),
            page=source.page,
            page_id=source.page_id,
            shapes=shapes,
            outputs={name: str(path) for name, path in outputs.items()},
            timing=timing,
        )

    def start(self) -> None:
        """The run-level file the settings alone decide, before any page: the label maps' class table. A
        run killed before its end thus leaves no map of its own beside the table of the folder's earlier
        classes (`--overwrite` with other classes), which would name its pixels wrongly."""
        if "semantic" in self.settings.formats:
            from docsam_cli.writers.semantic import CLASS_TABLE, write_class_table

            write_class_table(self.settings.out_dir / "semantic" / CLASS_TABLE, self.settings.class_names)

    def finish(self, page_ids: list[str]) -> None:
        """The COCO files over every page done in the output folder: those of earlier runs that
        `page_ids` does not list (by page id, in natural order), then `page_ids` (in that order). A run
        that does no page, or other pages than the last one, thus never drops pages from the COCO files
        (an earlier page in the other `--mask-format` is converted); a page whose COCO part was made with
        other classes (an earlier run's) is left out of them."""
        out = self.settings.out_dir
        if self.coco is not None:
            listed = set(page_ids)
            earlier = sorted(
                (page_id for page_id in self.recorded() if page_id not in listed), key=natural_key
            )
            pages = [*earlier, *page_ids]
            self.coco.write(pages, out / COCO_FILE, out / RESULTS_FILE, own_only=True)


def _image_path(source: PageSource, files: PageFiles) -> Path:
    """The image PAGE and ALTO refer to: the input as it was named (a symbolic link is not followed, so
    that a folder of linked scans stays self-contained), or the page's own image (`PageSource.own_image`)."""
    return files.image if source.own_image else Path(os.path.abspath(source.path))


def _image_reference(source: PageSource, files: PageFiles, document: Path) -> str:
    """The image's path relative to the folder of `document`, with forward slashes."""
    return _relative_path(_image_path(source, files), document.parent)


def _relative_path(path: Path, folder: Path) -> str:
    """`path` relative to `folder`, as read from where `folder` really is: a reference is resolved from the
    real folder of the file holding it, so symbolic links among the folders (an output folder linked to
    another disk) are resolved on both sides. The file itself is kept as named, a link included."""
    real = Path(os.path.realpath(path.parent), path.name)
    return Path(os.path.relpath(real, os.path.realpath(folder))).as_posix()


def _image_name(source: PageSource, files: PageFiles) -> str:
    return files.image.name if source.own_image else source.path.name


def _coco_image_fields(source: PageSource, files: PageFiles, coco_json: Path) -> dict[str, str | int]:
    """What `images[]` carries beside the bare `file_name`, which alone cannot tell two `scan.png` of
    different folders apart nor say where a PDF page's image lies: the page id (the name of the page's
    other outputs) and the image's path relative to the COCO file; where that is the page's own image
    (`PageSource.own_image`) also the source file (relative likewise), and for a PDF or TIFF page its
    number."""
    fields: dict[str, str | int] = {
        "page_id": source.page_id,
        "path": _image_reference(source, files, coco_json),
    }
    if source.own_image:
        fields["source"] = _relative_path(Path(os.path.abspath(source.path)), coco_json.parent)
    if source.page is not None:
        fields["page"] = source.page
    return fields


def _write_png(path: Path, image_bgr: np.ndarray, dpi: tuple[float, float] | None = None) -> None:
    """The page image as PNG, with its resolution where known: OCR engines size their layout analysis by it
    (Tesseract, without one: "Invalid resolution 0 dpi. Using 70 instead.")."""
    import cv2

    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    data = encoded.tobytes()
    with atomic_open(path, "wb") as handle:
        handle.write(data if dpi is None else _with_resolution(data, dpi))


_PNG_HEADER_END = 33  # the 8-byte signature and the IHDR chunk, which a PNG starts with
_METRES_PER_INCH = 0.0254


def _with_resolution(png: bytes, dpi: tuple[float, float]) -> bytes:
    """`png` with a pHYs chunk (pixels per metre; OpenCV writes none) right after its header."""
    body = b"pHYs" + struct.pack(">IIB", *(round(value / _METRES_PER_INCH) for value in dpi), 1)
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:_PNG_HEADER_END] + chunk + png[_PNG_HEADER_END:]
