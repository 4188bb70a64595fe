"""What every format reader produces: pages of named instances in the page's own coordinates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

LEVELS = ("regions", "lines", "words", "cells")  # what `--level` can select in structured formats
DEFAULT_LEVELS = ("regions",)  # what `--level` selects when not given

LINE_CLASS = "text line"
WORD_CLASS = "word"
CELL_CLASS = "table cell"
LEVEL_CLASSES = {"lines": LINE_CLASS, "words": WORD_CLASS, "cells": CELL_CLASS}  # the class of each level
CLASS_LEVELS = {name: level for level, name in LEVEL_CLASSES.items()}


@dataclass(frozen=True)
class Note:
    """Something repaired (`fixed`) or left out (`dropped`) while reading; `reason` is the tally key."""

    kind: Literal["fixed", "dropped"]
    reason: str
    where: str = ""


@dataclass
class Instance:
    """One annotated object. Polygons are (N, 2) float arrays in the page frame, N >= 3 once cleaned."""

    category: str
    polygons: list[np.ndarray]
    bbox: tuple[float, float, float, float] | None = None  # xywh as the source states it, if it does
    iscrowd: bool = False
    score: float | None = None  # only for predictions read from files
    where: str = ""  # e.g. "region r12", for notes


@dataclass(frozen=True)
class ImageRef:
    """The page image: an existing file (`path`) or encoded bytes made on demand (`load`).

    Neither set means the image could not be found; `SourcePage.image_problem` says why.
    """

    name: str  # preferred output file name
    path: Path | None = None
    load: Callable[[], bytes] | None = None


@dataclass
class SourcePage:
    """One page as read from its annotation file.

    `width`/`height` give the annotation frame. With `relative` False they are pixels and must equal the
    image size (None: take the image's); with `relative` True (ALTO in mm10, ICDAR PDF points, YOLO's
    normalised coordinates) coordinates are scaled from that frame onto the image.
    """

    source: Path
    image: ImageRef
    width: float | None
    height: float | None
    instances: list[Instance]
    relative: bool = False
    image_problem: str | None = None  # why the image has neither path nor loader
    notes: list[Note] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The name predictions are matched on: the image file's stem."""
        return Path(self.image.name).stem


def parse_levels(values: Iterable[str]) -> frozenset[str]:
    """`--level` values (repeatable, each a comma list). Raises ValueError naming the valid levels."""
    levels = {part.strip().lower() for value in values for part in value.split(",") if part.strip()}
    for level in sorted(levels):
        if level not in LEVELS:
            raise ValueError(f"'{level}' is not one of {', '.join(LEVELS)}")
    if not levels:
        raise ValueError(f"give one or more of {', '.join(LEVELS)}")
    return frozenset(levels)
