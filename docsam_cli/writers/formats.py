"""The names of `docsam segment`'s output formats, importable without the writers' dependencies: the
command line validates `--format` and `--mask-format` and lists them in `--help` without loading torch."""

from __future__ import annotations

from typing import Literal

FORMATS = ("coco", "page", "alto", "overlay", "semantic", "jsonl")  # what `--format` accepts, comma-separated
DEFAULT_FORMATS = ("coco", "page", "overlay", "jsonl")  # written when `--format` is not given
MaskFormat = Literal["rle", "polygon"]  # how COCO stores a mask
MASK_FORMATS: tuple[MaskFormat, ...] = ("rle", "polygon")


def parse_formats(text: str) -> frozenset[str]:
    """`coco,page` → {"coco", "page"}. Raises ValueError naming an unknown format and the valid ones."""
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        given = f"{unknown[0]!r} is not an output format" if unknown else "no output format given"
        raise ValueError(f"{given}; choose any of {', '.join(FORMATS)} (comma-separated)")
    return frozenset(chosen)
