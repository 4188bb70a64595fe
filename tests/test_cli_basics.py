"""The `docsam` app itself: version, help, commands loaded only when used, exit codes of a real process."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_lines, help_text, invoke, run_docsam

from docsam_cli import __version__
from docsam_cli.app import COMMANDS
from docsam_cli.errors import ExitCode

HEAVY_MODULES = ("torch", "torchvision", "transformers", "scipy", "cv2", "lxml", "pycocotools")
# Installed before the app runs: at exit, report which heavy modules the process imported.
IMPORT_PROBE = f"""
import atexit, json, sys
atexit.register(lambda: print("HEAVY " + json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]),
                              file=sys.stderr))
"""


def test_version_and_help():
    code, stdout, _ = invoke("--version")
    assert code == 0 and stdout.strip() == f"docsam {__version__}"
    text = help_text()
    assert "Usage" in text
    for entry in COMMANDS:
        assert f"{entry.name} {entry.summary}" in text


def test_module_entry_point():
    completed = run_docsam("--version")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"docsam {__version__}"


@pytest.mark.parametrize("entry", COMMANDS, ids=[entry.name for entry in COMMANDS])
def test_every_registered_command_loads_with_the_message_options(entry):
    text = help_text(entry.name)
    for option in ("--verbose", "--quiet", "--debug", "--help"):
        assert option in text


@pytest.mark.parametrize(
    "command", [[], *([entry.name] for entry in COMMANDS)], ids=lambda c: " ".join(c) or "docsam"
)
def test_help_shows_no_value_for_flags_and_counts(command):
    """`--recursive <bool>`, `--verbose -v <int>`: read as options taking a value (`segment scans -v 2`
    took 2 as an input)."""
    text = help_text(*command)
    assert "<bool>" not in text and "-v <int>" not in text, text


@pytest.mark.parametrize(
    ("command", "paragraph"),
    [
        (
            [],
            "Exit codes: 0 every page or file done, 1 some failed (each named by an error: line), "
            "2 usage error (nothing processed), 3 internal error, 130 interrupted.",
        ),
        (
            ["segment"],
            "Pages already done in --out are skipped (rerun after an interruption); --overwrite redoes them. "
            "Several GPUs or machines: run the same command under torchrun, the processes share the pages.",
        ),
    ],
    ids=lambda value: " ".join(value) or "docsam" if isinstance(value, list) else "",
)
def test_help_wraps_a_paragraph_to_the_terminal_not_at_the_sources_breaks(monkeypatch, command, paragraph):
    """Typer's Rich help kept the docstring's line breaks: `docsam --help` broke its exit codes after '2 usage
    error', on 80 columns a line of three words between two full ones, on 200 two lines where one fits."""
    monkeypatch.setenv("COLUMNS", "200")
    code, stdout, _ = invoke(*command, "--help")
    assert code == 0 and paragraph in [line.strip() for line in stdout.splitlines()], stdout


LIGHT_INVOCATIONS = [["--version"], ["--help"], ["download-weights", "--list"]]
LIGHT_INVOCATIONS += [[entry.name, "--help"] for entry in COMMANDS]


@pytest.mark.parametrize("args", LIGHT_INVOCATIONS, ids=" ".join)
def test_help_version_and_listing_import_no_heavy_module(args, tmp_path, monkeypatch):
    """The CLI starts at once: torch, torchvision, transformers, scipy, cv2, lxml and pycocotools load only
    when a command needs them (this fails for a command module that imports them at module level)."""
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "cache"))
    completed = run_docsam(*args, prelude=IMPORT_PROBE)
    assert completed.returncode == 0, completed.stderr
    probe = [line for line in completed.stderr.splitlines() if line.startswith("HEAVY ")]
    heavy = json.loads(probe[-1].removeprefix("HEAVY "))
    assert heavy == [], f"`docsam {' '.join(args)}` imported {heavy}: a module-level import in its command"


def test_usage_error_in_a_real_process_is_one_line_exit_2():
    completed = run_docsam("segment", "page.png", "--precision", "fp64", prelude=IMPORT_PROBE)
    assert completed.returncode == ExitCode.USAGE
    (line,) = error_lines(completed.stderr)
    assert "--precision" in line and all(name in line for name in ("fp32", "bf16", "fp16"))
    assert "HEAVY []" in completed.stderr  # refused while parsing, before anything heavy loads


