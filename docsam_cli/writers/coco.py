"""COCO output of a run: one dataset-style JSON (images, categories, annotations) and a results-style list.

A run can have many thousands of pages and can be killed and resumed, so pages are not accumulated in
memory: `CocoRun.add_page` writes each page's annotations to its own small part file (atomically, masks
as compressed RLE), and `CocoRun.write` streams the parts of the pages asked for into the final files,
holding one page at a time. Parts of a killed run stay valid, so a resumed run that skips finished pages
still writes them all; a part is named by the page id, so a re-done page replaces its part. A part also
names the classes and the mask format it was made with: one made with others is not a page of this run
(`has_page`), which is done again.

Conventions: categories are the prompted class names in order, ids from 1; image ids follow the order
of `page_ids` from 1, annotation ids from 1, both in the dataset and in the results. `bbox` is the
model's box, corners sorted and clipped to the page (see `boxes`), as [x, y, w, h], in the results list;
the dataset's `bbox` is the mask's own box, as COCO ground truth's is, which its readers take it for
(FiftyOne cuts the mask to it, MMDetection drops an instance whose box is under a pixel wide, CVAT shows
both), and the model's box only for an empty mask. A non-finite `score` is 0; `area` is the mask area;
`iscrowd` 0. `segmentation` is RLE with `counts` as str
(`mask_format="rle"`, exact) or polygons (`"polygon"`: one flat [x1, y1, x2, y2, ...] list per part of
the mask, traced along the pixel edges as COCO reads polygons, so that pycocotools rasterises them back
into the mask, see `polygons.mask_edge_polygons`). In polygon mode the dataset leaves out an instance
without a polygon (an empty mask): COCO has no polygon for it (pycocotools' `annToRLE` fails on `[]`;
detectron2's loader keeps the instance without a segmentation, which fails or drops the image's masks),
and its RLE would make a polygon dataset mixed, which detectron2's `MASK_FORMAT=polygon` refuses. The
results list keeps it.
The results list always carries RLE, the only segmentation `COCO.loadRes` accepts, and so the same
detections in both mask formats. File names and class names go through `names.output_text`, so the JSON
stays valid UTF-8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from docsam_cli import __version__
from docsam_cli.atomic import atomic_open_together, atomic_write_text
from docsam_cli.names import output_text
from docsam_cli.writers.boxes import xyxy_to_xywh
from docsam_cli.writers.formats import MASK_FORMATS, MaskFormat
from docsam_cli.writers.shapes import PageShapes


@dataclass(frozen=True)
class CocoCounts:
    images: int
    annotations: int


def page_annotations(shapes: PageShapes, mask_format: MaskFormat = "rle") -> list[dict[str, Any]]:
    """One page's annotations without ids: category (the class name), score, bbox (the model's), area,
    mask_bbox (the mask's box), rle, and `polygons` in polygon mode (`mask_format` checked by `CocoRun`, its
    caller)."""
    annotations = []
    for index, rle in enumerate(shapes.instances.masks):
        annotation: dict[str, Any] = {
            "category": shapes.class_name(index),
            "score": round(shapes.score(index), 6),
            "bbox": [round(value, 2) for value in xyxy_to_xywh(shapes.boxes[index])],
            "area": int(shapes.areas[index]),
            "mask_bbox": list(shapes.mask_boxes[index]),
            "rle": {"size": [int(side) for side in rle["size"]], "counts": _counts_text(rle["counts"])},
        }
        if mask_format == "polygon":
            annotation["polygons"] = [polygon.reshape(-1).tolist() for polygon in shapes.edge_polygons(index)]
        annotations.append(annotation)
    return annotations


def _text(value: Any) -> Any:
    return output_text(value) if isinstance(value, str) else value


def _counts_text(counts: bytes | str) -> str:
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def part_file(parts_dir: Path, page_id: str) -> Path:
    """Where a page's COCO part lies."""
    return parts_dir / f"{page_id}.json"


