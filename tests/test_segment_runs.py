"""`docsam segment` runs one after another in one output folder, with a stand-in model: a page id that holds
another input's outputs, a resumed run's order, and a model loaded only once a page needs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import tracemalloc
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import CLASSES, error_lines, invoke, run_docsam, segment, stand_in_model, write_page
from inputs_corpus import write_pdf
from lxml import etree
from PIL import Image, ImageOps, TiffImagePlugin

import docsam_cli.batch as batch
from docsam_cli.console import ConsoleReporter
from docsam_cli.errors import ExitCode
from docsam_cli.folder_lock import folder_lock
from docsam_cli.writers.page_outputs import PageWriter


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The network replaced (`stand_in_model`): its `loads` and `batches`."""
    return stand_in_model(monkeypatch)


def page_files(out: Path, page_id: str) -> list[Path]:
    return [
        out / ".docsam" / "records" / f"{page_id}.json",
        out / ".docsam" / "coco-parts" / f"{page_id}.json",
        out / "page" / f"{page_id}.xml",
        out / "overlay" / f"{page_id}.png",
    ]


@pytest.mark.parametrize("formats", ["jsonl", "page"])
def test_a_run_in_one_process_removes_the_json_lines_files_an_earlier_run_under_torchrun_left(
    tmp_path, model, formats
):
    """`torchrun --nproc_per_node 2` wrote OUT/jsonl/rank-{0,1}.jsonl; a rerun in one process (also
    `--nproc_per_node 1`) printed its lines on stdout and left those files, so `cat OUT/jsonl/*.jsonl` read
    the earlier run's lines as the folder's. A run writing no JSON lines leaves them, as under torchrun."""
    page = write_page(tmp_path / "scan.png")
    out = tmp_path / "out"
    stale = [out / "jsonl" / f"rank-{rank}.jsonl" for rank in (0, 1)]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"page_id": "scan", "error": "an earlier run"}\n')
    code, records, stderr = segment(out, str(page), "--format", formats)
    assert code == ExitCode.OK, stderr
    assert [record["page_id"] for record in records] == (["scan"] if formats == "jsonl" else [])
    assert [path.exists() for path in stale] == [formats != "jsonl"] * 2


def test_a_page_id_that_holds_another_inputs_outputs_is_refused_not_skipped(tmp_path, model):
    """A file named like one done before gets an id of its own (the folder's stem index keeps the ids
    given, and is rebuilt from the records where it is gone). A file moved since is another file, whose id
    is free again: its outputs are then another input's, refused, never reused."""
    for folder in "abcd":
        (tmp_path / folder).mkdir()
    first = write_page(tmp_path / "a" / "scan.png")
    second = write_page(tmp_path / "b" / "scan.png", height=60)
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(first))
    assert code == ExitCode.OK, stderr
    code, records, stderr = segment(out, str(second))
    assert code == ExitCode.OK, stderr
    ids = ["scan", records[0]["page_id"]]
    assert ids[1] != "scan"
    (out / ".docsam" / "stems.json").unlink()  # as in a folder written by an older docsam
    code, records, stderr = segment(out, str(write_page(tmp_path / "c" / "scan.png", height=64)))
    assert code == ExitCode.OK, stderr
    ids.append(records[0]["page_id"])
    coco_ids = [image["page_id"] for image in json.loads((out / "coco.json").read_text())["images"]]
    assert len(set(ids)) == 3 and sorted(coco_ids) == sorted(ids)

    moved = first.rename(tmp_path / "d" / "scan.png")
    write_page(moved, height=70)  # not the same file any more
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in page_files(out, "scan")}
    code, records, stderr = segment(out, str(moved))
    assert code == ExitCode.FAILED
    (line,) = error_lines(stderr)
    assert line == (
        f"error: {moved}: page id scan already holds the outputs of {first} in this output folder "
        "(use another --out, or --overwrite)"
    )
    assert "0 pages segmented, 0 skipped (already done), 1 failed" in stderr
    (record,) = records
    assert record["input"] == str(moved) and "error" in record and "skipped" not in record
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in before} == before

    code, records, stderr = segment(out, str(moved), "--overwrite")
    assert code == ExitCode.OK, stderr
    stored = json.loads((out / ".docsam" / "records" / "scan.json").read_text())
    assert stored["input"] == str(moved) and stored["height"] == 70


def test_the_same_file_under_another_name_is_skipped(tmp_path, monkeypatch, model):
    (tmp_path / "a").mkdir()
    page = write_page(tmp_path / "a" / "scan.png")
    monkeypatch.chdir(tmp_path)
    code, _, stderr = segment(tmp_path / "out", "a/scan.png")
    assert code == ExitCode.OK, stderr
    first = json.loads((tmp_path / "out" / ".docsam" / "records" / "scan.json").read_text())
    monkeypatch.chdir(tmp_path / "a")
    code, records, stderr = segment(tmp_path / "out", str(page), "--format", "page,jsonl")  # a later day
    assert code == ExitCode.OK, stderr
    (line,) = records
    assert line["skipped"] is True and line["instances"] == first["instances"]
    # named as now, and the outputs as this run names them (from another folder, other formats)
    assert line["input"] == str(page)
    assert line["outputs"] == {"page": str(tmp_path / "out" / "page" / "scan.xml")}


def test_a_grown_folder_keeps_its_page_ids_and_each_file_is_done_once(tmp_path, model):
    """Rerunning a folder that has gained a file of the same name in a subfolder: the first file keeps its
    id and is skipped (not done again under a longer id), the new one gets an id of its own."""
    (tmp_path / "inc" / "b").mkdir(parents=True)
    first = write_page(tmp_path / "inc" / "scan.png")
    out = tmp_path / "out"
    code, records, stderr = segment(out, str(tmp_path / "inc"), "--recursive")
    assert code == ExitCode.OK, stderr
    assert [record["page_id"] for record in records] == ["scan"]
    second = write_page(tmp_path / "inc" / "b" / "scan.png")

    code, records, stderr = segment(out, str(tmp_path / "inc"), "--recursive")

    assert code == ExitCode.OK, stderr
    by_input = {record["input"]: record for record in records}
    assert by_input[str(first)]["page_id"] == "scan" and by_input[str(first)]["skipped"] is True
    assert by_input[str(second)]["page_id"] != "scan" and "skipped" not in by_input[str(second)]
    coco = json.loads((out / "coco.json").read_text())
    ids = sorted(record["page_id"] for record in records)
    assert sorted(image["page_id"] for image in coco["images"]) == ids  # each file once
    code, records, stderr = segment(out, str(second))  # named alone: the id it got
    assert code == ExitCode.OK and records[0]["skipped"] is True, stderr


def test_a_current_link_moved_to_a_new_snapshot_keeps_the_page_ids(tmp_path, model):
    """`scans/current -> snap1`, later `-> snap2` (snap1's pages copied, one added): pages are known by the
    path as named, so the copies are skipped, not done again under new ids and listed twice."""
    scans = tmp_path / "scans"
    (scans / "snap1").mkdir(parents=True)
    for name in ("page0.png", "page1.png"):
        write_page(scans / "snap1" / name)
    (scans / "current").symlink_to("snap1")
    out = tmp_path / "out"
    assert segment(out, str(scans / "current"))[0] == ExitCode.OK
    shutil.copytree(scans / "snap1", scans / "snap2")
    write_page(scans / "snap2" / "page2.png")
    (scans / "current").unlink()
    (scans / "current").symlink_to("snap2")

    code, records, stderr = segment(out, str(scans / "current"))

    assert code == ExitCode.OK and "1 pages segmented, 2 skipped" in stderr, stderr
    assert [record["page_id"] for record in records] == ["page0", "page1", "page2"]
    assert coco_file_names(out) == ["page0.png", "page1.png", "page2.png"]


