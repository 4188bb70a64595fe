"""`docsam segment`'s conventions without the network (a stand-in model): choices, -o, -v/-q, one-line
errors for any file name, exit codes, the output folder checked first, the pixel guard on by default."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import (
    CLASSES,
    error_lines,
    help_text,
    invoke,
    run_docsam,
    segment,
    stand_in_model,
    write_page,
)
from convert_helpers import coco_source
from safetensors.torch import save_file

import docsam_cli.batch as batch
from docsam_cli.app import load_command
from docsam_cli.errors import ExitCode
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS
from docsam_cli.writers.formats import FORMATS


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[batch.SegmentRequest]:
    """The network replaced (`stand_in_model`); the requests the runs were given."""
    return stand_in_model(monkeypatch).requests


# --- choices ---------------------------------------------------------------------------------------


def test_help_groups_the_options_and_shows_the_choices():
    text = help_text("segment")
    for panel in ("Input", "Model", "Classes", "Geometry", "Output", "Batch", "Messages"):
        assert f"─ {panel} ─" in text
    for choices in ("fp32|bf16|fp16", "rle|polygon", "publaynet|doclaynet", "base|large"):
        assert choices in text
    assert f"any of {', '.join(FORMATS)}" in text
    assert f"0: no limit). [default: {DEFAULT_MAX_IMAGE_PIXELS}]" in text


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--precision", "fp64", ["fp32", "bf16", "fp16"]),
        ("--mask-format", "png", ["rle", "polygon"]),
        ("--preset", "bogus", ["publaynet", "doclaynet"]),
        ("--variant", "huge", ["base", "large"]),
        ("--format", "coco,pdf", ["coco", "page", "overlay", "jsonl"]),
        ("--device", "gpu", ["auto", "cpu", "cuda", "cuda:N"]),
        ("--device", "cuda:x", ["auto", "cpu", "cuda", "cuda:N"]),
    ],
)
def test_bad_choices_are_refused_with_the_valid_values(tmp_path, option, value, valid):
    code, _, stderr = invoke("segment", "page.png", "-o", str(tmp_path / "out"), option, value)
    assert code == ExitCode.USAGE
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: ") and option in line and repr(value.split(",")[-1]) in line
    assert all(name in line for name in valid)
    assert not (tmp_path / "out").exists()  # refused while parsing: nothing created


def test_variant_and_model_config_together_are_refused(tmp_path, reference_fixtures, shared_data):
    write_page(tmp_path / "page.png")
    for command, source, target in (
        ("segment", tmp_path / "page.png", ["-o", str(tmp_path / "out")]),
        ("evaluate", shared_data / "pages" / "publaynet" / "annotations.json", ["--weights", "docsam-base"]),
    ):
        code, _, stderr = invoke(
            command, str(source), *target, "--variant", "base",
            "--model-config", str(reference_fixtures / "tiny-config.json"),
        )  # fmt: skip
        assert code == ExitCode.USAGE
        assert error_lines(stderr) == [
            "error: --variant and --model-config both name the architecture; give one of them"
        ]


@pytest.mark.parametrize("command", ["segment", "convert-dataset", "finetune", "train"])
def test_an_empty_output_folder_name_is_refused_not_read_as_the_current_folder(
    tmp_path, monkeypatch, command
):
    """finetune and train wrote a whole run (100 MB of weights, checkpoints/) into the current folder."""
    monkeypatch.chdir(tmp_path)
    extra = {"convert-dataset": ["--from", "coco"], "finetune": ["--weights", "w.pt"]}.get(command, [])
    if command == "train":
        extra = ["--from-scratch", "--text-encoder", "minilm"]
    code, _, stderr = invoke(command, "page.png", "-o", "", *extra)
    assert code == ExitCode.USAGE
    (line,) = error_lines(stderr)
    assert "--out" in line and "an empty folder name; write . for the current folder" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["evaluate", "", "--pred", "page.png"], "GROUND_TRUTH"),
        (["evaluate", "truth", "--pred", ""], "--pred"),
        (["convert-dataset", "truth", "--from", "page", "-o", "out", "--images", ""], "--images"),
        (["segment", "page.png", "--model-config", ""], "--model-config"),
        (["download-weights", "--from", "", "docsam-base"], "--from"),
        (["train", "truth", "--from-scratch", "--text-encoder", ""], "--text-encoder"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_an_empty_path_option_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, args, name):
    """`--images "$IMAGES"` with IMAGES unset searched the current folder for the images, `--pred ""` read
    it as the predictions."""
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(*args)
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: {name}: an empty path; write . for the current folder"), line


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["segment", "page.png", "--dpi", "nan"], "--dpi: 'nan' is not a number"),
        (["segment", "page.png", "--dpi", "inf"], "--dpi: 'inf' is not a finite number"),
        (["convert-dataset", "truth", "--from", "page", "-o", "out", "--dpi", "NaN"], "--dpi: 'NaN' is not"),
        (["train", "truth", "-o", "out", "--lr", "nan"], "--lr: 'nan' is not a number"),
        (["finetune", "truth", "-o", "out", "--weights", "w", "--lr", "-inf"], "--lr: '-inf' is not"),
        (["train", "truth", "-o", "out", "--dropout", "1e999"], "--dropout: '1e999' is not a finite number"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value[-2:]),
)
def test_a_number_option_given_nan_or_infinity_says_so(tmp_path, monkeypatch, args, line):
    """`--dpi nan` was refused as not `<= 9600` and `--lr nan` as not `>= 0`, `--lr inf` let through to
    the run's settings: NaN fails every comparison of Typer's range check."""
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(*args)
    assert code == ExitCode.USAGE and stdout == ""
    (error,) = error_lines(stderr)
    assert error.startswith(f"error: {line}"), error


@pytest.mark.parametrize(
    ("command", "typed", "read"),
    [
        (
            "segment",
            ["--device", "CPU", "--mask-format", "POLYGON", "--variant", "Base", "--precision", "FP32"],
            {"device": "cpu", "mask_format": "polygon", "variant": "base", "precision": "fp32"},
        ),
        (
            "evaluate",
            ["--device", "Cuda:1", "--precision", "BF16"],
            {"device": "cuda:1", "precision": "bf16"},
        ),
        (
            "train",
            ["--device", "AUTO", "--best-metric", "map", "--schedule", "Step", "--variant", "LARGE"],
            {"device": "auto", "best_metric": "mAP", "schedule": "step", "variant": "large"},
        ),
        ("finetune", ["--device", "CUDA", "--precision", "Fp16"], {"device": "cuda", "precision": "fp16"}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_choices_are_read_in_any_case_as_their_own_spelling(command, typed, read):
    """`--device CPU` and `--mask-format POLYGON` were refused where `--preset PubLayNet` and `--format
    PAGE` are read; the run (and run.json) sees each value as the option spells it."""
    arguments = {"segment": ["page.png"], "evaluate": ["truth"]}.get(command, ["data", "-o", "out"])
    with load_command(command).make_context(command, [*arguments, *typed]) as context:
        assert {name: context.params[name] for name in read} == read


def test_help_shows_choices_read_in_any_case_as_spelt(monkeypatch):
    """Typer shows the choices of an option read in any case lower-cased (`<map|ap50|...>`)."""
    monkeypatch.setenv("COLUMNS", "200")  # one line each
    code, stdout, _ = invoke("train", "--help")
    assert code == 0 and "<mAP|AP50|AP75|mAF|mIoU>" in stdout


@pytest.mark.parametrize("command", ["segment", "convert-dataset", "finetune", "train"])
def test_an_output_folder_named_dash_is_refused_not_made(tmp_path, monkeypatch, command):
    """`-o -`, stdout as elsewhere on the command line, made a folder named `-` and wrote into it."""
    monkeypatch.chdir(tmp_path)
    write_page(tmp_path / "page.png")
    extra = {"convert-dataset": ["--from", "coco"], "finetune": ["--weights", "w.pt"]}.get(command, [])
    if command == "train":
        extra = ["--from-scratch", "--text-encoder", "minilm"]
    code, stdout, stderr = invoke(command, "page.png", "-o", "-", *extra)
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = error_lines(stderr)
    assert "--out" in line and "a folder is needed, not - (stdout); write ./- for a folder named -" in line
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(("command", "name"), [("segment", "INPUT"), ("convert-dataset", "SOURCE")])
def test_an_empty_input_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, command, name):
    """`docsam segment "$SCANS"` with SCANS unset segmented every image of the current folder."""
    monkeypatch.chdir(tmp_path)
    write_page(tmp_path / "page.png")
    extra = ["--from", "coco"] if command == "convert-dataset" else []
    code, stdout, stderr = invoke(command, "", "-o", str(tmp_path / "out"), *extra)
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = error_lines(stderr)
    assert f"{name}: an empty path; write . for the current folder" in line
    assert not (tmp_path / "out").exists()


def test_a_path_option_written_with_equals_expands_the_tilde_the_shell_left(tmp_path, monkeypatch, requests):
    """`--out=~/results` made a folder named `~` in the current folder, and `--from=~/usb/w.pth` or
    `--model-config=~/c.json` were files not found: the shell expands `~` only at the start of a word."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    page = write_page(tmp_path / "page.png")
    code, _, stderr = invoke("segment", str(page), "--out=~/results", *CLASSES)
    assert code == ExitCode.OK, stderr
    assert requests[0].out == home / "results" and list(work.iterdir()) == []
    (home / "map.json").write_text('{"figure": "GraphicRegion:stamp"}')
    code, _, stderr = invoke("segment", str(page), "-o", "out", "--page-map=~/map.json", *CLASSES)
    assert code == ExitCode.OK and requests[1].page_map == {"figure": ("GraphicRegion", "stamp")}, stderr
    for command, expected in (
        (["segment", str(page), "--model-config=~/architecture.json"], ExitCode.USAGE),
        (["download-weights", "--from=~/usb/w.pth", "docsam-base"], ExitCode.FAILED),
        (["evaluate", "~/truth.json", "--pred", str(page)], ExitCode.USAGE),
        (["evaluate", str(page), "--pred", str(page), "--json=~"], ExitCode.USAGE),  # "is a folder"
    ):
        code, _, stderr = invoke(*command)
        assert code == expected and str(home) in stderr and "~" not in stderr, stderr