class CocoRun:
    """Per-page parts in `parts_dir`, assembled by `write` into the run's COCO files."""

    def __init__(
        self,
        parts_dir: str | os.PathLike[str],
        class_names: Sequence[str],
        *,
        mask_format: MaskFormat = "rle",
    ) -> None:
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask format must be one of {', '.join(MASK_FORMATS)}, not {mask_format!r}")
        self.parts_dir = Path(parts_dir)
        self.class_names = [output_text(name) for name in class_names]
        self.mask_format = mask_format

    def part_path(self, page_id: str) -> Path:
        return part_file(self.parts_dir, page_id)

    def has_page(self, page_id: str, *, any_mask_format: bool = False) -> bool:
        """Whether the page has a readable part made with this run's classes (in this order: they number
        the categories) and mask format (any, with `any_mask_format`: `write` converts it). A part written
        before parts named their classes counts if its annotations' classes are among this run's; one
        written before they named their mask format has polygons in polygon mode only."""
        try:
            part = _read(self.part_path(page_id))
        except (OSError, ValueError):
            return False
        return self._is_own(part, any_mask_format=any_mask_format)

    def _is_own(self, part: dict[str, Any], *, any_mask_format: bool) -> bool:
        """Whether a part read from its file is a page of this run (see `has_page`)."""
        annotations = part["annotations"]
        if any_mask_format:
            same_format = True
        elif "mask_format" in part:
            same_format = part["mask_format"] == self.mask_format
        else:
            polygons = [("polygons" in annotation) for annotation in annotations]
            same_format = all(polygons) if self.mask_format == "polygon" else not any(polygons)
        if "classes" in part:
            return same_format and part["classes"] == self.class_names
        return same_format and all(annotation["category"] in self.class_names for annotation in annotations)

    def add_page(
        self,
        page_id: str,
        shapes: PageShapes,
        file_name: str,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one page. `file_name` goes to `images[].file_name`; `extra` adds fields to that image
        entry (e.g. {"source": "doc.pdf", "page": 3})."""
        image = {
            "file_name": output_text(file_name),
            "width": shapes.width,
            "height": shapes.height,
            **{key: _text(value) for key, value in (extra or {}).items()},
        }
        annotations = page_annotations(shapes, self.mask_format)
        part = {
            "classes": self.class_names,
            "mask_format": self.mask_format,
            "image": image,
            "annotations": annotations,
        }
        atomic_write_text(self.part_path(page_id), json.dumps(part, separators=(",", ":")))

    def write(
        self,
        page_ids: Iterable[str],
        dataset_path: str | os.PathLike[str],
        results_path: str | os.PathLike[str] | None = None,
        *,
        own_only: bool = False,
    ) -> CocoCounts:
        """Write the dataset JSON (and the results list) for `page_ids`, in that order, atomically and
        together (`atomic_open_together`: the list's ids are the dataset's, so a run killed between the two
        renames leaves the new dataset without a list, never the list beside a dataset of other pages).
        The counts are the dataset's (in polygon mode without the empty masks the results list keeps).

        Pages without a part (failed pages) are left out, and with `own_only` those whose part is not
        this run's in any mask format (`has_page`). Otherwise raises ValueError if a part names a class
        that is not one of this run's classes (parts left from a run with other `--classes`). Each part
        is read twice (its image, then its annotations), one at a time.
        """
        parts: list[Path] = []  # those written, in order: the image of `parts[k]` has id k + 1
        category_ids = {name: index + 1 for index, name in enumerate(self.class_names)}
        paths = [dataset_path] if results_path is None else [dataset_path, results_path]
        with atomic_open_together(paths) as handles:
            dataset, results = handles[0], (handles[1] if results_path is not None else None)
            dataset.write(_dataset_head(self.class_names))
            for path in map(self.part_path, dict.fromkeys(page_ids)):
                image = self._image_entry(path, own_only)
                if image is not None:
                    parts.append(path)
                    _write_item(dataset, len(parts), {"id": len(parts), **image})
            dataset.write('],\n"annotations":[')
            if results is not None:
                results.write("[")
            annotation_id = result_count = 0
            for image_id, path in enumerate(parts, 1):
                for annotation in _read(path)["annotations"]:
                    category_id = category_ids.get(annotation["category"])
                    if category_id is None:
                        raise ValueError(
                            f"{path}: class {annotation['category']!r} is not one of this run's classes "
                            f"({', '.join(self.class_names)}); delete the stale parts in {self.parts_dir}"
                        )
                    segmentation = self._segmentation(annotation)
                    if segmentation is not None:
                        annotation_id += 1
                        entry = _dataset_annotation(
                            annotation, annotation_id, image_id, category_id, segmentation
                        )
                        _write_item(dataset, annotation_id, entry)
                    if results is not None:
                        result_count += 1
                        _write_item(results, result_count, _result(annotation, image_id, category_id))
            dataset.write("\n]}\n")
            if results is not None:
                results.write("\n]\n")
        return CocoCounts(images=len(parts), annotations=annotation_id)

    def _image_entry(self, path: Path, own_only: bool) -> dict[str, Any] | None:
        """The `images[]` entry (without its id) of the part at `path`; None if there is none or, with
        `own_only`, none of this run's."""
        try:
            part = _read(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            if own_only:
                return None
            raise
        if own_only and not self._is_own(part, any_mask_format=True):
            return None
        return part["image"]

    def _segmentation(self, annotation: dict[str, Any]) -> Any:
        """The annotation's mask in this run's format, None in polygon mode for a mask without a polygon
        (left out of the dataset, see the module doc); a part of an earlier run in the other format
        (every part keeps the RLE) is converted."""
        if self.mask_format == "rle":
            return annotation["rle"]
        polygons = annotation.get("polygons")
        if polygons is None:
            polygons = _edge_polygons(annotation["rle"])
        return polygons or None


def _edge_polygons(rle: Mapping[str, Any]) -> list[list[int]]:
    """The polygons polygon mode writes for a mask (`PageShapes.edge_polygons`), from its stored RLE,
    decoded only inside its bounding box (a whole 300-dpi page took five times as long)."""
    from docsam_cli.polygons import mask_edge_polygons
    from model.instances import decode_rle_window

    x, y, width, height = _rle_box(rle)
    window = decode_rle_window(rle, x, y, width, height)
    return [ring.reshape(-1).tolist() for ring in mask_edge_polygons(window, origin=(x, y))]


def _rle_box(rle: Mapping[str, Any]) -> list[int]:
    """The [x, y, w, h] box of a part's RLE (counts as str), without decoding its pixels."""
    from pycocotools import mask as mask_utils

    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return [int(value) for value in mask_utils.toBbox(encoded)]


def _read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _dataset_head(class_names: Sequence[str]) -> str:
    info = {
        "description": "DocSAM segmentation",
        "version": __version__,
        "date_created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "contributor": f"docsam {__version__}",
    }
    categories = [
        {"id": index + 1, "name": name, "supercategory": ""} for index, name in enumerate(class_names)
    ]
    head = {"info": info, "licenses": [], "categories": categories}
    return json.dumps(head, separators=(",", ":"))[:-1] + ',\n"images":['


def _write_item(handle: IO[str], number: int, item: dict[str, Any]) -> None:
    """One array element per line: the files stay greppable and diffable."""
    handle.write(("\n" if number == 1 else ",\n") + json.dumps(item, separators=(",", ":")))


def _dataset_annotation(
    annotation: dict[str, Any], annotation_id: int, image_id: int, category_id: int, segmentation: Any
) -> dict:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "score": annotation["score"],
        "bbox": _dataset_box(annotation),
        "area": annotation["area"],
        "iscrowd": 0,
        "segmentation": segmentation,
    }


def _dataset_box(annotation: dict[str, Any]) -> list[float]:
    """The dataset's `bbox`: the mask's box (see the module doc), the model's for an empty mask. A part
    written before parts kept the mask's box has it computed from the RLE."""
    if annotation["area"] == 0:
        return annotation["bbox"]
    return annotation["mask_bbox"] if "mask_bbox" in annotation else _rle_box(annotation["rle"])


def _result(annotation: dict[str, Any], image_id: int, category_id: int) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": annotation["bbox"],
        "score": annotation["score"],
        "segmentation": annotation["rle"],
    }