def test_a_resumed_run_keeps_the_inputs_order_in_coco(tmp_path, model):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    out = tmp_path / "out"
    code, _, _ = segment(out, str(pages[2]), "--format", "coco")  # the last page is done first
    assert code == ExitCode.OK
    code, _, stderr = segment(out, *map(str, pages), "--format", "coco,jsonl")
    assert code == ExitCode.OK and "2 pages segmented, 1 skipped" in stderr
    coco = json.loads((out / "coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [page.name for page in pages]
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("done", "seconds", "rate"),
    [(3, 0.5, "6.00"), (3, 1.5, "2.00"), (2, 4.0, "0.50"), (0, 0.0, "0.00")],  # 0 s: a run that did nothing
)
def test_the_summary_line_gives_the_pages_done_per_second_of_the_run(done, seconds, rate) -> None:
    """README: the summary gives pages done, skipped, failed and pages/s (pages done over the run's time)."""
    summary = batch.RunSummary(done=done, skipped=1, failures=["page.png: damaged"], seconds=seconds)
    assert summary.lines() == [
        f"{done} pages segmented, 1 skipped (already done), 1 failed in {seconds:.1f} s ({rate} pages/s)",
        "  failed: page.png: damaged",
    ]


SUMMARY_LINE = re.compile(
    r"(\d+) pages segmented, (\d+) skipped \(already done\), (\d+) failed"
    r" in ([\d.]+) s \(([\d.]+) pages/s\)(.*)"
)


def summary_line(stderr: str) -> re.Match[str]:
    """The counts line of a run's summary, parsed by `SUMMARY_LINE`."""
    (match,) = filter(None, map(SUMMARY_LINE.fullmatch, stderr.splitlines()))
    return match


@pytest.mark.parametrize(
    ("failed_at", "note"),
    [(0, "; stopped early by the failure limit"), (2, "")],  # the last page: none left
)
def test_the_summary_says_a_run_stopped_early_only_where_pages_were_left(tmp_path, model, failed_at, note):
    """README: `--fail-fast` stops at the first failure, and the summary says "stopped early" when pages were
    left undone."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    pages[failed_at].write_text("not an image")
    code, _, stderr = segment(tmp_path / "out", *map(str, pages), "--fail-fast")
    done = 0 if failed_at == 0 else 2
    assert code == ExitCode.FAILED
    assert summary_line(stderr).group(1, 2, 3, 6) == (str(done), "0", "1", note), stderr


def test_a_real_runs_summary_gives_its_pages_done_over_its_seconds(tmp_path, model):
    """The pages/s figure of a run that took less than a second (the stand-in model) is its pages over its
    time, not 0.00: within the rounding of the seconds shown."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    code, _, stderr = segment(tmp_path / "out", *map(str, pages))
    assert code == ExitCode.OK, stderr
    match = summary_line(stderr)
    done, seconds, rate = int(match.group(1)), float(match.group(4)), float(match.group(5))
    assert done == 3 and match.group(6) == ""
    assert done / (seconds + 0.05) <= rate + 0.005
    assert seconds < 0.05 or rate - 0.005 <= done / (seconds - 0.05)


def test_the_model_loads_only_when_a_readable_page_needs_it_and_once(tmp_path, model):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    code, records, stderr = segment(tmp_path / "bad", str(broken), str(tmp_path / "missing.png"))
    assert code == ExitCode.FAILED and len(error_lines(stderr)) == 2 and len(records) == 2
    assert model.loads == []
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    code, _, stderr = segment(tmp_path / "good", str(broken), *map(str, pages))
    assert code == ExitCode.FAILED and "3 pages segmented" in stderr
    assert len(model.loads) == 1


@pytest.mark.parametrize(
    ("isolate", "sizes"), [([], [1, 1, 1, 1, 1]), (["--isolate", "--pages-per-batch", "2"], [2, 2, 1])]
)
def test_pages_reach_the_model_one_by_one_or_by_pages_per_batch_in_input_order(
    tmp_path, model, isolate, sizes
):
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(5)]
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    inputs = [*pages[:2], broken, *pages[2:]]
    code, records, _ = segment(tmp_path / "out", *map(str, inputs), *isolate)
    assert code == ExitCode.FAILED
    assert [len(sizes) for sizes in model.batches] == sizes
    assert [height for call in model.batches for height, _ in call] == [40, 41, 42, 43, 44]
    assert [record["input"] for record in records] == list(map(str, inputs))


def test_refusing_only_bad_files_never_imports_torch(tmp_path):
    weights = tmp_path / "never-read.safetensors"
    weights.write_bytes(b"")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    report = "import atexit, sys; atexit.register(lambda: print('torch:', 'torch' in sys.modules))"
    args = ["segment", str(broken), "-o", str(tmp_path / "out"), "-w", str(weights), *CLASSES]
    completed = run_docsam(*args, prelude=report, timeout=60)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert completed.stdout.splitlines()[-1] == "torch: False"
    assert error_lines(completed.stderr) == [
        f"error: {broken}: not an image or PDF (or an unsupported image format)"
    ]
    # What can only be checked with torch is still checked before any page.
    completed = run_docsam(*args, "--precision", "fp16", "--device", "cpu", timeout=60)
    assert completed.returncode == ExitCode.USAGE
    assert error_lines(completed.stderr) == [
        "error: --precision fp16: fp16 needs a CUDA device (use bf16 or fp32 on the CPU)"
    ]


@pytest.mark.parametrize("refusal", ["weights missing", "weights broken", "no room for the model"])
@pytest.mark.parametrize("where", ["new folder in a new folder", "existing folder"])
def test_a_run_refused_before_any_page_leaves_no_trace_of_its_output_folder(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, refusal: str, where: str
) -> None:
    """A run refused before any page (weights not found, weights that do not load, a model that the CPU has
    no room for: 'an architecture of N parameters ... more than the 1 MB of memory free on cpu') left
    OUT/.docsam (its lock, classes.json and stems.json) behind, in an OUT it had created, with the folders
    above it: a refused run now leaves no trace, also in an existing folder, whose own files stay."""
    page = write_page(tmp_path / "page.png")
    weights = {"weights missing": tmp_path / "nope.pth", "no room for the model": tiny_weights}.get(
        refusal, tmp_path / "broken.safetensors"
    )
    if refusal == "weights broken":
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    if refusal == "no room for the model":
        monkeypatch.setattr("model.memory.available_cpu_memory", lambda: 10**6)
    out = tmp_path / "results" / "run" if where.startswith("new") else tmp_path / "existing"
    if where == "existing folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(path.name for path in tmp_path.iterdir())
    code, stdout, stderr = invoke(
        "segment", str(page), "-o", str(out), "-w", str(weights), "--device", "cpu", *CLASSES
    )
    assert code == ExitCode.USAGE and stdout == "" and len(error_lines(stderr)) == 1, stderr
    assert str(weights) in stderr and (
        refusal != "no room for the model" or "of memory free on cpu" in stderr
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    if where == "existing folder":
        assert [path.name for path in out.iterdir()] == ["notes.txt"]


def test_weights_that_do_not_load_stop_the_run_only_when_a_page_needs_them(tmp_path):
    """The weights file is found before any page (a missing one is a usage error at once), and read when
    the first readable page needs it: a batch of bad files is refused without reading it."""
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    common = ["-w", str(weights), "--device", "cpu", *CLASSES]
    code, stdout, stderr = invoke("segment", str(broken), "-o", str(tmp_path / "a"), *common)
    assert code == ExitCode.FAILED, stderr
    assert error_lines(stderr) == [f"error: {broken}: not an image or PDF (or an unsupported image format)"]
    page = write_page(tmp_path / "page.png")
    code, stdout, stderr = invoke("segment", str(page), "-o", str(tmp_path / "b"), *common)
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = error_lines(stderr)
    assert str(weights) in line
    assert not (tmp_path / "b" / ".docsam" / "records").exists()
    code, _, stderr = invoke("segment", str(page), "-o", str(tmp_path / "c"), *common[2:], "-w", "nope.pth")
    assert code == ExitCode.USAGE and "nope.pth: no such weights file" in stderr


def coco_file_names(out: Path) -> list[str]:
    return [image["file_name"] for image in json.loads((out / "coco.json").read_text())["images"]]


def test_a_run_that_segments_no_page_keeps_the_earlier_pages_in_the_coco_files(tmp_path, model):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(pages[0]), str(pages[1]))
    assert code == ExitCode.OK, stderr
    results = json.loads((out / "coco_results.json").read_text())
    code, _, _ = segment(out, str(tmp_path / "typo.png"))
    assert code == ExitCode.FAILED
    code, _, stderr = invoke("segment", "-", "-o", str(out), *CLASSES, stdin="")
    assert code == ExitCode.OK, stderr
    assert coco_file_names(out) == ["page0.png", "page1.png"]
    assert json.loads((out / "coco_results.json").read_text()) == results
    code, _, stderr = segment(out, str(pages[2]))  # a new page: added after those of earlier runs
    assert code == ExitCode.OK, stderr
    assert coco_file_names(out) == ["page0.png", "page1.png", "page2.png"]


