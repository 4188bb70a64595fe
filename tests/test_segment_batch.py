"""`docsam segment` as a batch job: killed and re-run, and every PDF of the shared corpus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image
from pycocotools.coco import COCO
from segment_helpers import TINY_GEOMETRY, leftover_temporaries, run_segment


@pytest.mark.slow
def test_sigkill_and_rerun_do_every_page_exactly_once(tmp_path, tiny_weights, shared_data):
    sources = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    pages = tmp_path / "pages"
    pages.mkdir()
    for index in range(12):
        shutil.copy(sources[index % len(sources)], pages / f"page{index:02d}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "docsam_cli", "segment", str(pages), "--weights", str(tiny_weights)]
    command += ["--out", str(out), *TINY_GEOMETRY]
    records = out / ".docsam" / "records"
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3 and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {path.stem for path in records.glob("*.json")}
    assert 3 <= len(done_before) < 12, "the run should have been killed part-way"

    code, lines, stderr = run_segment(tiny_weights, out, str(pages), *TINY_GEOMETRY)
    assert code == 0, stderr
    skipped = {line["page_id"] for line in lines if line.get("skipped")}
    redone = {line["page_id"] for line in lines if not line.get("skipped")}
    assert skipped == done_before
    assert not skipped & redone and len(skipped | redone) == 12
    assert not leftover_temporaries(out)

    schema = etree.XMLSchema(etree.parse(str(shared_data / "schema" / "2019-07-15" / "pagecontent.xsd")))
    for line in lines:
        schema.assertValid(etree.parse(line["outputs"]["page"]))
        with Image.open(line["outputs"]["overlay"]) as overlay:
            overlay.verify()
    coco = COCO(str(out / "coco.json"))
    assert sorted(image["file_name"] for image in coco.dataset["images"]) == sorted(
        p.name for p in pages.iterdir()
    )


def _pdfinfo_pages(path: Path, password: str | None = None) -> int | None:
    command = ["pdfinfo", *(["-upw", password] if password else []), str(path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return None
    return next(int(line.split()[1]) for line in completed.stdout.splitlines() if line.startswith("Pages:"))


@pytest.mark.slow
def test_every_pdf_of_the_corpus_is_accounted_for(tmp_path, tiny_weights, shared_data):
    pdfs = sorted((shared_data / "pdfs").rglob("*.pdf"))
    out = tmp_path / "out"
    code, lines, stderr = run_segment(
        tiny_weights, out, *map(str, pdfs), *TINY_GEOMETRY, "--dpi", "12", "--format", "jsonl,coco"
    )
    by_input: dict[str, list[dict]] = {}
    for line in lines:
        by_input.setdefault(line["input"], []).append(line)
    failed_inputs = set()
    for pdf in pdfs:
        results = by_input.get(str(pdf), [])
        pages = [r for r in results if "error" not in r]
        errors = [r for r in results if "error" in r]
        expected = _pdfinfo_pages(pdf)
        if expected is None:  # encrypted without password, or damaged beyond poppler's repair
            assert errors and not pages, pdf
        else:  # each page poppler counts is segmented, or is an error of its own: the file is never refused
            assert [r["page"] for r in results] == list(range(1, expected + 1)), pdf
        if errors:
            failed_inputs.add(pdf.name)
            assert all("\n" not in r["error"] for r in errors)
    assert failed_inputs, "the corpus has damaged and encrypted files"
    assert code == 1
    summary = stderr[stderr.index("pages segmented") :]
    for name in failed_inputs:
        assert name in summary
    assert not leftover_temporaries(out)
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == sum(1 for line in lines if "error" not in line)

    for relative, password in [
        ("pdf-docling-tests/tests/data/pdf_password/sources/2206.01062_pg3.pdf", "1234"),
        ("pdf-pypdf-sample-files", "openpassword"),
        ("pdf-tabula-tests/encrypted.pdf", "userpassword"),
    ]:
        target = shared_data / "pdfs" / relative
        if target.is_dir():
            target = next(path for path in target.rglob("*.pdf") if "password" in str(path))
        expected = _pdfinfo_pages(target, password)
        assert expected, target
        code, lines, stderr = run_segment(
            tiny_weights,
            tmp_path / f"pw-{target.stem}",
            str(target),
            *TINY_GEOMETRY,
            "--password",
            password,
            "--dpi",
            "12",
        )
        assert code == 0, stderr
        assert len(lines) == expected and all("error" not in line for line in lines)
        code, lines, stderr = run_segment(
            tiny_weights, tmp_path / f"nopw-{target.stem}", str(target), *TINY_GEOMETRY, "--dpi", "12"
        )
        assert code == 1 and len(lines) == 1
        assert lines[0]["error"] == f"{target}: encrypted PDF: a password is needed (--password)"
