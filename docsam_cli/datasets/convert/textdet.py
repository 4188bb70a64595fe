"""Scene/curved text detection labels (one txt per image) → "text" instances.

Rows are `x1,y1,...,xn,yn[,transcription]` (ICDAR 2015 quadrilaterals, CTW1500's 14-point polygons, with
CTW1500's `####` before the text), or Total-Text's legacy `x: [[...]], y: [[...]], ornt: ..., transcriptions:
[...]`. Transcriptions `###` / `#` mark "do not care" text, kept as crowd regions (ignored by COCO AP).
The image is the label's stem without the `gt_` / `poly_gt_` prefix, beside it, in `--images` or in an
`images/` folder above.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from docsam_cli.datasets.convert.base import ReadContext
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


def read(path: Path, context: ReadContext) -> list[SourcePage]:
    """One label file. Raises InputError."""
    try:
        rows = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read: {error}") from None
    notes: list[Note] = []
    instances = [
        instance
        for number, row in enumerate(rows, start=1)
        if row.strip() and (instance := _row(row, f"line {number}", notes)) is not None
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


def _row(row: str, where: str, notes: list[Note]) -> Instance | None:
    total_text = _TOTAL_TEXT.search(row)
    if total_text:
        xs, ys = (np.array(part.split(), dtype=np.float64) for part in total_text.group(1, 2))
        if len(xs) != len(ys):
            notes.append(Note("dropped", "unreadable text-detection row", where))
            return None
        polygon, text = np.stack([xs, ys], axis=1), (total_text[3] or "").strip()
    else:
        fields = row.split(",")
        count = next((i for i, field in enumerate(fields) if not _NUMBER.match(field)), len(fields))
        count -= count % 2
        polygon = np.array([float(field) for field in fields[:count]]).reshape(-1, 2)
        text = ",".join(fields[count:]).strip().removeprefix("####")
    if len(polygon) < 3:
        notes.append(Note("dropped", "unreadable text-detection row", where))
        return None
    return Instance(TEXT_CLASS, [polygon], iscrowd=text in _DONT_CARE, where=where)
