"""Options of convert-dataset and evaluate: choices shown and refused with the valid values, exit codes,
file names printed exactly."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import error_lines, run_docsam
from convert_helpers import CliResult, coco_source, page_xml, run_cli, write_image

from docsam_cli.datasets import layout
from docsam_cli.datasets.ground_truth import load_ground_truth
from docsam_cli.inputs.sources import portable_stem


def _said(stderr: str) -> str:
    """stderr as one line of words: Typer's error panel wraps its message and draws a box around it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    return coco_source(tmp_path) / "annotations.json"


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
        (("--from", "coco", "--keep", "text", "--drop", "text"), ("--keep and --drop both name 'text'",)),
        # An empty --keep (an unset shell variable) kept every class.
        (("--from", "coco", "--keep", ""), ("--keep needs at least one class name",)),
        (("--from", "coco", "--keep", " , "), ("--keep needs at least one class name",)),
        # An empty --level (an unset shell variable) read no level at all.
        (("--from", "coco", "--level", ""), ("give one or more of regions, lines, words, cells",)),
        (("--from", "coco", "--level", " , "), ("give one or more of regions, lines, words, cells",)),
        # These named no option ('error: invalid value: 'x' is not a number').
        (("--from", "coco", "--split", "train=x"), ("invalid value for --split: 'x' is not a number",)),
        (("--from", "coco", "--split", "val=1"), ("invalid value for --split: only split 'val' is named",)),
        # A split named twice took the last fraction; a negative or infinite one gave sizes below zero.
        (("--from", "coco", "--split", "train=1,val=1,train=2"), ("split 'train' given twice",)),
        (("--from", "coco", "--split", "train=1,val=-0.5"), ("fraction of 'val' must be a non-negative",)),
        (("--from", "coco", "--split", "train=1,val=inf"), ("fraction of 'val' must be a non-negative",)),
        (
            ("--from", "coco", "--map", "text"),
            ("invalid value for --map: 'text' is not of the form old=new",),
        ),
        (
            ("--from", "coco", "--map", "a=b", "--map", "a=c"),
            ("invalid value for --map: 'a' is renamed twice",),
        ),
    ],
)
def test_convert_refuses_bad_options_with_the_valid_values(coco_file: Path, arguments, named) -> None:
    result = run_cli("convert-dataset", coco_file, "-o", coco_file.parent / "out", *arguments)
    assert result.exit_code == 2
    for text in named:
        assert text in _said(result.stderr), (text, result.stderr)
    assert not (coco_file.parent / "out").exists()


def test_a_class_list_file_for_another_format_than_yolo_is_refused(coco_file: Path) -> None:
    """`--classes FILE` is YOLO's class list: given with another `--from` it was passed over, and a user
    who took it for the classes to convert (as `segment --classes` chooses them) got every class; it is
    refused, as `evaluate --classes` is with other ground truth, pointing to `--keep`."""
    classes = coco_file.parent / "classes.txt"
    classes.write_text("text\n", encoding="utf-8")
    out = coco_file.parent / "out"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "--classes", classes, "-o", out)
    assert result.exit_code == 2
    assert "--classes" in _said(result.stderr) and "not for coco" in _said(result.stderr)
    assert "--keep" in _said(result.stderr)
    assert not out.exists()


def test_a_dpi_for_another_format_than_icdar2013_is_refused(coco_file: Path) -> None:
    """`--dpi` renders ICDAR 2013's PDF pages: given with another `--from` (ALTO in mm10 without a page
    size, whose images state no resolution, converted with `--dpi 300` to scale it) it was passed over, and
    the same error came again; it is refused, naming the format."""
    out = coco_file.parent / "out"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "--dpi", "300", "-o", out)
    assert result.exit_code == 2
    assert "--dpi" in _said(result.stderr) and "not for coco" in _said(result.stderr)
    assert not out.exists()


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


def test_case_of_a_level_name_does_not_matter(coco_file: Path) -> None:
    """`--level REGIONS` was refused ('is not one of regions, lines, ...') where `--from COCO` is read."""
    out = coco_file.parent / "o"
    converted = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--level", "Regions")
    assert converted.exit_code == 0, converted.stderr
    assert json.loads((out / "dataset.json").read_text())["levels"] == ["regions"]
    assert run_cli("evaluate", coco_file, "--pred", coco_file, "--level", "REGIONS").exit_code == 0


