"""Scene/curved text detection labels (one txt per image) → "text" instances.

Rows are `x1,y1,...,xn,yn[,transcription]` (ICDAR 2015 quadrilaterals, CTW1500's 14-point polygons, with
CTW1500's `####` before the text), or Total-Text's legacy `x: [[...]], y: [[...]], ornt: ..., transcriptions:
[...]`. Transcriptions `###` / `#` mark "do not care" text, kept as crowd regions (ignored by COCO AP).
A transcription may be a number holding commas (`...,374,170,1,000`): a row whose fields are all numbers
takes the coordinate count most rows of its file end their coordinates at with a textual transcription
(8 in ICDAR 2015), the rest being its text.
The image is the label's stem without the `gt_` / `poly_gt_` prefix, beside it, in `--images` or in an
`images/` folder above.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from docsam_cli.datasets.convert.base import ReadContext, read_text_file
from docsam_cli.datasets.images import ImageNotFound
from docsam_cli.datasets.records import ImageRef, Instance, Note, SourcePage
from docsam_cli.errors import InputError, WrongFormat

TEXT_CLASS = "text"
_PREFIXES = ("poly_gt_", "gt_")
_NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")
_TOTAL_TEXT = re.compile(
    r"x:\s*\[\[([^\]]*)\]\],\s*y:\s*\[\[([^\]]*)\]\](?:.*transcriptions:\s*\[u?'(.*)'\])?"
)
_DONT_CARE = frozenset(("###", "#"))
_MIN_COORDINATES = 6  # three points


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    """One label file. Raises InputError."""
    try:
        rows = read_text_file(path).splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read: {error}") from None
    notes: list[Note] = []
    count = _coordinate_count(rows)
    instances = [
        instance
        for number, row in enumerate(rows, start=1)
        if row.strip() and (instance := _row(row, f"line {number}", notes, count)) is not None
    ]
    if not instances and any(row.strip() for row in rows):
        raise WrongFormat(path, "no text-detection polygon in this file")
    image, problem = _image(path, context)
    return [SourcePage(path, image, None, None, instances, image_problem=problem, notes=notes)]


def _image(path: Path, context: ReadContext) -> tuple[ImageRef, str | None]:
    stem = path.stem
    for prefix in _PREFIXES:
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
            break
    try:
        found, _ = context.finder.find(stem, path, label="image", extra_dirs=("images", "imgs"))
    except ImageNotFound as error:
        return ImageRef(stem), str(error)
    return ImageRef(found.name, path=found), None


def _numbers(fields: list[str]) -> int:
    """How many fields lead the row as numbers."""
    return next((i for i, field in enumerate(fields) if not _NUMBER.match(field)), len(fields))


def _coordinate_count(rows: list[str]) -> int | None:
    """The coordinate count most rows with a textual transcription have; None when no row has one."""
    counts: Counter[int] = Counter()
    for row in rows:
        fields = row.split(",")
        numbers = _numbers(fields)
        if _MIN_COORDINATES <= numbers < len(fields) and not _TOTAL_TEXT.search(row):
            counts[numbers - numbers % 2] += 1
    return counts.most_common(1)[0][0] if counts else None


def _row(row: str, where: str, notes: list[Note], file_count: int | None) -> Instance | None:
    total_text = _TOTAL_TEXT.search(row)
    if total_text:
        xs, ys = (np.array(part.split(), dtype=np.float64) for part in total_text.group(1, 2))
        if len(xs) != len(ys):
            notes.append(Note("dropped", "unreadable text-detection row", where))
            return None
        polygon, text = np.stack([xs, ys], axis=1), (total_text[3] or "").strip()
    else:
        fields = row.split(",")
        count = _numbers(fields)
        if count == len(fields) and file_count is not None:  # no text to end the coordinates
            count = min(count, file_count)
        count -= count % 2
        polygon = np.array([float(field) for field in fields[:count]]).reshape(-1, 2)
        text = ",".join(fields[count:]).strip().removeprefix("####")
    if len(polygon) < 3:
        notes.append(Note("dropped", "unreadable text-detection row", where))
        return None
    return Instance(TEXT_CLASS, [polygon], iscrowd=text in _DONT_CARE, where=where)
