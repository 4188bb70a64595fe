"""What readers share: the reading context and the description of a format."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from docsam_cli.datasets.records import SourcePage
from docsam_cli.errors import InputError


@dataclass(frozen=True)
class ReadContext:
    """What a reader needs besides the file: the folder it may read from and the user's options."""

    root: Path  # images must stay inside (the SRC folder, or the folder of a SRC file)
    levels: frozenset[str]
    images: Path | None = None  # --images: where COCO/YOLO/VOC images live, when not beside the labels
    classes: Path | None = None  # --classes: a YOLO class list
    dpi: float = 150.0  # rendering of PDF pages (ICDAR 2013)


Reader = Callable[[Path, ReadContext], Iterable[SourcePage]]


@dataclass(frozen=True)
class Format:
    name: str
    read: Reader
    suffixes: tuple[str, ...]  # files a folder walk hands to `read`
    levels: frozenset[str] = frozenset({"regions"})
    description: str = ""


def load_json(path: Path) -> object:
    """Parsed JSON of `path`. Raises InputError for unreadable or malformed files."""
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(path, f"invalid JSON: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read: {error}") from None