def test_an_input_glob_quoted_for_docsam_expands_its_tilde(tmp_path, monkeypatch, requests):
    """`docsam segment '~/scans/**/*.png'`, quoted so that docsam expands the `**`, found nothing: the
    `~` was a folder of that name."""
    home = tmp_path / "home"
    (home / "scans" / "vol1").mkdir(parents=True)
    write_page(home / "scans" / "vol1" / "page.png")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    code, _, stderr = invoke("segment", "~/scans/**/*.png", "-o", "out", *CLASSES)
    assert code == ExitCode.OK, stderr
    assert requests[0].inputs == (f"{home}/scans/**/*.png",)
    code, _, stderr = invoke("convert-dataset", "~/annotations", "--from", "page", "-o", "converted")
    assert f"error: {home}/annotations: no such file or folder" in stderr


def test_choices_are_case_insensitive_where_names_are(tmp_path, requests):
    write_page(tmp_path / "page.png")
    code, _, stderr = invoke(
        "segment", str(tmp_path / "page.png"), "-o", str(tmp_path / "out"), "--preset", "DocLayNet",
        "--format", "JSONL,Coco",
    )  # fmt: skip
    assert code == 0, stderr
    (request,) = requests
    assert request.formats == {"jsonl", "coco"} and "Section-header" in request.class_names