def test_quiet_leaves_only_errors_and_warnings_on_stderr_and_data_on_stdout(coco_file: Path) -> None:
    out = coco_file.parent / "o"
    loud = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--drop", "nothing")
    assert loud.exit_code == 0 and "images →" in loud.stderr
    quiet = run_cli(
        "-q", "convert-dataset", coco_file, "--from", "coco", "-o", out, "--drop", "nothing", "--overwrite"
    )
    assert quiet.exit_code == 0 and (out / "dataset.json").is_file()
    assert quiet.stderr.splitlines() == ["warning: --drop nothing matched no class"]
    scored = run_cli("evaluate", coco_file, "--pred", coco_file, "-q", "--json", "-")
    assert scored.exit_code == 0 and scored.stderr == ""
    assert json.loads(scored.stdout)["mask"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(("environment", "spinner"), [("FORCE_COLOR", False), ("TTY_COMPATIBLE", True)])
def test_the_spinner_is_drawn_on_a_terminal_only_as_the_progress_bar_is(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch, environment: str, spinner: bool
) -> None:
    """FORCE_COLOR in a batch job's environment, which Rich takes for a terminal, had the 'converting...'
    spinner redrawn into the job's log file (cursor sequences 12 times a second), as it had segment's bar;
    TTY_COMPATIBLE=1 still declares stderr a terminal."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(environment, "1")
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", coco_file.parent / "o")
    assert result.exit_code == 0 and "images →" in result.stderr
    assert ("\x1b[?25l" in result.stderr) is spinner, result.stderr  # the spinner hides the cursor


def test_a_split_left_empty_is_a_warning(coco_file: Path) -> None:
    """Two images cannot give a val split of 10 %: the folder is written empty (training refuses it as
    --val), and conversion says so instead of reporting success alone."""
    out = coco_file.parent / "o"
    result = run_cli(
        "-q", "convert-dataset", coco_file, "--from", "coco", "-o", out, "--split", "train=0.9,val=0.1"
    )
    assert result.exit_code == 0
    assert (out / "val" / "list.txt").read_text() == ""
    assert result.stderr.splitlines() == [
        "warning: split 'val' has no image (2 images are too few for its fraction 0.1)"
    ]
    assert json.loads((out / "convert_report.json").read_text())["warnings"] == result.stderr[9:].splitlines()
    # finetune --val out/val then said only 'lists no images'; it now says why, as evaluate does.
    from docsam_cli.training.datasets import DatasetError, LayoutDataset

    with pytest.raises(
        DatasetError, match=r"list\.txt: lists no images \(a split that convert-dataset --split"
    ):
        LayoutDataset(out / "val", stage="test")


def test_tables_beside_text_words_are_a_warning_that_the_reference_loader_drops_the_words(
    tmp_path: Path,
) -> None:
    """The reference's loader drops 'text word' from a dataset that has 'table': conversion says so."""
    from convert_helpers import coco_document

    document = coco_document()
    document["categories"][1]["name"] = "text word"
    source = coco_source(tmp_path / "src", document) / "annotations.json"
    result = run_cli("-q", "convert-dataset", source, "--from", "coco", "-o", tmp_path / "o")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: the reference loader drops 'text word' when 'table' exists (rename one)"
    ]


def test_classes_the_model_reads_alike_are_a_warning_naming_the_map(tmp_path: Path) -> None:
    """ALTO from two tools (Kraken's `Default` and YALTAi's `default` line tags, as in the shared yaltai
    pages) converted into one dataset without a word; train and finetune then refused it ('names a class
    twice'). Conversion now says so, with the --map that merges them, and the merged dataset is silent."""
    from convert_helpers import coco_document

    document = coco_document()
    document["categories"][1]["name"] = "Table"
    source = coco_source(tmp_path / "src", document) / "annotations.json"
    result = run_cli("-q", "convert-dataset", source, "--from", "coco", "-o", tmp_path / "o")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: the classes name a class twice: 'table' (as 'Table'; the model reads class names in lower "
        "case, without accents, punctuation as separate words); train, finetune and evaluate --weights "
        "refuse such a dataset: merge them with --map table=Table"
    ]
    merged = run_cli(
        "-q", "convert-dataset", source, "--from", "coco", "-o", tmp_path / "m", "--map", "table=Table"
    )
    assert merged.exit_code == 0 and merged.stderr == ""
    assert json.loads((tmp_path / "m" / "dataset.json").read_text())["class_names"] == ["Table"]


def test_the_map_a_warning_names_is_quoted_for_the_shell(tmp_path: Path) -> None:
    """Classes `Editor's note` and `editor's note` (two annotators) were a warning ending in `merge them with
    --map editor's note=Editor's note`: pasted into a shell, an unterminated quote, or without the apostrophe
    three words of which --map took one. The option is now quoted, and pasted back it merges them."""
    from convert_helpers import coco_document

    document = coco_document()
    document["categories"][0]["name"] = "Editor's note"
    document["categories"][1]["name"] = "editor's note"
    source = coco_source(tmp_path / "src", document) / "annotations.json"
    result = run_cli("-q", "convert-dataset", source, "--from", "coco", "-o", tmp_path / "o")
    assert result.exit_code == 0
    (line,) = result.stderr.splitlines()
    suggested = line.partition("merge them with ")[2]
    assert shlex.split(suggested) == ["--map", "editor's note=Editor's note"]
    merged = run_cli(
        "-q", "convert-dataset", source, "--from", "coco", "-o", tmp_path / "m", *shlex.split(suggested)
    )
    assert merged.exit_code == 0 and merged.stderr == ""
    assert json.loads((tmp_path / "m" / "dataset.json").read_text())["class_names"] == ["Editor's note"]


def test_a_class_the_train_split_has_no_instance_of_is_a_warning(coco_file: Path) -> None:
    """A rare class the random split puts in val alone (the shared OCR-D pages' one handwritten annotation
    at --split train=0.7,val=0.3) is still listed by the train split, as every class is: finetune then
    trains it only as absent, without a word (its --val warning compares class lists). Conversion now
    says so. Here `figure` is on a.png alone: seed 1 puts b.png in train, seed 0 a.png."""
    out = coco_file.parent / "o"
    split = ("--split", "train=0.5,val=0.5")
    result = run_cli("-q", "convert-dataset", coco_file, "--from", "coco", "-o", out, *split, "--seed", "1")
    assert result.exit_code == 0 and (out / "train" / "list.txt").read_text().split() == ["b.png"]
    assert result.stderr.splitlines() == [
        "warning: split 'train' holds no instance of class 'figure': training would teach the model that it "
        "is never there (convert again with another --seed or a larger share for train)"
    ]
    other = run_cli(
        "-q", "convert-dataset", coco_file, "--from", "coco", "-o", out, *split, "--seed", "0", "--overwrite"
    )
    assert other.exit_code == 0 and other.stderr == ""


