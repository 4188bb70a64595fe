"""Predictions for `evaluate` from files: COCO (dataset-style or results list) or PAGE → `PageInstances`.

Files carry no semantic maps, so a class's semantic map is taken as the union of its instances with
score >= 0.5 (the score the reference uses to draw instances). Model runs hand `PageInstances` with
the model's own voted semantic maps to `evaluate` directly. A prediction that cannot be read is reported
(one line, naming the file and the field) and its page is marked `unreadable`, for the command to leave
out of the scores rather than count its predictions as misses.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from docsam_cli.datasets import geometry, rectify
from docsam_cli.datasets.coco_json import (
    Categories,
    CocoAnnotation,
    CocoImage,
    dataset_of,
    is_dataset,
    read_annotation,
)
from docsam_cli.datasets.convert import FORMATS, source_files
from docsam_cli.datasets.convert.page import NO_COORDS, read_page
from docsam_cli.datasets.fields import JsonField
from docsam_cli.datasets.ground_truth import GroundTruth, check_page_size, check_stated_size
from docsam_cli.datasets.images import ImageFinder, file_name_stem, url_path
from docsam_cli.datasets.records import SourcePage
from docsam_cli.datasets.xml import local, parse_xml
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.names import display_path
from docsam_cli.writers.page_outputs import (
    COCO_FILE,
    IMAGE_DIR,
    RECORDS,
    RESULTS_FILE,
    STATE_DIR,
    STORED_INPUT,
)
from model.instances import PageInstances

SEMANTIC_SCORE = 0.5


@dataclass
class PredictedInstance:
    """One predicted instance as files describe it (what `page_instances` assembles into a page)."""

    category: str
    rle: dict
    box: tuple[float, float, float, float]  # xyxy
    score: float


@dataclass
class Predictions:
    pages: dict[str, PageInstances] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)  # pages with predictions that could not be read
    warnings: list[str] = field(default_factory=list)  # what was read in a way the file may not mean


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if path.suffix.lower() == ".xml" or (path.is_dir() and source_files(path, FORMATS["page"])[1]):
        return "page"
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if (path / COCO_FILE).is_file():  # segment's output folder of a run without PAGE (--format coco)
        raise ValueError(f"{path} holds no PAGE files: --pred {path / COCO_FILE} scores its COCO predictions")
    raise ValueError(f"cannot tell the format of {path}")


def page_instances(height: int, width: int, entries: list[PredictedInstance]) -> PageInstances:
    """PageInstances of entries, in their order: the file's, which breaks ties of score in COCO AP
    (pycocotools ranks an image's detections by score with a stable sort, in the results file's order)."""
    class_names = sorted({entry.category for entry in entries})
    semantic = []
    for name in class_names:
        rles = [e.rle for e in entries if e.category == name and e.score >= SEMANTIC_SCORE]
        semantic.append(mask_utils.merge(rles) if rles else _empty_rle(height, width))
    return PageInstances(
        height,
        width,
        class_names,
        [entry.rle for entry in entries],
        np.asarray([entry.box for entry in entries], dtype=np.float64).reshape(-1, 4),
        np.asarray([entry.score for entry in entries], dtype=np.float64),
        np.asarray([class_names.index(entry.category) for entry in entries], dtype=np.int64),
        semantic,
    )


def _empty_rle(height: int, width: int) -> dict:
    return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))


def load_predictions(path: Path, fmt: str, truth: GroundTruth, levels: frozenset[str]) -> Predictions:
    """Predictions in `fmt` ("coco" or "page"), matched to the ground truth's image keys."""
    return _from_coco(path, truth) if fmt == "coco" else _from_page(path, truth, levels)


