"""Ground truth for `evaluate`: a unified split folder, a COCO file, or any convertible format → `GtImage`s.

Rasterisation follows the source: polygons of a COCO file are rasterised by pycocotools (as
`COCO.annToRLE` does), so `evaluate` scores exactly what pycocotools would; polygons of a split folder and
of PAGE/ALTO are rasterised as the reference does (`geometry.fill_polygons`: pixel positions, boundary
included). PAGE and ALTO go through the converters' readers and clean-up; their images are not needed
when the XML states the page size. Whatever cannot be read is an error of its image, which is left out;
the other images are scored.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from docsam_cli.datasets import geometry, layout, rectify
from docsam_cli.datasets.classes import BACKGROUND, dropped_by_loader
from docsam_cli.datasets.coco_json import RLE_PIXELS, CocoDataset, CocoImage, read_dataset
from docsam_cli.datasets.convert import FORMATS, read_sources, source_files
from docsam_cli.datasets.convert.base import ReadContext
from docsam_cli.datasets.convert.coco import annotation_polygons, find_image
from docsam_cli.datasets.images import ImageFinder, ImageNotFound, file_name_stem, image_size, url_path
from docsam_cli.datasets.records import Instance, Note, SourcePage
from docsam_cli.datasets.xml import root_name
from docsam_cli.errors import InputError
from docsam_cli.evaluation import GtAnnotation, GtImage
from docsam_cli.inputs.images import check_pixel_limit, open_image, to_first_page, upright_header
from docsam_cli.names import output_text

_XML_ROOTS = {"PcGts": "page", "alto": "alto"}  # root element → the format of XML ground truth


@dataclass
class GroundTruth:
    images: list[GtImage] = field(default_factory=list)
    image_keys: dict[int | str, str] = field(default_factory=dict)  # COCO image id → image key
    # COCO image id → the keys of the images sharing it (a unified split's per-image jsons may repeat ids)
    shared_ids: dict[int | str, list[str]] = field(default_factory=dict)
    category_ids: dict[int | str, str] = field(default_factory=dict)  # COCO category id → class name
    # COCO category id → the classes it names (a unified split's per-image jsons may number them apart)
    shared_category_ids: dict[int | str, list[str]] = field(default_factory=dict)
    placeholders: set[str] = field(default_factory=set)  # categories that are no class (`_placeholders`)
    errors: list[InputError] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # image keys taken
    failed: set[str] = field(default_factory=set)  # keys of images left out on an error
    failed_ids: dict[int | str, str] = field(default_factory=dict)  # COCO image id → key, of those
    # Regions left out of pages that are scored (no usable coordinates, off the page): `FILE: where: why`
    warnings: list[str] = field(default_factory=list)
    # Image stem → {key: image path} of the pages sharing that stem (vol1/0001.tif, vol2/0001.tif), each
    # keyed by the end of its path that tells it apart (`vol1/0001`)
    repeated: dict[str, dict[str, Path]] = field(default_factory=dict)
    _indexes: dict[str, _RepeatedPages] = field(default_factory=dict, repr=False)  # `page_key`'s, by stem
    _comparable: dict[str, list[str]] | None = field(default=None, repr=False)  # `_own_stem`'s, of stems

    @property
    def unreadable(self) -> set[str]:
        """The keys of pages whose ground truth could not be read (and that no other file gives ground
        truth): an error line says why, so their predictions are no pages missing from the ground truth."""
        return self.failed - self.keys

    def left_out(self, error: InputError, key: str, identifier: int | str | None = None) -> None:
        """Record the `error` of the image of key `key` ("": unknown) and COCO id `identifier` (None:
        unknown), which is left out."""
        self.errors.append(error)
        if key:
            self.failed.add(key)
            if identifier is not None:
                self.failed_ids[identifier] = key

    def page_key(self, stem: str, image: Path | None = None, name: str | None = None) -> str:
        """The key of the ground-truth page that a prediction of an image of stem `stem` is of: the stem,
        unless several pages of the ground truth have it; then the page whose image is `image` (the file
        the prediction names, where it exists), else the one whose key ends `name` (the image's path as
        the prediction names it, `../scans/vol2/0001.tif`: `vol2/0001`). Raises ValueError when that
        tells none or several of them: the prediction's readers then leave those pages out, as they do
        two predictions of one page."""
        stem = self._own_stem(stem)
        pages = self.repeated.get(stem)
        if not pages:
            return stem
        if stem not in self._indexes:
            self._indexes[stem] = _RepeatedPages(pages)
        index = self._indexes[stem]
        if image is not None:
            same = index.of_file(image)
            if len(same) == 1:
                return same[0]
        if name is not None:
            ends = index.ending(_key_parts(PurePosixPath(name.replace("\\", "/"))))
            if len(ends) == 1:
                return ends[0]
        raise ValueError(
            f"'{stem}' is the name of {len(pages)} pages of the ground truth ({', '.join(pages)}), and "
            "which one is meant cannot be told from the image's path: they are left out"
        )

    def _own_stem(self, stem: str) -> str:
        """`stem` as the ground truth spells it where the two differ only in Unicode normalization (NFC,
        NFD: images copied through macOS come back with decomposed names, `e` and a combining accent, while
        ground truth written elsewhere composes them, `é`) or in how a byte that is not UTF-8 is written
        (predictions, as every UTF-8 output, percent-encode it: `Stra%DFe` for a Latin-1 `Stra\\xdfe`)."""
        if stem in self.keys or stem in self.repeated:
            return stem
        if self._comparable is None:
            self._comparable = defaultdict(list)
            for own in (*self.keys, *self.repeated):
                self._comparable[_comparable_name(own)].append(own)
        same = self._comparable.get(_comparable_name(stem), [])
        return same[0] if len(same) == 1 else stem

    def class_names(self) -> set[str]:
        """The classes the ground truth declares (a COCO file's or a split's categories)."""
        shared = {name for names in self.shared_category_ids.values() for name in names}
        return (set(self.category_ids.values()) | shared) - self.placeholders


def detect_format(path: Path, skip: Path | None = None) -> str:
    """unified, coco, page or alto, from what `path` is (a folder's XML files but those in the folder
    `skip`). Raises ValueError when it cannot tell."""
    if layout.is_layout(path):
        return "unified"
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    found = _xml_formats(path, skip)
    if len(found) > 1:  # PAGE with its ALTO (a Transkribus export's alto/, OCR-D's GT-PAGE and GT-ALTO)
        page, alto = (found[fmt].relative_to(path) for fmt in ("page", "alto"))
        raise ValueError(
            f"{path} holds PAGE files ({page}, ...) and ALTO files ({alto}, ...): say which are the ground "
            "truth with --gt-format page or --gt-format alto"
        )
    if found:
        return next(iter(found))
    if layout.is_unlisted_split(path):  # after the XML files: a PAGE folder may hold image/ and coco/ too
        return "unified"
    splits = layout.split_folders(path)
    if splits:
        raise ValueError(f"{path} holds split folders: evaluate one of {', '.join(splits)}")
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    raise ValueError(f"cannot tell the format of {path}")


def _xml_formats(path: Path, skip: Path | None) -> dict[str, Path]:
    """The first file of each of PAGE and ALTO, by their root elements, among the files conversion's walk
    would read under `path` (any letter case of `.xml`, no hidden ones), but those of the folder `skip`."""
    found: dict[str, Path] = {}
    candidates = source_files(path, FORMATS["page"], skip)[1] if path.exists() else []
    for candidate in candidates:
        fmt = None if isinstance(candidate, InputError) else _XML_ROOTS.get(root_name(candidate) or "")
        if fmt is not None:
            found.setdefault(fmt, candidate)
            if len(found) == len(_XML_ROOTS):
                break
    return found


def load_ground_truth(
    path: Path,
    fmt: str,
    levels: frozenset[str],
    images: Path | None = None,
    skip: Path | None = None,
    classes: Path | None = None,
) -> GroundTruth:
    """Ground truth from `path` in format `fmt` ("unified", "coco" or a name of `FORMATS`); `images`:
    where the images are, if not where the annotations say; `skip`: a folder inside `path` that the walk
    of a converter's format leaves out (the predictions'); `classes`: a YOLO class list (--classes). Raises
    InputError for a path none of whose images can be used."""
    if fmt == "unified":
        return split_ground_truth(path)
    if fmt == "coco":
        return _from_coco(path, images)
    return _from_reader(path, fmt, levels, images, skip, classes)


def _from_coco(path: Path, images: Path | None) -> GroundTruth:
    """A COCO file. An image that states no size takes its image file's, as conversion does; the images
    are numbered in the order of their ids, as pycocotools numbers them (AP ranks tied scores of
    different images in that order)."""
    dataset = read_dataset(path, sizes_required=False)
    truth = GroundTruth(category_ids=dict(dataset.categories.names), errors=list(dataset.errors))
    truth.warnings += dataset.categories.repeated
    truth.placeholders = _placeholders(dataset)
    finder = ImageFinder(path.parent, images)
    read: list[tuple[GtImage, Path, InputError]] = []
    identifiers: dict[int, int | str] = {}  # id() of a page read → its COCO image id
    for image in dataset.images:
        key = file_name_stem(image.file_name)
        if image.error is not None:
            truth.left_out(image.error, key, image.id)
            continue
        try:
            found, not_found = find_image(finder, path, image)[0], None
        except ImageNotFound as error:  # only a model run (`--weights`) or a missing size needs the image
            found, not_found = None, str(error)
        try:
            if image.size is None:
                _size_from_image(path, image, found, not_found)
            check_stated_size(path, image)
        except InputError as error:
            truth.left_out(error, key, image.id)
            continue
        missing = InputError(path, f"{image.where}: {not_found}") if not_found else None
        annotations = _gt_annotations(image, reference_masks=False)
        page = GtImage(key, image.height, image.width, annotations, found, missing)
        identifiers[id(page)] = image.id
        # Told apart by the path the entry names (vol1/0001.png): the image found may be a guess, the same
        # file for both volumes' pages
        named = path.parent / url_path(image.file_name).replace("\\", "/")
        again = InputError(path, f"{image.where}.file_name: another image is also named '{key}'")
        read.append((page, named, again))
    _key_pages(truth, read)
    truth.image_keys = {identifiers[id(page)]: page.name for page in truth.images}
    _sort_by_id(truth)
    return truth


def check_stated_size(path: Path, image: CocoImage) -> None:
    """`check_page_size` of an image entry, the error naming the entry."""
    try:
        check_page_size(path, image.width, image.height)
    except InputError as error:
        raise InputError(path, f"{image.where}: {error.reason}") from None


def check_page_size(path: Path, width: int, height: int) -> None:
    """Raise InputError for a page whose masks cannot be made at the size it states, read by no image
    header: one of more pixels than the pixel limit (`--max-image-pixels`: a stranger's 100000 x 100000
    asks for 10 GB) or, whatever the limit, than a COCO mask holds (pycocotools crashes past it)."""
    check_pixel_limit(path, width, height)
    if width * height > RLE_PIXELS:
        reason = f"{width}x{height} = {width * height} pixels: more than a COCO mask holds ({RLE_PIXELS})"
        raise InputError(path, reason)


def _size_from_image(path: Path, image: CocoImage, found: Path | None, not_found: str | None) -> None:
    """Set the size of an image entry without `width` and `height` from its image file, which must agree
    with a side the entry states and with the size of its RLE masks. Raises InputError."""
    if found is None:
        side = "width" if image.width is None else "height"
        raise InputError(path, f"{image.where}.{side}: missing, and {not_found}")
    try:
        width, height = image_size(path=found, decode=False)
    except ValueError as error:
        raise InputError(found, str(error)) from None
    stated = (image.width or width, image.height or height)
    if stated != (width, height):
        says = f"{stated[0]}x{stated[1]}"
        raise InputError(
            path, f"{image.where}: image {found.name} is {width}x{height} but the entry says {says}"
        )
    for annotation in image.annotations:
        if annotation.rle is not None and list(annotation.rle["size"]) != [height, width]:
            size = list(annotation.rle["size"])
            where = f"{annotation.where}.segmentation.size"
            raise InputError(path, f"{where}: {size} is not the image's [height, width] {[height, width]}")
    image.width, image.height = width, height


def _placeholders(dataset: CocoDataset) -> set[str]:
    """The categories of a COCO file that stand for no class, where no annotation read names them: its
    `_background_` (labelme2coco declares one; the reference's loader, like conversion, drops it) and those
    that other categories name as their `supercategory` (Roboflow declares its project so). Not prompted
    by `--weights`, they are no classes of the scores either."""
    used = {annotation.category for image in dataset.images for annotation in image.annotations}
    return ({BACKGROUND} | dataset.categories.groups) - used


def _sort_by_id(truth: GroundTruth) -> None:
    """The images in the order of their COCO ids (numbers before strings)."""
    order = sorted(truth.image_keys, key=lambda identifier: (isinstance(identifier, str), identifier))
    rank = {truth.image_keys[identifier]: position for position, identifier in enumerate(order)}
    truth.images.sort(key=lambda image: rank[image.name])


def split_ground_truth(folder: Path, names: Sequence[str] | None = None) -> GroundTruth:
    """A split of the unified layout: its per-image jsons, with the reference loader's category rules
    (`_background_` is dropped, and so is "text word" from a json that lists "table" too). As for the
    reference's loader (and training), the list names each image (`image/<name>`, `layout.json_path`):
    the json's own `file_name` is not read, so a page converted to another name or format still has its
    ground truth. Its image is `layout.image_path`'s, a pre-resized copy where there is one, the ground
    truth rescaled to it (`_rescale`).
    The list is the one the reference's test stage reads (and `--val` validates): `list_val.txt` where
    there is one, else `list.txt`. A name it lists again (lists joined) is the same page, scored once.
    `names`: the listed pages to read, in place of the list (`--val` validates its first pages only)."""
    truth = GroundTruth()
    read: list[tuple[Path, CocoImage]] = []
    declared: dict[int | str, set[str]] = defaultdict(set)  # category id → the classes jsons give it
    listed = Counter(layout.list_names(folder, "test") if names is None else names)
    for name, times in listed.items():
        if times > 1:
            truth.warnings.append(
                f"{layout.list_file(folder, 'test')}: {name} is listed {times} times, scored once"
            )
    for name in listed:
        page = _listed_page(folder, name, truth, declared)
        if page is not None:
            read.append(page)
    _split_categories(truth, declared)
    for path, image in read:
        found = layout.image_path(folder, image.file_name)
        if found.is_relative_to(folder / "image_resize"):
            try:
                _rescale(image, found)
            except InputError as error:
                truth.left_out(error, file_name_stem(image.file_name), image.id)
                continue
        annotations = _gt_annotations(image, reference_masks=True)
        if found.is_file():
            _add(truth, path, image, annotations, found)
        else:
            _add(truth, path, image, annotations, None, InputError(found, "image file not found"))
    return truth


def _listed_page(
    folder: Path, name: str, truth: GroundTruth, declared: dict[int | str, set[str]]
) -> tuple[Path, CocoImage] | None:
    """The per-image json of the split's listed page `name` and its image, read from it with the reference
    loader's rules (its categories, but for those the loader drops, added to `declared` by id), its file
    name the listed one; None for a page left out, its error and the json's other errors and warnings in
    `truth`."""
    path = layout.json_path(folder, name)
    try:
        dataset = read_dataset(path, sizes_required=True, loader_rules=True)
        if len(dataset.images) != 1:
            raise InputError(path, f"images: expected one image, got {len(dataset.images)}")
    except InputError as error:
        truth.left_out(error, file_name_stem(name))
        return None
    truth.errors += dataset.errors
    truth.warnings += [f"{problem}, left out" for problem in dataset.dropped]
    (image,) = dataset.images
    if image.error is not None:
        truth.left_out(image.error, file_name_stem(name), image.id)
        return None
    try:
        check_stated_size(path, image)
    except InputError as error:
        truth.left_out(error, file_name_stem(name), image.id)
        return None
    dropped = dropped_by_loader(dataset.categories.names.values())
    for identifier, class_name in dataset.categories.names.items():
        if class_name not in dropped:
            declared[identifier].add(class_name)
    image.annotations = [a for a in image.annotations if a.category not in dropped]
    _clamp(image)
    image.file_name = name
    return path, image


def _clamp(image: CocoImage) -> None:
    """Clamp the polygons' points and the boxes of an image of a split into [0, W-1] x [0, H-1], as the
    reference's loader rectifies the per-image jsons it evaluates on (as training reads them too): a
    region running off the page is scored as cut at its edge, its box and the slant of its edges with it."""
    for annotation in image.annotations:
        annotation.polygons = [
            geometry.clamp(polygon, image.width, image.height)[0] for polygon in annotation.polygons
        ]
        if annotation.bbox is not None:
            annotation.bbox = rectify.clamp_box(annotation.bbox, image.width, image.height)


def _rescale(image: CocoImage, resized: Path) -> None:
    """Rescale an image of a split from its json's size to that of its pre-resized copy `resized` (read
    from its header), as the reference's loader and training do: the model runs on the copy, and is
    scored at its size, its masks made at it: a copy over the pixel limit is refused as a size the json
    states is (`check_page_size`). Raises InputError for a copy that cannot be opened or is refused."""
    with open_image(resized) as opened:
        to_first_page(resized, opened)
        (width, height), _ = upright_header(opened)
    check_page_size(resized, width, height)
    if (width, height) == (image.width, image.height):
        return
    sx, sy = width / image.width, height / image.height
    for annotation in image.annotations:
        annotation.polygons = [polygon * (sx, sy) for polygon in annotation.polygons]
        if annotation.bbox is not None:
            x, y, w, h = annotation.bbox
            annotation.bbox = (x * sx, y * sy, w * sx, h * sy)
        if annotation.rle is not None:
            annotation.rle = geometry.resize_rle(annotation.rle, height, width)
        if annotation.area is not None:
            annotation.area *= sx * sy
    image.width, image.height = width, height


def _split_categories(truth: GroundTruth, declared: dict[int | str, set[str]]) -> None:
    """The split's category ids. The reference's loader renumbers each json's categories by name, so the
    jsons' ids need not agree: an id given to several classes names none of them (`shared_category_ids`),
    and each of them is declared all the same."""
    for identifier, names in declared.items():
        if len(names) == 1:
            truth.category_ids[identifier] = next(iter(names))
        else:
            truth.shared_category_ids[identifier] = sorted(names)


def _add(
    truth: GroundTruth,
    path: Path,
    image: CocoImage,
    annotations: list[GtAnnotation],
    found: Path | None,
    missing: InputError | None = None,
) -> None:
    """Add an image under its key (`file_name_stem`), which must be new; `missing`: why `found` is None."""
    key = file_name_stem(image.file_name)
    if key in truth.keys:
        truth.errors.append(InputError(path, f"{image.where}.file_name: another image is also named '{key}'"))
        return
    truth.keys.add(key)
    if image.id in truth.image_keys:
        truth.shared_ids.setdefault(image.id, [truth.image_keys[image.id]]).append(key)
    truth.image_keys[image.id] = key
    truth.images.append(GtImage(key, image.height, image.width, annotations, found, missing))


def _comparable_name(name: str) -> str:
    """`name` as `GroundTruth._own_stem` compares it: undecodable bytes percent-encoded, composed (NFC)."""
    return unicodedata.normalize("NFC", output_text(name))


def _gt_annotations(image: CocoImage, reference_masks: bool) -> list[GtAnnotation]:
    """The image's annotations with masks at its size: RLE as given, polygons (or a lone bbox) rasterised
    by the reference's rule or by pycocotools'. Polygons of fewer than 3 points are left out (they have no
    area), and so is an annotation left with nothing."""
    rasterise = geometry.fill_polygons if reference_masks else geometry.polygons_rle
    height, width = image.height, image.width
    annotations = []
    for annotation in image.annotations:
        rle = annotation.rle
        if rle is None:
            polygons = annotation_polygons(annotation)
            if not polygons:
                continue
            rle = rasterise(polygons, height, width)
        bbox = annotation.bbox if annotation.bbox is not None else tuple(mask_utils.toBbox(rle).tolist())
        annotations.append(GtAnnotation(annotation.category, rle, bbox, annotation.iscrowd, annotation.area))
    return annotations


def _from_reader(
    path: Path, fmt: str, levels: frozenset[str], images: Path | None, skip: Path | None, classes: Path | None
) -> GroundTruth:
    """Ground truth through a converter's reader (PAGE, ALTO, VOC, YOLO, LabelMe, ICDAR 2013)."""
    truth = GroundTruth()
    read: list[tuple[GtImage, Path, InputError]] = []
    contexts: list[ReadContext] = []

    def context_for(root: Path) -> ReadContext:
        contexts.append(context := ReadContext(root, levels, images, classes, skip=skip))
        return context

    for item in read_sources([path], FORMATS[fmt], context_for, skip=skip):
        if isinstance(item, InputError):
            # A file that cannot be read names no image: its stem is the page's, as segment names it.
            truth.left_out(item, item.path.stem)
            continue
        try:
            image, dropped = gt_image(item)
        except InputError as error:
            truth.left_out(error, item.key)
            continue
        truth.warnings += [
            str(InputError(item.source, f"{note.where}: {note.reason}, left out")) for note in dropped
        ]
        again = InputError(item.source, f"image '{image.name}' already has ground truth")
        read.append((image, item.image.path or item.source.parent / item.image.name, again))
    truth.warnings += [warning for context in contexts for warning in context.warnings]  # a class list's
    _key_pages(truth, read)
    return truth


