"""The unified dataset layout, the reference's folder of one dataset split: write it, find its parts.

```
<split>/list.txt             image file names, one per line
<split>/list_train.txt       optional, read instead of list.txt for training (list_val.txt: validation)
<split>/image/<name>         images
<split>/image_resize/<name>  optional pre-resized copies, read instead of image/<name> (`image_path`)
<split>/coco/<stem>.json     one COCO json per image: the image, its annotations, ALL categories
<split>/class_name/<stem>.txt  sorted class names, then "<dataset name> _background_"
dataset.json                 (beside or above the split folders) name, background prompt, classes
```
Every per-image json lists every category of the dataset with ids 1..K in sorted-name order, so the
reference loader's renumbering of categories is the identity and ids agree across images; image and
annotation ids are unique over the whole dataset, as the reference's metric code needs. Text files are UTF-8
whatever the locale (the trainer reads them so, and datasets move between machines). `evaluate` reads
a split back through `ground_truth` (with the reference loader's category rules).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

import numpy as np

from docsam_cli.datasets import geometry
from docsam_cli.datasets.classes import BACKGROUND
from docsam_cli.datasets.fields import JsonField
from docsam_cli.datasets.records import Instance
from docsam_cli.errors import InputError
from docsam_cli.inputs.sources import BYTE_ORDER_MARK, decode_list

DATASET_FILE = "dataset.json"
LIST_FILE = "list.txt"
_STAGE_LISTS = {"train": "list_train.txt", "test": "list_val.txt"}  # read instead of list.txt if there
_CATEGORY_FOLDERS = ("Ancient", "Handwritten", "Layout", "SceneText", "Table")
_SPLIT_FOLDERS = ("train", "test", "val")
# The folders annotation tools and datasets split their pages into (Roboflow: `train/`, `valid/`, `test/`)
SPLIT_NAMES = frozenset({*_SPLIT_FOLDERS, "valid", "validation"})


def background_prompt(dataset_name: str) -> str:
    """The last class name, which doubles as the domain token of the background prompt."""
    return f"{dataset_name} {BACKGROUND}"


def default_dataset_name(out: Path) -> str:
    """The dataset name of a conversion into `out` without `--dataset-name`: its folder's name, or where
    that names a split (`data/rf/valid`), its dataset folder's above it, so that the splits of a set
    converted apart are one domain, as training and its validation prompt them."""
    folder = _absolute(out)
    return folder.parent.name if folder.name.lower() in SPLIT_NAMES and folder.parent.name else folder.name


def reference_dataset_name(folder: PurePath) -> str:
    """The dataset name the reference derives from a split folder's path, trailing spaces and all: the
    folder after the category folder (`Layout`, `Table`, ...), then the folder before the split folder.
    Of several, the ones nearest the split folder count: the reference reads its paths from below its data
    root, which starts with the category folder, while here the path is absolute, and the folders above
    the data root (`/home/me/test/data/...`) are no category or split folders: of a path with a category
    folder, the split folder is looked for below it only (`/srv/train/data/Table/STDW/data/STDW` has
    none, as the reference's `Table/STDW/data/STDW`)."""
    parts = folder.parts
    last = range(len(parts) - 1, 0, -1)
    category = next((i - 1 for i in last if parts[i - 1] in _CATEGORY_FOLDERS), None)
    domain = "" if category is None else parts[category + 1]
    below = last if category is None else range(len(parts) - 1, category, -1)
    split = next((parts[i - 1] for i in below if parts[i] in _SPLIT_FOLDERS), "")
    return domain if domain == split else f"{domain} {split}"


@dataclass
class LayoutPage:
    """A converted page: output image name, size, and cleaned instances with output class names."""

    name: str
    width: int
    height: int
    instances: list[Instance]


def write_split(
    folder: Path,
    pages: Iterable[LayoutPage],
    class_names: list[str],
    background: str,
    ids: dict[str, int],
) -> list[str]:
    """Write list.txt, coco/ and class_name/ of one split (images are placed by the caller).

    `ids` holds the next image and annotation ids and is advanced, so ids stay unique across splits.
    Returns the image names in list order.
    """
    category_ids = {name: index + 1 for index, name in enumerate(class_names)}
    categories = [{"id": i, "name": name, "supercategory": ""} for name, i in category_ids.items()]
    class_file = "".join(f"{name}\n" for name in [*class_names, background])
    (folder / "coco").mkdir(parents=True, exist_ok=True)
    (folder / "class_name").mkdir(exist_ok=True)
    names = []
    for page in pages:
        stem = Path(page.name).stem
        image_id = ids["image"]
        ids["image"] += 1
        annotations = []
        for instance in page.instances:
            annotations.append(_annotation(instance, ids["annotation"], image_id, category_ids))
            ids["annotation"] += 1
        document = {
            "images": [{"id": image_id, "file_name": page.name, "width": page.width, "height": page.height}],
            "annotations": annotations,
            "categories": categories,
        }
        # Plain writes: the whole output tree is staged and renamed into place at the end.
        (folder / "coco" / f"{stem}.json").write_text(
            json.dumps(document, separators=(",", ":")), encoding="utf-8"
        )
        (folder / "class_name" / f"{stem}.txt").write_text(class_file, encoding="utf-8")
        names.append(page.name)
    (folder / LIST_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return names


def _annotation(instance: Instance, annotation_id: int, image_id: int, category_ids: dict[str, int]) -> dict:
    x, y, w, h = instance.bbox if instance.bbox is not None else geometry.polygons_bbox(instance.polygons)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_ids[instance.category],
        "bbox": [_number(x), _number(y), _number(w), _number(h)],
        "segmentation": [[_number(v) for v in polygon.reshape(-1)] for polygon in instance.polygons],
        "area": _number(sum(geometry.area(polygon) for polygon in instance.polygons)),
        "iscrowd": int(instance.iscrowd),
    }


def as_written(instance: Instance) -> Instance:
    """`instance` with its box (derived from its polygons where it states none) and polygons as a split's
    json holds them (`_number`), what training and `evaluate` of the split read: ground truth scored from
    its source then scores as its conversion does. Scaled coordinates (YOLO's fractions of 6 decimals, ALTO
    in mm10) fall a hair short of whole pixels, which the reference's fill truncates a pixel further."""
    x, y, w, h = instance.bbox if instance.bbox is not None else geometry.polygons_bbox(instance.polygons)
    polygons = [np.vectorize(_number, otypes=[float])(polygon) for polygon in instance.polygons]
    return replace(instance, polygons=polygons, bbox=(_number(x), _number(y), _number(w), _number(h)))


def _number(value: float) -> float | int:
    """Integers stay integers (PAGE coordinates), the rest keeps 2 decimals: small files, no real loss."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded == math.floor(rounded) else rounded


def write_dataset_file(root: Path, name: str, class_names: list[str], extra: dict) -> None:
    document = {"name": name, "background": background_prompt(name), "class_names": class_names, **extra}
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    (root / DATASET_FILE).write_text(text, encoding="utf-8")


def is_layout(folder: Path) -> bool:
    """A split: `coco/` and a list, any of the three (a split may list only its training or its validation
    pages, as the reference reads it)."""
    lists = (LIST_FILE, *_STAGE_LISTS.values())
    return folder.is_dir() and (folder / "coco").is_dir() and any((folder / name).is_file() for name in lists)


def is_unlisted_split(folder: Path) -> bool:
    """A split's `coco/` and `image/` folders without any of its lists (lost, or never written for a split
    made by hand): still a split, which the commands refuse naming the lists they read, not a folder of
    unknown format."""
    return (folder / "coco").is_dir() and (folder / "image").is_dir() and not is_layout(folder)


# Why a split lists no image: what `convert-dataset --split` writes for a fraction of too few images.
EMPTY_SPLIT = (
    "a split that convert-dataset --split left empty: too few images for its fraction; convert again with a "
    "larger fraction"
)


def split_folders(folder: Path) -> list[str]:
    """The names of the splits directly in `folder` (`convert-dataset --split` writes `train/`, `val/`, ...
    below the dataset folder), sorted; none for a folder that is not there."""
    children = sorted(folder.iterdir()) if folder.is_dir() else []
    return [child.name for child in children if is_layout(child)]


def stage_lists(stage: str | None = None) -> list[str]:
    """The lists a stage reads, the first there being read (the reference's rule): training
    `list_train.txt`, validation and evaluation (`test`) `list_val.txt`, else `list.txt`."""
    preferred = _STAGE_LISTS.get(stage or "")
    return [preferred, LIST_FILE] if preferred else [LIST_FILE]


def list_file(folder: Path, stage: str | None = None) -> Path:
    """The list a stage reads (`stage_lists`). Raises InputError naming the folder and the lists looked
    for when none of them is there."""
    names = stage_lists(stage)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(folder, f"no {' or '.join(names)} (the lists of its images this command reads)")


def image_path(folder: Path, image_name: str) -> Path:
    """The image file of a listed image, as the reference's loader (and training) reads it: its pre-resized
    copy `image_resize/<name>` where there is one, else `image/<name>`. The json's coordinates refer to
    the json's size, and are rescaled to the size of the image read."""
    resized = folder / "image_resize" / image_name
    return resized if resized.is_file() else folder / "image" / image_name


def missing_files(folder: Path, image_names: Iterable[str]) -> list[str]:
    """The paths of the images (`image_path`) and jsons (`json_path`) of the listed `image_names` that are
    no files, found by their existence alone, through `os.path` on strings: 0.8 s for 100k pages on a
    local disk, where `Path` objects take three times as long."""
    root = os.fspath(folder)
    resized = os.path.isdir(os.path.join(root, "image_resize"))  # else no copy is looked for
    missing = []
    for name in image_names:
        if not (resized and os.path.isfile(os.path.join(root, "image_resize", name))):
            image = os.path.join(root, "image", name)
            if not os.path.isfile(image):
                missing.append(image)
        annotations = os.path.join(root, "coco", os.path.splitext(name)[0] + ".json")
        if not os.path.isfile(annotations):
            missing.append(annotations)
    return missing


def json_path(folder: Path, image_name: str) -> Path:
    """The per-image json of a listed image, as the reference's loader finds it: the name as listed (folders
    below `image/` included) without its extension, under `coco/`."""
    return folder / "coco" / (os.path.splitext(image_name)[0] + ".json")


def list_names(folder: Path, stage: str | None = None) -> list[str]:
    """The image names of the list a stage reads (`list_file`), one per line, blank lines skipped. A list
    made by hand on Windows may open with a byte order mark (Notepad's UTF-8, PowerShell's UTF-16), which
    announces its encoding as in `segment`'s path lists; lists so made and then joined (`type a.txt
    b.txt`, `cat`) hold the mark at the start of a line too, where it is no part of the name (an invisible
    character, no file name starts with it). Raises InputError naming the list when it cannot be read,
    or the folder when it has none the stage reads."""
    path = list_file(folder, stage)
    try:
        text = decode_list(path.read_bytes())
    except OSError as error:
        raise InputError(path, f"cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise InputError(path, str(error)) from None
    return [name for name in (line.lstrip(BYTE_ORDER_MARK).strip() for line in text.splitlines()) if name]


def dataset_name(folder: Path) -> str:
    """Name from `dataset.json` in the split folder or its parent, else the reference's path rule. Raises
    InputError for a `dataset.json` that cannot be read (`_dataset_field`) or whose `name` is no string."""
    name = _dataset_field(folder, "name")
    if name is None:
        return reference_dataset_name(_absolute(folder))
    if not isinstance(name.value, str):
        raise name.expected("a string (the dataset name of the background prompt)")
    return name.value


def dataset_class_names(folder: Path) -> list[str] | None:
    """The class names `dataset.json` (in the split folder or its parent) lists, if it lists them. Raises
    InputError for a `dataset.json` that cannot be read (`_dataset_field`) or whose `class_names` is no
    list of strings."""
    names = _dataset_field(folder, "class_names")
    if names is None:
        return None
    for name in names.items():
        if not isinstance(name.value, str):
            raise name.expected("a string")
    return list(names.value)


def dataset_levels(folder: Path) -> frozenset[str] | None:
    """The `--level`s the split was converted with, as `dataset.json` (in the split folder or its parent)
    records them; None when it records none usable. Raises InputError for a `dataset.json` that cannot
    be read (`_dataset_field`)."""
    from docsam_cli.datasets.records import LEVELS

    levels = _dataset_field(folder, "levels")
    if levels is None or not isinstance(levels.value, list) or not levels.value:
        return None
    if not all(level in LEVELS for level in levels.value):
        return None
    return frozenset(levels.value)


def _dataset_field(folder: Path, key: str) -> JsonField | None:
    """The field `key` of the first `dataset.json` in the split folder or its parent (null included: it
    is no name), None when there is no such file or it lacks the field. Read as bytes, so that a byte
    order mark (a name edited in Notepad) is no unreadable file. Raises InputError naming the file for
    one that cannot be read, is no valid JSON (a name edited by hand, a comma left over) or no object:
    passed over, it gave the dataset another name, the path rule's, and so another background prompt,
    without a word."""
    folder = _absolute(folder)
    for candidate in (folder / DATASET_FILE, folder.parent / DATASET_FILE):
        if candidate.is_file():
            document = JsonField.load(candidate)
            if not isinstance(document.value, dict):
                raise document.expected("an object")
            return document[key] if key in document.value else None
    return None


def _absolute(folder: Path) -> Path:
    """The folder's absolute path with `..` and `.` resolved as written (a split given as `.` or `../train`
    has the parent and the name of the folder it is, not `.` and `..`)."""
    return Path(os.path.abspath(folder))
