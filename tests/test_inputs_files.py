"""How a file is typed (by its first bytes) and what is refused from its `stat` (README: "Typed by content,
not by name"; named pipes and devices refused without being opened)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from docsam_cli.inputs import Document, InputError, collect_documents, files
from docsam_cli.inputs.files import SNIFF_BYTES, open_regular_file, sniff_kind


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("scan.pdf", png_bytes(), "image"),  # an image signature wins over the suffix
        ("page.png", b"\n" * 100 + b"%PDF-1.7\n", "pdf"),  # `%PDF` anywhere in the first KiB
        ("report.pdf", b"damaged header", "pdf"),  # neither: the suffix decides
        ("notes.png", b"damaged header", "image"),
        ("late.bin", b" " * (SNIFF_BYTES - 3) + b"%PDF-1.7\n", "image"),  # past the first KiB
        ("page.pdf", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image"),  # a RIFF container of form WEBP
        ("sound.pdf", b"RIFF\x10\x00\x00\x00WAVEfmt ", "pdf"),  # RIFF of another form: no image
    ],
)
def test_a_file_is_typed_by_its_first_bytes_and_by_its_suffix_only_where_they_tell_nothing(
    tmp_path, name, content, kind
):
    path = tmp_path / name
    path.write_bytes(content)
    assert sniff_kind(path) == kind


def test_named_pipes_and_devices_are_refused_when_listed_before_anything_opens_them(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.new("RGB", (4, 3)).save(folder / "p1.png")
    os.mkfifo(folder / "p2.png")
    items = collect_documents([str(folder), "/dev/null"])
    assert [item.path.name for item in items if isinstance(item, Document)] == ["p1.png"]
    refused = {Path(item.path): item.reason for item in items if isinstance(item, InputError)}
    assert refused == {
        folder / "p2.png": "not a regular file (a named pipe)",
        Path("/dev/null"): "not a regular file (a device)",
    }


def test_a_link_that_cannot_be_followed_is_refused_with_the_system_s_reason(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop.name)
    (error,) = collect_documents([str(loop)])
    assert isinstance(error, InputError)
    assert error.reason == "cannot read: Too many levels of symbolic links"


def test_a_file_swapped_for_a_pipe_after_its_stat_is_refused_on_the_open_descriptor_and_closed(
    tmp_path, monkeypatch
):
    """The race the second check is for: the `stat` saw a regular file, the open finds a pipe (opened
    without blocking); it is refused and the descriptor closed (a batch of 100,000 files must not leak)."""
    pipe = tmp_path / "swapped.png"
    os.mkfifo(pipe)
    monkeypatch.setattr(files, "require_regular_file", lambda path: None)  # as if the stat came before
    descriptors = len(os.listdir("/proc/self/fd"))
    with pytest.raises(InputError, match=r"not a regular file \(a named pipe\)$"):
        open_regular_file(pipe)
    assert len(os.listdir("/proc/self/fd")) == descriptors
