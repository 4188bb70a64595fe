"""`docsam segment` end to end with the tiny parity model: reference parity, real pages, batch behaviour."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import PROJECT_ROOT
from lxml import etree
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from segment_helpers import E2E_CLASSES, leftover_temporaries, run_segment
from tokenizers import Tokenizer

from docsam_cli.datasets.classes import ClassFilter
from docsam_cli.presets import Preset, prompt_key, resolve_prompts
from model.inference.mapping import resample_masks


def test_cli_reproduces_the_reference_pipeline(tmp_path, tiny_weights, reference_fixtures):
    page = reference_fixtures / "tiny-e2e-page.png"
    code, records, stderr = run_segment(
        tiny_weights, tmp_path, str(page), *E2E_CLASSES, "--format", "coco,jsonl"
    )
    assert code == 0, stderr
    expected = json.loads((reference_fixtures / "tiny-e2e.json").read_text())["reference_jsonl"]
    height, width = cv2.imread(str(page)).shape[:2]

    coco = COCO(str(tmp_path / "coco.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    ours = coco.loadAnns(coco.getAnnIds())
    assert len(ours) == len(expected) == len(records[0]["instances"])
    unmatched = list(ours)
    for reference in expected:
        # The reference reports resized-page coordinates; map its mask to the original page the way docsam
        # maps its own (pixel-centre nearest), so both are compared in the same coordinates.
        resized = torch.from_numpy(mask_utils.decode(reference["segmentation"]).astype(bool))
        reference_mask = resample_masks(resized[None], (height, width))[0].numpy()
        candidates = [a for a in unmatched if names[a["category_id"]] == reference["category_id"]]
        ious = [_iou(coco.annToMask(a).astype(bool), reference_mask) for a in candidates]
        best = candidates[int(np.argmax(ious))]
        assert max(ious) >= 0.98
        assert best["score"] == pytest.approx(reference["score"], abs=1e-3)
        unmatched.remove(best)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_real_pages_give_valid_page_xml_coco_and_overlays(tmp_path, tiny_weights, shared_data):
    pages = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))[:3]
    pages += sorted((shared_data / "pages" / "ocrd-gt-structure-text").rglob("*.tif"))[:1]
    pages += sorted((shared_data / "pages" / "prima-page-examples").rglob("*.jpg"))[:1]
    assert len(pages) >= 4
    code, records, stderr = run_segment(tiny_weights, tmp_path, *map(str, pages), "--preset", "doclaynet")
    assert code == 0, stderr
    assert len(records) == len(pages)
    schema = etree.XMLSchema(etree.parse(str(shared_data / "schema" / "2019-07-15" / "pagecontent.xsd")))
    coco = COCO(str(tmp_path / "coco.json"))
    assert len(coco.getImgIds()) == len(pages)
    results = coco.loadRes(str(tmp_path / "coco_results.json"))
    assert len(results.getAnnIds()) == len(coco.getAnnIds()) > 0
    for record, source in zip(records, pages, strict=True):
        with Image.open(source) as image:
            size = image.size
        assert (record["width"], record["height"]) == size
        document = etree.parse(record["outputs"]["page"])
        schema.assertValid(document)
        page = document.getroot().find("{*}Page")
        assert (int(page.get("imageWidth")), int(page.get("imageHeight"))) == size
        with Image.open(record["outputs"]["overlay"]) as overlay:
            assert overlay.height == size[1] and overlay.width >= size[0]  # page + legend margin
    assert not leftover_temporaries(tmp_path)


def test_same_page_same_result_alone_and_in_any_batch(
    tmp_path, tiny_weights, shared_data, reference_fixtures
):
    target = reference_fixtures / "tiny-e2e-page.png"
    others = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))[:2]
    runs = {
        "alone": [str(target)],
        "batch": [str(others[0]), str(target), str(others[1])],
        "isolated-1": ["--isolate", "--batch-size", "1", str(others[0]), str(target)],
        "isolated-5": [
            "--isolate",
            "--batch-size",
            "5",
            "--pages-per-batch",
            "3",
            str(others[0]),
            str(target),
        ],
        "isolated-alone": ["--isolate", str(target)],
    }
    results = {}
    for name, args in runs.items():
        code, records, stderr = run_segment(tiny_weights, tmp_path / name, *args, "--format", "jsonl")
        assert code == 0, stderr
        (record,) = [r for r in records if r["input"] == str(target)]
        results[name] = record["instances"]
    assert _same(results["alone"], results["batch"])  # reference grouping: one page per forward batch
    for name in ("isolated-1", "isolated-5"):
        assert _same(results["isolated-alone"], results[name]), name


def _same(first: list[dict], second: list[dict]) -> bool:
    if len(first) != len(second):
        return False
    for a, b in zip(first, second, strict=True):
        if a["class"] != b["class"] or abs(a["score"] - b["score"]) > 1e-3 or a["polygons"] != b["polygons"]:
            return False
    return True


def test_outputs_are_skipped_unless_overwrite(tmp_path, tiny_weights, reference_fixtures):
    page = str(reference_fixtures / "tiny-e2e-page.png")
    code, first, _ = run_segment(tiny_weights, tmp_path, page, *E2E_CLASSES)
    assert code == 0 and "skipped" not in first[0]
    code, second, stderr = run_segment(tiny_weights, tmp_path, page, *E2E_CLASSES)
    assert code == 0 and second[0]["skipped"] is True
    assert "0 pages segmented, 1 skipped" in stderr
    code, third, _ = run_segment(tiny_weights, tmp_path, page, *E2E_CLASSES, "--overwrite")
    assert code == 0 and "skipped" not in third[0]
    assert len(COCO(str(tmp_path / "coco.json")).getImgIds()) == 1


def test_bad_inputs_fail_one_line_each_and_the_batch_goes_on(tmp_path, tiny_weights, reference_fixtures):
    good = reference_fixtures / "tiny-e2e-page.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    inputs = [str(empty), str(good), str(text), str(truncated), str(tmp_path / "missing.tif")]
    code, records, stderr = run_segment(tiny_weights, tmp_path / "out", *inputs, *E2E_CLASSES)
    assert code == 1
    failed = [r for r in records if "error" in r]
    assert len(failed) == 4 and len(records) == 5
    # the page id where a page was listed (its decoding failed), none for a file that gave no page
    assert [r["page_id"] for r in failed] == [None, None, "truncated", None]
    for bad in (empty, text, truncated):
        lines = [line for line in stderr.splitlines() if line.startswith("error:") and bad.name in line]
        assert len(lines) == 1, stderr
    assert "1 pages segmented, 0 skipped (already done), 4 failed" in stderr
    assert not leftover_temporaries(tmp_path / "out")
    code, _, stderr = run_segment(tiny_weights, tmp_path / "out2", *inputs, *E2E_CLASSES, "--fail-fast")
    assert code == 1 and "stopped early" in stderr


def test_usage_errors_exit_2(tmp_path, tiny_weights, reference_fixtures):
    page = str(reference_fixtures / "tiny-e2e-page.png")
    for args in (["--format", "pdf"], ["--classes", "a,a"], ["--precision", "fp16"], ["--pages", "x-y"], []):
        code, _, stderr = run_segment(tiny_weights, tmp_path, *([page] if args else []), *args)
        assert code == 2, (args, stderr)
        assert stderr.strip().startswith("error:")


def test_classes_differing_only_in_case_are_one_class_named_twice(tmp_path, tiny_weights, reference_fixtures):
    """`--classes Table,table` was taken as two classes; the text encoder lowercases its prompts, so both
    gave the same prompt and the second never won a region (an empty COCO category, a dead label)."""
    page = str(reference_fixtures / "tiny-e2e-page.png")
    code, _, stderr = run_segment(tiny_weights, tmp_path, page, "--classes", "Table,figure,table")
    assert code == 2, stderr
    assert stderr.strip() == (
        "error: --classes names a class twice: 'table' (as 'Table'; "
        "the model reads class names in lower case, without accents, punctuation as separate words)"
    )


@pytest.mark.parametrize(
    ("classes", "repeated", "first"),
    [
        ("Légende,legende", "legende", "Légende"),
        ("text line,Text  Line", "Text  Line", "text line"),
        ("text-line,text - line", "text - line", "text-line"),
        ("table;,table ;", "table ;", "table;"),
    ],
)
def test_classes_differing_only_in_accents_or_spacing_are_one_class_named_twice(classes, repeated, first):
    """The text encoder strips accents, splits at spaces and around punctuation as well as lowercasing:
    both names give the same tokens, so the second class could never win a region."""
    with pytest.raises(ValueError) as refused:
        resolve_prompts(classes, None, None)
    assert str(refused.value) == (
        f"--classes names a class twice: {repeated!r} (as {first!r}; "
        "the model reads class names in lower case, without accents, punctuation as separate words)"
    )


@pytest.mark.parametrize(
    ("classes", "repeated", "first", "tokens"),
    [
        ("图,表", "表", "图", "[UNK]"),  # figure, table: Chinese characters MiniLM's vocabulary lacks
        ("标题,figure,页眉", "页眉", "标题", "[UNK] [UNK]"),  # title, page header
        ("ცხრილი,აღწერა", "აღწერა", "ცხრილი", "[UNK]"),  # Georgian table, caption: one unknown word each
    ],
)
def test_classes_the_vocabulary_reads_alike_are_one_class_named_twice(classes, repeated, first, tokens):
    """Characters outside the text encoder's vocabulary all read as [UNK]: `--classes 图,表` gave two
    identical prompts, so the table class could never win a region."""
    with pytest.raises(ValueError) as refused:
        resolve_prompts(classes, None, None)
    assert str(refused.value) == (
        f"--classes names a class twice: {repeated!r} (as {first!r}; the model reads both as the same "
        f"tokens, {tokens}: characters outside its vocabulary are all read as [UNK])"
    )


def test_a_class_name_holding_a_comma_is_given_with_a_backslash_as_convert_dataset_writes_it() -> None:
    """`convert-dataset --map 'Text=Name\\, Title'` (or a COCO category, a PAGE type of that name) trains a
    class whose name holds a comma, and `segment --weights RUN` prompts it from the stored classes; but
    `--classes 'Name\\, Title,Stamp'` prompted three classes, `Name\\`, `Title` and `Stamp`: the class
    could not be named on the command line. It is written as convert-dataset and evaluate --map write it."""
    assert resolve_prompts("Name\\, Title,Stamp", None, None) == (["Name, Title", "Stamp"], "")


def test_blanks_inside_a_class_name_are_one_space_as_convert_dataset_reads_the_name_back() -> None:
    """`--classes 'running\ttitle,foot  note'` (names pasted from a spreadsheet or a wrapped line) wrote
    those names into COCO, PAGE and ALTO, while `convert-dataset` of those files names the classes with one
    space (`running title`): `evaluate` of the converted dataset against the same predictions then ignored
    every prediction of the class and scored it as all missed. `--classes` now writes the name as a
    conversion reads it back (the model reads both alike)."""
    names, _ = resolve_prompts("running\ttitle,foot  note,side\nnote", None, None)
    assert names == ["running title", "foot note", "side note"]
    assert [ClassFilter().apply(name) for name in names] == names


@pytest.mark.parametrize(
    ("classes", "domain", "named"),
    [
        ("table,\xdcberschrift", None, "--classes 'table,\\xdcberschrift'"),
        ("table", "B\xfccher", "--domain 'B\\xfccher'"),
    ],
)
def test_prompts_holding_a_byte_that_is_not_utf8_are_refused(classes, domain, named) -> None:
    """`--classes $'\\xdcberschrift'` (typed in a Latin-1 terminal or script; Python carries the byte as a
    lone surrogate) ended in 'error: internal error: TypeError: TextInputSequence must be str' (exit 3),
    and such a `--domain` failed every page once the model was loaded: the tokenizer takes Unicode text
    only. Both are a usage error naming the option, before any work."""
    surrogates = [os.fsdecode(text.encode("latin-1")) if text else text for text in (classes, domain)]
    with pytest.raises(ValueError) as refused:
        resolve_prompts(*surrogates, None)
    assert str(refused.value) == (
        f"{named} holds a byte that is not UTF-8 (shown as \\xNN): give it in UTF-8, the text the model reads"
    )


@pytest.mark.parametrize("name", ["a\x1bb", "page\x08number"])
def test_class_names_holding_a_control_character_are_refused(name) -> None:
    """`--classes $'table,a\\x1bb'` (an escape typed by a stray arrow key) wrote the class 'a\\x1bb' in
    COCO but 'a%1Bb' in PAGE and ALTO, which cannot hold the character: convert-dataset of those files named
    another class than COCO's, and evaluate ignored its predictions. It is refused, naming the class; a
    form feed, as any blank, is a space."""
    with pytest.raises(ValueError) as refused:
        resolve_prompts(f"table,{name}", None, None)
    assert str(refused.value) == (
        f"--classes names a class holding a control character: {name!r} (PAGE and ALTO cannot hold it)"
    )
    assert resolve_prompts("page\x0cnumber", None, None)[0] == ["page number"]


def test_stored_classes_the_vocabulary_reads_alike_are_refused():
    """Weights fine-tuned before `train` refused such datasets can carry 图,表 as their classes: segment
    without --classes prompted both as [UNK], silently. It is refused as `--classes 图,表` is."""
    stored = Preset(("图", "表"), "", "the classes stored in run/model.safetensors")
    with pytest.raises(ValueError) as refused:
        resolve_prompts(None, None, None, default=stored)
    assert str(refused.value).startswith(
        "the weights' class list (the classes stored in run/model.safetensors) names a class twice: '表' "
        "(as '图'; the model reads both as the same tokens, [UNK]"
    )


def test_the_repetition_rule_reads_class_names_as_the_text_encoder_does():
    """`prompt_key` equal exactly where the bundled tokenizer gives the same tokens."""
    tokenizer = Tokenizer.from_file(str(PROJECT_ROOT / "model" / "tokenizer" / "tokenizer.json"))
    same = [
        ("Légende", "legende"),
        ("Überschrift", "uberschrift"),
        ("A  b", "a b"),
        ("text-line", "text - line"),
        ("table;", "table ;"),
        ("Fig.(a)", "fig . ( a )"),
    ]
    for first, second in [*same, ("图", "表"), ("ცხრილი", "აღწერა")]:
        assert prompt_key(first) == prompt_key(second)
        assert tokenizer.encode(first).ids == tokenizer.encode(second).ids
    for first, second in [("table", "tables"), ("text-line", "textline"), ("text line", "textline")]:
        assert prompt_key(first) != prompt_key(second)
        assert tokenizer.encode(first).ids != tokenizer.encode(second).ids


@pytest.mark.parametrize("dpi", ["inf", "nan", "1e300", "0.5"])
def test_an_absurd_dpi_is_a_usage_error_naming_it(tmp_path, tiny_weights, reference_fixtures, dpi):
    """`--dpi inf` was accepted, then every PDF page failed with an OverflowError."""
    page = str(reference_fixtures / "tiny-e2e-page.png")
    code, _, stderr = run_segment(tiny_weights, tmp_path, page, "--dpi", dpi)
    assert code == 2 and stderr.strip().startswith("error:") and "--dpi" in stderr, stderr


def test_an_output_folder_inside_a_scanned_folder_is_not_taken_for_inputs(
    tmp_path, tiny_weights, reference_fixtures
):
    """The second run segmented the first one's X/out/overlay/page.png."""
    shutil.copy(reference_fixtures / "tiny-e2e-page.png", tmp_path / "page.png")
    for _ in range(2):
        code, records, stderr = run_segment(
            tiny_weights, tmp_path / "out", str(tmp_path), "-r", *E2E_CLASSES, "--format", "overlay,jsonl"
        )
        assert code == 0, stderr
        assert [record["input"] for record in records] == [str(tmp_path / "page.png")]
    assert (tmp_path / "out" / "overlay" / "page.png").exists()


