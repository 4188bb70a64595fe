"""One `docsam segment` run per output folder at a time (and one `train` / `finetune` run per run folder).

Two runs writing into one folder would each clean the other's temporary files (`.<name>.<random>.tmp`, left
behind by a killed run as far as either can tell) and redo the other's pages; one with `--overwrite` and
other classes would renumber the folder's categories under the other. So a run holds an exclusive lock on
`<out>/.docsam/lock` (`fcntl.flock`) from before it reads the folder's state until its run-level files are
written, and a second run is refused at once, naming the process that holds it (and its machine, when
that is another: on a shared file system the lock holds across machines). The kernel drops the lock
with the process that holds it, so a killed run never leaves a stale one; the file stays. Under a launcher
only the run's main process takes it. Where there is no `flock` (Windows) or the file system refuses locks,
runs are not locked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from docsam_cli.errors import UsageError
from docsam_cli.names import display_path, one_line
from docsam_cli.writers.page_outputs import STATE_DIR

logger = logging.getLogger(__name__)
LOCK_FILE = "lock"  # in STATE_DIR: the holding run's process id and kind, then its machine; empty after it
_HELD: set[int] = set()  # the file descriptors of the locks this process holds


@contextlib.contextmanager
def folder_lock(out: Path, run: str = "docsam segment run") -> Iterator[None]:
    """Hold the output folder's lock for the `with` block, as a run of kind `run`. Raises UsageError if
    another run holds it, naming its process and its kind (a segment run refused by a training run's folder
    is told so)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = out / STATE_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _held(out, run, handle.read()) from None
        except OSError as error:  # a file system without locks (ENOLCK, EOPNOTSUPP)
            logger.warning("--out %s: runs are not locked: %s", display_path(out), error.strerror or error)
            yield
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {run}\n{socket.gethostname()}\n")
        handle.flush()
        _HELD.add(handle.fileno())
        try:
            yield
        finally:
            _HELD.discard(handle.fileno())
            handle.truncate(0)  # a folder no run writes into names no process
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held(out: Path, run: str, holder: str) -> UsageError:
    """The refusal of a run of kind `run` by the lock whose file holds `holder`: the holding run's process
    id and kind, and the machine it runs on (older files name none), named when it is another one: on a
    shared file system that process is not to be found on this machine."""
    lines = holder.splitlines() or [""]
    process, _, kind = lines[0].strip().partition(" ")
    host = lines[1].strip() if len(lines) > 1 else ""
    elsewhere = f" on {one_line(host)}" if host and host != socket.gethostname() else ""
    named = f" (process {process}{elsewhere})" if process.isdigit() else ""
    return UsageError(
        f"--out {display_path(out)}: another {kind or run}{named} is writing into this folder; wait for it "
        "to end, or use another --out"
    )


def folder_replaced(out: Path) -> bool:
    """Whether the folder this process locked as `out` was removed or replaced since (`rm -r OUT` while
    the run writes in it, which the writes then quietly create again, empty): its lock file is gone, or is
    another. False where this process holds no lock (Windows, a file system without locks, a rank other
    than the main one)."""
    if not _HELD:
        return False
    try:
        current = os.stat(out / STATE_DIR / LOCK_FILE)
    except OSError:
        return True
    return not any(os.path.samestat(os.fstat(descriptor), current) for descriptor in _HELD)


def created_by_locking(out: Path) -> Path | None:
    """The outermost folder that locking `out` (`folder_lock`) would create: its `.docsam`, `out` itself or
    a parent of it, with the folders between; None when `<out>/.docsam` exists. Looked for from the top, so
    that a folder that may not be searched is named as the commands name it (`PermissionError`)."""
    state = out / STATE_DIR
    return next((folder for folder in reversed((state, *state.parents)) if not folder.exists()), None)


def remove_unused_folder(out: Path, created: Path, state_files: Iterable[str] = ()) -> None:
    """Remove what a run into `out` that could not start created, `created` (`created_by_locking`, before
    the run) and the folders in it: the files of `state_files` (names in `<out>/.docsam`) it wrote there
    while `.docsam` holds nothing else (no page's record), its lock file, then each folder up to `created`
    that is empty (the run may have stopped before it took the lock). Not when another run holds that lock:
    two runs started into one new folder at about the same time (a job array's tasks), the other one the
    first to lock it, whose folder it is now; unlinking its lock file would let a third run lock a new one
    and write there too."""
    state = out / STATE_DIR

    def unused_state() -> list[Path]:
        """`state_files`, where `.docsam` holds nothing besides them and the lock."""
        if all(path.name in {LOCK_FILE, *state_files} for path in state.iterdir()):
            return [state / name for name in state_files]
        return []

    with contextlib.suppress(OSError):
        if not _unlink_unless_held(state / LOCK_FILE, unused_state):
            return
        for folder in (state.absolute(), *state.absolute().parents):
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()
            if folder == created.absolute():
                break


def _unlink_unless_held(path: Path, also: Callable[[], Iterable[Path]] = tuple) -> bool:
    """Unlink the files `also()` lists (asked under the lock) and then the lock file `path` (if any) under
    its lock, unless another run holds it; whether it is gone. Where there are no locks (Windows, a file
    system without them) they are unlinked."""
    try:
        import fcntl
    except ImportError:  # Windows
        _unlink_all([*also(), path])
        return True
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks (ENOLCK, EOPNOTSUPP)
            pass
        _unlink_all([*also(), path])
    return True


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def drop_inherited_locks() -> None:
    """In a process forked from a run (a training data-loader worker): let go of the run's locks, which
    the fork shares, so that they go with the run's own process. A worker outliving its killed run (for
    the seconds it takes to notice) would otherwise hold the lock, and refuse the run's `--resume`. The
    descriptor is pointed at /dev/null, not unlocked: unlocking would release the run's lock itself."""
    for descriptor in _HELD:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, descriptor)
        os.close(null)
    _HELD.clear()