class _Killed(BaseException):
    """A run that dies where it is (SIGKILL, the out-of-memory killer): nothing of docsam's handles it."""


def results_on_their_pages(out: Path) -> bool:
    """Whether every detection of coco_results.json has the size of the coco.json image its id names."""
    sizes = {
        image["id"]: [image["height"], image["width"]]
        for image in json.loads((out / "coco.json").read_text())["images"]
    }
    results = json.loads((out / "coco_results.json").read_text())
    return all(result["segmentation"]["size"] == sizes[result["image_id"]] for result in results)


def test_a_run_killed_between_the_coco_renames_leaves_no_results_list_naming_other_pages(
    tmp_path, model, monkeypatch
):
    """coco_results.json names images by coco.json's ids. A run killed after renaming it into place and
    before renaming coco.json left the new list beside the old dataset: here image 1 was the tall page in
    one and the wide page in the other, and `evaluate --pred coco_results.json` (or `loadRes`) scored the
    detections on the wrong pages until the next run. Now such a run leaves coco.json without the list:
    `evaluate` says it does not exist, and the next run, skipping every page, writes it back."""
    tall, wide = write_page(tmp_path / "tall.png", 60, 30), write_page(tmp_path / "wide.png", 30, 60)
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(wide), str(tall))  # wide is image 1
    assert code == ExitCode.OK, stderr
    rename = os.replace

    def killed_after_the_first_coco_file(source, target):
        rename(source, target)
        if Path(target).name in ("coco.json", "coco_results.json"):
            raise _Killed

    monkeypatch.setattr(os, "replace", killed_after_the_first_coco_file)
    with pytest.raises(_Killed):
        invoke("segment", "-o", str(out), *CLASSES, "--overwrite", str(tall), str(wide))  # tall is image 1
    monkeypatch.setattr(os, "replace", rename)

    assert coco_file_names(out) == ["tall.png", "wide.png"]
    assert not (out / "coco_results.json").exists()
    code, _, stderr = invoke("evaluate", str(out / "coco.json"), "--pred", str(out / "coco_results.json"))
    assert code == ExitCode.USAGE and "coco_results.json' does not exist" in stderr
    code, records, stderr = segment(out, str(tall), str(wide))
    assert code == ExitCode.OK and [record["skipped"] for record in records] == [True, True], stderr
    assert results_on_their_pages(out) and coco_file_names(out) == ["tall.png", "wide.png"]


def test_a_page_given_from_another_working_folder_is_skipped(tmp_path, monkeypatch, model):
    (tmp_path / "a").mkdir()
    page = write_page(tmp_path / "a" / "scan.png")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path / "a")
    code, _, stderr = segment(out, "scan.png")
    assert code == ExitCode.OK, stderr
    monkeypatch.chdir(tmp_path)
    for name in (str(page), "a/scan.png", "a/../a/scan.png"):
        code, records, stderr = segment(out, name, "--format", "coco,jsonl")
        assert code == ExitCode.OK, stderr
        (record,) = records
        assert record["skipped"] is True and record["input"] == name  # as named in this run
        assert "input_absolute" not in record  # the stored identity stays out of the JSON lines
    (tmp_path / "b").mkdir()
    write_page(tmp_path / "b" / "scan.png")
    monkeypatch.chdir(tmp_path / "b")  # the same name as given first, but another file: an id of its own
    code, records, stderr = segment(out, "scan.png")
    assert code == ExitCode.OK, stderr
    assert records[0]["page_id"] != "scan" and "skipped" not in records[0]


def test_a_page_missing_its_rendered_image_or_in_another_mask_format_is_done_again(tmp_path, model):
    from PIL import Image

    book = tmp_path / "book.tif"
    Image.new("RGB", (60, 40), "white").save(book, save_all=True, append_images=[Image.new("RGB", (50, 30))])
    out = tmp_path / "out"
    code, records, stderr = segment(out, str(book), "--format", "coco,page,jsonl")
    assert code == ExitCode.OK, stderr
    assert [record["page_id"] for record in records] == ["book_p0001", "book_p0002"]
    (out / "image" / "book_p0002.png").unlink()  # PAGE and COCO name it
    code, records, stderr = segment(out, str(book), "--format", "coco,page,jsonl")
    assert code == ExitCode.OK, stderr
    assert [record.get("skipped", False) for record in records] == [True, False]
    assert (out / "image" / "book_p0002.png").is_file()
    code, records, stderr = segment(out, str(book), "--format", "coco,jsonl", "--mask-format", "polygon")
    assert code == ExitCode.OK, stderr
    assert [record.get("skipped", False) for record in records] == [False, False]
    coco = json.loads((out / "coco.json").read_text())
    assert all(isinstance(annotation["segmentation"], list) for annotation in coco["annotations"])
    other = write_page(tmp_path / "other.png")
    code, _, stderr = segment(out, str(other), "--format", "coco", "--mask-format", "rle")
    assert code == ExitCode.OK, stderr
    coco = json.loads((out / "coco.json").read_text())  # the earlier pages stay, converted to RLE
    assert [image["page_id"] for image in coco["images"]] == ["book_p0001", "book_p0002", "other"]
    assert all(isinstance(annotation["segmentation"], dict) for annotation in coco["annotations"])


def test_other_classes_are_a_usage_error_unless_overwrite_redoes_the_pages(tmp_path, model):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    out = tmp_path / "out"
    code, _, stderr = segment(out, *map(str, pages))
    assert code == ExitCode.OK, stderr
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    other = ["--classes", "figure,text"]
    code, records, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other, "--format", "coco,jsonl")
    assert code == ExitCode.USAGE and records == ""
    assert error_lines(stderr) == [
        f"error: --out {out}: holds results for the classes text, figure, not figure, text (use another "
        "--out, or --overwrite to redo its pages with these classes)"
    ]
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    code, _, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other, "--overwrite")
    assert code == ExitCode.OK, stderr
    coco = json.loads((out / "coco.json").read_text())
    assert [category["name"] for category in coco["categories"]] == ["figure", "text"]
    assert coco_file_names(out) == ["page0.png"]  # page1 was found with the classes before
    code, _, stderr = invoke("segment", *map(str, pages), "-o", str(out), *other)
    assert code == ExitCode.OK and "1 pages segmented, 1 skipped" in stderr, stderr
    assert coco_file_names(out) == ["page0.png", "page1.png"]


def test_a_folder_without_pages_takes_other_classes(tmp_path, model):
    """A run whose every input failed leaves no results behind: a rerun with other classes (the typo in
    the file name fixed, --classes changed) is not refused for classes nothing was segmented with."""
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(tmp_path / "missing.png"), "--classes", "table,figure")
    assert code == ExitCode.FAILED, stderr
    page = write_page(tmp_path / "page.png")
    code, _, stderr = segment(out, str(page), "--classes", "table", "--format", "coco,jsonl")
    assert code == ExitCode.OK, stderr
    coco = json.loads((out / "coco.json").read_text())
    assert [category["name"] for category in coco["categories"]] == ["table"]


def test_a_page_left_with_the_old_classes_by_an_overwrite_run_is_redone_without_coco(tmp_path, model):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages), "--format", "page,jsonl")[0] == ExitCode.OK
    other = ["--classes", "figure,text", "--format", "page,jsonl"]
    code, _, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other, "--overwrite")
    assert code == ExitCode.OK, stderr

    code, stdout, stderr = invoke("segment", *map(str, pages), "-o", str(out), *other)

    assert code == ExitCode.OK and "1 pages segmented, 1 skipped" in stderr, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line.get("skipped", False) for line in lines] == [True, False]
    stored = json.loads((out / ".docsam" / "records" / "page1.json").read_text())
    assert stored["classes"] == ["figure", "text"] and "classes" not in lines[1]


