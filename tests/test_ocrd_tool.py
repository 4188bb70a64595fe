"""`ocrd-docsam-segment`'s description and packaging: the `ocrd-tool.json` OCR-D validates, what
`--dump-json` prints, the entry point and package data, and OCR-D kept out of plain `docsam`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from fnmatch import fnmatch
from pathlib import Path

import pytest
from cli_helpers import PROJECT_ROOT, run_docsam

pytest.importorskip("ocrd", reason="the OCR-D processor needs the `ocrd` extra: pip install '.[test,ocrd]'")

from ocrd_validators import OcrdToolValidator

from docsam_cli import __version__
from docsam_cli.precision import PRECISIONS
from docsam_cli.presets import PRESETS
from docsam_cli.runtime import MAX_SIDE, ModelSpec
from docsam_cli.segment_request import SegmentRequest
from docsam_cli.weights.registry import Variant

TOOL_FILE = PROJECT_ROOT / "docsam_cli" / "ocrd" / "ocrd-tool.json"
EXECUTABLE = "ocrd-docsam-segment"


def shipped_tool() -> dict:
    return json.loads(TOOL_FILE.read_text(encoding="utf-8"))


def run_processor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`ocrd-docsam-segment ARGS` as a real process (`python -m docsam_cli.ocrd` runs the same `cli`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "docsam_cli.ocrd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_shipped_ocrd_tool_json_is_valid():
    report = OcrdToolValidator.validate(shipped_tool())
    assert report.is_valid, report.to_xml()
    assert not report.warnings, report.to_xml()


def test_dump_json_prints_the_tool_and_it_validates(tmp_path):
    completed = run_processor_cli("--dump-json")
    assert completed.returncode == 0, completed.stderr
    dumped = json.loads(completed.stdout)
    document = shipped_tool()
    tool = document["tools"][EXECUTABLE]
    # OCR-D adds the schema's defaults (e.g. `cacheable: false`); everything the file says is there as is.
    assert {key: dumped[key] for key in tool if key != "parameters"} == {
        key: value for key, value in tool.items() if key != "parameters"
    }
    assert dumped["parameters"].keys() == tool["parameters"].keys()
    for name, spec in tool["parameters"].items():
        assert spec.items() <= dumped["parameters"][name].items(), name
    # What `ocrd ocrd-tool FILE validate` checks, on a file holding exactly the dumped tool.
    path = tmp_path / "ocrd-tool.json"
    path.write_text(json.dumps({**document, "tools": {EXECUTABLE: dumped}}), encoding="utf-8")
    from click.testing import CliRunner
    from ocrd.cli.ocrd_tool import ocrd_tool_cli

    result = CliRunner().invoke(ocrd_tool_cli, [str(path), "validate"])
    assert result.exit_code == 0, result.output
    assert 'valid="true"' in result.output


def test_the_tool_agrees_with_docsam():
    """Versions, choices and defaults the JSON repeats are docsam's own."""
    document = shipped_tool()
    parameters = document["tools"][EXECUTABLE]["parameters"]
    assert document["version"] == __version__
    assert parameters["preset"]["enum"] == list(PRESETS)
    assert parameters["precision"]["enum"] == list(PRECISIONS)
    assert parameters["variant"]["enum"] == list(typing.get_args(Variant))
    assert parameters["weights"]["default"] == ModelSpec.weights
    assert parameters["device"]["default"] == ModelSpec.device
    assert parameters["precision"]["default"] == ModelSpec.precision
    assert parameters["batch_size"]["default"] == SegmentRequest.batch_size
    for size in ("short_side", "short_side_max", "window", "stride"):
        assert parameters[size]["maximum"] == MAX_SIDE, size


def test_the_steps_name_region_and_line_segmentation():
    """The processor writes typed regions and the text lines in them (OCR-D's controlled step terms)."""
    steps = shipped_tool()["tools"][EXECUTABLE]["steps"]
    assert steps == ["layout/segmentation/region", "layout/segmentation/line"]


@pytest.mark.slow  # two processes that import OCR-D
def test_help_and_version_name_the_processor():
    completed = run_processor_cli("--help")
    assert completed.returncode == 0, completed.stderr
    assert f"Usage: {EXECUTABLE}" in completed.stdout
    for name in shipped_tool()["tools"][EXECUTABLE]["parameters"]:
        assert f'"{name}"' in completed.stdout
    completed = run_processor_cli("--version")
    assert completed.returncode == 0, completed.stderr
    assert f"Version {__version__}" in completed.stdout


def test_entry_point_and_package_data_are_declared():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # 3.7, the first OCR-D core beside typer's pydantic 2, lost the pages done before a Ctrl-C (see
    # test_pages_done_before_ctrl_c_or_sigterm_stay_listed_in_the_mets); 3.8 and 3.9 took 100 s to stop.
    assert project["project"]["optional-dependencies"]["ocrd"] == ["ocrd>=3.10"]
    # What `python -m docsam_cli.ocrd` (as the tests run the processor) runs too.
    assert project["project"]["scripts"][EXECUTABLE] == "docsam_cli.ocrd:main"
    package_data = project["tool"]["setuptools"]["package-data"]["docsam_cli.ocrd"]
    assert any(fnmatch(TOOL_FILE.name, pattern) for pattern in package_data)


