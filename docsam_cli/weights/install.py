"""Putting named weights into the cache: download or take a given file, check it, convert it, record it.

Every stored file is safetensors: `.pth` / `.bin` sources are read once with `weights_only=True` and
rewritten, so later loads never unpickle. The record (size + sha256 of the stored file) is written last; until
then nothing resolves, so a failure at any step leaves no half-stored entry behind.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from docsam_cli.atomic import is_temporary
from docsam_cli.inputs.files import missing_file_reason
from docsam_cli.names import display_path
from docsam_cli.weights.cache import (
    FILE_SOURCE,
    CacheRecord,
    converted_path,
    docsam_home,
    entry_dir,
    lock_path,
    offline_setting,
    read_record,
    remove_entry,
    sha256_file,
    staging_dir,
    verify_record,
    write_record,
)
from docsam_cli.weights.drive import fetch_drive_file, finished_drive_file
from docsam_cli.weights.errors import CorruptCacheError, FetchError, NotCachedError, OfflineError
from docsam_cli.weights.hub import fetch_hub_file, find_in_hf_cache
from docsam_cli.weights.progress import transfer_progress
from docsam_cli.weights.registry import DriveSource, HubSource, WeightsEntry
from model.checkpoint import (
    CheckpointError,
    archive_damage,
    is_safetensors_temporary,
    read_state_dict,
    training_metadata,
    write_safetensors,
)
from model.config import variant_with_width

Say = Callable[[str], None]

_PATCH_EMBEDDING = "embeddings.patch_embeddings.projection.weight"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def ensure_cached(entry: WeightsEntry, say: Say) -> CacheRecord:
    """A verified cache record for `entry`, downloading it when it is absent or its cached copy is bad.

    A good copy is reported without taking the lock, which a read-only cache (one a site prepared for its
    users) cannot give; the lock is taken to store one, and the cache looked at again under it.
    """
    record = _intact_record(entry.name)
    if record is not None:
        say(f"{entry.name}: already cached ({record.path})")
        return record
    with _storing(entry, say):
        refetch = False
        try:
            record = read_record(entry.name)
            if record is not None:
                verify_record(record)
                say(f"{entry.name}: already cached ({record.path})")
                return record
        except (CorruptCacheError, NotCachedError):
            say(f"{entry.name}: the cached copy is corrupted or gone; fetching it again")
            remove_entry(entry.name)
            refetch = True
        if offline_setting():
            return _adopt_offline(entry, say)
        return _download(entry, say, refetch=refetch)


def _intact_record(name: str) -> CacheRecord | None:
    """The record of `name` when its file checks out; None when it is absent, gone, corrupted, unreadable."""
    try:
        record = read_record(name)
        if record is not None:
            verify_record(record)
    except (CorruptCacheError, NotCachedError, OSError):
        return None
    return record


def register_file(entry: WeightsEntry, path: Path, say: Say) -> CacheRecord:
    """Store a file the user copied in by hand (air-gapped machines) as `entry`, after the same checks."""
    if not path.is_file():
        reason = "a folder, not a weights file" if path.is_dir() else missing_file_reason(path)
        raise FetchError(f"{path}: {reason}")
    with _storing(entry, say):
        record = _store(entry, path, say, source=f"{FILE_SOURCE}{path.resolve()}", hf_cached=False)
    say(f"{entry.name}: registered {path} as {record.path}")
    return record


@contextlib.contextmanager
def _storing(entry: WeightsEntry, say: Say) -> Iterator[None]:
    """Around a store of `entry`: under its lock, with local I/O failures as one clear line
    (`_storage_errors`), what a failed store leaves removed before the lock is released. Removed after it, a
    process that had waited for the lock was already storing the same name: the removal took the file it
    had just converted (its record not yet written, so this one found no intact copy) or its download in
    progress in the staging folder. A failure to take the lock (an unusable cache folder) has nothing of
    the store to remove."""
    with _unusable_cache(entry), _locked(entry.name, say), _storage_errors(entry):
        yield


@contextlib.contextmanager
def _locked(name: str, say: Say) -> Iterator[None]:
    """One process at a time stores `name` (parallel jobs sharing a cache would otherwise race on it); one
    that has to wait says so first, since the other one's download may take many minutes."""
    lock = lock_path(name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(lock))
    try:
        held.acquire(blocking=False)
    except Timeout:
        say(f"{name}: waiting for another download of these weights to finish (lock {display_path(lock)})")
        held.acquire()
    try:
        yield
    finally:
        held.release()