def test_missing_zoo_weights_name_the_download_command(tmp_path, monkeypatch, reference_fixtures):
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "cache"))
    code, _, stderr = run_segment("docsam-base", tmp_path, str(reference_fixtures / "tiny-e2e-page.png"))
    assert code == 2  # nothing was processed
    assert "docsam download-weights docsam-base" in stderr


def test_a_page_whose_outputs_cannot_be_written_fails_alone(
    tmp_path, tiny_weights, reference_fixtures, monkeypatch
):
    """An unexpected error while writing one page's outputs fails that page (one line naming it, no record,
    so a rerun does it again), not the batch."""
    from docsam_cli.writers import page_outputs

    write = page_outputs.PageWriter.write

    def failing_for_b(self, source, instances, timing):
        if source.page_id == "b":
            raise ValueError("no ring")
        return write(self, source, instances, timing)

    monkeypatch.setattr(page_outputs.PageWriter, "write", failing_for_b)
    for name in ("a", "b", "c"):
        shutil.copy(reference_fixtures / "tiny-e2e-page.png", tmp_path / f"{name}.png")
    out = tmp_path / "out"
    code, records, stderr = run_segment(tiny_weights, out, *(str(tmp_path / f"{n}.png") for n in "abc"))
    assert code == 1
    assert [r["page_id"] for r in records if "error" not in r] == ["a", "c"]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.png" in errors[0] and "ValueError: no ring" in errors[0], stderr
    monkeypatch.setattr(page_outputs.PageWriter, "write", write)
    code, records, _ = run_segment(tiny_weights, out, *(str(tmp_path / f"{n}.png") for n in "abc"))
    assert code == 0
    assert {r["page_id"]: r.get("skipped", False) for r in records} == {"a": True, "b": False, "c": True}
