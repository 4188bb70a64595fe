"""Expand command-line sources (files, directories, globs, `-` for stdin) into an ordered list of documents.

Nothing is opened here (only `stat`), so a batch of ten thousand scans is listed at once. Each document
gets a `stem` that is unique within the run and that output names are built from.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from docsam_cli.errors import InputError

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset(
    {
        ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".jp2", ".j2k", ".jpx", ".tif", ".tiff",
        ".bmp", ".dib", ".gif", ".webp", ".pbm", ".pgm", ".ppm", ".pnm",
    }
)  # fmt: skip
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES
STDIN_SOURCE = "-"
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Document:
    """One input file. `stem` is unique in the run (case-insensitively) and names its outputs."""

    path: Path
    stem: str


def collect_documents(
    sources: Iterable[str], *, recursive: bool = False, stdin: TextIO | None = None
) -> list[Document | InputError]:
    """Documents in command-line order, each file once; an InputError in place of a source that names none.

    - a file is taken whatever its suffix (the loader tells a PDF from an image by its content);
    - a directory gives its images and PDFs (by suffix), in natural order (`2.png` before `10.png`),
      hidden files skipped; subdirectories too when `recursive`;
    - a path that does not exist but contains `*`, `?` or `[` is a glob (`**` spans directories);
      matching files are filtered by suffix like a directory's, matching directories are expanded;
    - `-` reads one path per line from `stdin` (blank lines skipped); those paths are taken literally.
    """
    found: list[Path | InputError] = []
    for source in sources:
        if source == STDIN_SOURCE:
            for line in (stdin if stdin is not None else sys.stdin).read().splitlines():
                if line.strip():
                    found.extend(_expand_path(Path(line), recursive))
        elif not os.path.lexists(source) and _GLOB_CHARS.search(source):
            found.extend(_expand_glob(source, recursive))
        else:
            found.extend(_expand_path(Path(source), recursive))

    seen: set[Path] = set()
    unique: list[Path | InputError] = []
    for item in found:
        if isinstance(item, Path):
            key = item.resolve()
            if key in seen:
                continue
            seen.add(key)
        unique.append(item)

    paths = [item for item in unique if isinstance(item, Path)]
    stems = dict(zip(paths, assign_stems(paths), strict=True))
    return [Document(item, stems[item]) if isinstance(item, Path) else item for item in unique]


def _expand_path(path: Path, recursive: bool) -> list[Path | InputError]:
    if path.is_dir():
        files: list[Path | InputError] = [*_directory_files(path, recursive)]
        return files or [InputError(path, "directory contains no images or PDFs")]
    if not path.exists():
        return [InputError(path, "no such file or directory")]
    return [path]


def _expand_glob(pattern: str, recursive: bool) -> list[Path | InputError]:
    matches = sorted(glob.glob(pattern, recursive=True), key=natural_key)
    expanded: list[Path | InputError] = []
    for match in map(Path, matches):
        if match.is_dir():
            expanded.extend(_directory_files(match, recursive))
        elif match.suffix.lower() in SUPPORTED_SUFFIXES:
            expanded.append(match)
    return expanded or [InputError(pattern, "no image or PDF matches this pattern")]


def _directory_files(root: Path, recursive: bool) -> list[Path]:
    files: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")] if recursive else []
        files.extend(
            Path(directory, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES
        )
    return sorted(files, key=lambda path: [natural_key(part) for part in path.relative_to(root).parts])


def natural_key(text: str) -> tuple[str | int, ...]:
    """Sort key that orders digit runs by value: `page2` < `page10`. Case-insensitive."""
    parts = re.split(r"(\d+)", text.lower())
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts))


def assign_stems(paths: list[Path]) -> list[str]:
    """A unique output stem per path: the file name's stem, lengthened only where two would collide.

    Names collide when equal case-insensitively (outputs may land on a case-insensitive file system) or
    when one looks like a page of the other (`scan_p0002` vs. the pages `scan_p0001`... of `scan.pdf`).
    Colliding stems get the suffix appended (`scan_png`, `scan_jpg`), then their parent directories
    prepended one at a time (`vol1__0001`, `vol2__0001`), then a hash of the absolute path. A stem therefore
    stays the same across re-runs of the same command, which skipping finished pages relies on.
    """
    candidates = [_stem_candidates(path.absolute()) for path in paths]
    levels = [0] * len(paths)
    while True:
        names = [options[level] for options, level in zip(candidates, levels, strict=True)]
        raisable = [index for index in _clashing(names) if levels[index] + 1 < len(candidates[index])]
        if not raisable:
            return names
        for index in raisable:
            levels[index] += 1


def _stem_candidates(path: Path) -> list[str]:
    """`s`, `s_png`, `dir__s`, `dir__s_png`, `parent__dir__s`, ... and finally `s_<hash of the path>`."""
    parents = [part for part in path.parent.parts if part != path.anchor]
    suffix = path.suffix.lstrip(".")
    names: list[str] = []
    for level in range(len(parents) + 1):
        prefix = parents[len(parents) - level :]
        names.append("__".join([*prefix, path.stem]))
        if suffix:
            names.append("__".join([*prefix, f"{path.stem}_{suffix}"]))
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return [*names, f"{path.stem}_{digest}"]


def _clashing(names: list[str]) -> set[int]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        by_key[name.lower()].append(index)
    clashing = {index for group in by_key.values() if len(group) > 1 for index in group}
    for index, name in enumerate(names):
        paged = re.fullmatch(r"(.+)_p\d+", name.lower())
        if paged and paged[1] in by_key:
            clashing.add(index)
            clashing.update(by_key[paged[1]])
    return clashing
