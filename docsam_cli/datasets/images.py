"""Find the image (or PDF) an annotation file names, where people actually put it, and check it.

Annotation sets are laid out in many ways: PAGE exports name images relative to the workspace, Transkribus
puts the XML in `page/` one level below its images, newspaper sets keep `xml/<collection>/` beside `img/`,
DocLayNet has `COCO/` beside `PNG/`. `ImageFinder.find` tries, in order:

1. with `--images DIR`: the reference relative to DIR, then its file name in DIR;
2. the reference relative to the annotation's folder and to each folder above it, up to the source root
   (the SRC folder, or the folder of a SRC file);
3. the reference relative to the annotation folder's parent, even above the source root (the PAGE files of
   an OCR-D workspace, `data/OCR-D-GT-PAGE/*.xml`, name `OCR-D-IMG/...` relative to `data/`), but not
   climbing out of that parent;
4. a reference with folders in the format's usual sub-folders of those folders (`val2017/1.jpg` in
   `images/val2017/`); the file name alone in those folders, in the format's usual sub-folders of them
   (VOC's `JPEGImages/`, COCO's `images/`, `PNG/` and the folder of the json's split: `val2017/` for
   `instances_val2017.json`), and in the annotation folder's parent (Transkribus), even above the source
   root;
5. in those same folders, a unique file whose name differs only in letter case (sets made on Windows)
   or Unicode normalization (`ü` composed or as `u` and a combining accent: names made on macOS),
   else a unique image of the same stem (converted to another format after annotation);
6. a file of that name (else of that stem, with an image extension) anywhere under `--images`, the
   source root or a folder the format names (a COCO file's dataset folder, above `annotations/`), but for
   the overlays and label maps of `docsam segment`'s output folders (pictures drawn from the page, of its
   name); of several, the one whose folders mirror the annotation's (`xml/c1/p.xml` ↔ `img/c1/p.jpg`), if
   one does.

Steps 5 and 6 are guesses: the returned note says which one was made. A reference that climbs out of the
source root with `..` is refused (path traversal), unless `--images` holds it: where it points, its
trailing folders, or a file of its name (`docsam segment`'s outputs name their images that way: read back
with the output folder as the source, their images lie beside it); an absolute path or a URL (written on
another machine) counts by its trailing folders (`/home/bob/set/vol1/p.png`: `vol1/p.png`, longest first,
in steps 1 and 2 before the file name of step 4) and its file name. When nothing is found, the
message names the file looked for and where.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from docsam_cli.inputs.sources import IMAGE_SUFFIXES as READABLE_SUFFIXES
from docsam_cli.inputs.sources import stem_key, walk_folders
from docsam_cli.names import display_path
from docsam_cli.writers.page_outputs import RENDERING_FOLDERS, STATE_DIR

_COMMON_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2")
# The extensions an annotation's image may have, tried in this order: the common ones, then every other
# one `docsam segment` reads.
IMAGE_SUFFIXES = (*_COMMON_SUFFIXES, *sorted(READABLE_SUFFIXES - set(_COMMON_SUFFIXES)))
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
# Label Studio's local storage, `/data/local-files/?d=PATH` or that URL: PATH under its document root
_LOCAL_FILES = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]+://[^/]*)?/data/local-files/?\?d=([^&#]+)")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_NOTE_CASE = "image file name differs in letter case or Unicode normalization"
_NOTE_SUFFIX = "image found under another file extension"
_NOTE_SEARCH = "image found by its name elsewhere under the source folder"


class ImageNotFound(Exception):
    """The reference could not be resolved; `str()` is the reason to report."""


def within(path: Path, root: Path) -> bool:
    """Lexical containment (no symlink resolution: linked images inside the folder are fine)."""
    path, root = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ImageFinder:
    """Looks up the images of the annotation files under one source root (see the module docstring).

    The recursive search of step 6 lists a folder once, on the first reference that needs it, without
    the folder `skip` (the output folder, when it lies inside the source).
    """

    def __init__(self, root: Path, images: Path | None = None, skip: Path | None = None) -> None:
        self.root = root
        self.images = images
        self.skip = skip
        self._indexes: dict[Path, _NameIndex] = {}
        self._listings: dict[Path, _Names] = {}

    def find(
        self,
        reference: str,
        annotation: Path,
        *,
        label: str = "image",
        extra_dirs: Sequence[str] = (),
        search_under: Sequence[Path] = (),
        suffixes: Sequence[str] = IMAGE_SUFFIXES,
    ) -> tuple[Path, str | None]:
        """The file `reference` (as written in `annotation`) names, and a note when it was a guess.

        A URL's path is percent-decoded; another reference is taken as written, and then, where that finds
        nothing, percent-decoded: an older `segment`'s outputs (today's save such a page as `image/<id>.png`)
        and tools that write URL-style references name `scan\\xff.png` as `scan%FF.png`, `Seite ü.png` as
        `Seite%20%C3%BC.png`.

        `extra_dirs`: the format's usual sub-folders (step 4); `search_under`: folders searched by name after
        `--images` and the source root (step 6). `suffixes`: the extensions a file of the same stem may have
        (images; `.pdf` for PDFs). Raises ImageNotFound, whose message names what was looked for and where;
        also when a place to look lies in a folder the user may not search (Python's `Path.is_file()` raises
        there), an error of this annotation, not of the whole run.
        """
        try:
            return self._resolve(reference, annotation, label, extra_dirs, search_under, suffixes)
        except PermissionError as error:
            raise ImageNotFound(
                f"{label} '{display_path(reference)}': cannot look at "
                f"{display_path(error.filename)}: {error.strerror}"
            ) from None

    def _resolve(
        self,
        reference: str,
        annotation: Path,
        label: str,
        extra_dirs: Sequence[str],
        search_under: Sequence[Path],
        suffixes: Sequence[str],
    ) -> tuple[Path, str | None]:
        """`find`, a place to look in a folder that may not be searched raising PermissionError."""
        text = reference.strip()
        if not text:
            raise ImageNotFound(f"no {label} file named")

        def find(path: str) -> tuple[Path, str | None]:
            arguments = (path, reference, annotation, label, extra_dirs, search_under, suffixes)
            if "\\" in path and os.sep == "/":  # a name holding one (`vol1\\p1.png`, from a Windows zip)
                with contextlib.suppress(ImageNotFound):
                    return self._find(*arguments, separator="")
            return self._find(*arguments)

        if _LOCAL_FILES.match(text) or _SCHEME.match(text):
            text = url_path(text)
        elif _PERCENT.search(text):
            try:
                return find(text)
            except ImageNotFound as problem:
                with contextlib.suppress(ImageNotFound):
                    return find(_percent_decoded(text))
                raise problem from None
        return find(text)

    def _find(
        self,
        text: str,
        reference: str,
        annotation: Path,
        label: str,
        extra_dirs: Sequence[str],
        search_under: Sequence[Path],
        suffixes: Sequence[str],
        separator: str = "\\",
    ) -> tuple[Path, str | None]:
        """`find` for the path `text` that `reference` gives, `separator` (Windows' `\\`, or "" for none)
        read as `/`."""
        posix = PurePosixPath(text.replace(separator, "/") if separator else text)
        name = posix.name
        folder = annotation.parent
        relative = None if posix.is_absolute() or _DRIVE.match(str(posix)) else Path(*posix.parts)
        if relative is not None and not within(folder / relative, self.root):
            found = self._outside_root(folder / relative, relative, suffixes)
            if found is None:
                raise ImageNotFound(
                    f"{label} '{display_path(reference)}' points outside the source folder "
                    f"{display_path(self.root)}"
                    + (
                        " (use --images DIR to say where the images are)"
                        if self.images is None
                        else f" and is not under {display_path(self.images)}"
                    )
                )
            return found
        exact, name_folders = self._exact_candidates(posix, relative, folder, extra_dirs, suffixes)
        found = _first_file(exact)
        if found is not None:
            return found, None
        folders = list(dict.fromkeys([*([self.images] if self.images is not None else []), *name_folders]))
        found_loosely = self._loose_match(name, folders, suffixes)
        if found_loosely is not None:
            return found_loosely
        search_roots = list(
            dict.fromkeys(p for p in (self.images, self.root, *search_under) if p is not None)
        )
        found_by_name = self._search_by_name(
            name, folder, search_roots, suffixes, f"{label} '{display_path(reference)}'"
        )
        if found_by_name is not None:
            return found_by_name
        searched = " and ".join(map(display_path, search_roots))
        raise ImageNotFound(
            f"{label} '{display_path(reference)}' not found "
            f"(looked in {', '.join(map(display_path, folders))}, and by "
            f"name under {searched}; use --images DIR to say where they are)"
        )

    def _exact_candidates(
        self,
        posix: PurePosixPath,
        relative: Path | None,
        folder: Path,
        extra_dirs: Sequence[str],
        suffixes: Sequence[str],
    ) -> tuple[list[Path], list[Path]]:
        """The paths steps 1 to 4 try for `posix` (`relative`: it as a relative path, None for an absolute
        one), in order, for an annotation in `folder`; and the folders step 4 looks for its file name in."""
        name = posix.name
        # An absolute path (another machine's) is taken by its trailing folders, longest first, and name
        tails = [] if relative is not None else _trailing_paths(posix.parts[1:])[:-1]
        exact = self._under_images(name, relative, tails)
        bases = _ancestors(folder, self.root)
        if relative is None:
            exact += [Path(posix)] if within(Path(posix), self.root) else []
        else:
            exact += [base / relative for base in bases if within(base / relative, self.root)]
        parent = parent_folder(folder)
        if parent not in bases:
            bases.append(parent)
            if relative is not None and within(parent / relative, parent):
                exact.append(parent / relative)  # an OCR-D workspace's PAGE files given as files
        exact += [base / tail for tail in tails for base in bases]
        if relative is not None and len(relative.parts) > 1:  # `val2017/1.jpg` in `images/val2017/`
            usual = (base / extra / relative for base in bases for extra in extra_dirs)
            exact += [path for path in usual if within(path, self.root) or within(path, parent)]
        name_folders = [*bases, *(base / extra for base in bases for extra in extra_dirs)]
        exact += [base / name for base in name_folders]
        if PurePosixPath(name).suffix.lower() not in suffixes:  # "scan" or "scan.v2" for "scan.v2.jpg"
            exact += [path.with_name(path.name + suffix) for path in list(exact) for suffix in suffixes]
        return exact, name_folders

    def _under_images(self, name: str, relative: Path | None, tails: Sequence[Path]) -> list[Path]:
        """Step 1: with `--images`, the reference relative to it (`relative`, where that stays inside it) or
        an absolute one's trailing folders (`tails`), then the file `name` in it."""
        if self.images is None:
            return []
        given = [] if relative is None else [self.images / relative]
        inside = [path for path in given if within(path, self.images)]
        return [*inside, *(self.images / tail for tail in tails), self.images / name]

    def _loose_match(
        self, name: str, folders: Sequence[Path], suffixes: Sequence[str]
    ) -> tuple[Path, str] | None:
        """Step 5: the one file in one of `folders` named `name` but for letter case or Unicode
        normalization, else the one of its stem with one of `suffixes`, and the note saying which guess."""
        loose_matches: tuple[tuple[Callable[[_Names], list[Path]], str], ...] = (
            (lambda names: names.named(name), _NOTE_CASE),
            (lambda names: names.stemmed(name, suffixes), _NOTE_SUFFIX),
        )
        for loose, note in loose_matches:
            for candidate_folder in folders:
                matches = loose(self._listing(candidate_folder))
                if len(matches) == 1:
                    return matches[0], note
        return None

    def _search_by_name(
        self, name: str, folder: Path, search_roots: Sequence[Path], suffixes: Sequence[str], looked_for: str
    ) -> tuple[Path, str] | None:
        """Step 6: the file called `name` (else of its stem with one of `suffixes`) under the first of
        `search_roots` that holds one, the one mirroring the annotation's `folder` of several, and the note
        of that guess. Raises ImageNotFound, opening with `looked_for`, where none of several stands out."""
        for search_root in (p for p in search_roots if p.is_dir()):
            matches = self._index(search_root).matches(name, suffixes)
            if matches:
                best = _mirroring(matches, folder)
                if best is None:
                    shown = ", ".join(display_path(match) for match in matches[:3])
                    more = ", ..." if len(matches) > 3 else ""
                    raise ImageNotFound(
                        f"{looked_for}: {len(matches)} files of that name under {display_path(search_root)} "
                        f"({shown}{more}); use --images DIR to say where they are"
                    )
                return best, _NOTE_SEARCH
        return None

    def _outside_root(
        self, target: Path, relative: Path, suffixes: Sequence[str]
    ) -> tuple[Path, str | None] | None:
        """A reference that climbs out of the source root, looked for under `--images` only: where it points,
        when that lies under `--images`; else its trailing folders and name under `--images`
        (`../../scans/vol1/p1.png`: `scans/vol1/p1.png`, `vol1/p1.png`, `p1.png`); else the one file of
        its name anywhere under `--images` (of several, the one whose folders mirror the reference's).
        Without `--images` nothing (path traversal)."""
        if self.images is None:
            return None
        tail = [part for part in Path(os.path.normpath(relative)).parts if part not in ("..", ".")]
        candidates = [target] if within(target, self.images) else []
        candidates += [self.images / trailing for trailing in _trailing_paths(tail)]
        found = _first_file(candidate for candidate in candidates if within(candidate, self.images))
        if found is not None:
            return found, None
        if not tail or not self.images.is_dir():
            return None
        matches = self._index(self.images).matches(tail[-1], suffixes)
        best = _mirroring(matches, self.images.joinpath(*tail[:-1])) if matches else None
        return None if best is None else (best, _NOTE_SEARCH)

    def _index(self, folder: Path) -> _NameIndex:
        if folder not in self._indexes:
            self._indexes[folder] = _NameIndex(folder, self.skip)
        return self._indexes[folder]

    def _listing(self, folder: Path) -> _Names:
        """The files directly in `folder` (step 5), listed on the first reference that needs them: listed
        again for each reference, a folder of N images looked up under other names cost N² entries read."""
        if folder not in self._listings:
            self._listings[folder] = _folder_names(folder)
        return self._listings[folder]


def url_path(reference: str) -> str:
    """The path a URL names, percent-decoded: Label Studio's `/data/local-files/?d=PATH` of its local
    storage (also as a full URL) names `/PATH`, PATH under its document root, taken by its trailing
    folders as a path of another machine is; another reference, not a URL, as written."""
    text = reference.strip()
    local = _LOCAL_FILES.match(text)
    if local is not None:
        return "/" + _percent_decoded(local.group(1)).lstrip("/")
    return _percent_decoded(urlparse(text).path) if _SCHEME.match(text) else reference


def file_name_stem(file_name: str) -> str:
    """The stem of a COCO image's `file_name` ("" for none), a URL's that of the path it names, Windows
    folders split as POSIX ones: the key predictions and ground truth are matched on."""
    return PurePosixPath(url_path(file_name).replace("\\", "/")).stem


def _percent_decoded(text: str) -> str:
    """`text` percent-decoded as a file name: UTF-8, other bytes as the file system's undecodable bytes."""
    return unquote(text, errors="surrogateescape")


def _trailing_paths(parts: Sequence[str]) -> list[Path]:
    """The paths that end `parts`, longest first (`a/b/c.png`, `b/c.png`, `c.png`), without `.` and `..`."""
    parts = [part for part in parts if part not in (".", "..")]
    return [Path(*parts[start:]) for start in range(len(parts))]


def parent_folder(folder: Path) -> Path:
    """The folder above `folder`, also where that is `.` or `..` (`Path.parent` says `.` for both: a file
    given by its name alone, from inside its folder)."""
    if folder.name in ("", ".."):
        return Path(os.path.normpath(folder / os.pardir))
    return folder.parent


def _ancestors(folder: Path, root: Path) -> list[Path]:
    """`folder` and each folder above it up to `root` (just `folder` when it is not inside `root`)."""
    bases = [folder]
    current = folder
    while current != root and current.parent != current and within(current.parent, root):
        current = current.parent
        bases.append(current)
    return bases


def _first_file(candidates: Iterable[Path]) -> Path | None:
    return next((candidate for candidate in candidates if candidate.is_file()), None)


class _Names:
    """Files by name and by stem, ignoring case and Unicode normalization (`stem_key`)."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)

    def add(self, path: Path) -> None:
        self.by_name[stem_key(path.name)].append(path)
        self.by_stem[stem_key(path.stem)].append(path)

    def named(self, name: str) -> list[Path]:
        """The files called `name`."""
        return self.by_name.get(stem_key(name), [])

    def stemmed(self, name: str, suffixes: Sequence[str]) -> list[Path]:
        """The files of the stem of `name` with one of `suffixes`."""
        stem = stem_key(PurePosixPath(name).stem)
        return [path for path in self.by_stem.get(stem, []) if path.suffix.lower() in suffixes]


def _folder_names(folder: Path) -> _Names:
    """The files directly in `folder` (none where it is no folder). Raises PermissionError for a folder
    that cannot be listed."""
    names = _Names()
    if folder.is_dir():
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    names.add(Path(entry.path))
    return names


class _NameIndex(_Names):
    """The files under a folder by name and by stem (hidden entries, the folder `skip` and the overlays and
    label maps of `docsam segment`'s output folders left out), found by the walk that finds the annotation
    files (`walk_folders`: links to folders followed, each real folder once)."""

    def __init__(self, folder: Path, skip: Path | None = None) -> None:
        super().__init__()
        self.folder = folder
        left_out = frozenset() if skip is None else frozenset({os.path.realpath(skip)})
        for directory, files in walk_folders(folder, True, left_out):
            if _is_rendering(Path(directory), folder):
                continue
            for file in sorted(files):
                self.add(Path(directory) / file)

    def matches(self, name: str, suffixes: Sequence[str]) -> list[Path]:
        """The files called `name`, else those of its stem with one of `suffixes`."""
        return self.named(name) or self.stemmed(name, suffixes)


def _is_rendering(directory: Path, root: Path) -> bool:
    """Whether `directory`, under `root`, is in the overlays or label maps of a `docsam segment` output."""
    for folder in (directory, *directory.parents):
        if folder == root or not within(folder, root):
            return False
        if folder.name in RENDERING_FOLDERS and (folder.parent / STATE_DIR).is_dir():
            return True
    return False


def _mirroring(matches: list[Path], annotation_folder: Path) -> Path | None:
    """The only match, or the one whose folders mirror the annotation's best; None when none stands out."""
    if len(matches) == 1:
        return matches[0]
    scores = [_mirrored(match.parent, annotation_folder) for match in matches]
    top = max(scores)
    return matches[scores.index(top)] if top > 0 and scores.count(top) == 1 else None


def _mirrored(image_folder: Path, annotation_folder: Path) -> int:
    """How many trailing folder names the two folders share (`img/c1` and `xml/c1`: 1)."""
    shared = 0
    for left, right in zip(reversed(image_folder.parts), reversed(annotation_folder.parts), strict=False):
        if left != right:
            break
        shared += 1
    return shared


def image_size(
    path: Path | None = None, data: bytes | None = None, *, decode: bool = True
) -> tuple[int, int]:
    """(width, height) of an image file or encoded bytes after decoding it completely, upright (a TIFF's
    first page: a leading thumbnail is no page); with `decode` False, from its header alone.

    Decoding (not just the header) catches truncated files before they reach a training run (conversion
    decodes; evaluate, which needs the size alone, reads the header: minutes for 10,000 scans), and so does
    refusing what docsam's image loader refuses: the formats it does not read (Pillow opens TGA, PCX, ...)
    and 16-bit TIFFs it would misread, and images over the pixel limit (`--max-image-pixels`, in the words of
    that loader's refusal, checked on the size the file states as the loader checks it: Pillow's own check,
    at twice its limit, half ours rounded up, let an image one pixel over an odd limit through). The size
    is that of the image with its EXIF orientation applied, as that loader (training, `segment`, `evaluate
    --weights`) reads it and as annotation tools show it: a 300x200 phone photo tagged "rotate 90°" is
    200x300. The file itself is copied unchanged, tag included, so the loader turns it the same way. Raises
    ValueError with a one-line reason.
    """
    from PIL import Image, UnidentifiedImageError

    from docsam_cli.errors import InputError
    from docsam_cli.inputs.images import (
        IMAGE_FORMATS,
        bomb_error,
        check_pixel_limit,
        check_planar_layout,
        to_first_page,
        upright,
        upright_header,
    )

    source = io.BytesIO(data) if data is not None else path
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as image:
            to_first_page(Path(path or "image"), image)
            check_pixel_limit(Path(path or "image"), *image.size)  # Pillow's check is twice half the limit
            check_planar_layout(Path(path or "image"), image)
            if not decode:
                return upright_header(image)[0]
            image.load()
            return upright(image).size
    except InputError as error:
        raise ValueError(error.reason) from None
    except Image.DecompressionBombError as error:
        raise ValueError(bomb_error(Path(path or "image"), error).reason) from None
    except UnidentifiedImageError:
        raise ValueError(_unopened_reason(path, data)) from None
    except OSError as error:  # its strerror where the system gave one: its own text names the path again
        raise ValueError(f"unreadable image ({error.strerror or error})") from None
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"unreadable image ({error})") from None


def _unopened_reason(path: Path | None, data: bytes | None) -> str:
    """Why Pillow cannot open the image file at `path` or the encoded `data`, in the words of docsam's image
    loader where it starts with an image signature (a TIFF of a kind Pillow does not read is no "not an
    image"), else not an image."""
    from docsam_cli.inputs.files import SNIFF_BYTES
    from docsam_cli.inputs.images import unopened_image_reason

    if data is None and path is not None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(SNIFF_BYTES)
        except OSError:
            data = None
    reason = unopened_image_reason(data[:SNIFF_BYTES]) if data is not None else None
    return reason or "not an image (or an unsupported format)"