def _from_coco(path: Path, truth: GroundTruth) -> Predictions:
    """A COCO dataset with scored annotations (segment's `coco.json`), or a COCO results list.

    A dataset names its images by `file_name`. A results list names them by `file_name` when its entries
    have one, else by the ground truth's image ids; `category_id` is a ground-truth category id or a class
    name. segment's results list is read with the ids of its `coco.json` (`_segment_dataset`), as that
    dataset. Pages are made at the size the file states, else at the ground truth's.
    """
    document = JsonField.load(path)
    sizes = {image.name: (image.height, image.width) for image in truth.images}
    predictions = Predictions()
    by_key: dict[str, list[PredictedInstance]] = defaultdict(list)
    own = _segment_dataset(path) if document.is_list() else None
    if is_dataset(document) or own is not None:
        _dataset_pages(path, document, own, truth, sizes, by_key, predictions)
    elif document.is_list():
        _results(document, truth, sizes, by_key, predictions)
    else:
        raise document.expected("a COCO dataset (an object with 'images') or a COCO results list")
    for key, entries in by_key.items():
        predictions.pages[key] = page_instances(*sizes[key], entries)
    return predictions


def _dataset_pages(
    path: Path,
    document: JsonField,
    own: JsonField | None,
    truth: GroundTruth,
    sizes: dict[str, tuple[int, int]],
    by_key: dict[str, list[PredictedInstance]],
    predictions: Predictions,
) -> None:
    """The images of a COCO dataset, by image key: `document` itself, or where it is segment's results
    list, its annotations on the images of segment's `coco.json` beside it (`own`). Images naming one page
    (vol1/0001.jpg, vol2/0001.jpg) leave it out: which one is the ground truth's cannot be told."""
    results = document if own is not None else None
    dataset = dataset_of(own or document, sizes_required=False, annotations=results)
    predictions.errors += dataset.errors
    predictions.warnings += dataset.categories.repeated
    named: set[str] = set()
    keys = frozenset(sizes)
    for image in dataset.images:
        source = _upright_source(image, keys)
        stem = Path(source.replace("\\", "/")).stem if source else file_name_stem(image.file_name)
        try:
            key = _page_key(dataset.path, image, stem, truth, source)
        except InputError as error:
            predictions.errors.append(error)
            predictions.unreadable.update(truth.repeated[stem])
            continue
        size = image.size or sizes.get(key)
        try:
            if key in named:  # e.g. vol1/0001.jpg and vol2/0001.jpg: which is the ground truth's?
                by_key.pop(key, None)
                raise InputError(
                    dataset.path,
                    f"{image.where}.file_name {image.file_name!r}: another image has the name '{key}' "
                    "too (extensions and folders aside); both left out",
                )
            named.add(key)
            if image.error is not None:
                raise image.error
            if size is None:
                continue  # not an image of the ground truth, and of unknown size: nothing to score
            if image.size is not None:  # masks are made at the size stated, as for the ground truth
                check_stated_size(dataset.path, image)
            by_key[key] = [_predicted(path, annotation, *size) for annotation in image.annotations]
        except InputError as error:
            predictions.errors.append(error)
            predictions.unreadable.add(key)
            continue
        sizes[key] = size


def _upright_source(image: CocoImage, keys: frozenset[str]) -> str | None:
    """segment's `source` of an image it saved upright, which names the page where the image's own name is
    no key of the ground truth (`keys`; a name that several of its pages share is none either, the source
    telling them apart): a ground truth made from segment's outputs names the copy (`vol1__0001`), as
    `_upright_input` takes PAGE files. None where the image's name is the page's."""
    return image.source if file_name_stem(image.file_name) not in keys else None


def _page_key(path: Path, image: CocoImage, stem: str, truth: GroundTruth, source: str | None) -> str:
    """The ground-truth key of an image of stem `stem` of the COCO dataset `path`, told apart by its `path`
    (segment's, relative to the json; `source`, `_upright_source`, for an image it saved upright) or
    `file_name` where the ground truth has several pages of that stem. Raises InputError where it cannot be
    told."""
    named = source or image.path or url_path(image.file_name)
    try:
        return truth.page_key(stem, path.parent / named.replace("\\", "/"), named)
    except ValueError as error:
        raise InputError(path, f"{image.where}.file_name {image.file_name!r}: {error}") from None