def test_a_repeated_format_option_adds_formats(tmp_path, requests):
    """`--format page --format coco` wrote COCO only: the last --format silently replaced the others."""
    write_page(tmp_path / "page.png")
    code, _, stderr = invoke(
        "segment", str(tmp_path / "page.png"), "-o", str(tmp_path / "out"),
        "--format", "page", "--format", "coco,page", "--format", "jsonl",
    )  # fmt: skip
    assert code == 0, stderr
    (request,) = requests
    assert request.formats == {"page", "coco", "jsonl"}


def test_an_empty_format_among_repeated_ones_is_a_usage_error(tmp_path, requests):
    """`--format page --format ""` (a variable left empty in a script) was silently ignored since repeated
    --format options add up; an empty --format is refused again, as it was alone."""
    write_page(tmp_path / "page.png")
    code, _, stderr = invoke(
        "segment", str(tmp_path / "page.png"), "-o", str(tmp_path / "out"), "--format", "page", "--format", ""
    )  # fmt: skip
    assert code == 2 and requests == []
    assert "--format" in stderr and "no output format given" in stderr


@pytest.mark.parametrize("limit", ["0", "3"])
def test_fail_fast_and_max_failures_together_are_a_usage_error(tmp_path, requests, limit):
    """`--max-failures 3 --fail-fast` stopped at the first failure, the limit given ignored without a word."""
    write_page(tmp_path / "page.png")
    page = str(tmp_path / "page.png")
    code, _, stderr = segment(tmp_path / "out", page, "--max-failures", limit, "--fail-fast")
    assert code == ExitCode.USAGE and requests == []
    (line,) = error_lines(stderr)
    assert line == "error: --fail-fast is --max-failures 0; give one of them"
    assert not (tmp_path / "out").exists()


def test_pages_per_batch_without_isolate_is_a_usage_error(tmp_path, requests):
    """`--pages-per-batch 8` without `--isolate` still gave the model one page at a time (the reference's
    grouping), the pages asked for passed over without a word; it is refused, and taken with `--isolate`."""
    page = str(write_page(tmp_path / "page.png"))
    code, _, stderr = segment(tmp_path / "out", page, "--pages-per-batch", "8")
    assert code == ExitCode.USAGE and requests == []
    (line,) = error_lines(stderr)
    assert line == "error: --pages-per-batch needs --isolate (without it each page is a batch of its own)"
    assert not (tmp_path / "out").exists()
    code, _, stderr = segment(tmp_path / "out", page, "--pages-per-batch", "8", "--isolate")
    assert code == 0, stderr
    (request,) = requests
    assert request.isolate and request.pages_per_batch == 8