def _key_pages(truth: GroundTruth, read: list[tuple[GtImage, Path, InputError]]) -> None:
    """Add the pages `read` (each with its image's path, found or as named, and the error it is if another
    page has that image) under their keys: the image's stem, or where several images share one (archives
    number pages per volume: vol1/0001.tif, vol2/0001.tif), the end of each one's path that tells it apart
    (`vol1/0001`), which predictions are matched on by `GroundTruth.page_key`. A second page of the same
    image is that error, and left out."""
    by_stem: dict[str, dict[tuple[str, ...], tuple[GtImage, Path]]] = defaultdict(dict)
    for image, path, again in read:
        parts = _key_parts(Path(os.path.normpath(path.absolute())))
        if parts in by_stem[image.name]:
            truth.errors.append(again)
            continue
        by_stem[image.name][parts] = (image, path)
        truth.images.append(image)
    for stem, pages in by_stem.items():
        if len(pages) > 1:
            truth.repeated[stem] = {}
            for (image, path), key in zip(pages.values(), _distinct_ends(list(pages)), strict=True):
                image.name = key
                truth.repeated[stem][key] = path
    truth.keys.update(image.name for image in truth.images)


class _RepeatedPages:
    """The pages of one stem that several images share (`GroundTruth.repeated`), by their image file and
    by their key's parts, for `page_key`: a prediction compared with each page in turn made scoring take
    time in volumes x predictions (an archive's 0001.tif in each of a thousand volumes)."""

    def __init__(self, pages: dict[str, Path]) -> None:
        self.by_file: dict[tuple[int, int], list[str]] = defaultdict(list)
        self.by_end: dict[int, dict[tuple[str, ...], str]] = defaultdict(dict)  # parts' count → parts → key
        for key, path in pages.items():
            identity = _file_identity(path)
            if identity is not None:
                self.by_file[identity].append(key)
            parts = tuple(key.split("/"))
            self.by_end[len(parts)][parts] = key

    def of_file(self, image: Path) -> list[str]:
        """The keys of the pages whose image is the file `image` (none where it cannot be looked at)."""
        identity = _file_identity(image)
        return self.by_file.get(identity, []) if identity is not None else []

    def ending(self, parts: tuple[str, ...]) -> list[str]:
        """The keys that the path of `parts` ends with."""
        return [keys[parts[-count:]] for count, keys in self.by_end.items() if parts[-count:] in keys]


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of an existing file, which tell whether two paths name one file (as
    `Path.samefile`); None where it cannot be looked at."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def _key_parts(path: PurePath) -> tuple[str, ...]:
    """The parts of an image's path with its extension dropped, as keys name pages."""
    return (*path.parts[:-1], path.stem)


