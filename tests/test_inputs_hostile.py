"""What real collections throw at the input layer: bombs, oversized PDF pages, pipes, devices, lying
headers and suffixes, odd names, commented path lists. Nothing may hang or blow up; each bad file is one
InputError naming it exactly; the rest of the batch goes on.

Batches run in a subprocess with a timeout and an address-space cap, so a regression fails the test
instead of hanging it or exhausting the machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import PROJECT_ROOT
from inputs_corpus import (
    HUGE_PAGE_POINTS,
    write_bomb_png,
    write_gif_with_oversized_frame,
    write_pdf,
    write_tiff_with_oversized_frame,
)
from PIL import Image
from rich.console import Console

from docsam_cli.console import print_error
from docsam_cli.inputs import (
    DEFAULT_MAX_IMAGE_PIXELS,
    Document,
    InputError,
    collect_documents,
    iter_page_tasks,
)
from docsam_cli.inputs.images import check_pixel_limit, max_image_pixels, set_max_image_pixels
from docsam_cli.inputs.sources import MAX_STEM_BYTES, read_path_list
from docsam_cli.names import display_path

MEMORY_CAP = 3 * 2**30  # bytes of address space: decoding any of the bombs would need more
BATCH_TIMEOUT = 120  # seconds; the batches below take a few

# Runs `iter_pages` over argv (stdin forwarded) and prints one JSON line per page or error.
BATCH_SCRIPT = """
import json, os, sys
from docsam_cli.inputs import InputError, LoadOptions, iter_pages, set_max_image_pixels
limit = os.environ.get("DOCSAM_TEST_LIMIT")
if limit is not None:
    set_max_image_pixels(int(limit))
for item in iter_pages(sys.argv[1:], options=LoadOptions(dpi=200), stdin=sys.stdin):
    if isinstance(item, InputError):
        line = {"error": str(item), "path": os.fsencode(item.path).hex(), "page": item.page}
    else:
        line = {"page_id": item.page_id, "source": os.fsencode(item.source).hex(), "shape": item.image.shape}
    print(json.dumps(line), flush=True)
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_batch(
    sources: list[str | Path], *, stdin: bytes = b"", cwd: Path | None = None, limit: int | None = None
) -> list[dict]:
    """The batch's items in order, from a bounded subprocess (see the module docstring)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    if limit is not None:
        env["DOCSAM_TEST_LIMIT"] = str(limit)
    result = subprocess.run(
        [sys.executable, "-c", BATCH_SCRIPT, *map(os.fspath, sources)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=BATCH_TIMEOUT,
        preexec_fn=_cap_memory,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    items = [json.loads(line) for line in result.stdout.decode().splitlines()]
    for item in items:
        key = "path" if "error" in item else "source"
        item[key] = Path(os.fsdecode(bytes.fromhex(item[key])))
    return items


def errors_by_path(items: list[dict]) -> dict[Path, str]:
    """Each failing file's message; a file failing more than once is a test failure."""
    failures = [(item["path"], item["error"]) for item in items if "error" in item]
    assert len({path for path, _ in failures}) == len(failures), failures
    return dict(failures)


def assert_names_exactly(message: str, path: Path, page: int | None = None) -> str:
    """The reason after the exact, one-line name of the file (and page)."""
    where = display_path(path) + (f" (page {page})" if page is not None else "")
    assert message.startswith(f"{where}: "), (message, where)
    assert "\n" not in message and "\r" not in message
    return message[len(where) + 2 :]


@pytest.fixture
def good_png():
    def write(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), colour).save(path, "PNG")
        return path

    return write


