"""PDF rendering of the real PDFs in shared/data/pdfs: page by page, /Rotate, passwords, damage."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from inputs_corpus import pdf_file

import docsam_cli.inputs.pdf as pdf_module
from docsam_cli.inputs import (
    InputError,
    LoadOptions,
    Page,
    PageTask,
    collect_documents,
    iter_page_tasks,
    max_image_pixels,
    parse_page_ranges,
    prefetch,
    set_max_image_pixels,
)

LOW_DPI = 30.0


@pytest.fixture(scope="module")
def pdfs(shared_data: Path) -> Path:
    return shared_data / "pdfs"


def items_for(path: Path, **options) -> list[PageTask | InputError]:
    options.setdefault("dpi", LOW_DPI)
    return list(iter_page_tasks(collect_documents([str(path)]), LoadOptions(**options)))


def only_error(path: Path, **options) -> InputError:
    (item,) = items_for(path, **options)
    assert isinstance(item, InputError), item
    assert str(item).startswith(f"{path}: ") and "\n" not in str(item)
    return item


def render(path: Path, page: int, **options) -> Page:
    tasks = {task.page: task for task in items_for(path, **options) if isinstance(task, PageTask)}
    return tasks[page].load()


@pytest.fixture
def render_calls(monkeypatch) -> list[dict]:
    """Every pdftoppm run, recorded."""
    calls: list[dict] = []
    real = pdf_module._pdftoppm

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pdf_module, "_pdftoppm", spy)
    return calls


def ink_profile_ratio(image: np.ndarray) -> float:
    """How much more the ink varies from row to row than from column to column: > 1 for horizontal text."""
    ink = 255.0 - image.mean(axis=2)
    rows, columns = ink.mean(axis=1), ink.mean(axis=0)
    return float((rows.std() / rows.mean()) / (columns.std() / columns.mean()))


def test_long_pdf_is_listed_without_rendering_and_rendered_one_page_per_call(pdfs, render_calls):
    thesis = pdfs / "pdf-pypdf-sample-files" / "009-pdflatex-geotopo" / "GeoTopo-komprimiert.pdf"
    tasks = items_for(thesis)
    assert len(tasks) == 117 and not render_calls
    assert [task.page_id for task in tasks[:2]] == ["GeoTopo-komprimiert_p0001", "GeoTopo-komprimiert_p0002"]
    chosen = items_for(thesis, pages=parse_page_ranges("2,117"))
    assert [task.page for task in chosen] == [2, 117]
    pages = [task.load() for task in chosen]
    assert [call["page"] for call in render_calls] == [2, 117]
    a4 = (round(841.89 * LOW_DPI / 72), round(595.276 * LOW_DPI / 72))
    for page in pages:
        assert page.image.dtype == np.uint8 and page.image.ndim == 3 and page.image.shape[2] == 3
        assert abs(page.height - a4[0]) <= 1 and abs(page.width - a4[1]) <= 1
        assert page.image.min() < 128 < page.image.max()  # something is printed on a white page


def test_dpi_sets_the_rendered_size(pdfs):
    page = render(pdfs / "pdf-docling-tests/tests/data/ocr/sources/ocr_test.pdf", 1, dpi=72.0)
    assert abs(page.width - 595) <= 1 and abs(page.height - 842) <= 1


def test_rotate_entries_are_applied_as_viewers_show_the_page(pdfs):
    rotated = pdfs / "pdf-pypdf-sample-files" / "015-arabic" / "habibi-rotated.pdf"  # /Rotate 90, 180, 270, 0
    shapes = [render(rotated, number).image.shape[:2] for number in (1, 2, 3, 4)]
    portrait = (round(841.89 * LOW_DPI / 72), round(595.276 * LOW_DPI / 72))
    for (height, width), upright in zip(shapes, [False, True, False, True], strict=True):
        expected = portrait if upright else portrait[::-1]
        assert abs(height - expected[0]) <= 1 and abs(width - expected[1]) <= 1
    inherited = render(pdfs / "pdf-qpdf-tricky" / "inherited-rotate.pdf", 1)  # /Rotate on the Pages node
    assert inherited.width > inherited.height


@pytest.mark.parametrize(
    "name",
    [
        "pdf-tabula-tests/rotated_page.pdf",  # a landscape table stored portrait with /Rotate 90
        "pdf-docling-tests/tests/data/ocr/sources/sample_with_rotation_mismatch.pdf",  # scanned letter
    ],
)
def test_real_rotated_pages_come_out_upright(pdfs, name):
    page = render(pdfs / name, 1, dpi=40.0)
    assert ink_profile_ratio(page.image) > 1.4  # text lines run horizontally


def test_tiny_pages_render(pdfs):
    page = render(
        pdfs / "pdf-pypdf-sample-files" / "007-imagemagick-images" / "imagemagick-lzw.pdf", 1, dpi=200.0
    )
    assert 10 <= page.width <= 12 and 10 <= page.height <= 12  # 4 x 4 pt at 200 dpi


@pytest.mark.parametrize(
    ("name", "password", "pages"),
    [
        ("pdf-tabula-tests/encrypted.pdf", "userpassword", 1),
        ("pdf-docling-tests/tests/data/pdf_password/sources/2206.01062_pg3.pdf", "1234", 1),
        ("pdf-qpdf-tricky/enc-XI-R6,V5,U=view,O=master.pdf", "view", 30),
        ("pdf-qpdf-tricky/encrypted-40-bit-R3.pdf", "623", None),
        (
            "pdf-pypdf-sample-files/005-libreoffice-writer-password/libreoffice-writer-password.pdf",
            "openpassword",
            1,
        ),
    ],
)
def test_encrypted_pdfs_need_the_right_password(pdfs, name, password, pages):
    path = pdfs / name
    assert only_error(path).reason == "encrypted PDF: a password is needed (--password)"
    assert only_error(path, password="wrong").reason == "encrypted PDF: wrong password"
    tasks = items_for(path, password=password)
    assert all(isinstance(task, PageTask) for task in tasks)
    assert pages is None or len(tasks) == pages
    assert tasks[0].load().image.mean() > 100  # rendered, mostly white paper


@pytest.mark.parametrize("name", ["V4-aes.pdf", "enc-XI-R6,V5,O=master.pdf"])
def test_pdfs_encrypted_with_an_empty_user_password_open_without_one(pdfs, name):
    tasks = items_for(pdfs / "pdf-qpdf-tricky" / name)
    assert len(tasks) == 30 and tasks[29].page_id.endswith("_p0030")
    assert tasks[0].load().height > 0


def test_a_password_is_used_only_where_a_file_needs_it(pdfs, render_calls):
    """One --password for a batch: files that open without it (V4.pdf: empty user password) still open."""
    for name in ["pdf-qpdf-tricky/V4.pdf", "pdf-qpdf-tricky/minimal-rotated.pdf"]:
        tasks = items_for(pdfs / name, password="userpassword")
        assert tasks and all(isinstance(task, PageTask) for task in tasks)
        tasks[0].load()
    (task,) = items_for(pdfs / "pdf-tabula-tests/encrypted.pdf", password="userpassword")
    task.load()
    assert [call["password"] for call in render_calls] == [None, None, "userpassword"]


def test_the_owner_password_opens_an_encrypted_pdf_too(pdfs):
    tasks = items_for(pdfs / "pdf-qpdf-tricky/enc-XI-R6,V5,U=view,O=master.pdf", password="master")
    assert len(tasks) == 30 and all(isinstance(task, PageTask) for task in tasks)
    assert tasks[0].load().image.mean() > 100


_PASSWORD_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def rc4_encrypted_pdf(user: bytes, owner: bytes) -> bytes:
    """A one-page PDF (a black square top left) under the standard security handler, revision 2 (40-bit
    RC4, ISO 32000-1 algorithms 2 to 4): passwords are bytes, PDFDocEncoding for the user's text."""
    padded = [(password + _PASSWORD_PAD)[:32] for password in (user, owner)]
    o_entry = rc4(hashlib.md5(padded[1]).digest()[:5], padded[0])
    file_id, permissions = b"0123456789abcdef", (-4).to_bytes(4, "little", signed=True)
    key = hashlib.md5(padded[0] + o_entry + permissions + file_id).digest()[:5]
    content = rc4(
        hashlib.md5(key + (4).to_bytes(3, "little") + bytes(2)).digest()[:10], b"0 g 0 742 50 50 re f"
    )
    pdf = pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>"
        % (o_entry.hex().encode(), rc4(key, _PASSWORD_PAD).hex().encode()),
    ])  # fmt: skip
    trailer = b"/Encrypt 5 0 R /ID [<%s> <%s>] >>" % (file_id.hex().encode(), file_id.hex().encode())
    return pdf.replace(b"/Root 1 0 R >>", b"/Root 1 0 R " + trailer)


