"""Atomic writes: outputs get a normal file's permissions, never a half-written file, no temporary left."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from docsam_cli.atomic import (
    atomic_open,
    atomic_open_together,
    atomic_write_bytes,
    atomic_write_text,
    can_write_in,
    hidden_head,
    is_temporary,
    remove_left_temporaries,
    replace_folder,
)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_get_the_permissions_of_a_new_file_under_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "page.xml", "<PcGts/>")
    atomic_write_bytes(tmp_path / "overlay.png", b"\x89PNG")
    with atomic_open(tmp_path / "coco.json") as handle:
        handle.write("{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("as open() creates it")
    assert mode_of(plain) == expected
    for name in ("page.xml", "overlay.png", "coco.json"):
        assert mode_of(tmp_path / name) == expected, name


def test_the_content_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "out" / "record.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(path.name for path in target.parent.iterdir()) == ["record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full, say")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]


def test_files_written_together_are_all_kept_when_one_fails_and_published_first_first(tmp_path, monkeypatch):
    """`atomic_open_together`: a failure while writing leaves every old file and no temporary; on success
    the files after the first are removed before the first is renamed, which comes before theirs."""
    first, second = tmp_path / "coco.json", tmp_path / "coco_results.json"
    first.write_text("old dataset")
    second.write_text("old list")
    with pytest.raises(RuntimeError), atomic_open_together([first, second]) as (dataset, results):
        dataset.write("new dataset")
        results.write("half of the new list")
        raise RuntimeError("disk full, say")
    assert (first.read_text(), second.read_text()) == ("old dataset", "old list")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["coco.json", "coco_results.json"]

    events: list[tuple[str, str, bool]] = []
    replace, unlink = os.replace, Path.unlink

    def recording_replace(source, target):
        events.append(("replace", Path(target).name, second.exists()))
        replace(source, target)

    def recording_unlink(path, missing_ok=False):
        events.append(("unlink", path.name, second.exists()))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(Path, "unlink", recording_unlink)
    with atomic_open_together([first, second]) as (dataset, results):
        dataset.write("new dataset")
        results.write("new list")
    assert events == [
        ("unlink", "coco_results.json", True),
        ("replace", "coco.json", False),
        ("replace", "coco_results.json", False),
    ]
    assert (first.read_text(), second.read_text()) == ("new dataset", "new list")


def test_the_longest_file_names_can_be_written(tmp_path):
    target = tmp_path / ("é" * 125 + ".xml")  # 254 bytes: the temporary's name must not grow past 255
    atomic_write_text(target, "<PcGts/>")
    assert target.read_text() == "<PcGts/>"
    assert [path.name for path in tmp_path.iterdir()] == [target.name]


def null_device(folder: Path) -> Path:
    """A character device to write to: as root (who may rename over the system's /dev/null) a null device
    of the test's own, so that a broken `atomic_open` fails this test, not every program on the machine."""
    if os.geteuid() != 0:
        return Path("/dev/null")
    device = folder / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return device


def test_a_device_or_pipe_target_is_written_in_place_not_replaced(tmp_path):
    """`--json /dev/null` must not turn /dev/null into a regular file (renaming over it would)."""
    device = null_device(tmp_path)
    atomic_write_text(device, "discarded\n")
    assert stat.S_ISCHR(os.stat(device).st_mode)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        atomic_write_text(pipe, "through the pipe\n")
        assert os.read(reader, 100) == b"through the pipe\n"
        assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    finally:
        os.close(reader)


def test_a_file_that_cannot_be_created_is_named_not_its_temporary(tmp_path, monkeypatch):
    """A read-only folder (refused to a non-root user; simulated here, as root writes anyway): the error
    names the output, not the hidden `.<name>.<random>.tmp` the user never sees."""
    target = tmp_path / "page" / "p1.xml"
    target.parent.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if Path(path).parent == target.parent:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError) as raised:
        atomic_write_text(target, "<PcGts/>")
    assert (raised.value.filename, raised.value.strerror) == (os.fspath(target), "Permission denied")


def test_the_data_is_flushed_before_the_fsync_that_makes_it_durable(tmp_path, monkeypatch):
    """The rename must not publish a file whose content is still in Python's buffer when fsync runs: after a
    power cut the output would be there, but empty or cut."""
    synced_sizes = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced_sizes.append(os.fstat(descriptor).st_size)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_text(tmp_path / "page.xml", "<PcGts/>")
    atomic_write_bytes(tmp_path / "overlay.png", b"\x89PNG")
    assert synced_sizes == [len("<PcGts/>"), len(b"\x89PNG")]


def test_a_hidden_name_keeps_a_name_of_100_bytes_whole_and_cuts_a_longer_one_to_100_with_a_hash():
    assert hidden_head("a" * 100) == "a" * 100
    longer = "é" * 60  # 120 bytes
    head = hidden_head(longer)
    digest = hashlib.sha1(os.fsencode(longer)).hexdigest()[:8]
    assert len(os.fsencode(head)) == 100 and head.endswith(f"~{digest}")
    assert os.fsencode(head).startswith(os.fsencode(longer)[:91])
    assert hidden_head(longer + "x") != head  # two long names sharing their first bytes keep apart