def test_a_class_map_naming_a_class_the_run_does_not_segment_is_a_warning(tmp_path, requests):
    """`--classes table,figure --page-map Tabel=GraphicRegion:stamp` (a typo, or a class of another run's
    list) wrote the tables as TableRegions without a word, the entry left unused; a `warning:` line names
    the classes of each map that match none of the run's (as its keys match: case and spacing aside), and
    the run goes on."""
    page = str(write_page(tmp_path / "page.png"))
    page_map, alto_map = "Tabel=GraphicRegion:stamp,FIGURE=ImageRegion", "figur=Illustration:StampZone"
    code, _, stderr = segment(tmp_path / "out", page, "--page-map", page_map, "--alto-map", alto_map)
    assert code == 0 and len(requests) == 1
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --page-map names a class that the run does not segment, which it leaves unused: 'Tabel' "
        "(the classes: text, figure)",
        "warning: --alto-map names a class that the run does not segment, which it leaves unused: 'figur' "
        "(the classes: text, figure)",
    ]


def test_each_option_string_is_parsed_once_into_the_request(tmp_path, requests):
    write_page(tmp_path / "page.png")
    args = ["--short-side", "700,900", "--window", "512", "--stride", "256,200", "--pages", "2-"]
    code, _, stderr = segment(tmp_path / "out", str(tmp_path / "page.png"), *args, "--fail-fast")
    assert code == 0, stderr
    (request,) = requests
    assert (request.geometry.short_side, request.geometry.window, request.geometry.stride) == (
        (700, 900),
        (512, 512),
        (256, 200),
    )
    assert request.pages is not None and request.pages.select(4) == [2, 3, 4]
    assert request.max_failures == 0 and request.class_names == ("text", "figure")


# --- messages --------------------------------------------------------------------------------------


def test_quiet_silences_the_summary_but_never_errors_nor_data(tmp_path, requests):
    page = write_page(tmp_path / "page.png")
    missing = tmp_path / "missing.png"
    code, records, stderr = segment(tmp_path / "loud", str(page), str(missing))
    assert code == ExitCode.FAILED and len(records) == 2
    assert "1 pages segmented" in stderr and len(error_lines(stderr)) == 1
    for args in (["-q", "segment"], ["segment", "--quiet"]):
        code, stdout, stderr = invoke(
            *args, str(page), str(missing), "-o", str(tmp_path / "-".join(args)), *CLASSES
        )
        assert code == ExitCode.FAILED and len(stdout.splitlines()) == 2
        assert stderr.splitlines() == error_lines(stderr) and str(missing) in stderr


def test_json_lines_reach_stdout_while_the_progress_bar_is_drawn(tmp_path, requests, monkeypatch):
    """With stderr on a terminal, the progress bar's display took over stdout, so `docsam segment scans/
    | jq ...` or `> results.jsonl` typed in a terminal got no line: they were printed on the terminal."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich's is_terminal: stderr shows the bar
    page = write_page(tmp_path / "page.png")
    code, records, stderr = segment(tmp_path / "out", str(page), str(tmp_path / "missing.png"))
    assert code == ExitCode.FAILED and [record["page_id"] for record in records] == ["page", None]
    assert '"page_id":' not in stderr and "missing.png: no such file" in stderr


def test_force_color_in_the_environment_draws_no_progress_bar_into_a_log_file(
    tmp_path, requests, monkeypatch
):
    """A batch job's environment carrying FORCE_COLOR (set for CI, or in a shell profile), which Rich takes
    for a terminal, had the bar redrawn ten times a second into the job's log file (200 KB of control
    sequences for ten pages)."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    page = write_page(tmp_path / "page.png")
    code, records, stderr = segment(tmp_path / "out", str(page))
    assert code == ExitCode.OK and len(records) == 1
    assert "\x1b[?25l" not in stderr and "\u2501" not in stderr, stderr  # the bar hides the cursor, draws ━
    assert "1 pages segmented" in stderr


def test_verbose_logs_geometry_and_page_timings_and_debug_more(tmp_path, requests):
    page = write_page(tmp_path / "page.png")
    code, _, stderr = segment(tmp_path / "quiet-by-default", str(page))
    assert code == 0 and "info:" not in stderr
    code, _, stderr = invoke("-v", "segment", str(page), "-o", str(tmp_path / "v"), *CLASSES)
    assert code == 0
    assert "info: geometry: short side 800; windows 640x640 at stride 320x320" in stderr
    assert "info: page: 1 instances; model" in stderr and "debug:" not in stderr
    code, _, stderr = invoke("-v", "segment", str(page), "-o", str(tmp_path / "v"), *CLASSES, "-v")
    assert code == 0 and "debug: page: done by an earlier run, skipped" in stderr


