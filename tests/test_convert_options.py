"""Options of convert-dataset and evaluate: choices shown and refused with the valid values, exit codes,
file names printed exactly."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from convert_helpers import coco_document, page_xml, run_cli, write_image


def _said(stderr: str) -> str:
    """stderr as one line of words: Typer's error panel wraps its message and draws a box around it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    write_image(tmp_path / "a.png", 60, 40)
    write_image(tmp_path / "b.png", 60, 40)
    (tmp_path / "annotations.json").write_text(json.dumps(coco_document()))
    return tmp_path / "annotations.json"


def test_help_shows_the_choices() -> None:
    convert = run_cli("convert-dataset", "--help").stdout
    assert "page|alto|coco|voc|yolo" in convert.replace("\n", "").replace(" ", "").replace("│", "")
    assert "[regions|lines|words|cells]" in convert and "-o" in convert
    evaluate = run_cli("evaluate", "--help").stdout
    assert "auto|coco|page" in evaluate and "fp32|bf16|fp16" in evaluate and "base|large" in evaluate


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (("--from", "xml"), ("page", "coco", "icdar2013", "textdet")),
        (("--from", "coco", "--level", "regions,glyphs"), ("glyphs", "regions, lines, words, cells")),
        (("--from", "voc", "--level", "lines"), ("voc supports regions",)),
        (("--from", "coco", "--split", "train=x"), ("'x' is not a number",)),
    ],
)
def test_convert_refuses_bad_options_with_the_valid_values(coco_file: Path, arguments, named) -> None:
    result = run_cli("convert-dataset", coco_file, "-o", coco_file.parent / "out", *arguments)
    assert result.exit_code == 2
    for text in named:
        assert text in _said(result.stderr), (text, result.stderr)
    assert not (coco_file.parent / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (("--pred-format", "txt"), ("auto", "coco", "page")),
        (("--gt-format", "xml"), ("unified", "labelme")),
        (("--level", "glyphs"), ("regions, lines, words, cells",)),
        (("--map", "nothing"), ("old=new",)),
        (("--precision", "fp8"), ("fp32", "bf16", "fp16")),
    ],
)
def test_evaluate_refuses_bad_options_with_the_valid_values(coco_file: Path, arguments, named) -> None:
    result = run_cli("evaluate", coco_file, "--pred", coco_file, *arguments)
    assert result.exit_code == 2
    for text in named:
        assert text in _said(result.stderr), (text, result.stderr)


def test_case_of_a_format_name_does_not_matter(coco_file: Path) -> None:
    assert (
        run_cli("convert-dataset", coco_file, "--from", "COCO", "-o", coco_file.parent / "o").exit_code == 0
    )
    assert run_cli("evaluate", coco_file, "--pred", coco_file, "--gt-format", "Coco").exit_code == 0


def test_a_folder_to_keep_is_a_usage_error(coco_file: Path) -> None:
    out = coco_file.parent / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    assert result.exit_code == 2
    (line,) = result.error_lines()
    assert line.startswith("error: --out:") and "is not empty" in line and "--overwrite" in line


def test_file_names_are_printed_exactly(tmp_path: Path) -> None:
    """A name that looks like Rich markup is shown as it is, in errors and in the summary."""
    source = tmp_path / "[bold]src"
    source.mkdir()
    (source / "p[red].xml").write_text(page_xml("missing [draft].png", 40, 30, []))
    write_image(source / "q.png", 40, 30)
    (source / "q.xml").write_text(page_xml("q.png", 40, 30, [("TextRegion", "[/b]", "1,1 9,1 9,9")]))
    out = tmp_path / "out [v2]"
    result = run_cli("convert-dataset", source, "--from", "page", "-o", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "[bold]src/p[red].xml: imageFilename 'missing [draft].png' not found" in line
    assert "[/b]" in result.stderr and "out [v2]" in result.stderr


def test_undecodable_file_name_bytes(tmp_path: Path) -> None:
    """Messages escape them (`\\xe9`), outputs percent-encode them (`%E9`): the dataset stays UTF-8."""
    source = tmp_path / os.fsdecode(b"caf\xe9")
    source.mkdir()
    (source / "p.xml").write_text(page_xml("missing.png", 40, 30, []))
    write_image(source / "q.png", 40, 30)
    (source / "q.xml").write_text(page_xml("Q.PNG", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    out = tmp_path / "out"
    result = run_cli("convert-dataset", source, "--from", "page", "-o", out)
    assert result.exit_code == 1
    (line,) = result.error_lines()
    assert "caf\\xe9/p.xml: imageFilename 'missing.png' not found" in line
    report = json.loads((out / "convert_report.json").read_bytes().decode("utf-8"))
    assert any("caf%E9/q.xml" in example for examples in report["examples"].values() for example in examples)

    labels = tmp_path / "yolo"
    write_image(labels / os.fsdecode(b"p\xe9.png"), 40, 30)
    (labels / os.fsdecode(b"p\xe9.txt")).write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "classes.txt").write_text("table\n")
    out = tmp_path / "yolo-out"
    assert run_cli("convert-dataset", labels, "--from", "yolo", "-o", out).exit_code == 0
    assert (out / "list.txt").read_bytes().decode("utf-8") == "p%E9.png\n"
    assert (out / "image" / "p%E9.png").is_file() and (out / "coco" / "p%E9.json").is_file()