@contextlib.contextmanager
def _storage_errors(entry: WeightsEntry) -> Iterator[None]:
    """Local I/O failures (a full disk above all) as one clear line; a converted file left without its record
    goes, while weights stored before, which the failed store did not replace, stay. A full disk removes the
    staging folder, except a finished Drive download in it (1.3 GB for the large models), which the rerun
    stores without downloading it again (`fetch_drive_file`) once the user has freed the space, and a
    partial one (the disk filled while it came), which the rerun resumes.

    Network failures never get here as OSError: the fetchers turn them into FetchError first.
    """
    try:
        yield
    except OSError as error:
        with contextlib.suppress(OSError):  # the cache folder itself may be what is unusable
            if _intact_record(entry.name) is None:
                converted_path(entry.name).unlink(missing_ok=True)
        if error.errno != errno.ENOSPC:
            raise _cannot_store(entry, error) from error
        where = error.filename or docsam_home()
        kept = _finished_download(entry)
        if kept is not None:
            raise FetchError(
                f"{entry.name}: no space left on the device holding {where} to store the weights; the "
                f"finished download is kept ({display_path(kept)}) and its conversion needs about "
                f"{math.ceil(kept.stat().st_size / 1e6)} MB free there: make that room, then run "
                f"`docsam download-weights {entry.name}` again, which stores it without downloading it again "
                f"(or, on a larger disk, `DOCSAM_HOME=DIR docsam download-weights --from "
                f"{display_path(kept)} {entry.name}`)"
            ) from error
        received = sum(part.stat().st_size for part in staging_dir(entry.name).glob("*.part"))
        if received:
            raise FetchError(
                f"{entry.name}: no space left on the device holding {where}; the download stopped after "
                f"{received} bytes, which are kept ({display_path(staging_dir(entry.name))}): free some "
                f"space, then run `docsam download-weights {entry.name}` again to resume it"
            ) from error
        shutil.rmtree(staging_dir(entry.name), ignore_errors=True)
        raise _no_space(entry, error) from error