def test_a_hostile_batch_refuses_each_bad_file_once_and_does_the_rest(tmp_path, good_png):
    good = good_png(tmp_path / "good.png")
    bomb = write_bomb_png(tmp_path / "bomb.png")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    huge_page = write_pdf(tmp_path / "poster.pdf", HUGE_PAGE_POINTS, HUGE_PAGE_POINTS)
    small_pdf = write_pdf(tmp_path / "small.pdf", 144, 72)
    last = good_png(tmp_path / "last.png", (0, 0, 0))

    items = run_batch([good, bomb, pipe, huge_page, "/dev/null", small_pdf, last])

    pages = [(item["page_id"], item["shape"]) for item in items if "page_id" in item]
    assert pages == [("good", [16, 24, 3]), ("small_p0001", [200, 400, 3]), ("last", [16, 24, 3])]
    failed = errors_by_path(items)
    assert set(failed) == {bomb, pipe, huge_page, Path("/dev/null")}
    assert assert_names_exactly(failed[bomb], bomb) == (
        f"20000x20000 = 400000000 pixels exceeds the decompression-bomb limit of {DEFAULT_MAX_IMAGE_PIXELS} "
        "pixels "
        "(raise the limit with --max-image-pixels if the file is trusted)"
    )
    assert assert_names_exactly(failed[pipe], pipe) == "not a regular file (a named pipe)"
    assert (
        assert_names_exactly(failed[Path("/dev/null")], Path("/dev/null")) == "not a regular file (a device)"
    )
    assert assert_names_exactly(failed[huge_page], huge_page, page=1).startswith(
        "40000x40000 = 1600000000 pixels exceeds the decompression-bomb limit"
    )
    assert [item.get("page_id", "error") for item in items] == [
        "good", "error", "error", "error", "error", "small_p0001", "last",
    ]  # fmt: skip


def test_pipes_sockets_and_devices_are_refused_however_they_are_found(tmp_path, good_png):
    folder = tmp_path / "scans"
    folder.mkdir()
    good_png(folder / "p1.png")
    os.mkfifo(folder / "p2.png")
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(folder / "p3.png"))
    except OSError:  # a socket path too long for AF_UNIX: the pipes and the device still make the point
        listener.close()
        listener = None
    os.mkfifo(tmp_path / "listed.tif")
    os.mkfifo(tmp_path / "hidden-pipe")
    os.symlink(tmp_path / "hidden-pipe", tmp_path / "link-to-pipe.png")
    try:
        items = run_batch(
            [folder, str(tmp_path / "*.tif"), tmp_path / "link-to-pipe.png", "-"],
            stdin=f"{tmp_path / 'listed.tif'}\n/dev/zero\n".encode(),
        )
    finally:
        if listener is not None:
            listener.close()
    assert [item["page_id"] for item in items if "page_id" in item] == ["p1"]
    failed = errors_by_path(items)
    expected = {
        folder / "p2.png": "a named pipe",
        tmp_path / "listed.tif": "a named pipe",  # by the glob; named again on stdin, listed once
        tmp_path / "link-to-pipe.png": "a named pipe",
        Path("/dev/zero"): "a device",
    }
    if listener is not None:
        expected[folder / "p3.png"] = "a socket"
    assert {path: assert_names_exactly(message, path) for path, message in failed.items()} == {
        path: f"not a regular file ({kind})" for path, kind in expected.items()
    }


def test_a_pdf_page_poppler_cannot_allocate_is_an_error_not_a_pixel(tmp_path):
    poster = write_pdf(tmp_path / "poster.pdf", HUGE_PAGE_POINTS, HUGE_PAGE_POINTS)
    (item,) = run_batch([poster], limit=0)  # no pixel limit: poppler itself gives up ("Bogus memory ...")
    reason = assert_names_exactly(item["error"], poster, page=1)
    assert reason.startswith("poppler rendered 1x1 pixels instead of 40000x40000")


def test_pdf_pages_are_checked_from_the_crop_box_poppler_renders_and_rotate(tmp_path):
    cropped = write_pdf(tmp_path / "cropped.pdf", HUGE_PAGE_POINTS, HUGE_PAGE_POINTS, "/CropBox [0 0 144 72]")
    turned = write_pdf(tmp_path / "turned.pdf", 144, 72, "/Rotate 90")
    items = run_batch([cropped, turned])
    assert [(item["page_id"], item["shape"]) for item in items] == [
        ("cropped_p0001", [200, 400, 3]),  # the visible page, not the 200-inch media box
        ("turned_p0001", [400, 200, 3]),
    ]