@pytest.mark.parametrize("name", ["invoice [draft].png", "a[/red]b.png", "new\nline.png", "[bold]x[/].pdf"])
def test_any_file_name_is_shown_exactly_on_one_line(tmp_path, requests, name):
    bad = tmp_path / name  # `/` in a name makes a folder: the path holds `[/red]` all the same
    bad.parent.mkdir(exist_ok=True)
    bad.write_text("not an image")
    good = write_page(tmp_path / "good.png")
    code, records, stderr = segment(tmp_path / "out", str(bad), str(good))
    assert code == ExitCode.FAILED
    (line,) = error_lines(stderr)
    shown = str(bad).replace("\n", "\\n")
    assert line.startswith(f"error: {shown}: ")
    assert f"  failed: {shown}: " in stderr
    assert [record.get("error") is None for record in records] == [False, True]


# --- exit codes and failing cleanly ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [(RuntimeError("boom [/red]\nagain"), ExitCode.INTERNAL), (KeyboardInterrupt(), ExitCode.INTERRUPTED)],
)
def test_unexpected_errors_are_one_line(tmp_path, monkeypatch, error, code):
    def broken(request, reporter):
        raise error

    monkeypatch.setattr(batch, "run_segment", broken)
    exit_code, _, stderr = invoke("segment", "page.png", "-o", str(tmp_path))
    assert exit_code == code
    if code == ExitCode.INTERNAL:
        assert stderr.splitlines() == [
            "error: internal error: RuntimeError: boom [/red]\\nagain (rerun with --debug for the traceback)"
        ]
    else:  # Ctrl-C says so on one line (Typer alone would exit 130 silently)
        assert [line.split(" (")[0] for line in stderr.splitlines()] == ["error: interrupted"]


def test_an_interrupted_evaluation_says_that_it_wrote_no_report(tmp_path, monkeypatch):
    """Ctrl-C during `evaluate` said "interrupted (what was finished stays; rerun to go on)", as `segment`
    says, though an evaluation keeps nothing (no --json report) and a rerun starts over."""
    from docsam_cli.datasets import ground_truth

    def interrupted(*arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(ground_truth, "load_ground_truth", interrupted)
    monkeypatch.chdir(tmp_path)
    for name in ("gt.json", "coco.json"):
        (tmp_path / name).write_text("{}")
    report = tmp_path / "report.json"
    options = ["--gt-format", "coco", "--pred-format", "coco", "--json", str(report)]
    exit_code, _, stderr = invoke("evaluate", "gt.json", "--pred", "coco.json", *options)
    assert exit_code == ExitCode.INTERRUPTED
    assert stderr.splitlines() == ["error: interrupted; no report written"]
    assert not report.exists()


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_an_unusable_output_folder_stops_before_the_model_loads(tmp_path, monkeypatch, case):
    def no_model(spec):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(batch, "resolve_model", no_model)
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if case == "a file" else blocker / "out"
    code, stdout, stderr = invoke("segment", str(write_page(tmp_path / "page.png")), "-o", str(out))
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"error: --out {out}: ")
    assert ("not a folder" if case == "a file" else "cannot create the folder: Not a directory") in line


@pytest.mark.parametrize("state_file", ["classes.json", "stems.json"])
def test_a_full_disk_before_the_first_page_is_an_unusable_output_folder(tmp_path, monkeypatch, state_file):
    """The empty probe file fits on a full disk, the folder's own state files do not: a usage error naming
    the folder (exit 2, no page), not an internal error."""

    def no_model():
        raise AssertionError("the model must not load")

    def disk_full(path, text):
        if Path(path).name == state_file:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    weights = SimpleNamespace(
        entry=None, path=Path("stand-in.safetensors"), keep_size=False, patch=None, short_range=None
    )
    monkeypatch.setattr(batch, "resolve_model", lambda spec: SimpleNamespace(weights=weights, load=no_model))
    monkeypatch.setattr(batch, "atomic_write_text", disk_full)
    out = tmp_path / "out"
    code, stdout, stderr = invoke("segment", str(write_page(tmp_path / "page.png")), "-o", str(out), *CLASSES)
    assert code == ExitCode.USAGE and stdout == ""
    assert stderr.splitlines() == [f"error: --out {out}: cannot write in the folder: No space left on device"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["read-only", "cannot be created"])
def test_a_read_only_output_folder_is_refused_in_a_real_process(tmp_path, case):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = locked if case == "read-only" else locked / "out"
    completed = run_docsam(
        "segment", "page.png", "-o", str(out), "-w", "/no/such/weights.pth", obey_permissions=True
    )
    locked.chmod(0o755)
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    (line,) = completed.stderr.splitlines()  # the folder, not the missing weights: it was checked first
    expected = "cannot write in the folder" if case == "read-only" else "cannot create the folder"
    assert line == f"error: --out {out}: {expected}: Permission denied"


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["page", ".docsam", ".docsam/records"])
def test_a_read_only_folder_the_run_writes_in_is_refused_before_the_model(tmp_path, folder):
    """`OUT/page/` owned by a colleague: one line naming it, before the weights are looked for, not every page
    failing after the model. A read-only folder the run does not write in (`alto/`, unasked) is no matter."""
    out = tmp_path / "out"
    for name in (folder, "alto"):
        (out / name).mkdir(parents=True)
        (out / name).chmod(0o555)
    completed = run_docsam(
        "segment", "page.png", "-o", str(out), "-w", "/no/such/weights.pth", obey_permissions=True
    )
    for name in (folder, "alto"):
        (out / name).chmod(0o755)
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line == f"error: --out {out}: cannot write in {out / folder}: Permission denied"