def test_accented_passwords_open_files_that_take_them_in_pdfdocencoding(tmp_path):
    """RC4 and AES-128 files (revision 4 and below) hash their password's PDFDocEncoding bytes; poppler
    hands on what it gets, so the UTF-8 of a typed "pässwörd" was refused as a wrong password."""
    path = tmp_path / "accented.pdf"
    path.write_bytes(rc4_encrypted_pdf("pässwörd".encode("latin-1"), "Bürö".encode("latin-1")))
    assert only_error(path).reason == "encrypted PDF: a password is needed (--password)"
    assert only_error(path, password="passwort").reason == "encrypted PDF: wrong password"
    for password in ("pässwörd", "Bürö"):
        (task,) = items_for(path, password=password)
        assert isinstance(task, PageTask), task
        page = task.load().image
        assert page.shape == (330, 255, 3) and page[:20, :20].max() == 0 and page[100:].min() == 255


@pytest.mark.parametrize("name", ["bad1.pdf", "bad-direct-root.pdf", "bad-content.pdf"])
def test_damaged_pdfs_fail_with_one_line(pdfs, name):
    reason = only_error(pdfs / "pdf-qpdf-tricky" / name).reason
    assert reason.startswith("damaged or not a PDF (poppler: ")


def test_a_pdf_without_pages_says_so(tmp_path):
    """pdfinfo refuses the page range of an empty document: that read as "damaged or not a PDF"."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    (tmp_path / "empty.pdf").write_bytes(pdf_file(objects))
    assert only_error(tmp_path / "empty.pdf").reason == "PDF has no pages"


@pytest.mark.parametrize(
    ("count", "complaint"),
    [
        ("", "Page count in top-level pages object is wrong type (null)"),
        ("/Count -2", "Invalid page count -2"),
        ("/Count 1000000", "Page count (1000000) larger than number of objects (5)"),
    ],
)
def test_a_damaged_page_tree_is_not_called_a_pdf_without_pages(tmp_path, count, complaint):
    """Two pages that other readers show, under a /Count poppler refuses: poppler finds no page, and
    "PDF has no pages" told the user the scan was empty."""
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 300] >>"
    tree = b"<< /Type /Pages /Kids [3 0 R 4 0 R] %s >>" % count.encode()
    (tmp_path / "book.pdf").write_bytes(pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>", tree, page, page]))
    reason = only_error(tmp_path / "book.pdf").reason
    assert reason == f"damaged PDF: poppler finds no page in it (poppler: {complaint})"


@pytest.mark.parametrize("name", ["pdf-qpdf-tricky/bad-xref.pdf", "pdf-qpdf-tricky/fuzz-16214.pdf"])
def test_damaged_pdfs_that_poppler_repairs_are_rendered(pdfs, name):
    (task,) = items_for(pdfs / name)
    assert task.load().image.shape[2] == 3


def test_selection_past_the_last_page_is_a_per_file_error(pdfs):
    error = only_error(
        pdfs / "pdf-pypdf-sample-files/015-arabic/habibi-rotated.pdf", pages=parse_page_ranges("5-")
    )
    assert error.reason == "none of the selected pages exists (the document has 4)"


def test_page_over_the_pixel_limit_fails_before_poppler_renders_it(pdfs, render_calls):
    saved = max_image_pixels()
    try:
        set_max_image_pixels(1_000_000)
        (task,) = items_for(pdfs / "pdf-docling-tests/tests/data/ocr/sources/ocr_test.pdf", dpi=300.0)
        with pytest.raises(InputError, match="exceeds the decompression-bomb limit of 1000000") as caught:
            task.load()
        assert caught.value.page == 1 and "(page 1)" in str(caught.value)
        assert not render_calls
    finally:
        set_max_image_pixels(saved)


def test_multi_page_tiff_from_docling(pdfs):
    tasks = items_for(pdfs / "pdf-docling-tests/tests/data/tiff/sources/2206.01062.tif")
    assert [task.page_id for task in tasks] == ["2206.01062_p0001", "2206.01062_p0002"]
    page = tasks[1].load()
    assert page.image.shape == (792, 612, 3) and page.page == 2
    assert page.image.mean() > 200  # RGBA frames composited on white, not on black


def test_a_mixed_batch_keeps_its_order_and_goes_on_after_failures(pdfs, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    sources = [
        str(pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"),
        str(pdfs / "pdf-qpdf-tricky" / "bad1.pdf"),
        str(tmp_path / "broken.png"),
        str(pdfs / "pdf-docling-tests/tests/data/ocr/sources/qr_bill_example.jpg"),
        str(pdfs / "pdf-tabula-tests" / "encrypted.pdf"),
        str(pdfs / "pdf-qpdf-tricky" / "encrypted-with-images.pdf"),
    ]
    tasks = iter_page_tasks(collect_documents(sources), LoadOptions(dpi=LOW_DPI))
    results = list(prefetch(tasks, workers=2, ahead=2))
    summary = [
        (item.path.name, "error") if isinstance(item, InputError) else (item.page_id, item.image.shape[2])
        for item in results
    ]
    assert summary == [
        ("minimal-rotated_p0001", 3),
        ("bad1.pdf", "error"),
        ("broken.png", "error"),
        ("qr_bill_example", 3),
        ("encrypted.pdf", "error"),
        ("encrypted-with-images_p0001", 3),
        ("encrypted-with-images_p0002", 3),
    ]


def test_without_poppler_each_pdf_is_an_error_and_the_images_go_on(pdfs, tmp_path, monkeypatch):
    """poppler-utils not installed (no pdfinfo on PATH): each PDF fails in one line saying so, and the
    images of the batch are read. It was an internal error that stopped the whole run (exit 3)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no poppler
    image = pdfs / "pdf-docling-tests/tests/data/ocr/sources/qr_bill_example.jpg"
    sources = [str(pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"), str(image)]
    results = list(iter_page_tasks(collect_documents(sources), LoadOptions(dpi=LOW_DPI)))
    error, task = results
    assert isinstance(error, InputError) and isinstance(task, PageTask)
    assert (
        str(error)
        == f"{sources[0]}: cannot read PDFs: poppler-utils is not installed (apt-get install poppler-utils)"
    )
    assert task.load().page_id == "qr_bill_example"


def _poppler_that(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """A pdftoppm doing `script` first on PATH (pdfinfo stays poppler's own)."""
    folder = tmp_path / "poppler"
    folder.mkdir()
    (folder / "pdftoppm").write_text(f"#!/bin/sh\n{script}\n")
    (folder / "pdftoppm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_poppler_killed_for_want_of_memory_is_not_called_a_damaged_pdf(pdfs, tmp_path, monkeypatch):
    """The out-of-memory killer (a container's or a Slurm job's memory limit) ending pdftoppm: the page
    failed with 'poppler could not render this page (damaged PDF)', sending the user to check the file."""
    _poppler_that(tmp_path, monkeypatch, "kill -9 $$")
    path = pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"
    with pytest.raises(InputError) as caught:
        render(path, 1, dpi=LOW_DPI)
    killed = "poppler was killed (signal 9: Killed), most likely by the system for want of memory"
    assert str(caught.value) == f"{path} (page 1): {killed}"


@pytest.mark.parametrize(
    ("sent", "number", "name"), [("SEGV", 11, "Segmentation fault"), ("HUP", 1, "Hangup")]
)
def test_poppler_ended_by_any_other_signal_is_a_crash_naming_it(
    pdfs, tmp_path, monkeypatch, sent, number, name
):
    """Every signal that ends pdftoppm is named (signal 1 too), never taken for a page that would not
    render."""
    _poppler_that(tmp_path, monkeypatch, f"kill -{sent} $$")
    path = pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"
    with pytest.raises(InputError) as caught:
        render(path, 1, dpi=LOW_DPI)
    crashed = f"poppler crashed (signal {number}: {name}) rendering this page (damaged PDF?)"
    assert str(caught.value) == f"{path} (page 1): {crashed}"


def test_poppler_out_of_memory_is_not_called_a_page_too_large(pdfs, tmp_path, monkeypatch):
    """Under a memory limit (`ulimit -v`) pdftoppm prints 'Out of memory' and writes a 1 x 1 image (as it
    does under `ulimit -v 60000` at 600 dpi): an A4 page failed with 'poppler rendered 1x1 pixels instead of
    4961x7017 (a page too large for poppler at 600 dpi?)'."""
    white_pixel = "printf 'P6\\n1 1\\n255\\n\\377\\377\\377'"
    _poppler_that(tmp_path, monkeypatch, f"echo 'Out of memory' >&2; {white_pixel}")
    path = pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"
    with pytest.raises(InputError) as caught:
        render(path, 1, dpi=LOW_DPI)
    assert str(caught.value) == f"{path} (page 1): poppler ran out of memory rendering this page at 30 dpi"


def test_poppler_saying_out_of_memory_of_a_page_it_rendered_whole_keeps_the_page(pdfs, tmp_path, monkeypatch):
    """Only a failed render is blamed on memory: a page rendered at its size is the page, whatever poppler
    printed on the way (e.g. of one embedded image it could not allocate)."""
    real = shutil.which("pdftoppm")
    _poppler_that(tmp_path, monkeypatch, f"echo 'Out of memory' >&2; exec {real} \"$@\"")
    path = pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"
    assert render(path, 1, dpi=LOW_DPI).image.size > 1


def test_pdftoppm_missing_where_pdfinfo_was_found_fails_the_page_saying_so(pdfs, tmp_path, monkeypatch):
    """pdfinfo listed the pages, then pdftoppm is not on PATH (a partial install, PATH changed under a
    long run): the page's error says poppler is missing, as for pdfinfo."""
    path = pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf"
    (task,) = items_for(path)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no pdftoppm
    with pytest.raises(InputError) as caught:
        task.load()
    missing = "cannot read PDFs: poppler-utils is not installed (apt-get install poppler-utils)"
    assert str(caught.value) == f"{path} (page 1): {missing}"


def test_a_page_pdfinfo_gave_no_size_for_is_an_error_and_never_rendered(pdfs, render_calls):
    (task,) = items_for(pdfs / "pdf-qpdf-tricky" / "minimal-rotated.pdf")
    with pytest.raises(InputError) as caught:
        dataclasses.replace(task, size_points=None).load()
    assert (caught.value.page, caught.value.reason) == (1, "pdfinfo reported no size for this page")
    assert render_calls == []
