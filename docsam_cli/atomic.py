"""Atomic file writes: a reader never sees a half-written output, a crash never leaves one behind.

Each output is written to a temporary file beside it (`.<name>.<random>.tmp`) and renamed over it. The
temporary is created as any new file is, with mode 0666 less the user's umask (and a directory's default
ACL), so an output ends up readable by whoever could read a file the user creates (0644 under umask 022,
0640 under 027); `tempfile.mkstemp` would make every output private (0600).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

_NEW_FILE_MODE = 0o666  # the kernel applies the umask, as for open(path, "w")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_HIDDEN_HEAD_BYTES = 100  # of the target's name, so that a hidden sibling's name fits where the target's does
_TEMPORARY_RANDOM_BYTES = 4
RANDOM_HEX_DIGITS = 2 * _TEMPORARY_RANDOM_BYTES
_PROBE_NAME = "docsam-probe"  # `_open_probe`'s named files: `.docsam-probe.<random>.tmp`
_TEMPORARY_NAME = re.compile(rf"\..+\.[0-9a-f]{{{RANDOM_HEX_DIGITS}}}\.tmp", re.DOTALL)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` (text in UTF-8); on success fsync and rename it over `path`.

    On any exception the temporary file is removed and `path` is left untouched. A target that exists but
    is not a regular file (`/dev/null`, `/dev/stdout`, a named pipe) is written in place: renaming over it
    would replace the device or pipe with a file.
    """
    with atomic_open_together([path], mode) as (handle,):
        yield handle


@contextlib.contextmanager
def atomic_open_together(paths: Sequence[str | os.PathLike[str]], mode: str = "w") -> Iterator[list[IO]]:
    """`atomic_open` for files that go together: each file after the first names what the first holds
    (`coco_results.json`'s image ids number `coco.json`'s images), and would be wrong beside another one.

    On success every temporary is fsynced, then the files after the first are removed, the first is renamed
    into place and the others after it: at no moment (a reader's; a run killed, by SIGKILL or the
    out-of-memory killer too) does a file after the first lie beside a first it was not written with. A
    kill among the renames leaves the first without the others, the new one or the old one. On any
    exception before the renames every path is left as it was."""
    targets = [Path(path) for path in paths]
    handles: list[IO] = []
    temporaries: list[Path | None] = []  # None: a target written in place (not a regular file)
    try:
        for target in targets:
            handle, temporary = _open_staged(target, mode)
            handles.append(handle)
            temporaries.append(temporary)
        yield handles
        for handle, temporary in zip(handles, temporaries, strict=True):
            if temporary is not None:
                handle.flush()
                os.fsync(handle.fileno())
            handle.close()
        _publish(targets, temporaries)
    except BaseException:
        for handle in handles:
            with contextlib.suppress(OSError):
                handle.close()
        for temporary in filter(None, temporaries):
            temporary.unlink(missing_ok=True)
        raise


def _open_staged(target: Path, mode: str) -> tuple[IO, Path | None]:
    """A file open for writing what goes to `target`: its new temporary (returned too), or `target` itself
    where it exists but is not a regular file (see `atomic_open`)."""
    encoding = None if "b" in mode else "utf-8"
    if target.exists() and not target.is_file():
        return open(target, mode, encoding=encoding), None
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _create_temporary(target)
    return os.fdopen(descriptor, mode, encoding=encoding), temporary


def _publish(targets: list[Path], temporaries: list[Path | None]) -> None:
    """Rename the temporaries over their targets in order, once the targets after the first are removed
    (see `atomic_open_together`)."""
    for target, temporary in zip(targets[1:], temporaries[1:], strict=True):
        if temporary is not None:
            target.unlink(missing_ok=True)
    for target, temporary in zip(targets, temporaries, strict=True):
        if temporary is not None:
            os.replace(temporary, target)


def _create_temporary(target: Path) -> tuple[int, Path]:
    """A new, empty `.<name>.<random>.tmp` beside `target`, open for writing. An error names `target`."""
    head = hidden_head(target.name)
    while True:
        temporary = target.with_name(f".{head}.{random_hex()}.tmp")
        try:
            return os.open(temporary, _CREATE_FLAGS, _NEW_FILE_MODE), temporary
        except FileExistsError:
            continue
        except OSError as error:  # a read-only folder: named as the output, no file the user knows
            raise OSError(error.errno, error.strerror, os.fspath(target)) from None


def random_hex() -> str:
    """The random part of a hidden name beside a target (`RANDOM_HEX_DIGITS` hexadecimal digits)."""
    return secrets.token_hex(_TEMPORARY_RANDOM_BYTES)


