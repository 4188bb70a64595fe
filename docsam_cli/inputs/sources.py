"""Expand command-line sources (files, directories, globs, `-` for stdin) into an ordered list of documents.

Nothing is opened here (only `stat`), so a batch of ten thousand scans is listed at once, and anything but
a regular file (a named pipe, a device, a socket) is refused before anyone opens it. Each document gets a
`stem` that is unique within the run and that output names are built from.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import logging
import os
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from docsam_cli.errors import InputError
from docsam_cli.inputs.files import PDF_SUFFIXES, require_regular_file
from docsam_cli.names import file_name_text

# Every suffix Pillow reads the formats docsam reads by (`images.IMAGE_FORMATS`).
IMAGE_SUFFIXES = frozenset(
    {
        ".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".jp2", ".j2k", ".jpx", ".jpf", ".j2c", ".jpc",
        ".tif", ".tiff", ".bmp", ".dib", ".gif", ".webp", ".pbm", ".pgm", ".ppm", ".pnm", ".pfm",
    }
)  # fmt: skip
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES
STDIN_SOURCE = "-"
COMMENT_PREFIX = "#"
BYTE_ORDER_MARK = "\ufeff"
# The byte order marks a path list may open with and the encodings they announce (None: file names' own,
# UTF-8 on any current system). UTF-32 LE's mark opens with UTF-16 LE's, so it is looked for first.
_LIST_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, None),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
MAX_STEM_BYTES = 200  # UTF-8 bytes: a file name holds 255, leaving room for `_p0001` and `.overlay.png`
_GLOB_CHARS = re.compile(r"[*?\[]")
_SEPARATORS = re.escape(os.sep + (os.altsep or ""))
_RECURSIVE_PART = re.compile(rf"(?:^|(?<=[{_SEPARATORS}]))\*\*(?:[{_SEPARATORS}]+|$)")  # a `**` component

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    """One input file. `stem` is unique in the run (case-insensitively) and names its outputs."""

    path: Path
    stem: str


def collect_documents(
    sources: Iterable[str],
    *,
    recursive: bool = False,
    stdin: TextIO | BinaryIO | None = None,
    skip_folders: Iterable[Path] = (),
    earlier_stems: Mapping[str, str] | None = None,
    on_empty_stdin: Callable[[], None] | None = None,
) -> list[Document | InputError]:
    """Documents in command-line order, each file once (and each refusal once); an InputError in place of a
    source that names none.

    - a file is taken whatever its suffix (the loader tells a PDF from an image by its content);
    - a directory gives its images and PDFs (by suffix), in natural order (`2.png` before `10.png`),
      hidden files skipped; subdirectories too when `recursive`;
    - a path that does not exist but contains `*`, `?` or `[` is a glob (`**` spans directories);
      matching files are filtered by suffix like a directory's, matching directories are expanded;
    - `-` reads paths from `stdin` (see `read_path_list`); those paths are taken literally; a list that
      names none is nothing to do, and calls `on_empty_stdin` if given;
    - a named pipe, device or socket, named or found, is an InputError (never opened);
    - nothing is found in `skip_folders` (those the run writes its pages' files in, compared after
      resolving links), so a run whose outputs land inside a folder it scans, or in the very folder it
      scans, never takes them for inputs, nor from a list on stdin (made by a `find` over such a tree;
      a warning counts them); a file named as an argument is still taken, and so is a folder;
    - stems as `assign_stems` gives them, keeping those of `earlier_stems` (see there).
    """
    skip = frozenset(os.path.realpath(folder) for folder in skip_folders)
    found: list[Path | InputError] = []
    for source in sources:
        if source == STDIN_SOURCE:
            listed = _stdin_paths(stdin if stdin is not None else sys.stdin)
            if isinstance(listed, InputError):
                found.append(listed)
                continue
            if not listed and on_empty_stdin is not None:
                on_empty_stdin()
            for line in _without_own_outputs(listed, skip):
                found.extend(_expand_path(Path(line), recursive, skip))
        elif not os.path.lexists(source) and _GLOB_CHARS.search(source):
            found.extend(_expand_glob(source, recursive, skip))
        else:
            found.extend(_expand_path(Path(source), recursive, skip))
    unique = _each_file_once(found)
    paths = [item for item in unique if isinstance(item, Path)]
    stems = dict(zip(paths, assign_stems(paths, earlier_stems or {}), strict=True))
    return [Document(item, stems[item]) if isinstance(item, Path) else item for item in unique]


def _each_file_once(found: list[Path | InputError]) -> list[Path | InputError]:
    """`found` without the files (and refusals) named again, by identity (`_identity`: a link is the file it
    names), each where it was first found."""
    seen: set[tuple[int, int] | str] = set()
    unique: list[Path | InputError] = []
    for item in found:
        key = _identity(item.path if isinstance(item, InputError) else item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _without_own_outputs(listed: list[str], skip: frozenset[str]) -> list[str]:
    """The paths listed on stdin but those in `skip`, the run's own page folders (a `find` over a tree
    holding the output folder lists the overlays and page images of the runs before), which a warning
    counts. Each folder is resolved once: a list of 100k pages names a few folders."""
    real_folders: dict[str, str] = {}

    def own(line: str) -> bool:
        folder, name = os.path.split(line)
        if name in (os.curdir, os.pardir):  # `out/overlay/..` is no file in overlay/
            folder, name = line, ""
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder or os.curdir)
        real = os.path.join(real_folders[folder], name)
        return any(real == skipped or real.startswith(skipped + os.sep) for skipped in skip)

    kept = [line for line in listed if not own(line)]
    if count := len(listed) - len(kept):
        logger.warning(
            "-: %d %s on stdin %s in the output folder's page folders, which are never read as inputs: "
            "left out",
            count,
            "path" if count == 1 else "paths",
            "lies" if count == 1 else "lie",
        )
    return kept


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | str:
    """What makes two names one file: its device and inode, so that a symbolic or a hard link is the file
    it names (a snapshot made with `cp -al` holds the same files again); the resolved path of a name that
    names nothing, or that a file system numbers 0 (no inode numbers: files must never be merged)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        status = None
    if status is None or status.st_ino == 0:
        return os.path.realpath(path)  # never raises
    return status.st_dev, status.st_ino


