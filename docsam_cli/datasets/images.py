"""Find the image an annotation file names, without ever leaving the source folder, and check it."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2")
_OTHER_SUFFIX = "image found under another file extension"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class ImageNotFound(Exception):
    """The reference could not be resolved; `str()` is the reason to report."""


class ImageOutsideRoot(ImageNotFound):
    """The reference climbs out of the folder it must stay in (path traversal)."""


def within(path: Path, root: Path) -> bool:
    """Lexical containment (no symlink resolution: linked images inside the folder are fine)."""
    path, root = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_image(
    reference: str,
    annotation_dir: Path,
    root: Path,
    *,
    extra_dirs: Sequence[str] = (),
    label: str = "image",
) -> tuple[Path, str | None]:
    """Path of the image `reference` names, searched from `annotation_dir` up to `root`, and a note.

    Relative references are tried against the annotation's folder and each parent up to `root` (PAGE
    exports name images relative to the workspace or the document folder), then by file name alone in the
    same folders and in `extra_dirs` below them (VOC's `JPEGImages/`). A reference that climbs out of
    `root` with `..` is refused; an absolute path or URL (written on another machine) is looked up by
    its file name only. Failing all that, a unique file whose name differs only in letter case (sets made
    on Windows), or else a unique image of the same stem (converted to another format after annotation),
    is accepted, and the returned note says which. Raises ImageNotFound.
    """
    text = reference.strip()
    if not text:
        raise ImageNotFound(f"no {label} file named")
    if _SCHEME.match(text):
        text = unquote(urlparse(text).path)
    posix = PurePosixPath(text.replace("\\", "/"))
    bases = _bases(annotation_dir, root)
    candidates: list[Path] = []
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", str(posix)):
        if within(Path(posix), root):
            candidates.append(Path(posix))
    else:
        relative = Path(*posix.parts)
        if not within(annotation_dir / relative, root):
            raise ImageOutsideRoot(f"{label} '{reference}' points outside the source folder {root}")
        candidates += [base / relative for base in bases if within(base / relative, root)]
    name = posix.name
    candidates += [base / name for base in bases]
    candidates += [base / extra / name for base in bases for extra in extra_dirs]
    if not PurePosixPath(name).suffix:
        candidates += [c.with_name(c.name + suffix) for c in list(candidates) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, None
    for loose, note in ((_same_name, "image file name differs in letter case"), (_same_stem, _OTHER_SUFFIX)):
        for candidate in candidates:
            match = loose(candidate)
            if match is not None:
                return match, note
    raise ImageNotFound(f"{label} '{reference}' not found")


def _bases(annotation_dir: Path, root: Path) -> list[Path]:
    bases = [annotation_dir]
    current = annotation_dir
    while within(current.parent, root) and current.parent != current and current != root:
        current = current.parent
        bases.append(current)
    return bases


def _same_name(candidate: Path) -> Path | None:
    wanted = candidate.name.casefold()
    return _unique(candidate.parent, lambda entry: entry.name.casefold() == wanted)


def _same_stem(candidate: Path) -> Path | None:
    wanted = candidate.stem.casefold()
    return _unique(
        candidate.parent,
        lambda entry: entry.stem.casefold() == wanted and entry.suffix.lower() in IMAGE_SUFFIXES,
    )


def _unique(folder: Path, accept: Callable[[Path], bool]) -> Path | None:
    if not folder.is_dir():
        return None
    matches = [entry for entry in folder.iterdir() if accept(entry) and entry.is_file()]
    return matches[0] if len(matches) == 1 else None


def image_size(path: Path | None = None, data: bytes | None = None) -> tuple[int, int]:
    """(width, height) of an image file or encoded bytes after decoding it completely.

    Decoding (not just the header) catches truncated files before they reach a training run. Raises
    ValueError with a one-line reason.
    """
    source = io.BytesIO(data) if data is not None else path
    try:
        with Image.open(source) as image:
            image.load()
            return image.size
    except Image.DecompressionBombError as error:
        raise ValueError(f"image too large ({error})") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"unreadable image ({error})") from None