def test_a_split_asked_to_be_empty_is_no_warning(coco_file: Path) -> None:
    """`--split train=1,test=0` asks for an empty test folder: no number of images would fill it, so
    saying that there are too few images for it would be wrong."""
    out = coco_file.parent / "o"
    result = run_cli(
        "-q", "convert-dataset", coco_file, "--from", "coco", "-o", out, "--split", "train=1,test=0"
    )
    assert result.exit_code == 0
    assert (out / "test" / "list.txt").read_text() == ""
    assert result.stderr == ""
    assert json.loads((out / "convert_report.json").read_text())["warnings"] == []


def test_quiet_evaluate_without_json_says_its_scores_are_shown_nowhere(coco_file: Path) -> None:
    """`docsam evaluate -q` without `--json` scored every page, printed nothing and exited 0: the figures
    were lost without a word, where -q keeps warnings; a warning says so now, before the scoring."""
    for args in (["-q", "evaluate"], ["evaluate", "--quiet"]):
        result = run_cli(*args, coco_file, "--pred", coco_file)
        assert result.exit_code == 0 and result.stdout == ""
        assert result.stderr.splitlines() == [
            "warning: -q without --json: the scores are shown nowhere (--json - for stdout)"
        ]


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


def test_the_report_file_names_every_region_dropped_not_only_five(tmp_path: Path) -> None:
    """The terminal says "dropped: 7 × ..." and points to convert_report.json for the details, which named
    only the first 5: the user could not find the other regions to mend in the sources."""
    source = tmp_path / "src"
    write_image(source / "q.png", 40, 30)
    lines = [("TextRegion", None, f"{x},1 {x + 1},1") for x in range(7)]  # two points: no area
    (source / "q.xml").write_text(page_xml("q.png", 40, 30, lines))
    out = tmp_path / "out"
    assert run_cli("convert-dataset", source, "--from", "page", "-o", out).exit_code == 0
    report = json.loads((out / "convert_report.json").read_text(encoding="utf-8"))
    ((reason, count),) = report["dropped"].items()
    assert count == 7
    assert report["examples"][reason] == [f"{source / 'q.xml'}: TextRegion r{index}" for index in range(7)]


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