def _stdin_paths(stream: TextIO | BinaryIO | None) -> list[str] | InputError:
    """The paths listed on stdin (`read_path_list`), or the InputError of a list that cannot be read: one
    not valid in its encoding, or stdin closed (`<&-`, a daemon's; Python's `sys.stdin` is then None) or
    not open for reading."""
    reason = "stdin is closed"
    if stream is not None:
        try:
            return read_path_list(stream)
        except OSError as error:
            reason = error.strerror or str(error)
        except ValueError as error:
            reason = str(error)
    return InputError(STDIN_SOURCE, f"cannot read the list of paths on stdin: {reason}")


def read_path_list(stream: TextIO | BinaryIO) -> list[str]:
    """The paths listed on `stream`: one per line, or NUL-separated (`find -print0`) if the input holds a NUL.

    A line whose first non-blank character is `#` is a comment and blank lines are skipped; a path that
    really starts with `#` is given as `./#name`. A trailing CR (CRLF lists) is dropped, and so is a byte
    order mark opening the list (Windows editors write one) or a line (such lists joined, `type a.txt
    b.txt`, `cat`: no file name starts with the invisible mark; dataset lists read it alike). A list
    opening with UTF-16's or UTF-32's mark (PowerShell's `>` writes UTF-16) is read in that encoding, and
    one that is not valid there raises ValueError; a list of lines in UTF-16 without the mark is read as
    UTF-16 too (see `decode_list`); any other list is decoded as file names are (undecodable bytes kept,
    PEP 383), so any name reaches the file system unchanged.
    """
    raw = stream.buffer if hasattr(stream, "buffer") else stream
    data = raw.read()
    text = decode_list(data) if isinstance(data, bytes) else data.removeprefix(BYTE_ORDER_MARK)
    if "\0" in text:
        return [entry for entry in text.split("\0") if entry]
    lines = (line.removeprefix(BYTE_ORDER_MARK).removesuffix("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip() and not line.lstrip().startswith(COMMENT_PREFIX)]


def decode_list(data: bytes) -> str:
    """A path list's text, in the encoding its byte order mark announces (see `read_path_list`), without
    the mark, or in UTF-16 where it reads as UTF-16 lines without one (`_unmarked_utf16`). Raises ValueError
    for a list that is not in the encoding its mark announces."""
    for mark, encoding in _LIST_ENCODINGS:
        if data.startswith(mark):
            body = data[len(mark) :]
            return os.fsdecode(body) if encoding is None else _decode_marked(body, encoding, len(mark))
    unmarked = _unmarked_utf16(data) if b"\0" in data else None
    return os.fsdecode(data) if unmarked is None else unmarked


def _unmarked_utf16(data: bytes) -> str | None:
    """`data` as UTF-16 written without a byte order mark (`cmd /u`, Python's and .NET's utf-16-le
    writers), or None where it is no such list: it must be valid UTF-16 in the byte order whose high bytes
    hold more of its NULs (those of ASCII characters), hold lines and no NUL character. A NUL-separated
    list (`find -print0`) read so holds no newline (one would need a name ending in one), and a list in
    UTF-8 no NUL at all."""
    if len(data) % 2:
        return None
    encoding = "utf-16-le" if data[1::2].count(0) > data[0::2].count(0) else "utf-16-be"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return None
    return text if "\n" in text and "\0" not in text else None


def _decode_marked(body: bytes, encoding: str, offset: int) -> str:
    """`body` in `encoding`; a ValueError saying where it is not, counting the mark's `offset` bytes."""
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as error:
        name = encoding[:-3].upper()  # utf-16-le -> UTF-16
        where = f"{error.reason} at byte {error.start + offset}"
        raise ValueError(f"it opens with {name}'s byte order mark but is not {name} ({where})") from None


def _expand_path(path: Path, recursive: bool, skip: frozenset[str]) -> list[Path | InputError]:
    if _is_directory(path):
        files = _directory_files(path, recursive, skip)
        if files:
            return files
        root = os.path.realpath(path)
        reason = "directory contains no images or PDFs"
        if any(Path(folder).is_relative_to(root) and os.path.isdir(folder) for folder in skip):
            reason += " outside the output folder's page folders, which are never read as inputs"
        return [InputError(path, reason)]
    return [regular_file(path)]


def _is_directory(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. no permission to look: `regular_file` names the problem
        return False


def regular_file(path: Path) -> Path | InputError:
    """`path` when it is (a symbolic link to) a regular file, else the InputError saying what it is."""
    try:
        require_regular_file(path)
    except InputError as error:
        return error
    return path


def _expand_glob(pattern: str, recursive: bool, skip: frozenset[str]) -> list[Path | InputError]:
    """The files `pattern` matches (see `collect_documents`); a folder it cannot list (under `**`, or one
    its wildcards are matched in) is an InputError, as under a folder given with --recursive, not left
    out."""
    unreadable: list[InputError] = []
    matches = sorted(_glob(pattern, skip, lambda error: unreadable.append(unlisted(error))), key=natural_key)
    expanded: list[Path | InputError] = [*unreadable]
    for match in map(Path, matches):
        if _is_inside(match, skip):
            continue
        if _is_directory(match):
            expanded.extend(_directory_files(match, recursive, skip))
        elif match.suffix.lower() in SUPPORTED_SUFFIXES:
            expanded.append(regular_file(match))
    return expanded or [InputError(pattern, "no image or PDF matches this pattern")]


def _glob(pattern: str, skip: frozenset[str], report: Callable[[OSError], None]) -> list[str]:
    """`glob.glob(pattern, recursive=True)`, except that `**` spans folders as `walk_folders` does.

    Python's glob follows symbolic links to folders under `**`, so a link loop (`sub/up -> ..`) gives
    ever longer aliases of the same files, and two loops make it run for ever. Here the part before the
    first `**` is globbed, every folder under each match is found by `walk_folders`, and the rest of the
    pattern is matched in each (recursively, for a second `**`). `report` gets the OSError of a folder
    that cannot be listed, under `**` or named by the pattern (`_report_unlisted`).
    """
    star = _RECURSIVE_PART.search(pattern)
    if star is None:
        _report_unlisted(pattern, report)
        return glob.glob(pattern)
    head, tail = pattern[: star.start()], pattern[star.end() :]
    _report_unlisted(head, report)
    matches: list[str] = []
    for base in glob.glob(head) if head else [""]:
        for directory, names in walk_folders(Path(base or os.curdir), True, skip, report):
            relative = os.path.relpath(directory, base or os.curdir)
            folder = base if relative == os.curdir else os.path.join(base, relative)
            if tail:
                matches.extend(_glob(os.path.join(glob.escape(folder), tail), skip, report))
            elif star[0].endswith("*"):  # a trailing `**` matches every folder and file below
                matches.extend([folder, *(os.path.join(folder, name) for name in names)] if folder else names)
            elif folder:  # and `**/` every folder
                matches.append(os.path.join(folder, ""))
    return matches


def _report_unlisted(pattern: str, report: Callable[[OSError], None]) -> None:
    """Give `report` the OSError of each folder that `glob.glob(pattern)` lists and cannot (no permission),
    which glob passes over as if it held no match (`'locked/*.png'`, `'scans/*/*.png'`): the folders that
    the pattern's folder part names or matches, where its last part has wildcards, and so on up. Opening a
    folder is enough to tell; glob lists the others anyway."""
    folder, name = os.path.split(pattern)
    wild_folder = folder != pattern and glob.has_magic(folder)
    if wild_folder:
        _report_unlisted(folder, report)
    if not glob.has_magic(name):
        return
    for candidate in glob.glob(folder) if wild_folder else [folder]:
        try:
            os.scandir(candidate or os.curdir).close()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            report(error)


def walk_folders(
    root: Path, recursive: bool, skip: frozenset[str], report: Callable[[OSError], None] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Each folder under `root` (only `root` unless `recursive`) with the names of its non-hidden files,
    top-down; hidden folders and those whose real path is in `skip` are left out. `report` gets the
    OSError of a folder that cannot be listed.

    Symbolic links to folders are followed (a box of scans linked in from a NAS is part of the tree), but
    each real folder is walked once, under the first of its names the walk meets (top-down, each folder's
    sub-folders in natural order: the same in every run), and a link into `root` or to a folder holding it
    is not followed: the folder it leads to is walked under its own name, or it is a loop (`sub/up -> ..`).
    """
    top = os.path.realpath(root)
    walked: set[str] = set()

    def followed(directory: str, name: str) -> bool:
        path = os.path.join(directory, name)
        real = os.path.realpath(path)
        if name.startswith(".") or real in skip or real in walked:
            return False
        if os.path.islink(path) and (Path(real).is_relative_to(top) or Path(top).is_relative_to(real)):
            return False
        walked.add(real)
        return True

    walked.add(top)
    for directory, subdirs, names in os.walk(root, onerror=report, followlinks=True):
        subdirs[:] = [
            name for name in sorted(subdirs, key=natural_key) if recursive and followed(directory, name)
        ]
        yield directory, [name for name in names if not name.startswith(".")]


def unlisted(error: OSError) -> InputError:
    """The error of a folder a walk (`walk_folders`) cannot list, naming it."""
    return InputError(error.filename, f"cannot list directory: {error.strerror or error}")


def _directory_files(root: Path, recursive: bool, skip: frozenset[str]) -> list[Path | InputError]:
    """Supported files under `root` in natural order, each a Path or the InputError refusing it; a folder
    that cannot be listed is an InputError too."""
    unreadable: list[InputError] = []
    files: list[Path] = []
    for directory, names in walk_folders(root, recursive, skip, lambda e: unreadable.append(unlisted(e))):
        files.extend(
            Path(directory, name) for name in names if Path(name).suffix.lower() in SUPPORTED_SUFFIXES
        )
    files.sort(key=lambda path: [natural_key(part) for part in path.relative_to(root).parts])
    return [*unreadable, *(regular_file(path) for path in files)]


def _is_inside(path: Path, folders: frozenset[str]) -> bool:
    """Whether `path` resolves to one of the real paths `folders` or to something in one."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(folder) for folder in folders)


def natural_key(text: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders digit runs by value: `page2` < `page10`. Case-insensitive; names it makes
    equal (`P1`, `p01`, `p1`) in code-point order, so that an order never depends on the order a file
    system lists a folder in (ext4 by a hash of each file system's own, tmpfs newest first)."""
    parts = re.split(r"(\d+)", text.lower())
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts)), text


def assign_stems(paths: list[Path], earlier: Mapping[str, str] | None = None) -> list[str]:
    """A unique output stem per path: the file name's stem, lengthened only where two would collide.

    Names collide when equal ignoring case and Unicode normalization (`stem_key`: outputs may land on a
    file system that ignores those) or when one looks like a page of the other (`scan_p0002` vs. the pages
    `scan_p0001`... of `scan.pdf`).
    Colliding stems get the suffix appended (`scan_png`, `scan_jpg`), then their parent directories
    prepended one at a time (`vol1__0001`, `vol2__0001`), then a hash of the absolute path. A stem therefore
    stays the same across re-runs of the same command, which skipping finished pages relies on.

    `earlier` holds the stems earlier runs into the same output folder gave (by `input_key`): a file found
    there, or the same file under another name (a symbolic or hard link), keeps its stem, and no other file
    takes the stem of one that still exists, so that a file keeps its page ids when a rerun names more files
    (a folder that has grown) or fewer, and is never done again under a new id. (A file moved since is
    another file here; its stem is free again.)

    A stem names files and is written inside them, so it is made portable: control characters and bytes
    that are not UTF-8 are percent-encoded (`scan%0Anew`, `scan%FF`, see `names.file_name_text`), and a
    stem longer than `MAX_STEM_BYTES` is cut and ends in a hash of the whole (`long…name~1a2b3c4d`).
    """
    found, held = _earlier_stems(paths, earlier or {})
    candidates = [
        ([stem] if stem is not None else []) + _stem_candidates(path.absolute())
        for path, stem in zip(paths, found, strict=True)
    ]
    return _first_distinct(candidates, [stem is not None for stem in found], held)


def _earlier_stems(paths: list[Path], earlier: Mapping[str, str]) -> tuple[list[str | None], list[str]]:
    """The stem each of `paths` was given by the earlier runs whose stems are `earlier` (None for a file
    new to them), and the stems the other files of those runs, which still exist, hold."""
    keys = [input_key(path) for path in paths]
    found = [earlier.get(key) for key in keys]
    listed = set(keys)
    # The other files of earlier runs that still exist, by identity (`_identity`, as `collect_documents`
    # tells files apart): a file named now under another name of one of them (a symbolic or hard link)
    # keeps its stem, and the rest hold theirs.
    others = {
        _identity(key): stem for key, stem in earlier.items() if key not in listed and os.path.lexists(key)
    }
    identities = [_identity(path) for path in paths]
    found = [stem or others.get(identity) for stem, identity in zip(found, identities, strict=True)]
    named_now = set(identities)
    held = [stem for identity, stem in others.items() if identity not in named_now]
    return found, held


def _first_distinct(candidates: list[list[str]], kept: list[bool], held: list[str]) -> list[str]:
    """One name per file out of its `candidates`, tried in order: the files whose names clash (with each
    other or with a `held` name) move on to their next candidate together, those that `kept` an earlier
    run's stem (their first candidate) last, until no clash is left or no clashing file has another."""
    levels = [0] * len(candidates)
    while True:
        names = [options[level] for options, level in zip(candidates, levels, strict=True)]
        clashing = [
            index
            for index in _clashing([*names, *held])
            if index < len(names) and levels[index] + 1 < len(candidates[index])
        ]
        raisable = [index for index in clashing if not (kept[index] and levels[index] == 0)] or clashing
        if not raisable:
            return names
        for index in raisable:
            levels[index] += 1


def input_key(path: Path) -> str:
    """How an output folder remembers an input file: its absolute path as named, a link staying itself (a
    `current` link to the latest snapshot names the same pages run after run); where `..` after a linked
    folder makes that text name another place, with its folders resolved."""
    absolute = os.path.abspath(path)
    try:
        if os.path.samefile(absolute, path):
            return absolute
    except OSError:
        pass
    return os.path.join(os.path.realpath(os.path.dirname(os.path.join(os.getcwd(), path))), path.name)


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
    names.append(f"{path.stem}_{_digest(str(path))}")
    return [portable_stem(name) for name in names]


def portable_stem(name: str) -> str:
    """`name` fit to be the stem of an output file (see `assign_stems`): percent-encoded, and cut to
    `MAX_STEM_BYTES` with a hash of the whole when longer."""
    name = file_name_text(name)
    encoded = name.encode()
    if len(encoded) <= MAX_STEM_BYTES:
        return name
    kept = encoded[: MAX_STEM_BYTES - 9].decode(errors="ignore")  # whole characters only
    return f"{kept}~{_digest(name)}"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def stem_key(stem: str) -> str:
    """What two stems must differ in to name different files wherever outputs land: a file system may
    ignore case (Windows, macOS) and Unicode normalization (macOS: `café` composed or with a combining
    accent is one name), so stems are compared lower-cased and in NFC."""
    return unicodedata.normalize("NFC", stem).lower()


def _clashing(names: list[str]) -> set[int]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        by_key[stem_key(name)].append(index)
    clashing = {index for group in by_key.values() if len(group) > 1 for index in group}
    for index, name in enumerate(names):
        paged = re.fullmatch(r"(.+)_p\d+", stem_key(name))
        if paged and paged[1] in by_key:
            clashing.add(index)
            clashing.update(by_key[paged[1]])
    return clashing