def _distinct_ends(paths: list[tuple[str, ...]]) -> list[str]:
    """For each of the distinct `paths`, the shortest end that no other path ends with, `/`-joined (the
    whole path where every end is another's too). The ends of each length are counted once, for all paths:
    comparing each path with every other took time in the square of the volumes that share a page name."""
    keys: dict[int, str] = {}
    for length in range(1, max(map(len, paths)) + 1):
        counts = Counter(path[-length:] for path in paths)
        for index, path in enumerate(paths):
            if index not in keys and (counts[path[-length:]] == 1 or length == len(path)):
                keys[index] = "/".join(path[-length:])
    return [keys[index] for index in range(len(paths))]


def gt_image(page: SourcePage) -> tuple[GtImage, list[Note]]:
    """A page read by a converter's reader as ground truth, cleaned like a conversion cleans it, and what
    reading and cleaning left out of it (conversion reports the same as `dropped`).

    The image is only opened when the annotation does not state the page size in pixels.
    """
    width, height, instances = page.width, page.height, page.instances
    if width is None or page.relative:
        image = page.image
        if image.path is None and image.load is None:
            raise InputError(page.source, f"page size unknown: {page.image_problem or 'no image'}")
        try:
            image_width, image_height = image_size(
                path=image.path, data=image.load() if image.load is not None else None, decode=False
            )
        except ValueError as error:
            raise InputError(image.path or page.source, str(error)) from None
        if page.relative:
            instances = rectify.scale(instances, image_width / width, image_height / height)
        width, height = image_width, image_height
    width, height = round(width), round(height)
    check_page_size(page.source, width, height)
    cleaned, notes = rectify.rectify(instances, width, height)
    dropped = [note for note in [*page.notes, *notes] if note.kind == "dropped"]
    annotations = [_xml_annotation(layout.as_written(i), width, height) for i in cleaned]
    missing = (
        None
        if page.image.path
        else InputError(page.source, page.image_problem or "no image file to run the model on")
    )
    return GtImage(page.key, height, width, annotations, page.image.path, missing), dropped


def _xml_annotation(instance: Instance, width: int, height: int) -> GtAnnotation:
    rle = geometry.fill_polygons(instance.polygons, height, width)
    bbox = instance.bbox if instance.bbox is not None else geometry.polygons_bbox(instance.polygons)
    bbox = tuple(np.asarray(bbox, dtype=float).tolist())
    return GtAnnotation(instance.category, rle, bbox, iscrowd=instance.iscrowd)