@pytest.mark.slow
@pytest.mark.parametrize("role", ["--out", "--weights", "SOURCE", "--json"])
def test_a_path_in_a_folder_that_may_not_be_searched_is_one_line_not_an_internal_error(tmp_path, role):
    """Python's `Path.exists()` and `is_dir()` raise for a path in a folder without search permission, which
    ended every command so: exit 3, 'internal error: PermissionError', a bug report asked for."""
    page = write_page(tmp_path / "page.png")
    closed = tmp_path / "closed"
    closed.mkdir()
    path = closed / {"--weights": "model.safetensors", "SOURCE": "page.xml", "--json": "report.json"}.get(
        role, "out"
    )
    out, weights = str(tmp_path / "out"), "/no/such/weights.safetensors"
    command = {
        "--out": ["segment", str(page), "-o", str(path), "-w", weights],
        "--weights": ["segment", str(page), "-o", out, "-w", str(path)],
        "SOURCE": ["convert-dataset", str(path), "--from", "page", "-o", out],
        "--json": ["evaluate", str(path.parent), "--pred", str(page), "--json", str(path)],
    }[role]
    closed.chmod(0o600)  # readable, not searchable
    try:
        completed = run_docsam(*command, obey_permissions=True)
    finally:
        closed.chmod(0o755)
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert completed.stderr.splitlines() == [f"error: {path}: Permission denied"]


@pytest.mark.slow
def test_weights_that_cannot_be_read_say_so_not_that_they_do_not_exist(tmp_path):
    """safetensors calls a file it may not open "No such file or directory": the user, who sees the file
    there, was sent looking for the wrong fault."""
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    weights.chmod(0)
    completed = run_docsam(
        "segment",
        str(write_page(tmp_path / "page.png")),
        "-o",
        str(tmp_path / "out"),
        "-w",
        str(weights),
        obey_permissions=True,
    )
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert error_lines(completed.stderr) == [f"error: {weights}: cannot read: Permission denied"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_disk_is_one_error_line_and_exit_1(tmp_path, tiny_weights):
    """`docsam segment ... > results.jsonl` on a full disk: not an internal error (exit 3) but one line
    naming stdout and the reason, exit 1, as for any failed write."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")  # fails at once: its error JSON line is the first data written
    full_stdout = "import os; os.dup2(os.open('/dev/full', os.O_WRONLY), 1)"
    completed = run_docsam(
        "segment", str(empty), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), prelude=full_stdout
    )
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert error_lines(completed.stderr) == [
        f"error: {empty}: empty file (0 bytes)",
        "error: stdout: cannot write: No space left on device",
    ]


FULL_STDERR = "import os; os.dup2(os.open('/dev/full', os.O_WRONLY), 2)"  # `2> run.log` on a full disk


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_messages_that_cannot_be_written_lose_no_page(tmp_path, tiny_weights):
    """`docsam segment ... > results.jsonl 2> run.log`, the log on a full disk (a home over quota): the
    first `error:` line that could not be written ended the run, that page's JSON line and every page after
    it lost. Messages go where they can; the data and the exit code are the run's."""
    empty = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in empty:
        path.write_bytes(b"")  # each fails at once, with an error: line and an error JSON line
    out, weights = str(tmp_path / "out"), str(tiny_weights)
    completed = run_docsam("segment", *map(str, empty), "-o", out, "-w", weights, prelude=FULL_STDERR)
    assert completed.returncode == ExitCode.FAILED
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    expected = [(str(path), f"{path}: empty file (0 bytes)") for path in empty]
    assert [(line["input"], line["error"]) for line in lines] == expected


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_report_that_cannot_be_written_fails_no_command(tmp_path):
    """convert-dataset and evaluate with stderr on a full disk did their work but exited 1 (their report
    or tables could not be printed), and evaluate's `--json -` report was never written."""
    source = coco_source(tmp_path / "source")
    converted = run_docsam("convert-dataset", str(source), "--from", "coco", "-o", str(tmp_path / "data"),
                           prelude=FULL_STDERR)  # fmt: skip
    assert converted.returncode == ExitCode.OK
    assert (tmp_path / "data" / "dataset.json").is_file()
    annotations = str(source / "annotations.json")
    evaluated = run_docsam("evaluate", annotations, "--pred", annotations, "--json", "-", prelude=FULL_STDERR)
    assert evaluated.returncode == ExitCode.OK
    assert json.loads(evaluated.stdout)["images"] == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "command",
    [
        ["--version"],
        ["download-weights", "--list"],
        ["segment", "--list-presets"],
        ["--help"],
        ["train", "--help"],
    ],
    ids=" ".join,
)
def test_listings_on_a_full_disk_are_one_error_line_and_exit_1(command):
    """`docsam --version > version.txt` on a full disk printed Python's traceback (exit 1), and
    `download-weights --list` and `segment --list-presets` ended as an internal error (exit 3), as did
    `docsam --help` (Rich's traceback) and a command's `--help`; each is now one line naming stdout, exit 1,
    as for segment's JSON lines."""
    full_stdout = "import os; os.dup2(os.open('/dev/full', os.O_WRONLY), 1)"
    completed = run_docsam(*command, prelude=full_stdout)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert completed.stderr == "error: stdout: cannot write: No space left on device\n"