@contextlib.contextmanager
def _unusable_cache(entry: WeightsEntry) -> Iterator[None]:
    """An OSError taking the lock as one line: a read-only cache folder as `_cannot_store`'s, a full disk
    (no room for the lock's folder) as `_no_space`'s, as a full disk during the store says it."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _no_space(entry, error) from error
        raise _cannot_store(entry, error) from error


def _no_space(entry: WeightsEntry, error: OSError) -> FetchError:
    return FetchError(
        f"{entry.name}: no space left on the device holding {error.filename or docsam_home()}; free some "
        f"space or set DOCSAM_HOME to a larger disk, then run `docsam download-weights {entry.name}`"
    )


def _cannot_store(entry: WeightsEntry, error: OSError) -> FetchError:
    return FetchError(
        f"{entry.name}: cannot store the weights in {docsam_home()} ({error}); make it a writable folder or "
        "set DOCSAM_HOME to one"
    )


def _finished_download(entry: WeightsEntry) -> Path | None:
    """The finished Drive download of `entry` waiting in its staging folder; None for hub entries (whose
    files the Hugging Face cache keeps) and when there is none."""
    source = entry.source
    return finished_drive_file(entry.name, source) if isinstance(source, DriveSource) else None


def _download(entry: WeightsEntry, say: Say, *, refetch: bool) -> CacheRecord:
    source = entry.source
    size = f" (about {entry.approx_size / 1e6:.0f} MB)" if entry.approx_size else ""
    say(f"{entry.name}: downloading from {source.label}{size}; licence: {entry.licence}")
    try:
        with transfer_progress(entry.name) as bar:
            if isinstance(source, DriveSource):
                raw = fetch_drive_file(entry.name, source, bar)
            else:
                raw = fetch_hub_file(entry.name, source, bar, force=refetch)
        if isinstance(source, DriveSource):
            record = _store(entry, raw, say, source=source.url, hf_cached=False)
            shutil.rmtree(staging_dir(entry.name), ignore_errors=True)
        else:
            record = _store(entry, raw, say, source=_hub_url(source, raw), hf_cached=True)
    except FetchError:
        if not any(staging_dir(entry.name).glob("*.part")):
            shutil.rmtree(staging_dir(entry.name), ignore_errors=True)  # keep only what a rerun can resume
        raise
    say(f"{entry.name}: stored {record.path} (sha256 {record.sha256})")
    return record


def _adopt_offline(entry: WeightsEntry, say: Say) -> CacheRecord:
    """Offline: take a copy already in the Hugging Face cache, or a Drive download an earlier run finished
    but was stopped before storing, or fail naming the file and how to get it."""
    source = entry.source
    if isinstance(source, HubSource) and (found := find_in_hf_cache(source)) is not None:
        record = _store(entry, found, say, source=_hub_url(source, found), hf_cached=True)
        say(f"{entry.name}: found in the Hugging Face cache, stored as {record.path}")
        return record
    if isinstance(source, DriveSource) and (finished := finished_drive_file(entry.name, source)) is not None:
        try:
            record = _store(entry, finished, say, source=source.url, hf_cached=False)
        except FetchError:  # not the published file: no use to a later run either
            shutil.rmtree(staging_dir(entry.name), ignore_errors=True)
            raise
        shutil.rmtree(staging_dir(entry.name), ignore_errors=True)
        say(f"{entry.name}: stored the download an earlier run finished, as {record.path}")
        return record
    wanted = source.filename if isinstance(source, DriveSource) else " or ".join(source.filenames)
    raise OfflineError(
        f"{entry.name}: not in the cache ({entry_dir(entry.name)}) and offline mode is on "
        f"({offline_setting()}=1), so {wanted} was not downloaded from {source.url}; run "
        f"`docsam download-weights {entry.name}` with network access, or copy the file over and run "
        f"`docsam download-weights --from FILE {entry.name}`"
    )


def _hub_url(source: HubSource, path: Path) -> str:
    return f"{source.url}/blob/{source.revision}/{path.name}"


def _store(entry: WeightsEntry, raw: Path, say: Say, *, source: str, hf_cached: bool) -> CacheRecord:
    """Check `raw` and record it.

    A safetensors file in the Hugging Face cache is recorded where it is (no second copy); anything else is
    converted to safetensors inside the docsam cache.
    """
    _remove_leftovers(entry.name)
    source_sha256 = _source_digest(entry, raw)
    _check_published_digest(entry, raw, source_sha256, hf_cached=hf_cached)
    if hf_cached and raw.suffix == ".safetensors":
        target, sha256 = raw, source_sha256
    else:
        target = converted_path(entry.name)
        _convert(entry, raw, target, say, downloaded=not source.startswith(FILE_SOURCE))
        sha256 = sha256_file(target)
    folder = entry_dir(entry.name)
    record = CacheRecord(
        name=entry.name,
        file=str(target.relative_to(folder) if target.is_relative_to(folder) else target),
        size=target.stat().st_size,
        sha256=sha256,
        source=source,
        source_sha256=source_sha256,
    )
    write_record(record)
    return record


def _source_digest(entry: WeightsEntry, raw: Path) -> str:
    """The sha256 of the file to store. One that cannot be read (a `--from` copy the user may not read, a
    failing USB stick) is an error of that file: not of the cache, whose stored weights stay as they are."""
    try:
        return sha256_file(raw)
    except OSError as error:
        raise FetchError(
            f"{entry.name}: cannot read {raw} ({error.strerror or error}); nothing was stored"
        ) from error


def _remove_leftovers(name: str) -> None:
    """Remove the temporaries a killed store of `name` left in its folder (under the lock, so no live one):
    docsam's, and the one safetensors writes the converted weights into, as large as the weights; all
    hidden."""
    for path in entry_dir(name).glob(".*"):
        if is_temporary(path) or is_safetensors_temporary(path):
            path.unlink(missing_ok=True)


def _check_published_digest(entry: WeightsEntry, raw: Path, sha256: str, *, hf_cached: bool) -> None:
    """Compare with the size/sha256 the registry knows and, for hub files, with the hub's own digest.

    The Hugging Face cache names each large-file blob by its sha256, which is the digest the hub published.
    """
    blob = raw.resolve()
    expected = entry.sha256 or (blob.name if hf_cached and _SHA256.fullmatch(blob.name) else None)
    problem = None
    if entry.size is not None and blob.stat().st_size != entry.size:
        problem = f"{blob.stat().st_size} bytes instead of the published {entry.size}"
    elif expected is not None and sha256 != expected:
        problem = f"sha256 {sha256} instead of the published {expected}"
    if problem is None:
        return
    if hf_cached:  # the Hugging Face cache would hand the bad copy out again as it is
        blob.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
    raise FetchError(f"{entry.name}: {raw.name} is not the published file ({problem}); nothing was stored")


def _convert(entry: WeightsEntry, raw: Path, target: Path, say: Say, *, downloaded: bool) -> None:
    """Rewrite `raw` as safetensors after a safe load, refusing files that are not this entry's weights."""
    _check_archive(entry, raw, downloaded=downloaded)
    try:
        state = read_state_dict(raw, archive_checked=True)
    except CheckpointError as error:
        raise FetchError(f"{entry.name}: {error}; nothing was stored") from error
    _check_variant(entry, raw, state, say)
    write_safetensors(state, target, _trained_metadata(entry))