def test_headers_that_lie_are_caught_before_the_pixels_are_decoded(tmp_path):
    gif = write_gif_with_oversized_frame(tmp_path / "screen.gif")  # a 10 x 10 screen, a 30000² frame
    tiff = write_tiff_with_oversized_frame(tmp_path / "book.tif")  # page 2 claims 20000²
    gif_error, first_page, second_page = run_batch([gif, tiff])
    gif_reason = assert_names_exactly(gif_error["error"], gif)
    assert gif_reason.startswith("900000000 pixels exceeds the decompression-bomb limit")
    assert (first_page["page_id"], first_page["shape"]) == ("book_p0001", [8, 8, 3])
    tiff_reason = assert_names_exactly(second_page["error"], tiff, page=2)
    assert tiff_reason.startswith("20000x20000 = 400000000 pixels exceeds the decompression-bomb limit")


def test_content_decides_the_type_whatever_the_suffix(tmp_path, good_png):
    png_named_pdf = good_png(tmp_path / "scan.pdf")
    pdf_named_png = write_pdf(tmp_path / "report.png", 72, 36)
    text_named_pdf = tmp_path / "notes.pdf"
    text_named_pdf.write_text("minutes of the meeting\n")
    webp_named_pdf = tmp_path / "photo.pdf"  # WebP's signature has the file's size in its middle
    Image.new("RGB", (30, 20), "white").save(webp_named_pdf, format="WEBP")
    cut_webp = tmp_path / "cut.webp"
    cut_webp.write_bytes(webp_named_pdf.read_bytes()[:14])
    items = run_batch([png_named_pdf, pdf_named_png, webp_named_pdf, text_named_pdf, cut_webp])
    assert [(item["page_id"], item["shape"]) for item in items[:3]] == [
        ("scan", [16, 24, 3]),
        ("report_p0001", [100, 200, 3]),
        ("photo", [20, 30, 3]),
    ]
    assert assert_names_exactly(items[3]["error"], text_named_pdf).startswith("damaged or not a PDF")
    assert "WebP" in assert_names_exactly(items[4]["error"], cut_webp)


ODD_NAMES = {
    "newline": "two\nlines.png",
    "markup": "[draft].png",
    "closing markup": "[/red].png",  # a folder `[` holding `red].png`: the path reads `...[/red].png`
    "escape": "esc\x1b[31m.png",
    "not UTF-8": os.fsdecode(b"scan\xff.png"),
}


@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_odd_names_are_named_exactly_and_give_usable_page_ids(tmp_path, good_png, name):
    good = good_png(tmp_path / name)
    broken = tmp_path / f"broken-{name}"
    broken.parent.mkdir(exist_ok=True)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items = run_batch([good, broken])
    page_id = items[0]["page_id"]
    assert items[0]["source"] == good
    assert page_id.isprintable() and "/" not in page_id
    page_id.encode("utf-8")  # valid UTF-8: no undecodable bytes left
    assert assert_names_exactly(items[1]["error"], broken).startswith("truncated or corrupt image data")

    console = Console(file=io.StringIO(), width=40, soft_wrap=True, color_system=None)
    print_error(console, items[1]["error"])
    printed = console.file.getvalue()
    assert printed.count("\n") == 1 and printed == f"error: {items[1]['error']}\n"