def hidden_head(name: str) -> str:
    """`name` as the head of a hidden file or folder beside it (`.<head>.<random>.tmp`,
    `.<head>.<pid>.<random>.old`, a conversion's `.<head>.<random>.partial`): whole up to 100 bytes, else
    cut there and ending in a hash of the whole, so that the hidden name fits the file system's limit (255
    bytes) wherever `name` does, and two long names that share their first bytes keep apart."""
    encoded = os.fsencode(name)
    if len(encoded) <= _HIDDEN_HEAD_BYTES:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return f"{os.fsdecode(encoded[: _HIDDEN_HEAD_BYTES - 9])}~{digest}"


def is_temporary(path: Path) -> bool:
    """Whether `path` is named as `_create_temporary` names its files (what a killed run leaves behind), and
    so is no file of the user's (`.notes.tmp`)."""
    return _TEMPORARY_NAME.fullmatch(path.name) is not None


def remove_left_temporaries(target: Path) -> None:
    """Remove the temporaries of `target` (`.<name>.<random>.tmp` beside it) that runs killed while
    writing it left behind, for a command whose output no folder lock guards and no run cleans otherwise
    (`evaluate --json`, a file in any folder of the user's). Another process writing `target` at this very
    moment would lose its temporary and fail its write: only as it writes the same file at the same time."""
    head = re.escape(hidden_head(target.name))
    own = re.compile(rf"\.{head}\.[0-9a-f]{{{RANDOM_HEX_DIGITS}}}\.tmp", re.DOTALL)
    with contextlib.suppress(OSError):  # a folder not there yet, or not listable: nothing to clean
        for path in target.parent.iterdir():
            if own.fullmatch(path.name):
                path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def replace_folder(staging: Path, target: Path) -> None:
    """Rename the finished folder `staging` to `target`; an existing `target` is renamed away first (a folder
    cannot be renamed over one that is not empty) and removed last. Raises the OSError of a rename (see
    `swap_folder`); a previous folder that cannot be removed only stays, hidden, beside the new one."""
    previous = swap_folder(staging, target)
    with contextlib.suppress(OSError):
        remove_replaced(previous)


def swap_folder(staging: Path, target: Path) -> Path | None:
    """`replace_folder` but for the removal: returns the previous `target`, renamed away
    (`.<name>.<pid>.<random>.old`), for `remove_replaced`; None when there was none. The random part keeps
    apart two swaps of one `target` by one process (two threads, two calls through the Python API): named
    by the process id alone, the second was renamed onto the first's folder not yet removed and failed
    ('Directory not empty'). Raises OSError where `staging` cannot be renamed to `target`, the previous
    `target` then put back: renamed away for good, it left no `target` at all."""
    previous = None
    if target.exists():
        previous = target.with_name(f".{hidden_head(target.name)}.{os.getpid()}.{random_hex()}.old")
        os.replace(target, previous)
    try:
        os.replace(staging, target)
    except OSError:
        if previous is not None:
            os.replace(previous, target)
        raise
    return previous


def remove_replaced(previous: Path | None) -> None:
    """Remove the folder `swap_folder` renamed away, if any. Raises the OSError of a file that stays (a
    read-only folder in it); a file gone meanwhile is no error: another conversion into the same folder,
    starting now, removes such a folder too (what killed runs left), and whatever it took first would stop
    `shutil.rmtree` with FileNotFoundError, the folder then said to be left when it is not."""
    while previous is not None:
        try:
            shutil.rmtree(previous)
            return
        except FileNotFoundError:
            if not os.path.lexists(previous):
                return


def can_write_in(folder: Path) -> OSError | None:
    """Whether a file can be created in `folder` (by creating one): None, or the error.

    The probe is opened under `folder` as given: `tempfile.mkstemp` would shorten `link/../out` as text,
    to another folder than the one the system resolves."""
    try:
        handle = _open_probe(folder)
    except OSError as error:
        return error
    os.close(handle)
    return None


def _open_probe(folder: Path) -> int:
    """A new file in `folder`, open for writing, that leaves nothing there once closed: a nameless one
    (`O_TMPFILE`) where the system and the file system have them, else `.docsam-probe.<random>.tmp`, unlinked
    at once. A named probe of a run killed before the unlink (SIGKILL, the out-of-memory killer) stayed
    where nothing removes it: in `evaluate --json`'s folder (the user's), in a training run's
    `checkpoints/`; the next named probe in that folder removes it. Raises OSError."""
    nameless = getattr(os, "O_TMPFILE", 0)
    if nameless:
        try:
            return os.open(folder, nameless | os.O_WRONLY, 0o600)
        except OSError as error:
            # Older kernels open the folder itself (EISDIR); some file systems (NFS, FUSE) have none.
            if error.errno not in (errno.EISDIR, errno.EOPNOTSUPP, errno.EINVAL):
                raise
    handle, probe = _create_temporary(folder / _PROBE_NAME)
    probe.unlink(missing_ok=True)  # missing: another run's probe, at this moment, took it as left
    remove_left_temporaries(folder / _PROBE_NAME)
    return handle
