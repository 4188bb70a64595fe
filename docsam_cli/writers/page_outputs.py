"""Everything one segmented page writes, and the run-level COCO files assembled from the pages.

`PageWriter.write` writes a page's outputs (each file atomically) and returns its JSON-lines record; the
batch runner stores that record last, which marks the page done. `PageWriter.finish` writes the run-level
files. Which files a page needs is `PageFiles`, so that the runner can tell a finished page from one to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docsam_cli.atomic import atomic_open
from docsam_cli.writers.coco import CocoRun, MaskFormat
from docsam_cli.writers.jsonl import page_record
from docsam_cli.writers.overlay import write_overlay
from docsam_cli.writers.page_xml import write_page_xml
from model.instances import PageInstances

STATE_DIR = ".docsam"  # records and COCO parts: the run's bookkeeping inside the output folder


@dataclass(frozen=True)
class OutputSettings:
    out_dir: Path
    formats: frozenset[str]
    class_names: tuple[str, ...]
    mask_format: MaskFormat = "rle"
    page_map: dict[str, tuple[str, str | None]] | None = None
    overlay_suffix: str = ".png"


@dataclass(frozen=True)
class PageSource:
    """Where a page came from: `page` is 1-based inside a PDF / multi-page TIFF, None for a single image."""

    path: Path
    page: int | None
    page_id: str
    image: np.ndarray  # BGR uint8, the page as segmented


class PageFiles:
    """Where the outputs of one page go."""

    def __init__(self, settings: OutputSettings, page_id: str) -> None:
        out = settings.out_dir
        self.settings = settings
        self.page_id = page_id
        self.record = out / STATE_DIR / "records" / f"{page_id}.json"
        self.page_xml = out / "page" / f"{page_id}.xml"
        self.overlay = out / "overlay" / f"{page_id}{settings.overlay_suffix}"
        self.image = out / "image" / f"{page_id}.png"  # the rendered page, for PDF and multi-page TIFF pages

    def required(self) -> list[Path]:
        """The files that exist once the page is done (the record last)."""
        paths = [self.record]
        if "page" in self.settings.formats:
            paths.append(self.page_xml)
        if "overlay" in self.settings.formats:
            paths.append(self.overlay)
        return paths


def output_folders(out_dir: Path) -> list[Path]:
    """Every folder the writers put files in (for cleaning temporaries a killed run left behind)."""
    state = out_dir / STATE_DIR
    return [
        out_dir,
        out_dir / "page",
        out_dir / "overlay",
        out_dir / "image",
        state / "records",
        state / "coco-parts",
    ]


class PageWriter:
    """Writes the per-page outputs of a run and, at the end, its COCO files."""

    def __init__(self, settings: OutputSettings) -> None:
        self.settings = settings
        self.coco = (
            CocoRun(
                settings.out_dir / STATE_DIR / "coco-parts",
                list(settings.class_names),
                mask_format=settings.mask_format,
            )
            if "coco" in settings.formats
            else None
        )

    def files(self, page_id: str) -> PageFiles:
        return PageFiles(self.settings, page_id)

    def is_done(self, page_id: str) -> bool:
        """Every output the settings ask for exists (a page done by an earlier run)."""
        complete = all(path.is_file() for path in self.files(page_id).required())
        return complete and (self.coco is None or self.coco.has_page(page_id))

    def write(self, source: PageSource, instances: PageInstances, timing: Mapping[str, float]) -> dict:
        """Write the page's outputs; return its JSON-lines record, which the caller stores last."""
        settings = self.settings
        files = self.files(source.page_id)
        outputs: dict[str, str] = {}
        if source.page is not None and settings.formats & {"coco", "page"}:
            _write_png(files.image, source.image)
            outputs["image"] = str(files.image)
        if self.coco is not None:
            self.coco.add_page(source.page_id, instances, _image_name(source, files))
            outputs["coco"] = str(settings.out_dir / "coco.json")
        if "page" in settings.formats:
            image_ref = Path(os.path.relpath(_image_path(source, files), files.page_xml.parent)).as_posix()
            write_page_xml(files.page_xml, instances, image_ref, settings.page_map)
            outputs["page"] = str(files.page_xml)
        if "overlay" in settings.formats:
            write_overlay(files.overlay, source.image, instances)
            outputs["overlay"] = str(files.overlay)
        return page_record(
            input_path=str(source.path),
            page=source.page,
            page_id=source.page_id,
            instances=instances,
            outputs=outputs,
            timing=timing,
        )

    def finish(self, page_ids: list[str]) -> None:
        """The run-level files over `page_ids` (in that order)."""
        if self.coco is not None:
            out = self.settings.out_dir
            self.coco.write(page_ids, out / "coco.json", out / "coco_results.json")


def _image_path(source: PageSource, files: PageFiles) -> Path:
    """The image a PAGE file refers to: the input itself, or the rendered page of a PDF / TIFF frame."""
    return files.image if source.page is not None else source.path.resolve()


def _image_name(source: PageSource, files: PageFiles) -> str:
    return files.image.name if source.page is not None else source.path.name


def _write_png(path: Path, image_bgr: np.ndarray) -> None:
    import cv2

    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    with atomic_open(path, "wb") as handle:
        handle.write(encoded.tobytes())