def test_page_ids_percent_encode_what_cannot_name_a_file(tmp_path):
    names = ["two\nlines.png", os.fsdecode(b"scan\xff.png"), "[draft].png", "tab\there.png", "100%.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    stems = [item.stem for item in collect_documents([str(tmp_path / name) for name in names])]
    assert stems == ["two%0Alines", "scan%FF", "[draft]", "tab%09here", "100%"]


def test_long_names_give_bounded_unique_page_ids(tmp_path):
    common = "é" * 110  # 220 UTF-8 bytes: with a suffix and `_p0001`, past what a file name can hold
    paths = [tmp_path / f"{common}{tail}.png" for tail in ("a", "b")]
    for path in paths:
        path.write_bytes(b"x")
    stems = [item.stem for item in collect_documents(list(map(str, paths)))]
    assert len(set(stems)) == 2
    for stem in stems:
        assert len(stem.encode()) <= MAX_STEM_BYTES and stem.startswith("é" * 50)
    output = tmp_path / "out" / f"{stems[0]}_p0001.json"
    output.parent.mkdir()
    output.write_text("{}")  # the longest output name fits


def test_stdin_lists_skip_comments_and_blank_lines(tmp_path, good_png):
    good_png(tmp_path / "#hash.png")
    good_png(tmp_path / "plain.png")
    listing = b"# scanned 2024-05-01\n\n   \n  # indented comment\n./#hash.png\r\nplain.png\n"
    items = run_batch(["-"], stdin=listing, cwd=tmp_path)
    assert [item["page_id"] for item in items] == ["#hash", "plain"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-8"])
def test_stdin_lists_in_unicode_with_a_byte_order_mark_are_read(tmp_path, good_png, encoding):
    """PowerShell's `Get-ChildItem -Name > list.txt` writes UTF-16 LE with a byte order mark: read as bytes,
    its NULs made every character a path of its own (`/` among them, a folder to scan)."""
    good_png(tmp_path / "première.png")
    good_png(tmp_path / "plain.png")
    listing = ("\ufeff# my scans\r\npremière.png\r\nplain.png\r\n").encode(encoding)
    items = run_batch(["-"], stdin=listing, cwd=tmp_path)
    assert [item.get("page_id") for item in items] == ["première", "plain"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_stdin_lists_in_utf_16_without_a_byte_order_mark_are_read(tmp_path, good_png, encoding):
    """`cmd /u /c dir /b > list.txt`, Python's and .NET's utf-16-le writers write no mark: its NULs made
    every character a path of its own, one error line each."""
    good_png(tmp_path / "première.png")
    good_png(tmp_path / "扫描一.png")  # U+4E00: a NUL in the low byte
    listing = "première.png\r\n扫描一.png\r\n".encode(encoding)
    items = run_batch(["-"], stdin=listing, cwd=tmp_path)
    assert [item.get("page_id") for item in items] == ["première", "扫描一"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_stdin_lists_joined_from_marked_lists_read_every_part(tmp_path, good_png, encoding):
    """`type a.txt b.txt | docsam segment -` of Notepad's lists puts b.txt's byte order mark at the start
    of a line: its first path was not found (the mark invisible in the error), its comment was a path,
    where a dataset's list.txt so joined reads (`layout.list_names`)."""
    good_png(tmp_path / "a.png")
    good_png(tmp_path / "b.png")
    listing = "\ufeffa.png\r\n".encode(encoding) + "\ufeff# part two\r\nb.png\r\n".encode(encoding)
    items = run_batch(["-"], stdin=listing, cwd=tmp_path)
    assert [item.get("page_id") for item in items] == ["a", "b"]


def test_a_nul_separated_list_that_would_read_as_utf_16_stays_nul_separated():
    """Entries of an odd length put every NUL at an odd offset, as UTF-16 LE's ASCII has them."""
    wrapper = io.TextIOWrapper(io.BytesIO(b"./1.png\0./2.png\0./3.png\0"), encoding="utf-8")
    assert read_path_list(wrapper) == ["./1.png", "./2.png", "./3.png"]


def test_a_stdin_list_not_in_the_encoding_its_byte_order_mark_announces_is_one_error():
    listing = "\ufeffa.png\n".encode("utf-16-le") + b"\x00\xdc\n"  # a lone surrogate, then an odd byte
    (item,) = run_batch(["-"], stdin=listing)
    assert item["error"] == (
        "-: cannot read the list of paths on stdin: "
        "it opens with UTF-16's byte order mark but is not UTF-16 (illegal encoding at byte 14)"
    )


def test_stdin_lists_may_be_nul_separated_and_hold_any_bytes():
    raw = b"a\nwith newline.png\0#not a comment.png\0" + b"scan\xff.png\0\0"
    wrapper = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")  # as sys.stdin: text over bytes
    assert read_path_list(wrapper) == [
        "a\nwith newline.png",
        "#not a comment.png",
        os.fsdecode(b"scan\xff.png"),
    ]
    assert read_path_list(io.StringIO("one.png\n# two.png\nthree.png")) == ["one.png", "three.png"]


def test_a_file_that_becomes_a_pipe_after_listing_is_refused_without_blocking(tmp_path, good_png):
    path = good_png(tmp_path / "swapped.png")
    (document,) = collect_documents([str(path)])
    assert isinstance(document, Document)
    path.unlink()
    os.mkfifo(path)
    watchdog = threading.Timer(10, _unblock_reader, args=(path,))  # a regression fails, never hangs
    watchdog.start()
    try:
        items = list(iter_page_tasks([document]))
    finally:
        watchdog.cancel()
    (error,) = items
    assert isinstance(error, InputError)
    assert assert_names_exactly(str(error), path) == "not a regular file (a named pipe)"


def _unblock_reader(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_images_without_pixels_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"the image has no pixels \(0x5\)"):
        check_pixel_limit(tmp_path / "flat.png", 0, 5)
    check_pixel_limit(tmp_path / "dot.png", 1, 1)


def test_the_default_pixel_limit_is_pillow_s_hard_limit_and_a_page_of_exactly_the_limit_is_read(tmp_path):
    """README: `--max-image-pixels` (default 178,956,970, Pillow's own hard limit; 0 = none)."""
    assert DEFAULT_MAX_IMAGE_PIXELS == 178_956_970 == 2 * (1024 * 1024 * 1024 // 4 // 3)
    check_pixel_limit(tmp_path / "strip.png", DEFAULT_MAX_IMAGE_PIXELS, 1)
    with pytest.raises(InputError, match=r"^\S+: 178956971x1 = 178956971 pixels exceeds"):
        check_pixel_limit(tmp_path / "strip.png", DEFAULT_MAX_IMAGE_PIXELS + 1, 1)
    with pytest.raises(ValueError, match="0 \\(no limit\\) or positive, got -1"):
        set_max_image_pixels(-1)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS


@pytest.mark.slow
def test_segment_refuses_the_hostile_files_and_writes_the_rest_readable(tmp_path, tiny_weights, good_png):
    good_png(tmp_path / "in" / "good.png")
    bomb = write_bomb_png(tmp_path / "in" / "bomb.png")
    pipe = tmp_path / "in" / "pipe.png"
    os.mkfifo(pipe)
    poster = write_pdf(tmp_path / "in" / "poster.pdf", HUGE_PAGE_POINTS, HUGE_PAGE_POINTS)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "docsam_cli", "segment", str(tmp_path / "in"), "--out", str(out)]
    command += ["--weights", str(tiny_weights), "--device", "cpu", "--format", "page,jsonl"]
    command += ["--short-side", "192", "--window", "224,192"]
    command += ["--max-image-pixels", str(DEFAULT_MAX_IMAGE_PIXELS)]  # the CLI's default once it is this

    def umask_022() -> None:
        os.umask(0o022)

    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=600,  # the model loads in seconds; a pipe opened for reading would block forever
        preexec_fn=umask_022,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    for path in (bomb, pipe, poster):
        assert sum(f"error: {path}" in line for line in errors) == 1, (path, errors)
    page = out / "page" / "good.xml"
    assert page.is_file() and stat.S_IMODE(page.stat().st_mode) == 0o644
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]