def _segment_dataset(path: Path) -> JsonField | None:
    """segment's `coco.json` beside a results list `path` in segment's output folder (its
    `coco_results.json`): the list names images and categories by that file's ids, not by the ground
    truth's. Raises InputError for a `coco.json` that cannot be read, or that is not there beside segment's
    `coco_results.json` (removed, or an earlier docsam killed between writing the two): read with the
    ground truth's ids, its detections would be scored on other pages."""
    folder = path.parent
    dataset = folder / COCO_FILE
    if not (folder / STATE_DIR).is_dir():
        return None
    if not dataset.is_file():
        if path.name != RESULTS_FILE:
            return None
        raise InputError(
            path,
            f"segment's results list names the images of the {COCO_FILE} beside it, which is not there "
            f"(run segment into {display_path(folder)} again: it writes both)",
        )
    root = JsonField.load(dataset)
    return root if is_dataset(root) else None


def _results(
    document: JsonField,
    truth: GroundTruth,
    sizes: dict[str, tuple[int, int]],
    by_key: dict[str, list[PredictedInstance]],
    predictions: Predictions,
) -> None:
    """The entries of a results list, by image key; every ground-truth image counts as predicted. Entries
    naming two images of one key by file name (vol1/0001.jpg, vol2/0001.jpg) leave that page out, as in a
    dataset: which one is the ground truth's cannot be told. So do entries naming by `image_id` an id that
    several images of the ground truth share (a unified split's per-image jsons may repeat ids)."""
    categories = Categories(truth.category_ids, any_name=True)
    unknown: list[JsonField] = []
    shared: list[JsonField] = []  # image ids of several ground-truth images
    named: dict[str, PurePosixPath] = {}  # image key → the first file name naming it
    clashes: dict[str, JsonField] = {}  # image key → the first file name naming another image of it
    ambiguous: dict[str, InputError] = {}  # stem of several ground-truth pages → the first entry's error
    for key in sizes:
        by_key[key] = []
    for entry in document.items():
        key = None
        try:
            name = entry.get("file_name")
            reference = name if name is not None else entry["image_id"]
            if name is not None:
                file_name = PurePosixPath(url_path(name.text()).replace("\\", "/"))  # ./a.png is a.png
                try:
                    key = truth.page_key(file_name.stem, document.file.parent / file_name, str(file_name))
                except ValueError as error:
                    ambiguous.setdefault(file_name.stem, name.problem(f"{name.value!r}: {error}"))
                    predictions.unreadable.update(truth.repeated[file_name.stem])
                    continue
                if named.setdefault(key, file_name) != file_name:
                    clashes.setdefault(key, name)
            elif reference.identifier() in truth.shared_ids:
                shared.append(reference)
                continue
            else:
                identifier = reference.identifier()
                key = truth.image_keys.get(identifier, truth.failed_ids.get(identifier))
            if key not in sizes:
                if key not in truth.unreadable:  # a page whose ground truth cannot be read is that error
                    unknown.append(reference)
                continue
            _refuse_shared_category(entry, truth)
            annotation = read_annotation(entry, categories, sizes[key])
            by_key[key].append(_predicted(document.file, annotation, *sizes[key]))
        except InputError as error:
            predictions.errors.append(error)
            if key is not None:
                predictions.unreadable.add(key)
    for key, name in clashes.items():
        if key in sizes:
            by_key.pop(key)
            predictions.unreadable.add(key)
            predictions.errors.append(
                name.problem(
                    f"{name.value!r}: another prediction names '{named[key]}', an image of the name '{key}' "
                    "too (extensions and folders aside); both left out"
                )
            )
    predictions.errors += ambiguous.values()
    if shared:
        _leave_out_shared_ids(shared, truth, by_key, predictions)
    if unknown:
        more = f" (and {len(unknown) - 1} more predictions)" if len(unknown) > 1 else ""
        predictions.errors.append(
            unknown[0].problem(f"{unknown[0].value!r} is not an image of the ground truth{more}")
        )