def test_names_with_leading_or_trailing_whitespace_read_back(tmp_path: Path) -> None:
    """A scan named ` a.png` (a leading space, which Windows allows) was listed as such in list.txt, which the
    trainer and `evaluate` read with each line stripped: they looked for `a.png` and failed. The output
    name drops the whitespace, as it drops leading dots."""
    labels = tmp_path / "yolo"
    write_image(labels / " a.png", 40, 30)
    (labels / " a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "classes.txt").write_text("table\n")
    write_image(labels / "\ufeffb.png", 40, 30)  # a byte order mark, which list readers drop too
    (labels / "\ufeffb.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    out = tmp_path / "out"
    assert run_cli("convert-dataset", labels, "--from", "yolo", "-o", out).exit_code == 0
    assert sorted((out / "list.txt").read_text().splitlines()) == ["a.png", "b.png"]
    truth = load_ground_truth(out, "unified", frozenset({"regions"}))
    assert truth.errors == [] and sorted(image.name for image in truth.images) == ["a", "b"]
    assert {image.image for image in truth.images} == {out / "image" / "a.png", out / "image" / "b.png"}


def test_long_file_names_are_cut_as_segment_cuts_them(tmp_path: Path) -> None:
    """Two scans of the same 254-byte name (the longest a file system holds, near enough): the second's
    `<stem>-2.png` did not fit in a file name and the run ended in an internal error; stems over 200 bytes
    are now cut and end in a hash, as `segment` names its outputs."""
    name = "x" * 250 + ".png"
    for folder in ("a", "b"):
        write_image(tmp_path / "src" / folder / name, 40, 30)
        xml = page_xml(name, 40, 30, [("TextRegion", None, "1,1 9,1 9,9")])
        (tmp_path / "src" / folder / "p.xml").write_text(xml)
    out = tmp_path / "out"
    result = run_cli("convert-dataset", tmp_path / "src", "--from", "page", "-o", out)
    assert result.exit_code == 0, result.stderr
    first, second = (out / "list.txt").read_text().splitlines()
    assert first == portable_stem("x" * 250) + ".png" and second == portable_stem("x" * 250) + "-2.png"
    assert (
        len(first.encode()) < 255 - len("-2.json") and (out / "coco" / f"{Path(second).stem}.json").is_file()
    )


def test_the_dataset_is_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    """Under a locale that is not UTF-8 (an ASCII `C` locale here; Windows' cp1252, ISO-8859 servers) the
    layout's text files were written in the locale's encoding: here the run failed with an internal
    UnicodeEncodeError, elsewhere the trainer (which reads UTF-8) got other names than were written."""
    source = tmp_path / "src"
    write_image(source / "letter.png", 60, 40)  # file names are the file system's (ASCII here)
    custom = 'custom="structure {type:Überschrift;}"'
    xml = page_xml("letter.png", 60, 40, [("TextRegion", None, "1,1 9,1 9,9")])
    (source / "p.xml").write_text(xml.replace('id="r0"', f'id="r0" {custom}'), encoding="utf-8")
    out = tmp_path / "out"
    ascii_locale = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    command = [sys.executable, "-m", "docsam_cli", "convert-dataset", source, "--from", "page", "-o", out]
    result = subprocess.run(
        command, env=ascii_locale, cwd=Path(__file__).parents[1], capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (out / "class_name" / "letter.txt").read_bytes().decode("utf-8").startswith("Überschrift\n")
    assert json.loads((out / "dataset.json").read_bytes().decode("utf-8"))["class_names"] == ["Überschrift"]
    assert layout.dataset_class_names(out) == ["Überschrift"]


def test_an_output_folder_inside_the_source_is_not_read_back(tmp_path: Path) -> None:
    """A rerun with --overwrite into `src/out` reads the same pages, not also its own earlier output."""
    source = tmp_path / "src"
    regions = [("TextRegion", None, "1,1 9,1 9,9")]
    for name in ("a", "b"):
        write_image(source / f"{name}.png", 60, 40)
        (source / f"{name}.xml").write_text(page_xml(f"{name}.png", 60, 40, regions))
    out = source / "out"
    for arguments in ((), ("--overwrite",)):
        result = run_cli("convert-dataset", source, "--from", "page", "-o", out, *arguments)
        assert result.exit_code == 0, result.stderr
        assert sorted((out / "list.txt").read_text().split()) == ["a.png", "b.png"]
    (source / "a.png").unlink()  # not found where the XML says: not taken from out/image/ either
    result = run_cli("convert-dataset", source, "--from", "page", "-o", out, "--overwrite")
    assert result.exit_code == 1 and "a.png' not found" in result.error_lines()[0]
    assert (out / "list.txt").read_text().split() == ["b.png"]


def _convert_page_folder_without(folder: Path, mode: int, out: Path) -> subprocess.CompletedProcess[str]:
    """`convert-dataset SOURCE --from page` on the parent of `folder`, with `folder`'s permissions `mode`
    for the run (permissions obeyed, also as root)."""
    folder.chmod(mode)
    try:
        return run_docsam(
            "convert-dataset", str(folder.parent), "--from", "page", "-o", str(out), obey_permissions=True
        )
    finally:
        folder.chmod(0o755)


def test_files_and_folders_the_walk_cannot_read_are_errors_not_lost_pages(tmp_path: Path) -> None:
    """A broken or looping link named as an annotation, and a sub-folder that cannot be listed, were left
    out without a word (exit 0, their pages missing from the dataset); each is now an error line."""
    source = tmp_path / "src"
    regions = [("TextRegion", None, "1,1 9,1 9,9")]
    for folder in (source, source / "locked"):
        write_image(folder / "a.png", 60, 40)
        (folder / "a.xml").write_text(page_xml("a.png", 60, 40, regions))
    (source / "gone.xml").symlink_to(tmp_path / "elsewhere.xml")
    (source / "loop.xml").symlink_to(source / "loop.xml")
    result = _convert_page_folder_without(source / "locked", 0, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [
        f"error: {source / 'locked'}: cannot list directory: Permission denied",
        f"error: {source / 'gone.xml'}: broken symbolic link (to {tmp_path / 'elsewhere.xml'})",
        f"error: {source / 'loop.xml'}: cannot read: Too many levels of symbolic links",
    ]
    assert (tmp_path / "out" / "list.txt").read_text().split() == ["a.png"]


def test_an_image_in_a_folder_that_may_not_be_searched_fails_its_page_only(tmp_path: Path) -> None:
    """Looking for `closed/b.png` where `closed/` has no search permission raised out of the whole run."""
    source = tmp_path / "src"
    regions = [("TextRegion", None, "1,1 9,1 9,9")]
    write_image(source / "a.png", 60, 40)
    write_image(source / "closed" / "b.png", 60, 40)
    (source / "a.xml").write_text(page_xml("a.png", 60, 40, regions))
    (source / "b.xml").write_text(page_xml("closed/b.png", 60, 40, regions))
    result = _convert_page_folder_without(source / "closed", 0o600, tmp_path / "out")  # readable only
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [
        f"error: {source / 'b.xml'}: imageFilename 'closed/b.png': cannot look at "
        f"{source / 'closed' / 'b.png'}: Permission denied"
    ]
    assert (tmp_path / "out" / "list.txt").read_text().split() == ["a.png"]


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_the_dataset_folder_gets_the_permissions_of_any_new_folder(coco_file: Path, umask: int) -> None:
    """The dataset's own folder was 0755 whatever the umask: open to all under 077, closed to the group
    that shares the data under 002, unlike the folders inside it."""
    out = coco_file.parent / "out"
    previous = os.umask(umask)
    try:
        assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(folder.stat().st_mode) for folder in (out, out / "coco")] == [0o777 & ~umask] * 2


@pytest.mark.parametrize("fmt", ["labelme", "page"])
def test_nothing_of_the_format_is_a_usage_error_and_publishes_nothing(coco_file: Path, fmt: str) -> None:
    """A wrong --from (COCO json read as LabelMe, or no XML at all) converts nothing: exit 2, one line."""
    out = coco_file.parent / "out"
    result = run_cli("convert-dataset", coco_file.parent, "--from", fmt, "-o", out)
    assert result.exit_code == 2 and not out.exists()
    (line,) = result.error_lines()
    skipped = "1 file" if fmt == "labelme" else "0 files"  # annotations.json; page walks no .xml file
    assert f"no image read from {coco_file.parent} (nothing in the {fmt} format there" in line
    assert f"{skipped} skipped as another format: check --from" in line and str(out) in line


def test_a_run_whose_every_page_fails_keeps_the_previous_dataset(coco_file: Path) -> None:
    out = coco_file.parent / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    for name in ("a.png", "b.png"):
        (coco_file.parent / name).unlink()
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    assert result.exit_code == 1
    failed = result.error_lines()
    assert len(failed) == 2 and all("not found" in line for line in failed)
    assert "no image read" in result.stderr and "2 failed, listed above" in result.stderr
    assert sorted((out / "list.txt").read_text().split()) == ["a.png", "b.png"]  # still there


def test_an_output_folder_holding_the_images_or_class_list_is_refused(tmp_path: Path) -> None:
    """`--overwrite` into the folder that holds `--images` (or `--classes`) deleted the user's images (or
    class list) once the new dataset was published: a usage error now, and nothing is touched."""
    out = tmp_path / "data"
    scan = write_image(out / "scans" / "p.png", 40, 30)
    (tmp_path / "p.xml").write_text(page_xml("p.png", 40, 30, [("TextRegion", None, "1,1 9,1 9,9")]))
    arguments = ["--from", "page", "--images", scan.parent, "-o", out, "--overwrite"]
    result = run_cli("convert-dataset", tmp_path / "p.xml", *arguments)
    assert result.exit_code == 2 and scan.is_file() and not (out / "list.txt").exists()
    assert result.error_lines() == [
        f"error: --out: {out} holds the --images folder {scan.parent}: choose another output folder"
    ]
    labels = tmp_path / "labels"
    write_image(labels / "p.png", 40, 30)
    (labels / "p.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    classes = out / "classes.txt"
    classes.write_text("table\n")
    result = run_cli(
        "convert-dataset", labels, "--from", "yolo", "--classes", classes, "-o", out, "--overwrite"
    )
    assert result.exit_code == 2 and classes.is_file() and not (out / "list.txt").exists()
    assert result.error_lines() == [
        f"error: --out: {out} holds the --classes file {classes}: choose another output folder"
    ]


def test_a_full_disk_is_an_error_of_the_output_not_a_bug(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (a quota, links refused for --symlink) while the images were copied ended the run as an
    internal error ("a bug", exit 3) with a traceback hint; it is now one line naming --out, exit 2, and
    nothing is left behind."""
    from docsam_cli.datasets import pipeline

    def full(source, target) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write of the copy raises it

    monkeypatch.setattr(pipeline, "_copy_image", full)
    out = coco_file.parent / "out"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    assert result.exit_code == 2
    assert result.error_lines() == [f"error: --out: {out}: cannot write there (No space left on device)"]
    assert sorted(path.name for path in coco_file.parent.iterdir()) == ["a.png", "annotations.json", "b.png"]


class Terminated(Exception):
    """What SIGTERM raises in the test below where the command leaves it alone (it would end pytest)."""


def terminated(number: int, frame) -> None:
    raise Terminated


def test_sigterm_ends_a_conversion_as_ctrl_c_does(coco_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (`timeout`, a scheduler's time limit) killed the run at once, leaving the hidden staging
    folder with the images copied so far beside --out for good; it now ends as Ctrl-C does: the staging
    folder removed, `error: interrupted`, exit 130. Its line said "what was finished stays; rerun to go on",
    as for `segment`, though a conversion keeps nothing: it now says that nothing was written."""
    from docsam_cli.datasets import pipeline

    place = pipeline._place_image

    def placed_then_terminated(*arguments) -> None:
        place(*arguments)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pipeline, "_place_image", placed_then_terminated)
    out = coco_file.parent / "out"
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130
    assert result.error_lines() == [f"error: interrupted; nothing written to {out}"]
    assert sorted(path.name for path in coco_file.parent.iterdir()) == ["a.png", "annotations.json", "b.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_the_staging_folders_of_killed_conversions_are_removed_and_a_running_ones_kept(
    coco_file: Path,
) -> None:
    """A conversion killed outright (SIGKILL, the out-of-memory killer, a scheduler's hard limit) left its
    hidden staging folder beside --out, holding copies of every image converted so far, and every rerun
    left it there and added its own when killed again. A run now removes those folders of its --out whose
    run is gone (no process holds their lock), and leaves those of a conversion still at work."""
    import fcntl

    source = coco_file.parent
    abandoned = source / ".out.0123abcd.partial"
    (abandoned / ".images").mkdir(parents=True)
    (abandoned / ".images" / "a.png").write_bytes(b"a copied image")
    running = source / ".out.4567cdef.partial"
    running.mkdir()
    other = source / ".other.89abcdef.partial"  # another --out's
    other.mkdir()
    held = os.open(running, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", source / "out")
        assert sorted(path.name for path in source.iterdir()) == sorted(
            [".other.89abcdef.partial", ".out.4567cdef.partial", "a.png", "annotations.json", "b.png", "out"]
        )
    finally:
        os.close(held)
    assert result.exit_code == 0, result.stderr


def test_the_previous_dataset_an_overwrite_was_removing_when_killed_is_removed(coco_file: Path) -> None:
    """`--overwrite` renames the previous dataset to `.<name>.<pid>.old` and removes it once the new one is
    in place; a run killed while removing it (a large dataset takes a while) left it there, hidden, for
    good. The next conversion into that --out removes it (unless --out is missing: see the next test)."""
    source = coco_file.parent
    out = source / "out"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    assert result.exit_code == 0, result.stderr
    for left in (source / ".out.4242.0123abcd.old", source / ".out.4242.old"):  # this version's, an earlier
        (left / "image").mkdir(parents=True)
        (left / "image" / "a.png").write_bytes(b"the previous dataset's copy")
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", "out"]


def test_the_previous_dataset_of_an_overwrite_killed_between_its_renames_goes_once_a_rerun_publishes(
    coco_file: Path,
) -> None:
    """`--overwrite` killed between its two renames leaves the previous dataset renamed away and no --out.
    That copy is kept while no new dataset is in place (the only copy of the data: a rerun whose every page
    fails keeps it), but a rerun that published also kept it, hidden and full-size, until the next
    conversion into that --out; the rerun now removes it once its own dataset is in place."""
    source = coco_file.parent
    only = source / ".new.4242.0123abcd.old"  # beside no `new`: the only copy
    (only / "image").mkdir(parents=True)
    (only / "image" / "a.png").write_bytes(b"the previous dataset's copy")
    images = {name: (source / name).read_bytes() for name in ("a.png", "b.png")}
    for name in images:
        (source / name).unlink()
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", source / "new", "--overwrite")
    assert result.exit_code == 1
    assert (only / "image" / "a.png").is_file()  # nothing published: still the only copy
    for name, data in images.items():
        (source / name).write_bytes(data)
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", source / "new", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert (source / "new" / "dataset.json").is_file()
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", "new"]


def test_two_overwrites_of_one_out_by_one_process_at_once_both_publish(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `--overwrite` conversions into one --out at once in one process (threads, or the Python API
    called from two places): each renamed the previous dataset to `.<name>.<pid>.old`, the same name, so the
    second one, coming while the first still removed its previous dataset, failed with 'error: --out: OUT:
    cannot write there (Directory not empty)', exit 2, its conversion lost. The renamed-away folder's name
    is now unique per call: both publish, the last one's dataset is in place, nothing is left beside it."""
    from docsam_cli.datasets import pipeline

    source = coco_file.parent
    out = source / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    remove = pipeline.remove_replaced
    second: list[CliResult] = []
    started = False

    def another_conversion_first(previous: Path | None) -> None:
        nonlocal started
        if not started:  # the first conversion has published, its previous dataset not yet removed
            started = True
            # The second one started before that, its clean-up of what killed runs left finding nothing.
            monkeypatch.setattr(pipeline, "_remove_abandoned", lambda out: [])
            second.append(run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite"))
        remove(previous)

    monkeypatch.setattr(pipeline, "remove_replaced", another_conversion_first)
    first = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    assert first.exit_code == 0, first.stderr
    assert second[0].exit_code == 0, second[0].stderr
    assert (out / "dataset.json").is_file()
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", "out"]


def test_an_out_folder_with_a_long_name_is_written_and_overwritten(coco_file: Path) -> None:
    """An --out whose name fits the file system's limit (255 bytes) but leaves no room for the hidden
    staging folder's `.<name>.<random>.partial` or the replaced dataset's `.<name>.<pid>.old` beside it (a
    name of 240 bytes, 80 letters of a script beyond Latin) was refused: 'cannot write there (File name too
    long)'. The hidden names now cut a long name and end in a hash of it."""
    source = coco_file.parent
    out = source / ("\u6587" * 80)  # 240 UTF-8 bytes
    for extra in ([], ["--overwrite"]):
        result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, *extra)
        assert result.exit_code == 0, result.stderr
        assert (out / "dataset.json").is_file()
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", out.name]


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_staging_folder_removed_by_another_runs_clean_up_before_its_lock_is_replaced(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion makes its staging folder, then locks it. Another conversion into the same --out, cleaning
    up in that instant, finds it unlocked, takes it for a killed run's and removes it. The first run then
    took the folder it could no longer open for one on a file system without locks and went on without a
    staging folder; it now makes another."""
    from docsam_cli.datasets import pipeline

    real_lock = pipeline._lock_folder
    removed: list[Path] = []

    def cleaned_up_first(folder: Path) -> int | None:
        if not removed and folder.name.endswith(".partial"):
            removed.append(folder)
            folder.rmdir()  # another run's `_remove_abandoned`, between this run's mkdir and its lock
        return real_lock(folder)

    monkeypatch.setattr(pipeline, "_lock_folder", cleaned_up_first)
    source = coco_file.parent
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", source / "out")
    assert result.exit_code == 0, result.stderr
    assert removed
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", "out"]
    assert (source / "out" / "dataset.json").is_file()


def test_ctrl_c_while_the_previous_dataset_is_removed_says_the_new_one_is_in_place(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while `--overwrite` removed the previous dataset (a large one takes a while), the new one
    already published, a conversion said "interrupted; nothing written". It now says that the new dataset is
    complete and what is left of the old one, which the next conversion removes; exit 130."""
    import shutil

    source = coco_file.parent
    out = source / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    remove = shutil.rmtree

    def interrupted(path, *args, **kwargs):
        if Path(path).name.endswith(".old"):
            raise KeyboardInterrupt
        remove(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    _assert_new_dataset_in_place(result, out)


def _assert_new_dataset_in_place(result: CliResult, out: Path) -> None:
    """An `--overwrite` into `out` interrupted once its new dataset (2 images) was in place: exit 130, the
    line saying so and naming what is left of the previous dataset."""
    assert result.exit_code == 130
    (left,) = out.parent.glob(f".{out.name}.*.old")
    assert result.error_lines() == [
        "error: interrupted while removing the previous dataset: the new one is complete in "
        f"{out} (2 images); what is left of the previous one, {left}, goes with the next conversion "
        f"into {out}"
    ]
    assert (out / "list.txt").is_file()


def test_an_image_gone_before_it_is_copied_fails_that_page_alone(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image removed (a folder cleaned up, a network share dropping) after it was read for its size but
    before it was copied stopped the whole conversion with 'error: --out: OUT: cannot write there (No such
    file or directory)', exit 2, nothing written. That page now fails alone, naming the image, and the rest
    is published, exit 1."""
    from docsam_cli.datasets import pipeline

    read = pipeline._image

    def read_then_removed(page):
        size = read(page)
        if page.image.name == "a.png":
            page.image.path.unlink()
        return size

    monkeypatch.setattr(pipeline, "_image", read_then_removed)
    out = coco_file.parent / "out"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    assert result.exit_code == 1, result.stderr
    assert result.error_lines() == [
        f"error: {coco_file.parent / 'a.png'}: cannot read: No such file or directory"
    ]
    assert layout.list_names(out) == ["b.png"]
    assert sorted(path.name for path in (out / "image").iterdir()) == ["b.png"]


@pytest.mark.parametrize("renames", [1, 2], ids=["between the renames", "after them"])
def test_sigterm_while_overwrite_swaps_the_datasets_leaves_the_new_one_in_place(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch, renames: int
) -> None:
    """SIGTERM (or Ctrl-C) between the two renames of `--overwrite`'s swap left no --out, the previous
    dataset hidden as `.out.<pid>.old`, and said "interrupted; nothing written"; just after them, the new
    dataset in place, it said the same. The swap now finishes first: the new dataset is complete in --out,
    and the line says so, exit 130."""
    source = coco_file.parent
    out = source / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    rename, done = os.replace, []

    def renamed_then_terminated(old, new) -> None:
        rename(old, new)
        if Path(new).name.endswith(".old") or done:
            done.append(new)
            if len(done) == renames:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", renamed_then_terminated)
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    finally:
        signal.signal(signal.SIGTERM, previous)
    _assert_new_dataset_in_place(result, out)


def test_a_previous_dataset_removed_by_another_conversion_meanwhile_is_no_warning(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another conversion into the same --out, starting while `--overwrite` removed the previous dataset,
    removes it too (`.out.<pid>.old` beside a published `out`): the files it took first made this run warn
    'could not be removed (No such file or directory) ... remove it by hand' about a folder that is gone."""
    import shutil

    source = coco_file.parent
    out = source / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    remove = shutil.rmtree

    def raced(path, *args, **kwargs):
        if Path(path).name.endswith(".old"):
            remove(path)  # the other run's clean-up got there first
        remove(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", raced)
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert "could not be removed" not in result.stderr
    assert not list(source.glob(".out.*.old"))
    assert (out / "list.txt").is_file()


@pytest.mark.slow
def test_a_previous_dataset_that_cannot_be_removed_is_a_warning_not_left_hidden_silently(
    coco_file: Path,
) -> None:
    """`--overwrite` of a dataset whose `image/` is read-only (a colleague's) published the new one and left
    the previous one, renamed to `.out.<pid>.old`, hidden beside it without a word, a copy of every image
    kept for good. The line now names it and says to remove it; the new dataset is in place, exit 0."""
    source = coco_file.parent
    out = source / "out"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out).exit_code == 0
    (out / "image").chmod(0o555)
    completed = run_docsam(
        "convert-dataset",
        str(coco_file),
        "--from",
        "coco",
        "-o",
        str(out),
        "--overwrite",
        "-q",
        obey_permissions=True,
    )
    (left,) = source.glob(".out.*.old")
    (left / "image").chmod(0o755)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.splitlines() == [
        "warning: the previous dataset could not be removed (Permission denied): what is left of it is in "
        f"{left}; remove it by hand"
    ]
    assert stat.S_IMODE((out / "image").stat().st_mode) & stat.S_IWUSR  # the new dataset's


@pytest.mark.parametrize("given", [".", "..", "w/.."])
def test_an_output_folder_holding_the_current_folder_is_refused(
    coco_file: Path, given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out .` or `..` would be renamed away under the shell: a usage error, not an internal one."""
    work = coco_file.parent / "elsewhere" / "w"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", given, "--overwrite")
    assert result.exit_code == 2
    (line,) = result.error_lines()
    assert line.startswith("error: --out:") and "holds the current folder" in line
    assert os.listdir(work) == []


def test_a_relative_output_folder_is_named_after_its_absolute_path(
    coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(coco_file.parent)
    result = run_cli("convert-dataset", "annotations.json", "--from", "coco", "-o", "data/new/..")
    assert result.exit_code == 0, result.stderr
    assert json.loads((coco_file.parent / "data" / "dataset.json").read_text())["name"] == "data"


def test_splits_converted_apart_are_named_after_their_dataset_folder(coco_file: Path, tmp_path: Path) -> None:
    """Roboflow exports its pages split (`train/`, `valid/`); converted apart into `data/rf/train` and
    `data/rf/valid`, they were named 'train' and 'valid', so that `finetune data/rf/train --val
    data/rf/valid` trained the background prompt 'train _background_' and validated with 'valid
    _background_', and segment prompted the run's 'train'. A split's folder now takes its dataset's name."""
    names = []
    for split in ("train", "valid"):
        out = tmp_path / "data" / "rf" / split
        result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
        assert result.exit_code == 0, result.stderr
        names.append(json.loads((out / "dataset.json").read_text())["name"])
    assert names == ["rf", "rf"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--map", "text=\xdcberschrift"),
        ("--drop", "\xdcberschrift"),
        ("--keep", "text,\xdcberschrift"),
        ("--dataset-name", "M\xfcnchen"),
    ],
)
def test_class_and_dataset_names_holding_a_byte_that_is_not_utf8_are_refused(
    coco_file: Path, option: str, value: str
) -> None:
    """`--map $'text=\\xdcberschrift'` (typed in a Latin-1 terminal or script; Python carries the byte as a
    lone surrogate), such a `--drop`, `--keep` or `--dataset-name`, converted every page and then ended in
    'error: internal error: UnicodeEncodeError: ... surrogates not allowed' (exit 3), writing nothing: the
    names go into UTF-8 files, and are the text the model is trained and prompted with. They are a usage
    error naming the option, before any work, as `segment --classes` refuses them."""
    out = coco_file.parent / "out"
    given = os.fsdecode(value.encode("latin-1"))
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, option, given)
    assert result.exit_code == 2, result.stderr
    shown = value.encode("latin-1").decode("ascii", "backslashreplace")
    assert f"{option} '{shown}' holds a byte that is not UTF-8" in _said(result.stderr)
    assert not out.exists()


def test_an_output_folder_named_with_a_byte_that_is_not_utf8_names_the_dataset_percent_encoded(
    coco_file: Path,
) -> None:
    """The dataset name defaults to `--out`'s name: a folder named in Latin-1 (`M\\xfcnchen`) ended the
    conversion in 'error: internal error: UnicodeEncodeError' (exit 3). The name is written with the byte
    percent-encoded, as segment's outputs write such file names."""
    out = coco_file.parent / os.fsdecode(b"M\xfcnchen")
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "dataset.json").read_text())["name"] == "M%FCnchen"


def test_a_split_naming_one_set_alone_is_refused(coco_file: Path) -> None:
    """`--split val=0.3` read as 30 % val and the rest train by a user, normalised to 100 % val: every
    image went to val and none to train, with exit 0."""
    out = coco_file.parent / "o"
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--split", "val=0.3")
    assert result.exit_code == 2 and "only split 'val' is named" in result.stderr
    assert not out.exists()


def test_a_converted_folder_converts_again_without_reading_its_report(
    coco_file: Path, tmp_path: Path
) -> None:
    """The report's `"images": N` made it pass for a COCO file: an error and exit 1, though every page of
    the folder was converted. A COCO file of that name is still read, and a malformed `images` still fails."""
    first, again = tmp_path / "first", tmp_path / "again"
    assert run_cli("convert-dataset", coco_file, "--from", "coco", "-o", first).exit_code == 0
    pages = sorted((first / "list.txt").read_text().split())

    result = run_cli("convert-dataset", first, "--from", "coco", "-o", again)

    assert result.exit_code == 0 and result.error_lines() == [], result.stderr
    assert sorted((again / "list.txt").read_text().split()) == pages
    named = tmp_path / "named" / "convert_report.json"
    named.parent.mkdir()
    named.write_text(coco_file.read_text())
    assert run_cli("convert-dataset", named, "--from", "coco", "-o", tmp_path / "named-out").exit_code == 0
    malformed = json.loads(coco_file.read_text()) | {"images": 3}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "annotations.json").write_text(json.dumps(malformed))
    result = run_cli("convert-dataset", tmp_path / "bad", "--from", "coco", "-o", tmp_path / "bad-out")
    assert result.exit_code != 0 and "images: expected a list" in result.stderr


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_dataset_another_conversion_published_meanwhile_is_replaced_only_with_overwrite(
    overwrite: bool, coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two conversions into one new --out (the same command in two terminals, two jobs): both found --out
    absent as they started, both converted, and the second to finish renamed the first one's dataset away,
    removed it and put its own in place, exit 0 for both; the first one's report ('splits: train 8, val 2')
    then described a dataset that was gone, without --overwrite being given. Without --overwrite a
    conversion now publishes only into a --out still absent or empty, else it stops, exit 2, and leaves the
    other one's dataset as it is; with --overwrite it replaces it, as asked."""
    from docsam_cli.datasets import pipeline

    source, build = coco_file.parent, pipeline._build
    out = source / "out"

    def other_conversion_meanwhile(*args, **kwargs):
        report = build(*args, **kwargs)
        monkeypatch.setattr(pipeline, "_build", build)
        other = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, "--split", "train=1,val=1")
        assert other.exit_code == 0, other.stderr
        return report

    monkeypatch.setattr(pipeline, "_build", other_conversion_meanwhile)
    extra = ["--overwrite"] if overwrite else []
    result = run_cli("convert-dataset", coco_file, "--from", "coco", "-o", out, *extra)
    splits = json.loads((out / "dataset.json").read_text())["splits"]
    assert sorted(path.name for path in source.iterdir()) == ["a.png", "annotations.json", "b.png", "out"]
    if overwrite:
        assert result.exit_code == 0 and splits == {}, result.stderr  # this one, unsplit
    else:
        assert result.exit_code == 2 and splits == {"train": 1, "val": 1}, result.stderr
        assert error_lines(result.stderr) == [
            f"error: --out: {out} was written by another run while this conversion ran; nothing was written "
            "(use --overwrite to replace it)"
        ]