def without_nameless_files(monkeypatch, unsupported: int = errno.EOPNOTSUPP) -> list:
    """O_TMPFILE refused with `unsupported` (NFS, FUSE, older kernels); returns the folders tried."""
    real_open = os.open
    nameless_tries = []

    def without_tmpfile(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            nameless_tries.append(path)
            raise OSError(unsupported, os.strerror(unsupported), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", without_tmpfile)
    return nameless_tries


@pytest.mark.parametrize("unsupported", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
def test_the_write_probe_falls_back_to_a_named_file_where_nameless_ones_are_not_supported(
    tmp_path, monkeypatch, unsupported
):
    """NFS and FUSE have no O_TMPFILE (older kernels open the folder itself): the probe then creates a named
    file, and removes it at once."""
    nameless_tries = without_nameless_files(monkeypatch, unsupported)
    assert can_write_in(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert nameless_tries == ([tmp_path] if hasattr(os, "O_TMPFILE") else [])


def test_a_named_probe_removes_the_named_probes_killed_runs_left_and_nothing_else(tmp_path, monkeypatch):
    """A run killed between a named probe's creation and its unlink (SIGKILL, the out-of-memory killer) left
    `.docsam-probe.<random>.tmp`, which no later run removed: in `evaluate --json`'s folder, the user's."""
    left = tmp_path / ".docsam-probe.0123abcd.tmp"
    others = [tmp_path / ".notes.tmp", tmp_path / ".report.json.0123abcd.tmp", tmp_path / "docsam-probe"]
    for path in (left, *others):
        path.write_text("")
    without_nameless_files(monkeypatch)
    assert can_write_in(tmp_path) is None
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_a_named_probe_another_run_removed_meanwhile_is_no_error(tmp_path, monkeypatch):
    """Two runs probing one folder at once: the other one's probe may take this one's as left by a killed
    run, between its creation and its unlink."""
    import docsam_cli.atomic

    create = docsam_cli.atomic._create_temporary

    def taken_at_once(target):
        handle, probe = create(target)
        probe.unlink()
        return handle, probe

    without_nameless_files(monkeypatch)
    monkeypatch.setattr(docsam_cli.atomic, "_create_temporary", taken_at_once)
    assert can_write_in(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_refused_nameless_probe_is_the_answer_not_retried_as_a_named_file(tmp_path, monkeypatch):
    """A folder the user may not write in refuses O_TMPFILE with EACCES: that is the answer."""
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system: the probe is always a named file")
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    error = can_write_in(tmp_path)
    assert isinstance(error, PermissionError) and error.errno == errno.EACCES
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_a_killed_write_leaves_is_recognised_and_removed_by_the_next_write_of_its_target(
    tmp_path,
):
    """A run killed while writing leaves `.<name>.<random>.tmp`: `is_temporary` knows it as no file of the
    user's, and `remove_left_temporaries` removes the target's own, not another file's."""
    target = tmp_path / "report.json"
    with atomic_open(target) as handle:
        handle.write("{}")
        (temporary,) = [path for path in tmp_path.iterdir() if path.name != "report.json"]
    assert is_temporary(temporary) and temporary.name.startswith(".report.json.")
    assert not is_temporary(tmp_path / ".notes.tmp")
    temporary.write_text("half of a killed write")
    others = [tmp_path / ".notes.json.0123abcd.tmp", tmp_path / ".report.json.tmp"]
    for path in others:
        path.write_text("not the report's temporary")
    remove_left_temporaries(target)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["report.json", *(p.name for p in others)]
    )


def test_a_finished_folder_replaces_the_previous_one_which_leaves_nothing_behind(tmp_path):
    """`replace_folder` (a training run's `best/`): the new folder is in place, the old one renamed away and
    removed, also when it holds files; a first publication has no previous folder."""
    target = tmp_path / "best"
    for content in ("first", "second"):
        staging = tmp_path / ".best.staging"
        (staging / "nested").mkdir(parents=True)
        (staging / "nested" / "weights.txt").write_text(content)
        replace_folder(staging, target)
        assert (target / "nested" / "weights.txt").read_text() == content
        assert [path.name for path in tmp_path.iterdir()] == ["best"]


def test_a_finished_folder_that_cannot_be_renamed_in_raises_and_leaves_the_previous_one_in_place(
    tmp_path, monkeypatch
):
    """`replace_folder` swallowed the error of the staging folder's rename: the previous `best/` was renamed
    away to `.best.<pid>.<random>.old` and nothing took its place, without a word."""
    target, staging = tmp_path / "best", tmp_path / ".best.tmp"
    for folder, content in ((target, "previous"), (staging, "new")):
        folder.mkdir()
        (folder / "weights.txt").write_text(content)
    real_replace = os.replace

    def staging_refused(source, destination):
        if Path(source) == staging:
            raise OSError(errno.EIO, "Input/output error", os.fspath(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", staging_refused)
    with pytest.raises(OSError, match="Input/output error"):
        replace_folder(staging, target)
    assert (target / "weights.txt").read_text() == "previous"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".best.tmp", "best"]


def test_a_previous_folder_that_cannot_be_removed_is_no_error_of_the_replacement(tmp_path, monkeypatch):
    """The new folder is in place: a previous one that stays (a read-only folder in it) only takes room."""
    target, staging = tmp_path / "best", tmp_path / ".best.tmp"
    for folder in (target, staging):
        folder.mkdir()
    (staging / "weights.txt").write_text("new")

    def read_only(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(shutil, "rmtree", read_only)
    replace_folder(staging, target)
    assert (target / "weights.txt").read_text() == "new"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_the_write_probe_leaves_no_descriptor_open(tmp_path):
    """`can_write_in` runs for every output folder of every run (and a training run's checkpoints)."""
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert can_write_in(tmp_path) is None
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="no O_TMPFILE on this system")
def test_where_nameless_files_work_the_write_probe_creates_no_named_file(tmp_path, monkeypatch):
    """A named probe that a kill (SIGKILL, the out-of-memory killer) leaves stays in the user's folder:
    where O_TMPFILE works, as here, the probe never has a name."""
    real_open = os.open
    named = []

    def recording(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            named.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording)
    assert can_write_in(tmp_path) is None
    assert named == []