@pytest.mark.parametrize("command", [["--help"], ["segment", "--help"]], ids=" ".join)
def test_help_to_a_closed_stdout_is_one_error_line_and_exit_1(command):
    """`docsam --help >&-` printed nothing and exited 0, where `--version >&-` says stdout is closed."""
    completed = run_docsam(*command, prelude="import os, sys; os.close(1); sys.stdout = None")  # as `>&-`
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert completed.stderr == "error: stdout: cannot write: stdout is closed\n"


def test_json_lines_are_utf_8_under_a_locale_of_another_encoding(tmp_path, tiny_weights):
    """Under a Latin-1 locale (`LANG=de_DE.ISO-8859-1`, as Python then sets up stdout) a page's line was
    written in Latin-1, not the UTF-8 JSON requires, and a name beyond Latin-1 ended the run as an internal
    error (UnicodeEncodeError, exit 3)."""
    names = [tmp_path / "première.png", tmp_path / "報告.png"]
    for path in names:
        path.write_bytes(b"")  # fail at once: their error lines are the data written
    latin1_stdout = "import sys; sys.stdout.reconfigure(encoding='latin-1')"
    out = str(tmp_path / "out")
    weights = str(tiny_weights)
    completed = run_docsam("segment", *map(str, names), "-o", out, "-w", weights, prelude=latin1_stdout)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]  # read as UTF-8
    assert [line["input"] for line in lines] == list(map(str, names))