def test_an_overwrite_run_refused_for_its_weights_leaves_the_folder_its_classes_and_label_maps(
    tmp_path: Path, model: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--overwrite --classes figure,text -w typo.pth` into a folder of other classes claimed the folder
    before it looked for the weights: it deleted every page's label map and made figure,text the folder's
    classes, then said 'no such weights file'; the next run with the folder's own classes was refused, as
    holding results for figure,text, of which it held no page. The weights are looked for first now."""
    from docsam_cli.weights import WeightsError

    page = write_page(tmp_path / "page0.png")
    out = tmp_path / "out"
    assert segment(out, str(page), "--format", "semantic,jsonl")[0] == ExitCode.OK
    classes = (out / ".docsam" / "classes.json").read_text()

    def missing(spec: object) -> None:
        raise WeightsError("typo.pth: no such weights file")

    monkeypatch.setattr(batch, "resolve_model", missing)
    other = ["--classes", "figure,text", "--format", "semantic,jsonl", "--overwrite"]
    code, _, stderr = invoke("segment", str(page), "-o", str(out), *other)
    assert code == ExitCode.USAGE and error_lines(stderr) == ["error: typo.pth: no such weights file"]
    assert (out / ".docsam" / "classes.json").read_text() == classes
    assert (out / "semantic" / "page0.png").is_file()


def test_an_overwrite_run_with_other_classes_leaves_no_label_map_of_the_old_classes(tmp_path, model):
    """A page's label map numbers the classes it was segmented with; after `--overwrite` with other
    classes, `semantic/classes.json` lists the new ones, and the maps of pages left with the old classes
    (an old "figure" pixel 2 now "text") were kept beside it, to be read as the wrong classes."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages), "--format", "semantic,jsonl")[0] == ExitCode.OK
    other = ["--classes", "figure,text", "--format", "semantic,jsonl"]
    code, _, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other, "--overwrite")
    assert code == ExitCode.OK, stderr
    table = json.loads((out / "semantic" / "classes.json").read_text())
    assert [category["name"] for category in table["categories"]] == ["figure", "text"]
    assert (out / "semantic" / "page0.png").is_file()
    assert not (out / "semantic" / "page1.png").exists()  # left with the old classes: done when named
    code, _, stderr = invoke("segment", *map(str, pages), "-o", str(out), *other)
    assert code == ExitCode.OK and "1 pages segmented, 1 skipped" in stderr, stderr
    assert (out / "semantic" / "page1.png").is_file()


def test_a_run_killed_with_other_classes_leaves_no_label_map_beside_the_old_class_table(
    tmp_path, model, monkeypatch
):
    """`semantic/classes.json` was written at the run's end only: an `--overwrite` run with other classes
    killed on its way (SIGKILL, the out-of-memory killer, a lost node) left its maps, where 1 is now
    "figure", beside the table of the old classes, which says 1 is "text", until a run with `semantic` ended.
    The table is now written before the first page."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages), "--format", "semantic,jsonl")[0] == ExitCode.OK
    stand_in = batch.model_segmenter

    def killed_at_the_second_page(loaded, request, geometry):
        segment_pages = stand_in(loaded, request, geometry)

        def segment(images):
            if len(model.batches) == 3:  # two in the first run, one in this one
                raise _Killed
            return segment_pages(images)

        return segment

    monkeypatch.setattr(batch, "model_segmenter", killed_at_the_second_page)
    other = ["--classes", "figure,text", "--format", "semantic,jsonl", "--overwrite"]
    with pytest.raises(_Killed):
        invoke("segment", *map(str, pages), "-o", str(out), *other)

    table = json.loads((out / "semantic" / "classes.json").read_text())
    names = {category["id"]: category["name"] for category in table["categories"]}
    labels = np.unique(np.asarray(Image.open(out / "semantic" / "page0.png")))
    assert [names[label] for label in labels if label] == ["figure"]  # the stand-in's one class: the first


def test_a_class_table_that_cannot_be_written_stops_the_run_before_any_page(tmp_path, model):
    """Written before the first page, a table that cannot be written (here a folder in its place) is one
    line naming it, exit 2, no page done: the maps would lie beside an earlier table, or none."""
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"
    table = out / "semantic" / "classes.json"
    table.mkdir(parents=True)
    code, records, stderr = segment(out, str(page), "--format", "semantic,jsonl")
    assert code == ExitCode.USAGE and records == [] and model.batches == [], stderr
    assert error_lines(stderr) == [f"error: {table}: cannot write the run's files: Is a directory"]
    table.rmdir()
    assert segment(out, str(page), "--format", "semantic,jsonl")[0] == ExitCode.OK
    assert (out / "semantic" / "page.png").is_file() and table.is_file()


@pytest.mark.parametrize("damage", ["deleted", "unreadable"])
def test_a_folder_whose_classes_file_is_gone_is_judged_by_its_records(tmp_path, model, damage):
    """With `.docsam/classes.json` deleted (or not JSON), a run with other classes took the folder without
    the check and kept the label maps of the old classes beside a `semantic/classes.json` of the new."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages), "--format", "semantic,jsonl")[0] == ExitCode.OK
    classes_file = out / ".docsam" / "classes.json"
    if damage == "deleted":
        classes_file.unlink()
    else:
        classes_file.write_bytes(b'["text", "fig')
    other = ["--classes", "figure,text", "--format", "semantic,jsonl"]

    code, _, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other)

    assert code == ExitCode.USAGE
    assert error_lines(stderr) == [
        f"error: --out {out}: holds results for the classes text, figure, not figure, text (use another "
        "--out, or --overwrite to redo its pages with these classes)"
    ]
    code, _, stderr = invoke("segment", str(pages[0]), "-o", str(out), *other, "--overwrite")
    assert code == ExitCode.OK, stderr
    assert (out / "semantic" / "page0.png").is_file()
    assert not (out / "semantic" / "page1.png").exists()
    assert json.loads(classes_file.read_text()) == ["figure", "text"]


def test_an_output_left_from_before_a_page_was_redone_is_not_taken_as_done(tmp_path, model):
    """`--overwrite --format page` redoes a page's PAGE file only: its ALTO file is an earlier record's,
    with the old classes, and a later run asking for ALTO does the page again."""
    page = write_page(tmp_path / "p.png")
    out = tmp_path / "out"
    assert segment(out, str(page), "--format", "alto,page,jsonl")[0] == ExitCode.OK
    other = ["--classes", "figure,text"]
    code, _, stderr = invoke("segment", str(page), "-o", str(out), *other, "--overwrite", "--format", "page")
    assert code == ExitCode.OK, stderr

    code, stdout, stderr = invoke("segment", str(page), "-o", str(out), *other, "--format", "alto,jsonl")

    assert code == ExitCode.OK and "1 pages segmented, 0 skipped" in stderr, stderr
    (line,) = [json.loads(text) for text in stdout.splitlines()]
    assert "skipped" not in line and set(line["outputs"]) == {"alto"}
    code, stdout, stderr = invoke("segment", str(page), "-o", str(out), *other, "--format", "alto,jsonl")
    assert code == ExitCode.OK and json.loads(stdout)["skipped"] is True, stderr


def test_a_page_that_fails_while_being_redone_is_not_left_as_done(tmp_path, model, monkeypatch):
    """`--overwrite` after new weights or geometry, the disk filling up (or the run killed) between the
    page's PAGE file and its overlay: the old record must not pass the half-replaced outputs for done."""
    page = write_page(tmp_path / "p.png")
    out = tmp_path / "out"
    assert segment(out, str(page))[0] == ExitCode.OK

    def full_disk(path, *args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr("docsam_cli.writers.overlay.write_overlay", full_disk)
        code, _, stderr = segment(out, str(page), "--overwrite")
    assert code == ExitCode.FAILED, stderr

    code, records, stderr = segment(out, str(page))
    assert code == ExitCode.OK and "1 pages segmented, 0 skipped" in stderr, stderr
    assert "skipped" not in records[0] and len(model.batches) == 3


def test_an_input_failing_among_pages_waiting_for_their_batch_is_reported_after_them(tmp_path, model):
    """With --isolate, a file that gave no page was reported before the pages ahead of it that were still
    waiting for their batch to fill: its line came out of the input order (and --fail-fast stopped before
    pages that come first). The pages before it are now segmented first."""
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    inputs = [pages[0], broken, *pages[1:]]
    isolate = ["--isolate", "--pages-per-batch", "2"]
    code, records, stderr = segment(tmp_path / "out", *map(str, inputs), *isolate)
    assert code == ExitCode.FAILED, stderr
    assert [record["input"] for record in records] == list(map(str, inputs))
    assert [len(sizes) for sizes in model.batches] == [1, 2]
    code, records, stderr = segment(tmp_path / "again", *map(str, inputs), *isolate, "--fail-fast")
    assert [record["input"] for record in records] == list(map(str, inputs[:2])), stderr


def test_the_failure_limit_stops_at_the_failure_that_passes_it(tmp_path, model):
    broken = []
    for name in ("a.png", "b.png"):
        broken.append(tmp_path / name)
        broken[-1].write_text("not an image")
    page = write_page(tmp_path / "page.png")
    code, records, stderr = segment(tmp_path / "out", *map(str, [*broken, page]), "--fail-fast")
    assert code == ExitCode.FAILED and len(records) == 1 and model.loads == []
    assert "0 pages segmented, 0 skipped (already done), 1 failed" in stderr
    assert "stopped early by the failure limit" in stderr
    code, records, stderr = segment(tmp_path / "out", *map(str, broken), "--max-failures", "1")
    assert code == ExitCode.FAILED and len(records) == 2
    assert "2 failed" in stderr and "stopped early" not in stderr  # nothing was left to do


@pytest.mark.parametrize("limit", [["--fail-fast"], ["--max-failures", "1"]])
def test_a_stopped_rerun_reports_no_done_page_past_the_stop(tmp_path, model, limit):
    """A rerun stopped by the failure limit still reported the pages it had found done further on (looking
    ahead) as skipped, after the stop and after pages never reported, and counted them in the summary; it
    now reports nothing past the failure that stopped it."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(4)]
    out = tmp_path / "out"
    assert segment(out, str(pages[1]), str(pages[3]))[0] == ExitCode.OK
    broken = []
    for name in ("a.png", "b.png")[: 1 if limit == ["--fail-fast"] else 2]:
        broken.append(tmp_path / name)
        broken[-1].write_text("not an image")
    inputs = [pages[0], *broken, pages[2], pages[1], pages[3]]
    code, records, stderr = segment(out, *map(str, inputs), *limit)
    assert code == ExitCode.FAILED, stderr
    assert [record["input"] for record in records] == list(map(str, [pages[0], *broken]))
    assert f"1 pages segmented, 0 skipped (already done), {len(broken)} failed" in stderr
    assert "stopped early by the failure limit" in stderr


class AnotherRankFailed(batch.Alone):
    """One process of a run under a launcher, another of whose processes has had a page fail already (the
    failures of every process count towards the limit)."""

    def failures(self) -> int:
        return super().failures() + 1


@pytest.mark.parametrize("isolate", [[], ["--isolate", "--pages-per-batch", "2"]])
def test_a_process_stops_once_another_ones_failure_passed_the_limit(tmp_path, model, monkeypatch, isolate):
    """Under torchrun with --fail-fast, a rank whose first page comes after another rank's failure stops
    there: it neither loads the model nor segments a page (it used to do a whole group of pages first)."""
    monkeypatch.setattr(batch, "join", lambda device, out, jsonl: AnotherRankFailed())
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(2)]
    code, records, stderr = segment(tmp_path / "out", *map(str, pages), "--fail-fast", *isolate)
    assert code == ExitCode.FAILED and records == [] and model.loads == [], stderr
    assert "0 pages segmented, 0 skipped (already done), 0 failed" in stderr
    assert "stopped early by the failure limit" in stderr
    assert not (tmp_path / "out" / ".docsam" / "records").is_dir()


def test_skipped_pages_keep_their_place_in_the_json_lines(tmp_path, model):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(4)]
    out = tmp_path / "out"
    code, _, _ = segment(out, str(pages[1]), str(pages[3]))
    assert code == ExitCode.OK
    code, records, _ = segment(out, *map(str, pages))
    assert code == ExitCode.OK
    assert [record["input"] for record in records] == list(map(str, pages))
    assert [record.get("skipped", False) for record in records] == [False, True, False, True]


def test_a_rerun_reports_each_done_page_as_it_finds_it_not_all_at_its_end(tmp_path, model, monkeypatch):
    """A rerun over a large folder of done pages shows them as it goes (JSON lines, progress), rather
    than holding every page's record until the last one has been checked."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages))[0] == ExitCode.OK
    events: list[str] = []
    stored_record, dumps_record = batch.SegmentRun._stored_record, batch.dumps_record

    def checking(self, page_id):
        events.append(f"checked {page_id}")
        return stored_record(self, page_id)

    def reporting(record):
        events.append(f"reported {record['page_id']}")
        return dumps_record(record)

    monkeypatch.setattr(batch.SegmentRun, "_stored_record", checking)
    monkeypatch.setattr(batch, "dumps_record", reporting)
    code, records, stderr = segment(out, *map(str, pages))
    assert code == ExitCode.OK and [record["skipped"] for record in records] == [True] * 3, stderr
    assert events == [f"{event} page{index}" for index in range(3) for event in ("checked", "reported")]


def test_done_pages_waiting_behind_a_page_to_redo_do_not_hold_their_records(tmp_path, model, monkeypatch):
    """A rerun whose first page is to be redone (a rescan, a file added that sorts first) found every done
    page after it while that page was in the model, and held all their records until it was reported:
    about 0.66 MB each for a 50-region page, gigabytes for a large collection."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(8)]
    out = tmp_path / "out"
    assert segment(out, *map(str, pages), "--format", "jsonl")[0] == ExitCode.OK
    records = out / ".docsam" / "records"
    for page in pages[1:]:  # records as large as a page of many regions leaves
        record = json.loads((records / f"{page.stem}.json").read_text())
        record["instances"][0]["polygons"] = [list(range(1000, 31000))]
        (records / f"{page.stem}.json").write_text(json.dumps(record))
    (records / "page0.json").unlink()
    stand_in = batch.model_segmenter
    held: list[int] = []

    def measuring(loaded, request, geometry):
        segment_pages = stand_in(loaded, request, geometry)

        def segment_measured(images):
            held.append(tracemalloc.get_traced_memory()[0] - before)
            (records / "page7.json").unlink()  # by hand, meanwhile: that page's line has what the run knows
            return segment_pages(images)

        return segment_measured

    monkeypatch.setattr(batch, "model_segmenter", measuring)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        code, lines, stderr = segment(out, *map(str, pages), "--format", "jsonl")
    finally:
        tracemalloc.stop()
    assert code == ExitCode.OK, stderr
    assert [line.get("skipped", False) for line in lines] == [False] + [True] * 7
    assert lines[-2]["instances"][0]["polygons"] == [list(range(1000, 31000))]  # read when reported
    assert lines[-1] == {
        "page": None, "page_id": "page7", "input": str(pages[-1]), "outputs": {}, "skipped": True
    }  # fmt: skip
    (memory,) = held
    assert memory < 3 * 2**20, memory  # the 7 records take 7.5 MB


def test_a_page_is_written_while_the_next_one_is_segmented(tmp_path, model, monkeypatch):
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(3)]
    overlapped: list[bool] = []
    write = PageWriter.write

    def slow_write(self, source, instances, timing):
        # The first page's writing waits (briefly) for the model to be at work on a later page.
        if source.page_id == "page0":
            overlapped.append(wait_until(lambda: len(model.batches) >= 2))
        return write(self, source, instances, timing)

    monkeypatch.setattr(PageWriter, "write", slow_write)
    code, records, stderr = segment(tmp_path / "out", *map(str, pages))
    assert code == ExitCode.OK, stderr
    assert overlapped == [True]
    assert [record["input"] for record in records] == list(map(str, pages))  # still in input order


@pytest.mark.parametrize(("writers", "ahead"), [(1, False), (2, True), (3, True)])
def test_pages_are_written_by_several_threads_and_reported_in_order(
    tmp_path, model, monkeypatch, writers, ahead
):
    """While the first page is being written, the model goes on to the third page only when a second
    thread can write the second page; the later pages' writing ends first, their lines still come after."""
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(4)]
    went_ahead: list[bool] = []
    write = PageWriter.write

    def slow_first_write(self, source, instances, timing):
        if source.page_id == "page0":
            went_ahead.append(wait_until(lambda: len(model.batches) >= 3, seconds=10 if ahead else 0.5))
        return write(self, source, instances, timing)

    monkeypatch.setattr(PageWriter, "write", slow_first_write)
    code, records, stderr = segment(tmp_path / "out", *map(str, pages), "--writers", str(writers))
    assert code == ExitCode.OK, stderr
    assert went_ahead == [ahead]
    assert [record["input"] for record in records] == list(map(str, pages))
    assert "4 pages segmented" in stderr


def test_a_pages_line_comes_as_its_writing_ends_not_after_the_next_page(tmp_path, model, monkeypatch):
    """A consumer reading the JSON lines (`docsam segment - | next-step`) got each page only once the model
    had segmented the page after it (a page's time: a minute on a CPU); the line now comes as the page's
    writing ends, while the model works on the next."""
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(3)]
    lines: list[str] = []
    data = ConsoleReporter.data
    monkeypatch.setattr(ConsoleReporter, "data", lambda self, line: (lines.append(line), data(self, line)))
    stand_in = batch.model_segmenter
    seen: list[bool] = []

    def waiting_for_the_lines(loaded, request, geometry):
        segment_pages = stand_in(loaded, request, geometry)

        def segment(images):
            pages_before = len(model.batches)
            seen.append(wait_until(lambda: len(lines) >= pages_before, seconds=5))
            return segment_pages(images)

        return segment

    monkeypatch.setattr(batch, "model_segmenter", waiting_for_the_lines)
    code, records, stderr = segment(tmp_path / "out", *map(str, pages))
    assert code == ExitCode.OK, stderr
    assert seen == [True, True, True]
    assert [record["input"] for record in records] == list(map(str, pages))


def _stopped_at_the_third(model, stop):
    """A `model_segmenter` that calls `stop` when the model is about to work on the third page."""
    stand_in = batch.model_segmenter

    def stopped_at_the_third(loaded, request, geometry):
        segment_pages = stand_in(loaded, request, geometry)

        def segment(images):
            if len(model.batches) == 2:
                stop()
            return segment_pages(images)

        return segment

    return stopped_at_the_third


def test_an_interrupted_run_reports_the_pages_it_finished_writing(tmp_path, model, monkeypatch):
    """Ctrl-C while the model works on the third page: the two pages being written are finished, and their
    lines reach stdout, as for every page whose record is written."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(4)]

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "model_segmenter", _stopped_at_the_third(model, ctrl_c))
    code, records, stderr = segment(tmp_path / "out", *map(str, pages), "--writers", "2")
    assert code == ExitCode.INTERRUPTED, stderr
    assert [record["input"] for record in records] == list(map(str, pages[:2]))
    done = sorted(path.name for path in (tmp_path / "out" / ".docsam" / "records").iterdir())
    assert done == ["page0.json", "page1.json"]


class _WritingAtOnce(ThreadPoolExecutor):
    """Writing threads so quick that a page's writing has ended before the main thread, which handed it
    over, asks to hear of it: it then reports the page itself."""

    def submit(self, fn, /, *args, **kwargs):
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def test_ctrl_c_while_the_main_thread_reports_a_page_stops_the_run_there(tmp_path, model, monkeypatch):
    """Ctrl-C landing while the main thread reported a page whose writing had already ended was held back:
    the model went on to segment the next page, and the pages written meanwhile were never reported."""
    pages = [write_page(tmp_path / f"page{index}.png", height=40 + index) for index in range(3)]
    monkeypatch.setattr(batch, "ThreadPoolExecutor", _WritingAtOnce)
    data = ConsoleReporter.data

    def interrupted(self, line):
        data(self, line)
        raise KeyboardInterrupt

    monkeypatch.setattr(ConsoleReporter, "data", interrupted)
    code, records, stderr = segment(tmp_path / "out", *map(str, pages))
    assert code == ExitCode.INTERRUPTED, stderr
    assert len(model.batches) == 1
    assert [record["input"] for record in records] == [str(pages[0])]
    assert [path.name for path in (tmp_path / "out" / ".docsam" / "records").iterdir()] == ["page0.json"]


def test_an_interrupted_run_writes_the_run_files_of_the_pages_it_finished(tmp_path, model, monkeypatch):
    """Ctrl-C (or a scheduler's SIGTERM) at the third page: coco.json and semantic/classes.json are written
    for the pages done, as the JSON lines reporting them name them (were missing, or an earlier run's)."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(4)]

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "model_segmenter", _stopped_at_the_third(model, ctrl_c))
    out = tmp_path / "out"
    code, records, stderr = segment(out, *map(str, pages), "--format", "coco,semantic,jsonl")
    assert code == ExitCode.INTERRUPTED, stderr
    coco = json.loads((out / "coco.json").read_text())
    assert [image["page_id"] for image in coco["images"]] == [record["page_id"] for record in records]
    assert (out / "semantic" / "classes.json").is_file()


def test_ctrl_c_while_the_run_files_are_written_at_the_end_still_writes_them(tmp_path, model, monkeypatch):
    """Ctrl-C (or a scheduler's SIGTERM) once every page was done, while `coco.json` was being assembled
    (a minute for a large folder): exit 130 with no `coco.json` at all, where an interrupted run writes it
    over the pages done. It is written again, as for a run interrupted earlier."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    finish = PageWriter.finish
    calls = []

    def interrupted_once(self, page_ids):
        calls.append(page_ids)
        if len(calls) == 1:
            raise KeyboardInterrupt
        finish(self, page_ids)

    monkeypatch.setattr(PageWriter, "finish", interrupted_once)
    out = tmp_path / "out"
    code, records, stderr = segment(out, *map(str, pages), "--format", "coco,semantic,jsonl")
    assert code == ExitCode.INTERRUPTED, stderr
    assert len(records) == 3 and len(calls) == 2
    coco = json.loads((out / "coco.json").read_text())
    assert [image["page_id"] for image in coco["images"]] == [record["page_id"] for record in records]
    assert (out / "semantic" / "classes.json").is_file()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_ends_a_run_as_ctrl_c_does(tmp_path, model, monkeypatch, number):
    """A scheduler's time limit (`timeout`, Slurm) sends SIGTERM, the terminal closing under a run not
    started with `nohup` SIGHUP: the pages being written are finished and reported, `coco.json` holds them,
    exit 130, and the handlers in place before the run are back afterwards."""
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(4)]

    def before(number, frame):  # stands in for the default action, which would end pytest
        pass

    monkeypatch.setattr(
        batch, "model_segmenter", _stopped_at_the_third(model, lambda: signal.raise_signal(number))
    )
    previous = {each: signal.signal(each, before) for each in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code, records, stderr = segment(tmp_path / "out", *map(str, pages), "--writers", "2")
        assert all(signal.getsignal(each) is before for each in previous)
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
    assert code == ExitCode.INTERRUPTED, stderr
    assert [record["input"] for record in records] == list(map(str, pages[:2]))
    assert "interrupted" in stderr
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert [image["page_id"] for image in coco["images"]] == ["page0", "page1"]


def test_a_page_failing_to_be_written_passes_the_limit_before_the_next_is_segmented(
    tmp_path, model, monkeypatch
):
    pages = [write_page(tmp_path / f"page{index}.png") for index in range(3)]
    written = tmp_path / "out" / "page" / "page0.xml"

    def failing_write(self, source, instances, timing):
        raise OSError(28, "No space left on device", str(written))

    monkeypatch.setattr(PageWriter, "write", failing_write)
    code, records, stderr = segment(tmp_path / "out", *map(str, pages), "--fail-fast")
    assert code == ExitCode.FAILED and len(model.batches) == 1
    assert records[0]["error"] == (
        f"{pages[0]}: cannot write its outputs: No space left on device ({written})"
    )
    assert "stopped early by the failure limit" in stderr


def test_a_full_disk_names_the_output_folder_that_is_full(tmp_path, model, monkeypatch):
    """A write or flush that fails for want of space names no file (only open and rename do): the page's
    error names the output folder, so that it tells which disk is full."""
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"

    def full_disk(path, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("docsam_cli.writers.overlay.write_overlay", full_disk)
    code, records, _ = segment(out, str(page))
    assert code == ExitCode.FAILED
    assert records[0]["error"] == f"{page}: cannot write its outputs: No space left on device ({out})"


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_run_refused_by_a_folder_in_use_is_told_what_kind_of_run_holds_it(tmp_path, model):
    """Training runs hold their run folder's lock too: a segment run given a training run's folder as --out
    was told that 'another docsam segment run' was writing there, naming the kind of the run refused, and
    a training run refused by a segment run the same way; the message now names the holder's kind."""
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "run"
    with folder_lock(out, "docsam training run"):
        code, _, stderr = segment(out, str(page))
    assert code == ExitCode.USAGE and error_lines(stderr) == [
        f"error: --out {out}: another docsam training run (process {os.getpid()}) is writing into this "
        "folder; wait for it to end, or use another --out"
    ]


def test_a_folder_locked_by_a_run_on_another_machine_names_that_machine(tmp_path, monkeypatch, model):
    """An --out on a shared file system, written into by a run on another machine: the message named its
    process id alone, which is no process on this machine (or another one), so a user could not tell where
    the run was, nor whether it was still alive."""
    import docsam_cli.folder_lock

    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"
    with monkeypatch.context() as there:
        there.setattr(docsam_cli.folder_lock.socket, "gethostname", lambda: "scanner-2")
        held = folder_lock(out)
        held.__enter__()
    try:
        code, _, stderr = segment(out, str(page))
    finally:
        held.__exit__(None, None, None)
    assert code == ExitCode.USAGE and error_lines(stderr) == [
        f"error: --out {out}: another docsam segment run (process {os.getpid()} on scanner-2) is writing "
        "into this folder; wait for it to end, or use another --out"
    ]


def test_a_second_run_into_a_folder_in_use_is_refused_before_it_touches_it(tmp_path, model):
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(page))
    assert code == ExitCode.OK, stderr
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != "lock"}
    stale = out / "page" / ".page.xml.0123.tmp"  # the running run's temporary: must survive
    stale.write_text("being written")
    with folder_lock(out):  # another run, in this process: flock locks conflict between open files too
        code, records, stderr = segment(out, str(page), "--overwrite", "--classes", "figure")
        assert code == ExitCode.USAGE and records == []
        assert error_lines(stderr) == [
            f"error: --out {out}: another docsam segment run (process {os.getpid()}) is writing into this "
            "folder; wait for it to end, or use another --out"
        ]
        assert stale.read_text() == "being written" and len(model.loads) == 1  # the first run's
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lock"} == {
            **before,
            stale: b"being written",
        }
    stale.unlink()
    code, _, stderr = segment(out, str(page), "--overwrite")  # free again once that run ended
    assert code == ExitCode.OK, stderr


def test_an_output_folder_named_through_a_link_and_dotdot_is_the_one_the_system_resolves(
    tmp_path, monkeypatch, model
):
    """`-o lnk/../out` with `lnk -> real/deep` is `real/out`; the writability probe used to shorten the
    text to `./out` and refuse a folder it had just created."""
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to("real/deep")
    page = write_page(tmp_path / "page.png")
    monkeypatch.chdir(tmp_path)

    code, _, stderr = segment(Path("lnk/../out"), str(page), "--format", "page,jsonl")

    assert code == ExitCode.OK, stderr
    assert (tmp_path / "real" / "out" / "page" / "page.xml").is_file() and not (tmp_path / "out").exists()


def test_only_docsams_own_temporaries_are_cleaned_from_the_output_folder(tmp_path, model):
    """`--out` may be the scanned folder: a user's `.notes.tmp` there survives; what a killed run left
    (`.<name>.<8 hex digits>.tmp`) goes."""
    page = write_page(tmp_path / "page.png")
    own = tmp_path / ".notes.tmp"
    own.write_text("mine")
    left = tmp_path / ".coco.json.0123abcd.tmp"
    left.write_text("half")
    code, _, stderr = segment(tmp_path, str(page))
    assert code == ExitCode.OK, stderr
    assert own.read_text() == "mine" and not left.exists()


def test_a_file_saved_again_at_the_same_path_is_done_again(tmp_path, model):
    """A rescan saved over `scan.png` is another page: its record's file size and time differ, so it is
    redone (not skipped with the old scan's sizes and regions); the unchanged file is skipped again."""
    page = write_page(tmp_path / "scan.png")
    out = tmp_path / "out"
    code, (first,), stderr = segment(out, str(page))
    assert code == ExitCode.OK, stderr
    write_page(page, height=61)
    code, (again,), stderr = segment(out, str(page))
    assert code == ExitCode.OK, stderr
    assert "skipped" not in again and again["height"] == 61 != first["height"]
    assert 'imageHeight="61"' in (out / "page" / "scan.xml").read_text()
    code, (third,), stderr = segment(out, str(page))
    assert third["skipped"] is True and third["height"] == 61 and len(model.batches) == 2


def test_a_tiff_page_done_by_a_docsam_that_counted_thumbnails_is_done_again(tmp_path, model):
    """Before thumbnails were left out, `book_p0002` of (page, thumbnail, page) was the thumbnail; its record
    (without the input file's state) must not stand for the page that now has that id."""
    thumbnail = TiffImagePlugin.ImageFileDirectory_v2()
    thumbnail[254] = 1
    book = tmp_path / "book.tif"
    with TiffImagePlugin.AppendingTiffWriter(book, True) as tiff:
        for size, info in (((40, 30), None), ((10, 8), thumbnail), ((30, 40), None)):
            Image.new("RGB", size, "white").save(tiff, format="TIFF", **({"tiffinfo": info} if info else {}))
            tiff.newFrame()
    out = tmp_path / "out"
    code, records, stderr = segment(out, str(book))
    assert code == ExitCode.OK, stderr
    assert [(r["page_id"], r["width"]) for r in records] == [("book_p0001", 40), ("book_p0002", 30)]
    for page_id in ("book_p0001", "book_p0002"):  # as an earlier docsam wrote them
        path = out / ".docsam" / "records" / f"{page_id}.json"
        stored = json.loads(path.read_text())
        del stored[batch.STORED_FILE]
        path.write_text(json.dumps(stored))
    code, records, stderr = segment(out, str(book))
    assert code == ExitCode.OK, stderr
    assert [("skipped" in r, r["page_id"]) for r in records] == [(True, "book_p0001"), (False, "book_p0002")]


def test_a_page_redone_without_coco_is_redone_again_when_coco_is_asked_for(tmp_path, model):
    """The COCO part of an earlier segmentation passed for the page's in a later coco run (skipped), so
    coco.json disagreed with the PAGE file and the image. A page redone without coco drops its part."""
    page = write_page(tmp_path / "scan.png")
    out = tmp_path / "out"
    assert segment(out, str(page), "--format", "coco,page,jsonl")[0] == ExitCode.OK
    write_page(page, height=61)  # a rescan: redone, page only
    code, (redone,), stderr = segment(out, str(page), "--format", "page,jsonl")
    assert code == ExitCode.OK and "skipped" not in redone, stderr
    code, (again,), stderr = segment(out, str(page), "--format", "coco,page,jsonl")
    assert code == ExitCode.OK and "skipped" not in again, stderr
    (image,) = json.loads((out / "coco.json").read_text())["images"]
    assert image["height"] == 61


@pytest.mark.parametrize(("orientation", "suffix"), [(6, ".jpg"), (2, ".jpg"), (6, ".tif"), (3, ".tif")])
def test_an_image_its_exif_orientation_turns_is_saved_upright_and_named_by_every_format(
    tmp_path, model, orientation, suffix
):
    """A JPEG stored 60x40 with EXIF Orientation 6 is segmented as the upright 40x60 page, to which the
    coordinates and `imageWidth`/`imageHeight` refer; PAGE, ALTO and COCO named the JPEG itself, whose
    stored pixels OCR-D, Kraken and Tesseract read without EXIF (OCR-D's validator: "@imageWidth !=
    image's actual width"), turned or mirrored against the regions. They now name its upright copy. A TIFF
    with its Orientation tag, which Pillow turns while decoding, was named as stored too."""
    stored = np.full((40, 60, 3), 255, np.uint8)
    stored[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[274] = orientation
    scan = tmp_path / f"scan{suffix}"
    if suffix == ".tif":
        Image.fromarray(stored).save(scan, tiffinfo={274: orientation}, compression="tiff_lzw")
    else:
        Image.fromarray(stored).save(scan, exif=exif.tobytes(), quality=95)
    with Image.open(scan) as image:
        upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB")).astype(int)
    height, width = upright.shape[:2]
    out = tmp_path / "out"
    formats = ("--format", "coco,page,alto,jsonl")
    code, lines, stderr = segment(out, str(scan), *formats)
    assert code == 0, stderr
    assert (lines[0]["width"], lines[0]["height"]) == (width, height)
    page = etree.parse(str(out / "page" / "scan.xml")).getroot().find("{*}Page")
    assert (int(page.get("imageWidth")), int(page.get("imageHeight"))) == (width, height)
    alto = etree.parse(str(out / "alto" / "scan.xml")).getroot()
    (coco_image,) = json.loads((out / "coco.json").read_text())["images"]
    assert coco_image["source"] == f"../scan{suffix}"
    references = [
        out / "page" / page.get("imageFilename"),
        out / "alto" / alto.find("{*}Description/{*}sourceImageInformation/{*}fileName").text,
        out / coco_image["path"],
    ]
    for reference in references:
        with Image.open(reference) as image:  # as OCR-D and Kraken open it: no EXIF applied
            assert image.size == (width, height)
            assert np.abs(np.asarray(image.convert("RGB")).astype(int) - upright).max() == 0
    code, lines, _ = segment(out, str(scan), *formats)
    assert code == 0 and lines[0]["skipped"] and "image" in lines[0]["outputs"]


def test_a_one_page_tiff_after_a_thumbnail_is_saved_as_its_page_and_named_by_every_format(tmp_path, model):
    """A TIFF whose first frame is a thumbnail (NewSubfileType 1) and whose second is the page is segmented
    as that page; PAGE, ALTO and COCO named the TIFF itself, whose first image, the one OCR-D, Kraken,
    Tesseract and most viewers open, is the thumbnail, smaller than `imageWidth` x `imageHeight`. They now
    name the page's own image, as for a page of a multi-page TIFF."""
    page = Image.new("RGB", (60, 40), (255, 0, 0))
    thumbnail = TiffImagePlugin.ImageFileDirectory_v2()
    thumbnail[254] = 1
    scan = tmp_path / "scan.tif"
    with TiffImagePlugin.AppendingTiffWriter(scan, True) as tiff:
        page.resize((15, 10)).save(tiff, format="TIFF", tiffinfo=thumbnail)
        tiff.newFrame()
        page.save(tiff, format="TIFF")
        tiff.newFrame()
    out = tmp_path / "out"
    formats = ("--format", "coco,page,alto,jsonl")
    code, lines, stderr = segment(out, str(scan), *formats)
    assert code == 0 and (lines[0]["page_id"], lines[0]["page"]) == ("scan", None), stderr
    xml = etree.parse(str(out / "page" / "scan.xml")).getroot().find("{*}Page")
    alto = etree.parse(str(out / "alto" / "scan.xml")).getroot()
    (coco_image,) = json.loads((out / "coco.json").read_text())["images"]
    assert coco_image["source"] == "../scan.tif"
    references = [
        out / "page" / xml.get("imageFilename"),
        out / "alto" / alto.find("{*}Description/{*}sourceImageInformation/{*}fileName").text,
        out / coco_image["path"],
    ]
    for reference in references:
        with Image.open(reference) as image:  # its first image, as readers open it
            assert image.size == (int(xml.get("imageWidth")), int(xml.get("imageHeight"))) == (60, 40)
    code, lines, _ = segment(out, str(scan), *formats)
    assert code == 0 and lines[0]["skipped"] and "image" in lines[0]["outputs"]
    record_file = out / ".docsam" / "records" / "scan.json"  # as a docsam that named the TIFF left it
    record = json.loads(record_file.read_text())
    del record["outputs"]["image"]
    record_file.write_text(json.dumps(record))
    (out / "image" / "scan.png").unlink()
    code, lines, _ = segment(out, str(scan), *formats)
    assert code == 0 and "skipped" not in lines[0] and (out / "image" / "scan.png").is_file()


def test_an_image_the_outputs_cannot_name_done_by_an_earlier_docsam_is_redone(tmp_path, model):
    """A Latin-1 `M\xfcller.png` is saved as `image/<id>.png` for PAGE, ALTO and COCO to name. A page done
    by a docsam that named it `M%FCller.png`, a file that does not exist, was skipped on the next run, its
    outputs naming no image, where a TIFF's page after a thumbnail done so is redone; so is this one now."""
    scan = tmp_path / os.fsdecode(b"M\xfcller.png")
    write_page(scan)
    out = tmp_path / "out"
    formats = ("--format", "page,jsonl")
    code, lines, stderr = segment(out, str(scan), *formats)
    page_id = lines[0]["page_id"]
    assert code == 0 and "image" in lines[0]["outputs"], stderr
    record_file = out / ".docsam" / "records" / f"{page_id}.json"  # as a docsam that named the input left it
    record = json.loads(record_file.read_text())
    del record["outputs"]["image"]
    record_file.write_text(json.dumps(record))
    (out / "image" / f"{page_id}.png").unlink()
    code, lines, _ = segment(out, str(scan), *formats)
    assert code == 0 and "skipped" not in lines[0] and (out / "image" / f"{page_id}.png").is_file()


def test_the_page_images_written_keep_the_resolution_of_their_page(tmp_path, model):
    """`image/<id>.png` had no resolution, so Tesseract read a 300-dpi scan's page as 70 dpi ("Invalid
    resolution 0 dpi. Using 70 instead.") and OCR-D found none. It now keeps the page's: a PDF page's
    `--dpi`, a TIFF page's resolution tags, a turned JPEG's density turned with it; none where the file
    states none (Pillow reports 1 dpi for a TIFF without resolution tags)."""
    frames = [Image.new("L", (60, 40), 200), Image.new("L", (50, 30), 100)]
    frames[0].save(tmp_path / "scan.tif", save_all=True, append_images=frames[1:], dpi=(300, 300))
    frames[0].save(tmp_path / "plain.tif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[274] = 6
    Image.new("RGB", (60, 40), "white").save(tmp_path / "photo.jpg", exif=exif.tobytes(), dpi=(300, 150))
    write_pdf(tmp_path / "doc.pdf", 72, 144)
    out = tmp_path / "out"
    code, _, stderr = segment(out, str(tmp_path), "--dpi", "150", "--format", "page")
    assert code == 0, stderr
    expected = {"scan_p0001": 300, "scan_p0002": 300, "photo": (150, 300), "doc_p0001": 150}
    for page_id, dpi in expected.items():
        dpi = dpi if isinstance(dpi, tuple) else (dpi, dpi)
        with Image.open(out / "image" / f"{page_id}.png") as image:
            assert image.info["dpi"] == pytest.approx(dpi, abs=0.05), page_id  # in pixels per metre
    with Image.open(out / "image" / "plain_p0001.png") as image:
        assert "dpi" not in image.info


def test_an_output_that_cannot_be_created_is_named_not_its_temporary(tmp_path, model, monkeypatch):
    """`page/` read-only once the run has started (simulated: root writes anyway): the page's error names
    its PAGE file, not the hidden temporary it was to be written as."""
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if Path(path).name.startswith(".page.xml."):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    code, records, _ = segment(out, str(page))
    assert code == ExitCode.FAILED
    written = out / "page" / "page.xml"
    assert records[0]["error"] == f"{page}: cannot write its outputs: Permission denied ({written})"