@pytest.mark.slow  # a process that imports torch
def test_plain_docsam_never_imports_ocrd():
    """Neither the app nor the modules a `docsam segment` run uses (batch runner, PAGE writer) load OCR-D."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('OCRD', sorted(m for m in ('ocrd', 'ocrd_models', 'ocrd_utils')"
        " if m in sys.modules), file=sys.stderr))\n"
        "import docsam_cli.batch, docsam_cli.writers.page_xml\n"
    )
    completed = run_docsam("segment", "--help", prelude=probe)
    assert completed.returncode == 0, completed.stderr
    assert "OCRD []" in completed.stderr, completed.stderr


def workspace_of_groups(directory: Path, *groups: str) -> Path:
    """A workspace (its mets.xml) holding one page in each of these file groups."""
    from ocrd import Resolver

    workspace = Resolver().workspace_from_nothing(str(directory))
    for group in groups:
        (directory / f"{group}.png").write_bytes(b"")
        workspace.add_file(group, file_id=f"{group}_1", page_id="P1", mimetype="image/png",
                           local_filename=f"{group}.png")  # fmt: skip
    workspace.save_mets()
    return directory / "mets.xml"


@pytest.mark.slow  # processes that import OCR-D
@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["-I", "A,B", "-O", "OUT"], "-I A,B names 2 input file groups; ocrd-docsam-segment takes exactly 1"),
        (
            ["-I", "A", "-O", "OUT,X"],
            "-O OUT,X names 2 output file groups; ocrd-docsam-segment takes exactly 1",
        ),
        (["-I", "A"], "-O is missing: ocrd-docsam-segment takes exactly 1 output file group"),
        (["-O", "OUT"], "-I is missing: ocrd-docsam-segment takes exactly 1 input file group"),
        ([], "-I is missing: ocrd-docsam-segment takes exactly 1 input file group"),
        (["-I", "", "-O", ""], "-I is missing: ocrd-docsam-segment takes exactly 1 input file group"),
    ],
)
def test_more_file_groups_than_the_tool_declares_are_one_error_line(groups, message, tmp_path, tiny_weights):
    """Two input groups: core asserted the count only after loading the model, and the processor ended in
    two tracebacks of "AssertionError: Unexpected number of input file groups 2 vs 1". Without -O, core
    took one output group named '': the model segmented every page, each then failed "Must set fileGrp of
    the mets:file" (exit 0 under OCRD_MAX_MISSING_OUTPUTS=-1); without -I, or without both (a script's
    two variables empty), a traceback."""
    mets = workspace_of_groups(tmp_path, "A", "B")
    completed = run_processor_cli(
        "-m", str(mets), *groups, "-P", "weights", str(tiny_weights), "-P", "device", "cpu"
    )
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [f"Error: {message}"]


@pytest.mark.slow  # processes that import OCR-D
@pytest.mark.parametrize("option", ["--help", "--dump-json"])
def test_information_options_answer_whatever_file_groups_are_given(option):
    """`--help` added to a command line with -I but not yet -O shows the help, as core answers it before
    looking at the file groups."""
    completed = run_processor_cli("-I", "A,B", option)
    assert completed.returncode == 0, completed.stderr
    assert EXECUTABLE in completed.stdout


@pytest.mark.slow  # a process that imports OCR-D
def test_no_argument_at_all_shows_the_help():
    """As core answers a bare command, before any file group is asked for."""
    completed = run_processor_cli()
    assert completed.returncode == 1
    assert EXECUTABLE in completed.stdout
    assert "Error" not in completed.stderr


@pytest.mark.slow  # processes that import OCR-D
@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["-I", "A", "-O", "B"], "Output fileGrp[@USE='B'] already in METS!"),
        (["-I", "NONE", "-O", "OUT"], "Input fileGrp[@USE='NONE'] not in METS!"),
    ],
)
def test_file_groups_core_refuses_are_one_error_line(groups, message, tmp_path, tiny_weights):
    """A rerun into its own output group (which core refuses without --overwrite, as README says) or an
    input group the METS lacks (a typo): core's refusal ended the processor in a traceback."""
    mets = workspace_of_groups(tmp_path, "A", "B")
    completed = run_processor_cli(
        "-m", str(mets), *groups, "-P", "weights", str(tiny_weights), "-P", "device", "cpu"
    )
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [f"Error: Invalid input/output file grps: {message}"]


@pytest.mark.slow  # processes that import OCR-D
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (["-P", "preset", "foo"], "[preset] 'foo' is not one of ['publaynet', 'doclaynet']"),
        (["-P", "batch_size", "0"], "[batch_size] 0 is less than the minimum of 1"),
    ],
)
def test_parameters_the_schema_refuses_are_one_error_line(parameters, message, tmp_path):
    """A parameter ocrd-tool.json's schema refuses (a misspelt preset, a batch size of 0): core's refusal,
    a ValueError holding its XML report, ended the processor in a 30-line traceback, where README promises
    one `Error:` line for bad parameters."""
    mets = workspace_of_groups(tmp_path, "A")
    completed = run_processor_cli("-m", str(mets), "-I", "A", "-O", "OUT", *parameters)
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [f"Error: Invalid parameters: {message}"]
