"""Ground truth for `evaluate`: a unified split folder, a COCO file, or any convertible format → `GtImage`s.

Rasterisation follows the source: polygons of a COCO file are rasterised by pycocotools itself
(`COCO.annToRLE`), so `evaluate` scores exactly what pycocotools would; polygons of a split folder and of
PAGE/ALTO are rasterised as the reference does (`geometry.fill_polygons`: pixel positions, boundary
included). PAGE and ALTO go through the converters' readers and clean-up; their images are not needed
when the XML states the page size.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from docsam_cli.datasets import geometry, layout, rectify
from docsam_cli.datasets.classes import BACKGROUND
from docsam_cli.datasets.convert import FORMATS, read_sources
from docsam_cli.datasets.convert.base import ReadContext, load_json
from docsam_cli.datasets.convert.coco import image_roots
from docsam_cli.datasets.images import ImageNotFound, image_size, resolve_image
from docsam_cli.datasets.records import Instance, SourcePage
from docsam_cli.datasets.xml import local, parse_xml
from docsam_cli.errors import InputError
from docsam_cli.evaluation import GtAnnotation, GtImage

GT_FORMATS = ("auto", "unified", "coco", *(name for name in FORMATS if name != "coco"))


@dataclass
class GroundTruth:
    images: list[GtImage] = field(default_factory=list)
    image_keys: dict[object, str] = field(default_factory=dict)  # COCO image id → image key
    category_names: dict[object, str] = field(default_factory=dict)  # COCO category id → class name
    errors: list[InputError] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """unified, coco, page or alto, from what `path` is. Raises ValueError when it cannot tell."""
    if layout.is_layout(path):
        return "unified"
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    candidates = [path] if path.is_file() else sorted(path.rglob("*.xml")) if path.is_dir() else []
    for candidate in candidates:
        try:
            root = local(parse_xml(candidate))
        except InputError:
            continue
        if root in ("PcGts", "alto"):
            return "page" if root == "PcGts" else "alto"
    children = sorted(path.iterdir()) if path.is_dir() else []
    splits = [child.name for child in children if layout.is_layout(child)]
    if splits:
        raise ValueError(f"{path} holds split folders: evaluate one of {', '.join(splits)}")
    raise ValueError(f"cannot tell the format of {path}")


def load_ground_truth(path: Path, fmt: str, levels: frozenset[str]) -> GroundTruth:
    """Ground truth from `path` in format `fmt` (not "auto"). Raises InputError for an unusable path."""
    if fmt == "unified":
        return _from_coco(_merge_split(path), path, [path / "image"], reference_masks=True)
    if fmt == "coco":
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise InputError(path, "not a COCO dataset (no 'images' list)")
        return _from_coco(data, path, image_roots(path, None))
    return _from_reader(path, fmt, levels)


def _merge_split(folder: Path) -> dict:
    """One COCO dataset from a split's per-image jsons; ids renumbered, categories merged by name.

    Follows the reference loader's category rules: `_background_` is dropped, and so is "text word"
    when "table" exists (§6.2).
    """
    names = layout.list_file(folder).read_text().split("\n")
    images, annotations, category_ids = [], [], {}
    for name in (line.strip() for line in names):
        if not name:
            continue
        path = folder / "coco" / f"{Path(name).stem}.json"
        data = load_json(path)
        if not isinstance(data, dict) or not data.get("images"):
            raise InputError(path, "not a per-image COCO json")
        local_names = {c.get("id"): str(c.get("name", "")).strip() for c in data.get("categories") or []}
        image = {**data["images"][0], "original_id": data["images"][0].get("id"), "id": len(images) + 1}
        images.append(image)
        for annotation in data.get("annotations") or []:
            category = annotation.get("category_id")
            category = category if isinstance(category, str) else local_names.get(category)
            if not category:
                continue
            category_ids.setdefault(category, len(category_ids) + 1)
            annotations.append(
                {
                    **annotation,
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": category_ids[category],
                }
            )
    removed = {BACKGROUND} | ({"text word"} if "table" in category_ids else set())
    kept_ids = {i for name, i in category_ids.items() if name not in removed}
    return {
        "images": images,
        "annotations": [a for a in annotations if a["category_id"] in kept_ids],
        "categories": [{"id": i, "name": name} for name, i in category_ids.items() if i in kept_ids],
    }


def _from_coco(data: dict, path: Path, roots: list[Path], reference_masks: bool = False) -> GroundTruth:
    truth = GroundTruth()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = {"annotations": [], "categories": [], **data}
        try:
            coco.createIndex()
        except (KeyError, TypeError) as error:
            raise InputError(path, f"malformed COCO file ({error!r})") from None
    truth.category_names = {c["id"]: str(c["name"]).strip() for c in coco.dataset["categories"]}
    seen: set[str] = set()
    for entry in coco.dataset["images"]:
        key = Path(str(entry.get("file_name", "")).replace("\\", "/")).stem
        if not key or key in seen:
            truth.errors.append(InputError(path, f"image {entry.get('id')}: missing or repeated file name"))
            continue
        seen.add(key)
        truth.image_keys[entry.get("original_id", entry["id"])] = key
        annotations = []
        for annotation in coco.imgToAnns.get(entry["id"], []):
            gt = _coco_annotation(coco, annotation, truth.category_names, reference_masks)
            if isinstance(gt, str):
                truth.errors.append(InputError(path, f"annotation {annotation.get('id')}: {gt}"))
            else:
                annotations.append(gt)
        image = _find_image(str(entry.get("file_name", "")), roots)
        truth.images.append(GtImage(key, int(entry["height"]), int(entry["width"]), annotations, image))
    return truth


def _find_image(reference: str, roots: list[Path]) -> Path | None:
    for root in roots:
        with contextlib.suppress(ImageNotFound):
            return resolve_image(reference, root, root)[0]
    return None


def _coco_annotation(
    coco: COCO, annotation: dict, names: dict[object, str], reference_masks: bool
) -> GtAnnotation | str:
    """The annotation with its mask (pycocotools' or the reference's), or why it cannot be used."""
    name = names.get(annotation.get("category_id"))
    if name is None:
        return "unknown category_id"
    segmentation = annotation.get("segmentation")
    bbox = annotation.get("bbox")
    if not segmentation:
        if not (isinstance(bbox, list) and len(bbox) == 4):
            return "neither segmentation nor bbox"
        x, y, w, h = bbox
        annotation = {**annotation, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
    try:
        if reference_masks and isinstance(annotation["segmentation"], list):
            image = coco.imgs[annotation["image_id"]]
            polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in annotation["segmentation"]]
            rle = geometry.fill_polygons(polygons, image["height"], image["width"])
        else:
            rle = coco.annToRLE(annotation)
    except (TypeError, ValueError, IndexError, KeyError) as error:
        return f"unusable segmentation ({error})"
    if not (isinstance(bbox, list) and len(bbox) == 4):
        bbox = mask_utils.toBbox(rle).tolist()
    area = annotation.get("area")
    return GtAnnotation(
        name,
        rle,
        tuple(float(v) for v in bbox),
        bool(annotation.get("iscrowd", 0)),
        float(area) if isinstance(area, int | float) else None,
    )


def _from_reader(path: Path, fmt: str, levels: frozenset[str]) -> GroundTruth:
    """Ground truth through a converter's reader (PAGE, ALTO, VOC, YOLO, LabelMe, ICDAR 2013)."""
    truth = GroundTruth()
    seen: set[str] = set()

    def context_for(root: Path) -> ReadContext:
        return ReadContext(root, levels)

    for item in read_sources([path], FORMATS[fmt], context_for):
        if isinstance(item, InputError):
            truth.errors.append(item)
            continue
        try:
            image = gt_image(item)
        except InputError as error:
            truth.errors.append(error)
            continue
        if image.name in seen:
            truth.errors.append(InputError(item.source, f"image '{image.name}' already has ground truth"))
            continue
        seen.add(image.name)
        truth.images.append(image)
    return truth


