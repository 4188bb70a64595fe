"""The weights cache on disk: where it is, what each stored entry records, and checking a stored file.

Layout under `$DOCSAM_HOME` (default `$XDG_CACHE_HOME/docsam`, `~/.cache/docsam` without it):

    weights/<name>/record.json         what was stored: file, size, sha256, source (written last, atomically)
    weights/<name>/<name>.safetensors  the converted weights (hub safetensors stay in the Hugging Face cache)
    downloads/<name>/                  partial downloads, kept between runs so an interrupted one resumes,
                                       and a finished one a stopped or failed store left (stored by the rerun)
    locks/<name>.lock                  one process at a time stores a given name

An entry exists only once its record is written, after the file was checked; a crash before that leaves at
most a partial download, which is never resolved as weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from docsam_cli.atomic import atomic_write_text
from docsam_cli.user_paths import expand_user, home_folder
from docsam_cli.weights.errors import CorruptCacheError, NotCachedError, WeightsError

_TRUE = {"1", "true", "yes", "on"}
_HASH_BLOCK = 1 << 20


def docsam_home() -> Path:
    """The cache root: `$DOCSAM_HOME` if set, else `docsam` in the user's cache folder (read on every call,
    never memoised)."""
    configured = os.environ.get("DOCSAM_HOME")
    return Path(expand_user(configured)) if configured else _user_cache() / "docsam"


def _user_cache() -> Path:
    """`$XDG_CACHE_HOME`, else `~/.cache`, as the XDG base-directory spec has it (which ignores a relative
    value) and as the Hugging Face cache and torch hub follow it. A WeightsError where there is no home:
    `HOME` unset (or empty) for a user the password database does not know (a container run under an
    arbitrary uid, as OpenShift runs them)."""
    configured = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(configured):
        return Path(configured)
    home = home_folder()
    if home is None:
        raise WeightsError(
            "the weights cache has no folder: HOME is not set and this user has no home directory; set "
            "DOCSAM_HOME (or XDG_CACHE_HOME) to a folder"
        )
    return home / ".cache"


def offline_setting() -> str | None:
    """Which of `DOCSAM_OFFLINE` / `HF_HUB_OFFLINE` forbids the network, or None when neither does."""
    for name in ("DOCSAM_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


FILE_SOURCE = "file:"  # a record's `source` for a file registered with `--from`, before its path


def entry_dir(name: str) -> Path:
    return docsam_home() / "weights" / name


def converted_path(name: str) -> Path:
    """Where the safetensors file of `name` goes when docsam writes it itself."""
    return entry_dir(name) / f"{name}.safetensors"


def staging_dir(name: str) -> Path:
    return docsam_home() / "downloads" / name


def lock_path(name: str) -> Path:
    return docsam_home() / "locks" / f"{name}.lock"


@dataclass(frozen=True)
class CacheRecord:
    """What the cache knows about one stored entry.

    `file` is relative to the entry's folder when the file lives there (so a moved `DOCSAM_HOME` keeps
    working) and absolute otherwise (a safetensors file left in the Hugging Face cache).
    """

    name: str
    file: str
    size: int
    sha256: str
    source: str
    source_sha256: str

    @property
    def path(self) -> Path:
        return entry_dir(self.name) / self.file


def _record_path(name: str) -> Path:
    return entry_dir(name) / "record.json"


def read_record(name: str) -> CacheRecord | None:
    """The stored record of `name`, or None when nothing is stored; an unreadable record is corruption."""
    path = _record_path(name)
    try:
        return CacheRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (NotADirectoryError, PermissionError) as error:
        raise CorruptCacheError(
            f"{path}: the weights cache cannot be read ({error}); make {docsam_home()} a readable folder or "
            "set DOCSAM_HOME to one"
        ) from error
    except (OSError, ValueError, TypeError) as error:
        raise CorruptCacheError(
            f"{path}: unreadable cache record ({error}); "
            f"run `docsam download-weights {name}` to fetch it again"
        ) from error


def write_record(record: CacheRecord) -> None:
    atomic_write_text(_record_path(record.name), json.dumps(asdict(record), indent=2) + "\n")


def remove_entry(name: str) -> None:
    """Forget `name`: its record, its converted file and any partial download."""
    shutil.rmtree(entry_dir(name), ignore_errors=True)
    shutil.rmtree(staging_dir(name), ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def stored_file_state(record: CacheRecord) -> str:
    """A cheap check without hashing: "ok", "missing" or "size changed"."""
    try:
        size = record.path.stat().st_size
    except FileNotFoundError:
        return "missing"
    return "ok" if size == record.size else "size changed"


def verify_record(record: CacheRecord) -> None:
    """Check the stored file against its record (size, then the full sha256); raise, naming the fix."""
    state = stored_file_state(record)
    if state == "missing":
        raise NotCachedError(
            f"{record.name}: the cached file {record.path} is gone; "
            f"run `docsam download-weights {record.name}` to fetch it again"
        )
    if state == "ok" and sha256_file(record.path) == record.sha256:
        return
    problem = "its size changed" if state != "ok" else "its sha256 no longer matches"
    raise CorruptCacheError(
        f"{record.name}: the cached file {record.path} is corrupted ({problem} since it was stored); "
        f"run `docsam download-weights {record.name}` to fetch it again"
    )


@dataclass(frozen=True)
class CacheStatus:
    """What the cache holds for a name, found without hashing (for `--list`).

    `state` is "cached", "partial" (an interrupted download waits to be resumed, or a finished one to be
    stored), "broken" or "absent"; `size` is the stored file's size, or the bytes received so far for a
    partial download; `source` the
    stored record's (a URL, or `FILE_SOURCE` and a path for a file registered with `--from`).
    """

    state: str
    size: int | None = None
    source: str | None = None

    @property
    def registered_from_file(self) -> bool:
        return self.source is not None and self.source.startswith(FILE_SOURCE)


def _staged_bytes(name: str) -> int:
    """The bytes in the entry's staging folder: gdown's `.part` files and a finished download that a run
    stopped before storing it (which the rerun stores without downloading it again)."""
    return sum(path.stat().st_size for path in staging_dir(name).glob("*") if path.is_file())


def cache_status(name: str) -> CacheStatus:
    try:
        record = read_record(name)
    except CorruptCacheError:
        return CacheStatus("broken")
    if record is not None:
        return (
            CacheStatus("cached", record.size, record.source)
            if stored_file_state(record) == "ok"
            else CacheStatus("broken")
        )
    received = _staged_bytes(name)
    return CacheStatus("partial", received) if received else CacheStatus("absent")