def _refuse_shared_category(entry: JsonField, truth: GroundTruth) -> None:
    """Raise InputError for a `category_id` that the ground truth gives to several classes (per-image jsons
    of a unified split that number their categories apart): which one it means cannot be told."""
    category = entry.get("category_id")
    if category is None or type(category.value) not in (int, str):
        return
    names = truth.shared_category_ids.get(category.value)
    if names:
        raise category.problem(
            f"{category.value!r} is the id of {', '.join(names)} in the ground truth's per-image jsons: give"
            " the class name"
        )


def _leave_out_shared_ids(
    shared: list[JsonField],
    truth: GroundTruth,
    by_key: dict[str, list[PredictedInstance]],
    predictions: Predictions,
) -> None:
    """One error for the entries naming an image id that several ground-truth images share, whose pages
    are left out: which of them an entry is of cannot be told."""
    ids = list(dict.fromkeys(reference.identifier() for reference in shared))
    for key in (key for identifier in ids for key in truth.shared_ids[identifier]):
        by_key.pop(key, None)
        predictions.unreadable.add(key)
    pages = truth.shared_ids[ids[0]]
    more = f" (and {len(shared) - 1} more predictions)" if len(shared) > 1 else ""
    predictions.errors.append(
        shared[0].problem(
            f"{shared[0].value!r} is the id of {len(pages)} images of the ground truth ({', '.join(pages)}),"
            f" their pages left out{more}: name pages by file_name"
        )
    )


def _predicted(file: Path, annotation: CocoAnnotation, height: int, width: int) -> PredictedInstance:
    """A prediction with its mask at the page size (polygons rasterised as pycocotools does). Raises
    InputError for an RLE of another size."""
    rle = annotation.rle
    if rle is not None and tuple(rle["size"]) != (height, width):
        stated = [int(side) for side in rle["size"]]
        where = f"{annotation.where}.segmentation.size"
        raise InputError(file, f"{where}: {stated} is not the page's [height, width] {[height, width]}")
    if rle is None:
        polygons = [polygon for polygon in annotation.polygons if len(polygon) >= 3]
        if not polygons and annotation.bbox is not None:
            x, y, w, h = annotation.bbox
            polygons = [geometry.box_polygon(x, y, x + w, y + h)]
        rle = geometry.polygons_rle(polygons, height, width)
    x, y, w, h = annotation.bbox if annotation.bbox is not None else mask_utils.toBbox(rle).tolist()
    score = annotation.score if annotation.score is not None else 1.0
    return PredictedInstance(annotation.category, rle, (x, y, x + w, y + h), score)


def _from_page(path: Path, truth: GroundTruth, levels: frozenset[str]) -> Predictions:
    """PAGE files (one per page), matched on their imageFilename; `Coords/@conf` is the score.

    Points are pixel positions (the writer traces mask boundaries through pixel centres), so they are
    rasterised with their boundary included, which gives the written masks back. Other tools' regions are
    cleaned as PAGE ground truth is (`rectify`). A region whose Coords the reader cannot read is an error of
    the file; one without Coords predicts no shape (eScriptorium's `eSc_dummyblock_` holds the lines that are
    in no region) and is left out with a warning, as in the ground truth. A file that cannot be read at all
    is an error of the page it is named after (segment names a page's file so). Two files of one page (two
    runs under the folder given) are an error that leaves the page out: which one to score cannot be told.
    """
    sizes = {image.name: (image.height, image.width) for image in truth.images}
    root, files, _ = source_files(path, FORMATS["page"])
    finder = ImageFinder(root)
    predictions = Predictions()
    read: dict[str, Path] = {}  # page key → its file
    for file in files:
        if isinstance(file, InputError):
            predictions.errors.append(file)
            predictions.unreadable.add(file.path.stem)
            continue
        try:
            page = read_page(file, root, levels, finder=finder)
        except WrongFormat as error:  # a METS or other XML beside the PAGE files is fine
            if path.is_file():
                predictions.errors.append(error)
            continue
        except InputError as error:
            predictions.errors.append(error)
            predictions.unreadable.add(file.stem)
            continue
        stem, image = _page_name(file, page, truth, sizes)
        try:
            key = truth.page_key(stem, image, image.as_posix() if image is not None else None)
        except ValueError as error:
            predictions.errors.append(InputError(file, str(error)))
            predictions.unreadable.update(truth.repeated[stem])
            continue
        if key in read:
            other = display_path(read[key])
            reason = f"another PAGE file ({other}) is of the page '{key}' too; both left out"
            predictions.errors.append(InputError(file, reason))
            predictions.unreadable.add(key)
            continue
        read[key] = file
        shapeless, unusable = _dropped_regions(file, page)
        predictions.warnings += shapeless
        if unusable:
            predictions.errors += unusable
            predictions.unreadable.add(key)
        size = (page.height, page.width) if page.width is not None else sizes.get(key)
        if size is None:
            predictions.errors.append(InputError(file, "page size unknown"))
            continue
        height, width = size
        try:
            check_page_size(file, width, height)
        except InputError as error:
            predictions.errors.append(error)
            predictions.unreadable.add(key)  # left out of the scores, not scored as a page of misses
            continue
        predictions.pages[key] = page_instances(height, width, _page_entries(page, height, width))
    return predictions


