"""YOLO txt labels (detection boxes, segmentation polygons, oriented boxes) → pages of instances.

A folder walk yields the images; each image's labels are `labels/.../<stem>.txt` for `images/.../`
(the Ultralytics layout) or `<stem>.txt` beside it. With `--images DIR` the images are walked in DIR and
the SRC folder holds the labels, at the image's path relative to DIR or by stem. An image without a label
file is a page without objects (a negative), as YOLO treats it. Rows are `class cx cy w h` or
`class x1 y1 x2 y2 ...`, all normalised to [0, 1]. Class names come from `--classes` (one per line, or a
YAML with `names`) or from `data.yaml`, `dataset.yaml`, `classes.txt`, `obj.names` in the image's folder or
above it, up to the folder above SRC (Roboflow's, CVAT's and Label Studio's exports keep it above their
split folders; with `--images`: in the SRC folder, the images folder, or the folder above either).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import yaml

from docsam_cli.datasets.convert.base import ReadContext, read_text_file
from docsam_cli.datasets.geometry import box_polygon
from docsam_cli.datasets.images import within
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError

CLASS_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")


def find_class_list(folder: Path) -> Path | None:
    """The class list in `folder`, if it has one of the usual names."""
    for name in CLASS_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


@functools.lru_cache(maxsize=16)
def class_names(path: Path) -> tuple[str, ...]:
    """Names from a text file (one per line) or a YAML file's `names` (list or index → name map). A class
    is its line's (entry's) index, as YOLO numbers them: a blank line (an empty or null entry) is a class
    without a name (""), so the classes after it keep their ids; blank lines after the last name are no
    classes."""
    try:
        text = read_text_file(path)
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read the class list: {error}") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return _up_to_the_last_name([line.strip() for line in text.splitlines()])
    try:
        names = (yaml.safe_load(text) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as error:
        raise InputError(path, f"not a YAML mapping with 'names': {error}") from None
    except RecursionError:  # valid YAML, but deeper than Python's reader goes
        raise InputError(path, "cannot read the class list: nested too deeply") from None
    if isinstance(names, dict):
        try:
            names = [names[index] for index in range(len(names))]
        except KeyError:
            raise InputError(path, "'names' indices are not 0..N-1") from None
    if not isinstance(names, list) or not names:
        raise InputError(path, "no 'names' list")
    return tuple("" if name is None else str(name).strip() for name in names)


def _up_to_the_last_name(lines: list[str]) -> tuple[str, ...]:
    """`lines` without the blank ones after the last name (a file's trailing empty lines)."""
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


@functools.lru_cache(maxsize=16)
def class_list_warnings(path: Path) -> tuple[str, ...]:
    """A warning for each class of the class list at `path` without a name (its labels are dropped) and
    for each named as an earlier one: classes are names (the model's prompts), so the two ids are one
    class, as two COCO categories of one name are."""
    first_of: dict[str, int] = {}
    warnings = []
    for index, name in enumerate(class_names(path)):
        if not name:
            reason = f"class {index} has no name (a blank line or entry): its labels are dropped, and the"
            warnings.append(str(InputError(path, f"{reason} classes after it keep their ids, as in YOLO")))
            continue
        earlier = first_of.setdefault(name, index)
        if earlier != index:
            reason = f"class {index} is named {name!r}, as class {earlier} is: classes are names"
            reason += ", so both are one class"
            warnings.append(str(InputError(path, reason)))
    return tuple(warnings)


def label_file(image: Path, context: ReadContext) -> Path:
    """The label file of `image` (see the module docstring); the likeliest name when there is none."""
    parts = image.parts
    candidates = []
    if "images" in parts:
        index = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(Path(*parts[:index], "labels", *parts[index + 1 :]).with_suffix(".txt"))
    if context.images is not None and within(image, context.images):
        candidates.append(context.root / image.relative_to(context.images).with_suffix(".txt"))
        candidates.append(context.root / f"{image.stem}.txt")
    candidates.append(image.with_suffix(".txt"))
    return next((candidate for candidate in candidates if candidate.is_file()), candidates[-1])


def read(image: Path, context: ReadContext) -> list[SourcePage]:
    """The page of one image and its labels. Raises InputError."""
    class_list = _class_list(image, context)
    names = class_names(class_list)
    context.warnings += [
        warning for warning in class_list_warnings(class_list) if warning not in context.warnings
    ]
    labels = label_file(image, context)
    notes: list[Note] = []
    instances: list[Instance] = []
    if labels.is_file():
        try:
            rows = read_text_file(labels).splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(labels, f"cannot read: {error}") from None
        for number, row in enumerate(rows, start=1):
            instance = _row(row, names, f"{labels.name} line {number}", notes)
            if instance is not None:
                instances.append(instance)
    # Normalised coordinates: the frame is 1 x 1, scaled onto the image.
    return [SourcePage(labels, ImageRef(image.name, path=image), 1.0, 1.0, instances, True, notes=notes)]


def _class_list(image: Path, context: ReadContext) -> Path:
    """--classes, else the first class list from the image's folder up to the SRC folder and the folder
    above it (an export's, where SRC is one of its splits); with --images, in the SRC folder, the images
    folder or the folder above either."""
    if context.classes is not None:
        return context.classes
    if context.images is None:
        folders, folder = [image.parent], image.parent
        while folder != context.root and within(folder.parent, context.root):
            folder = folder.parent
            folders.append(folder)
        folders.append(context.root.parent)
    else:
        folders = [context.root, context.images, context.root.parent, context.images.parent]
    for folder in folders:
        found = find_class_list(folder)
        if found is not None:
            return found
    raise InputError(image, "no class list: pass --classes FILE or add data.yaml/classes.txt")


def _row(row: str, names: tuple[str, ...], where: str, notes: list[Note]) -> Instance | None:
    fields = row.split()
    if not fields:
        return None
    try:
        index, values = int(fields[0]), [float(value) for value in fields[1:]]
    except ValueError:
        notes.append(Note("dropped", "unreadable YOLO row", where))
        return None
    if not 0 <= index < len(names):
        notes.append(Note("dropped", "class index not in the class list", where))
        return None
    if not names[index]:
        notes.append(Note("dropped", "class without a name in the class list", where))
        return None
    if len(values) == 4:
        cx, cy, w, h = values
        polygon = box_polygon(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    elif len(values) >= 6 and len(values) % 2 == 0:
        polygon = np.asarray(values).reshape(-1, 2)
    else:
        notes.append(Note("dropped", "unreadable YOLO row", where))
        return None
    return Instance(names[index], [polygon], where=where)