def test_a_closed_stdout_is_one_error_line_and_exit_1(tmp_path, tiny_weights):
    """`docsam segment ... >&-` (a job runner that closes stdout): an internal error (exit 3,
    AttributeError), now one line naming stdout, exit 1, as a stdout on a full disk."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")  # fails at once: its error JSON line is the first data written
    closed_stdout = "import os, sys; os.close(1); sys.stdout = None"  # as Python starts under `>&-`
    completed = run_docsam(
        "segment", str(empty), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), prelude=closed_stdout
    )
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert error_lines(completed.stderr) == [
        f"error: {empty}: empty file (0 bytes)",
        "error: stdout: cannot write: stdout is closed",
    ]


@pytest.mark.parametrize(
    ("stdin", "reason"),
    [
        ("import os, sys; os.close(0); sys.stdin = None", "stdin is closed"),  # as Python starts under `<&-`
        ("import os; os.dup2(os.open(os.devnull, os.O_WRONLY), 0)", "Bad file descriptor"),  # `0>file`
    ],
    ids=["closed", "write-only"],
)
def test_a_stdin_that_cannot_be_read_is_one_error_line_and_exit_1(tmp_path, tiny_weights, stdin, reason):
    """`docsam segment -` run with stdin closed (`<&-`, a daemon or job runner that closes it) or not open
    for reading: an internal error (exit 3), now one line naming stdin, as a list that cannot be decoded."""
    out = str(tmp_path / "out")
    completed = run_docsam("segment", "-", "-o", out, "-w", str(tiny_weights), prelude=stdin)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert error_lines(completed.stderr) == [f"error: -: cannot read the list of paths on stdin: {reason}"]


def test_failing_to_write_the_run_files_is_one_line_and_a_rerun_writes_them(tmp_path, requests):
    page = write_page(tmp_path / "page.png")
    out = tmp_path / "out"
    (out / "coco.json").mkdir(parents=True)  # coco.json cannot be written
    code, records, stderr = segment(out, str(page), "--format", "coco,jsonl")
    assert code == ExitCode.FAILED and "error" not in records[0]
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: {out / 'coco.json'}: cannot write the run's files: ")
    assert "Traceback" not in stderr
    summary = next(text for text in stderr.splitlines() if "pages segmented" in text)
    assert summary.startswith("1 pages segmented, 0 skipped (already done), 0 failed in ")  # pages only
    assert summary.endswith("; the run's files were not written")
    (out / "coco.json").rmdir()
    code, records, stderr = segment(out, str(page), "--format", "coco,jsonl")
    assert code == ExitCode.OK and records[0]["skipped"] is True
    assert len(json.loads((out / "coco.json").read_text())["images"]) == 1


def test_an_output_folder_removed_during_the_run_is_one_line_and_a_rerun_redoes_its_pages(
    tmp_path, requests, monkeypatch
):
    """`rm -r OUT` while the run wrote in it: the writes quietly made the folder again and the run ended
    with exit 0, its coco.json without the pages written before, which it had reported done. Now one line
    naming the folder, exit 1, no run files over what is left; the rerun redoes the pages lost."""
    first, second = write_page(tmp_path / "a.png"), write_page(tmp_path / "b.png")
    out = tmp_path / "out"
    write = batch.SegmentRun._write

    def remove_the_folder_then_write(run, page, *args):
        if page.page_id == "b":  # "a" is written: a failure limit writes each page before the next
            shutil.rmtree(out)
        return write(run, page, *args)

    monkeypatch.setattr(batch.SegmentRun, "_write", remove_the_folder_then_write)
    code, _, stderr = segment(out, str(first), str(second), "--format", "coco,jsonl", "--max-failures", "5")
    assert code == ExitCode.FAILED and "Traceback" not in stderr
    assert error_lines(stderr) == [
        f"error: --out {out}: the folder was removed while the run wrote in it, with the pages written "
        "before; the run's files were not written (a re-run redoes those pages)"
    ]
    assert not (out / "coco.json").exists()
    monkeypatch.setattr(batch.SegmentRun, "_write", write)
    code, records, stderr = segment(out, str(first), str(second), "--format", "coco,jsonl")
    assert code == ExitCode.OK, stderr
    assert "skipped" not in records[0] and records[1]["skipped"] is True  # "a" went with the folder
    assert len(json.loads((out / "coco.json").read_text())["images"]) == 2


def test_the_pixel_guard_is_on_by_default_and_0_turns_it_off(tmp_path, requests):
    page = write_page(tmp_path / "page.png", height=60, width=50)
    code, _, _ = segment(tmp_path / "default", str(page))
    assert code == 0 and requests[-1].max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    code, _, stderr = segment(tmp_path / "small", str(page), "--max-image-pixels", "2000")
    assert code == ExitCode.FAILED
    (line,) = error_lines(stderr)
    assert str(page) in line and "2000" in line
    code, _, stderr = segment(tmp_path / "off", str(page), "--max-image-pixels", "0")
    assert code == 0 and requests[-1].max_image_pixels is None, stderr


def test_paths_on_stdin_are_passed_through(tmp_path, requests):
    pages = [write_page(tmp_path / f"p{index}.png") for index in range(2)]
    code, stdout, stderr = invoke(
        "segment", "-", "-o", str(tmp_path / "out"), *CLASSES, stdin="".join(f"{page}\n" for page in pages)
    )
    assert code == 0, stderr
    assert [json.loads(line)["input"] for line in stdout.splitlines()] == [str(page) for page in pages]


def test_convert_dataset_into_a_place_it_cannot_write_is_a_usage_error(tmp_path, shared_data):
    """An --out below a file (or on a read-only mount) was an internal error (exit 3) from mkdtemp."""
    (tmp_path / "a-file").write_text("")
    source = shared_data / "pages" / "publaynet" / "annotations.json"
    code, _, stderr = invoke(
        "convert-dataset", str(source), "--from", "coco", "-o", str(tmp_path / "a-file" / "x")
    )
    assert code == ExitCode.USAGE
    (line,) = error_lines(stderr)
    assert f"{tmp_path / 'a-file' / 'x'}: cannot write there" in line


def test_a_terminal_width_of_zero_still_shows_errors_and_help(tmp_path):
    """COLUMNS=0 (some containers and editor shells): Rich printed every message, and the help, at width 0,
    that is not at all."""
    zero = f"import os; os.environ['COLUMNS'] = '0'; os.environ['DOCSAM_HOME'] = {str(tmp_path / 'home')!r}"
    result = run_docsam("segment", str(tmp_path / "page.png"), "-o", str(tmp_path / "out"), prelude=zero)
    assert result.returncode == ExitCode.USAGE  # no weights downloaded in that DOCSAM_HOME
    (line,) = error_lines(result.stderr)
    assert "docsam download-weights docsam-large" in line
    shown = run_docsam("--help", prelude=zero)
    assert "segment" in shown.stdout and len(shown.stdout) > 200


def test_an_empty_dataset_name_is_refused(tmp_path, shared_data):
    """It wrote the background prompt " _background_"."""
    source = shared_data / "pages" / "publaynet" / "annotations.json"
    code, _, stderr = invoke(
        "convert-dataset", str(source), "--from", "coco", "-o", str(tmp_path / "o"), "--dataset-name", " "
    )
    assert (
        code == ExitCode.USAGE and "--dataset-name: an empty name" in stderr and not (tmp_path / "o").exists()
    )