def _page_name(
    file: Path, page: SourcePage, truth: GroundTruth, sizes: Mapping[str, tuple[int, int]]
) -> tuple[str, Path | None]:
    """The stem and image by which the PAGE file `file` read as `page` names its ground-truth page: a
    name that several ground-truth pages share (none of `sizes`) is no key, the input tells them apart."""
    stem, image = page.key, page.image.path
    source = _upright_input(file, image) if stem not in sizes else None
    if source is not None:
        return source.stem, source
    if image is None and stem in truth.repeated:
        return stem, _named_image(file)
    return stem, image


def _dropped_regions(file: Path, page: SourcePage) -> tuple[list[str], list[InputError]]:
    """The regions of `page` the reader dropped: warnings for those without Coords (they predict no shape),
    errors for the others, whose page cannot be scored."""
    dropped = [note for note in page.notes if note.kind == "dropped"]
    shapeless = [
        str(InputError(file, f"{note.where}: {note.reason}, left out"))
        for note in dropped
        if note.reason == NO_COORDS
    ]
    unusable = [
        InputError(file, f"{note.where}: {note.reason}") for note in dropped if note.reason != NO_COORDS
    ]
    return shapeless, unusable


def _page_entries(page: SourcePage, height: int, width: int) -> list[PredictedInstance]:
    """The instances of a PAGE file's `page` of that size, rasterised. Clamped to the page, crossings
    repaired, no-area shapes dropped: a file scored against itself scores 1."""
    entries = []
    cleaned, _ = rectify.rectify(page.instances, width, height)
    for instance in cleaned:
        polygons = instance.polygons
        x, y, w, h = geometry.polygons_bbox(polygons)
        rle = geometry.fill_polygons(polygons, height, width)
        score = instance.score if instance.score is not None else 1.0
        entries.append(PredictedInstance(instance.category, rle, (x, y, x + w, y + h), score))
    return entries


def _upright_input(file: Path, image: Path | None) -> Path | None:
    """The input of which the PAGE file `file` names segment's upright copy (`OUT/image/<id>.png` of an
    image its EXIF or TIFF orientation turns; `image` where the reader found it), as the page's record in
    OUT says: a ground truth names the input (`vol1/0001.jpg`), whose page id (`vol1__0001`) is no name of
    it. None for any other image."""
    named = image if image is not None else _named_image(file)
    if named.parent.name != IMAGE_DIR:
        return None
    path = named.parent.parent / STATE_DIR / RECORDS / f"{named.stem}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = record.get(STORED_INPUT) if isinstance(record, dict) and record.get("page") is None else None
    return Path(source) if isinstance(source, str) and source else None


def _named_image(file: Path) -> Path:
    """The image the PAGE file `file` names by its imageFilename, relative to the file, where the reader
    did not find it: it refuses one outside the folder given, as segment's files name theirs
    (`../../scans/vol1/0001.tif`), but that path still tells ground-truth pages of one name apart."""
    page = next(element for element in parse_xml(file).iter() if local(element) == "Page")
    return file.parent / (page.get("imageFilename") or "").strip().replace("\\", "/")