def test_unknown_command_and_option_are_usage_errors():
    for args in (["segmnt"], ["--bogus"], ["segment", "--bogus", "x.png"]):
        code, _, stderr = invoke(*args)
        assert code == ExitCode.USAGE, args
        assert len(error_lines(stderr)) == 1 and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "page.png", "--classes", "table", "--classes", "figure"],
        ["segment", "page.png", "-o", "a", "--out", "b"],
        ["segment", "page.png", "--pages", "1", "--pages", "2"],
        ["segment", "page.png", "--window", "640", "--window", "800"],
        ["evaluate", "gt.json", "--weights", "a", "--stride", "8", "--stride", "16"],
        ["convert-dataset", "src", "--from", "page", "--from", "alto", "-o", "out"],
        ["download-weights", "--from", "a.pth", "--from", "b.pth", "docsam-base"],
        ["train", "data", "--lr", "1e-4", "--lr", "1e-5"],
    ],
    ids=lambda args: f"{args[0]} {[arg for arg in args if arg.startswith('--')][-1]}",
)
def test_an_option_of_one_value_given_twice_is_refused_not_the_last_kept(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(*args)
    assert code == ExitCode.USAGE and stdout == ""
    (line,) = stderr.strip().splitlines()
    flag = [arg for arg in args if arg.startswith("--")][-1]
    assert line.startswith(f"error: {flag} given twice; give it once"), line


def test_repeatable_options_and_flags_may_be_given_twice(tmp_path, monkeypatch):
    """Options documented as repeatable add up, and `-v -v` counts, as before."""
    monkeypatch.chdir(tmp_path)
    code, _, stderr = invoke(
        "segment", "--format", "page", "--format", "coco", "-r", "-r", "-v", "-v", "--weights", ""
    )
    assert "given twice" not in stderr and code == ExitCode.USAGE  # refused later: no inputs
    code, _, stderr = invoke(
        "evaluate", "missing.json", "--map", "a=b", "--map", "c=d", "--level", "regions", "--level", "lines"
    )
    assert "given twice" not in stderr and code == ExitCode.USAGE


def test_a_missing_choice_option_lists_its_choices_on_the_one_line(tmp_path):
    """`convert-dataset` without --from said `Choose from:\\n\\tpage,\\n\\talto,...`, escapes and all."""
    code, _, stderr = invoke("convert-dataset", str(tmp_path), "-o", str(tmp_path / "out"))
    assert code == ExitCode.USAGE
    (line,) = stderr.splitlines()
    assert line.startswith("error: missing option '--from'. Choose from: page, alto, coco, voc, yolo,"), line
    assert "\\" not in line


# A fault injected before the app runs: the segment command's prompt resolution raises, with a message
# holding markup and a newline. Nothing heavy is loaded by then, so the process is quick.
FAULT = """
import docsam_cli.commands.segment as command
def broken(*args, **kwargs):
    raise RuntimeError("boom [/red] in\\nthe prompts")
command.resolve_prompts = broken
"""


def test_internal_error_in_a_real_process_is_one_line_exit_3():
    completed = run_docsam("segment", "page.png", prelude=FAULT)
    assert completed.returncode == ExitCode.INTERNAL
    assert completed.stderr.splitlines() == [
        "error: internal error: RuntimeError: boom [/red] in\\nthe prompts "
        "(rerun with --debug for the traceback)"
    ]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_and_still_exits_3(where):
    args = ["--debug", "segment", "page.png"] if where == "before" else ["segment", "page.png", "--debug"]
    completed = run_docsam(*args, prelude=FAULT)
    assert completed.returncode == ExitCode.INTERNAL
    assert "Traceback (most recent call last)" in completed.stderr
    assert ", in broken\n" in completed.stderr
    assert "\nRuntimeError: boom [/red] in\nthe prompts\n" in completed.stderr
    assert error_lines(completed.stderr)[-1].startswith("error: internal error: RuntimeError: boom")


@pytest.mark.slow
def test_a_real_run_with_a_failed_page_exits_1_data_on_stdout_messages_on_stderr(
    tmp_path, tiny_weights, reference_fixtures
):
    page = reference_fixtures / "tiny-e2e-page.png"
    missing = tmp_path / "missing [draft].png"
    out = tmp_path / "out"
    args = ["-v", "segment", str(page), str(missing), "-w", str(tiny_weights), "-o", str(out)]
    args += ["--short-side", "192", "--window", "224,192", "--device", "cpu", "--format", "jsonl"]
    completed = run_docsam(*args)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [record["input"] for record in records] == [str(page), str(missing)]
    assert "error" in records[1] and "error" not in records[0]
    (line,) = error_lines(completed.stderr)
    assert line.startswith(f"error: {missing}: ")
    assert f"info: loading {tiny_weights} (variant from the checkpoint) on cpu, fp32" in completed.stderr
    assert "info: tiny-e2e-page: " in completed.stderr
    assert "1 pages segmented, 0 skipped (already done), 1 failed" in completed.stderr