def _trained_metadata(entry: WeightsEntry) -> dict[str, str]:
    """What the registry knows of how `entry` was trained (its classes and dataset name, its window, its
    keep-size rule), stored in its file as `docsam train` stores them: `segment --weights FILE` then uses
    them too."""
    preset = entry.preset
    side = entry.patch_size
    return training_metadata(
        preset.classes if preset else None,
        (preset.domain or None) if preset else None,
        (side, side) if side else None,
        entry.keep_size,
    )


def _check_archive(entry: WeightsEntry, raw: Path, *, downloaded: bool) -> None:
    """Check every member of a zip-format `.pth` against its CRC-32, which `torch.load` does not.

    Drive entries have no published digest, and a download resumed from an earlier run's partial file is
    spliced onto the file as Drive serves it now: if it changed in between, the result mixes two files and
    may still load. Members written without a CRC (`torch.serialization.set_crc32_options(False)` stores 0)
    cannot be checked.
    """
    damage = archive_damage(raw)
    if damage is not None:
        remedy = (
            f"e.g. a download resumed after the file changed at its source; run `docsam download-weights "
            f"{entry.name}` again"
            if downloaded
            else "copy the file again from its source"
        )
        raise FetchError(f"{entry.name}: {raw.name} is damaged ({damage}); nothing was stored; {remedy}")


def _check_variant(entry: WeightsEntry, raw: Path, state: dict[str, torch.Tensor], say: Say) -> None:
    """Refuse a file without a Swin backbone, or with one of no variant's width, for an entry that has one;
    note a backbone of another variant than the registry expects.

    Loading detects the variant from the file, so a valid other variant still works (the model zoo's table
    and scripts disagree about `docsam-large-keepsize`).
    """
    widths = {tensor.shape[0] for key, tensor in state.items() if key.endswith(_PATCH_EMBEDDING)}
    if entry.variant is None:
        return
    if not widths:
        raise FetchError(
            f"{entry.name}: {raw.name} holds no Swin backbone (no patch embedding among its {len(state)} "
            "tensors), so it is not these weights; nothing was stored"
        )
    try:
        variant = variant_with_width(min(widths))
    except ValueError as error:
        raise FetchError(f"{entry.name}: {raw.name} holds a Swin backbone no variant has ({error})") from None
    if entry.variant is not None and variant != entry.variant:
        say(f"{entry.name}: {raw.name} holds the {variant} variant, not the {entry.variant} one listed")
