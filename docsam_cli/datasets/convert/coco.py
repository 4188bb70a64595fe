"""COCO json (one file, many images: PubLayNet, DocLayNet, M6Doc...) → pages of instances.

The file is read and checked by `docsam_cli.datasets.coco_json`. RLE segmentations are traced back to
polygons (the reference loader reads polygons only); an annotation with only a bbox becomes its 4-corner
polygon, as the reference loader does, and so does one whose polygons all have fewer than 3 points (as
`evaluate` reads it). Images are looked up by `path` where an entry states one (docsam's `coco.json` does,
relative to the json) and it leads to a file, else by `file_name` (see `ImageFinder`), also in the
folders beside the json or beside its folder that `image_folders` names: those of the split the json's name
names (COCO 2017's `annotations/instances_val2017.json`: `val2017/`, PubLayNet's `val.json`: `val/`), also
under `images/`, then `images/` and `PNG/` (DocLayNet); a json of an `annotations/` folder given alone
also searches its dataset's folder, above, by file name (`dataset_folder`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from docsam_cli.datasets.coco_json import CocoAnnotation, CocoImage, read_dataset
from docsam_cli.datasets.convert.base import ReadContext
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import ImageFinder, ImageNotFound, parent_folder, within
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError
from docsam_cli.polygons import rle_contours

IMAGE_FOLDERS = ("images", "PNG")


def image_folders(path: Path) -> tuple[str, ...]:
    """The folders, relative to a COCO file's folder and to the folder above it, that hold its images by
    file name: those named after the split the file's name names, its stem or what follows its last `_`
    (PubLayNet's `val.json`: `val/`; COCO 2017's `instances_val2017.json`: `val2017/`), each also under
    `images/`, then the `IMAGE_FOLDERS`. A file name may recur in each split's folder (`000001.jpg`): the
    split's own folder decides, where a search by name would find several."""
    stem = path.stem
    splits = [split for split in (stem, stem.rsplit("_", 1)[-1]) if split not in ("", ".", "..")]
    return tuple(dict.fromkeys((*splits, *(f"images/{split}" for split in splits), *IMAGE_FOLDERS)))


def dataset_folder(path: Path, finder: ImageFinder) -> tuple[Path, ...]:
    """The folder above a COCO file's `annotations/` folder, where that lies outside `finder`'s source root
    (the json given alone, or its folder): the dataset's, whose image folders (`val2017/`) hold its images,
    searched by name as if it had been given. Of several files of the name there, none is taken."""
    folder, dataset = path.parent, parent_folder(path.parent)
    if Path(os.path.abspath(folder)).name.lower() != "annotations" or within(dataset, finder.root):
        return ()
    return (dataset,)


def read(path: Path, context: ReadContext) -> Iterator[SourcePage | InputError]:
    """Every image of one COCO file. Raises WrongFormat (not a COCO dataset) or InputError."""
    dataset = read_dataset(path, sizes_required=False)
    context.warnings += dataset.categories.repeated
    yield from dataset.errors
    for image in dataset.images:
        try:
            yield image.error if image.error is not None else _page(path, image, context.finder)
        except InputError as error:
            yield error


def find_image(finder: ImageFinder, path: Path, image: CocoImage) -> tuple[Path, str | None]:
    """The image a COCO file `path` names: by the entry's `path` where that leads to a file without a guess,
    else by `file_name`. Raises ImageNotFound."""
    folders, dataset = image_folders(path), dataset_folder(path, finder)
    if image.path is not None:
        try:
            found, note = finder.find(image.path, path, label="path", extra_dirs=folders)
            if note is None:
                return found, None
        except ImageNotFound:
            pass
    return finder.find(image.file_name, path, label="file_name", extra_dirs=folders, search_under=dataset)


def _page(path: Path, image: CocoImage, finder: ImageFinder) -> SourcePage:
    notes: list[Note] = []
    try:
        found, note = find_image(finder, path, image)
        reference, problem = ImageRef(found.name, path=found), None
        if note is not None:
            notes.append(Note("fixed", note, image.file_name))
    except ImageNotFound as error:
        reference = ImageRef(Path(image.file_name.replace("\\", "/")).name)
        problem = f"{image.where}: {error}"
    instances = [_instance(annotation, notes) for annotation in image.annotations]
    width, height = _stated_size(path, image)
    return SourcePage(
        path,
        reference,
        width,
        height,
        [instance for instance in instances if instance is not None],
        image_problem=problem,
        notes=notes,
    )


def _stated_size(path: Path, image: CocoImage) -> tuple[int | None, int | None]:
    """The entry's width and height; where it leaves them out, those of its RLE masks (COCO: the size of
    their image), so that masks made for another size are refused as a size mismatch, as `evaluate`
    refuses them, instead of being laid onto the image. Raises InputError for masks of different sizes."""
    sizes = {tuple(annotation.rle["size"]) for annotation in image.annotations if annotation.rle is not None}
    if image.size is not None or not sizes:
        return image.width, image.height
    if len(sizes) > 1:
        shown = ", ".join(str(list(size)) for size in sorted(sizes))
        raise InputError(path, f"{image.where}: its RLE masks are of different sizes ({shown})")
    height, width = sizes.pop()
    return image.width or width, image.height or height


def annotation_polygons(annotation: CocoAnnotation) -> list[np.ndarray]:
    """The polygons of an annotation without an RLE: those of 3 points or more, else its bbox's corners
    (as the reference loader reads a box alone); empty when it has neither."""
    polygons = [polygon for polygon in annotation.polygons if len(polygon) >= 3]
    if not polygons and annotation.bbox is not None:
        x, y, w, h = annotation.bbox
        polygons = [box_polygon(x, y, x + w, y + h)]
    return polygons


def _instance(annotation: CocoAnnotation, notes: list[Note]) -> Instance | None:
    if annotation.rle is not None:
        notes.append(Note("fixed", "RLE mask traced to polygons", annotation.where))
        # An empty mask takes the bbox, if one is stated.
        polygons = rle_contours(annotation.rle) or annotation_polygons(annotation)
    else:
        polygons = annotation_polygons(annotation)
        if polygons and any(len(polygon) < 3 for polygon in annotation.polygons):
            notes.append(Note("fixed", "polygon of fewer than 3 points left out", annotation.where))
    if not polygons:
        reason = "empty RLE mask" if annotation.rle is not None else "fewer than 3 points or no area"
        notes.append(Note("dropped", reason, annotation.where))
        return None
    return Instance(
        annotation.category,
        polygons,
        bbox=annotation.bbox,
        iscrowd=annotation.iscrowd,
        score=annotation.score,
        where=annotation.where,
    )