def gt_image(page: SourcePage) -> GtImage:
    """A page read by a converter's reader as ground truth, cleaned like a conversion cleans it.

    The image is only opened when the annotation does not state the page size in pixels.
    """
    width, height, instances = page.width, page.height, page.instances
    if width is None or page.relative:
        image = page.image
        if image.path is None and image.load is None:
            raise InputError(page.source, f"page size unknown: {page.image_problem or 'no image'}")
        try:
            image_width, image_height = image_size(
                path=image.path, data=image.load() if image.load is not None else None
            )
        except ValueError as error:
            raise InputError(image.path or page.source, str(error)) from None
        if page.relative:
            instances = rectify.scale(instances, image_width / width, image_height / height)
        width, height = image_width, image_height
    width, height = round(width), round(height)
    cleaned, _ = rectify.rectify(instances, width, height)
    annotations = [_xml_annotation(i, width, height) for i in cleaned]
    return GtImage(page.key, height, width, annotations, page.image.path)


def _xml_annotation(instance: Instance, width: int, height: int) -> GtAnnotation:
    rle = geometry.fill_polygons(instance.polygons, height, width)
    bbox = instance.bbox if instance.bbox is not None else geometry.polygons_bbox(instance.polygons)
    return GtAnnotation(instance.category, rle, tuple(np.asarray(bbox, dtype=float).tolist()))
