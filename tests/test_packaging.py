"""docsam as pip installs it: the commands pyproject.toml declares, run where an extra was left out, or where
a project's own `model` comes first on Python's path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PROJECT_ROOT

# What the processor imports of OCR-D core, made unimportable, as where the `ocrd` extra was not installed.
WITHOUT_OCRD = "import sys\nfor name in ('ocrd', 'ocrd_models', 'ocrd_utils', 'ocrd_modelfactory'):\n" + (
    "    sys.modules[name] = None\n"
)
OCRD_AS_MODULE = "import runpy; runpy.run_module('docsam_cli.ocrd', run_name='__main__')"


def script_call(script: str) -> str:
    """A line of Python calling `script`'s entry point as pyproject.toml declares it."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module, _, name = project["project"]["scripts"][script].partition(":")
    return f"from {module} import {name}; {name}()"


@pytest.mark.parametrize("as_module", [False, True], ids=["script", "python -m"])
def test_the_ocrd_command_without_ocrd_core_says_how_to_install_it(as_module):
    """`pip install docsam` installs the `ocrd-docsam-segment` script too (a script cannot depend on an
    extra): without OCR-D core it says what to install, in one line, not in a ModuleNotFoundError."""
    run = OCRD_AS_MODULE if as_module else script_call("ocrd-docsam-segment")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_OCRD + run, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr == (
        "Error: ocrd-docsam-segment needs OCR-D core, which is not installed: pip install 'docsam[ocrd]'\n"
    )


# A project's own `model` (ML projects often keep a `model.py`), which docsam must never import.
PROJECTS_MODEL = "raise RuntimeError('a project model was imported')\n"


def project_folder(tmp_path: Path, layout: str) -> Path:
    """A folder holding a `model.py` or a `model/` package of its own."""
    folder = tmp_path / "project"
    path = folder / ("model.py" if layout == "model.py" else "model/__init__.py")
    path.parent.mkdir(parents=True)
    path.write_text(PROJECTS_MODEL, encoding="utf-8")
    return folder.resolve()


def run_in(folder: Path, pythonpath: list[Path], *command: str) -> subprocess.CompletedProcess[str]:
    """`python COMMAND` run in `folder` with exactly `pythonpath` as PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run(
        [sys.executable, *command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("layout", ["model.py", "model/"])
def test_python_m_docsam_runs_in_a_folder_holding_a_model_of_its_own(tmp_path, layout):
    """`python -m docsam_cli` (and README's `torchrun ... -m docsam_cli`, whose ranks it starts so) puts the
    working folder first on Python's path: a project's `model.py` or `model/` there hid docsam's `model`,
    and every command, `--help` included, ended in an internal error (`No module named 'model.checkpoint';
    'model' is not a package`, exit 3). docsam's own `model` is used now."""
    folder = project_folder(tmp_path, layout)
    completed = run_in(folder, [PROJECT_ROOT], "-m", "docsam_cli", "segment", "--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""


def test_python_m_the_ocrd_processor_runs_in_a_folder_holding_a_model_of_its_own(tmp_path):
    """`python -m docsam_cli.ocrd` there ended in a ModuleNotFoundError traceback; it runs now."""
    pytest.importorskip("ocrd")
    folder = project_folder(tmp_path, "model.py")
    completed = run_in(folder, [PROJECT_ROOT], "-m", "docsam_cli.ocrd", "--help")
    assert completed.returncode == 0, completed.stderr
    assert "ocrd-docsam-segment" in completed.stdout


@pytest.mark.parametrize(
    ("command", "code", "prefix"),
    [
        (("docsam", "segment"), 2, "error:"),
        (("ocrd-docsam-segment",), 1, "Error:"),
        (("-m", "docsam_cli", "segment"), 2, "error:"),
    ],
    ids=["docsam", "ocrd-docsam-segment", "python -m docsam_cli"],
)
@pytest.mark.parametrize("layout", ["model.py", "model/"])
def test_a_model_on_pythonpath_that_hides_docsams_is_named_in_one_line(
    tmp_path, layout, command, code, prefix
):
    """A folder on PYTHONPATH is the user's to order: where it holds a `model` of its own, docsam cannot use
    its own and says so in one line, naming the file and what to do, instead of an internal error (exit 3)
    or a traceback."""
    folder = project_folder(tmp_path, layout)
    working_folder = folder if command[0] == "-m" else tmp_path  # -m puts it first on the path, too
    if command[0] != "-m":  # a script
        command = ("-c", script_call(command[0]), *command[1:])
    completed = run_in(working_folder, [folder, PROJECT_ROOT], *command, "--help")
    hiding = folder / ("model.py" if layout == "model.py" else "model")
    assert completed.returncode == code, completed.stderr
    assert completed.stderr == (
        f"{prefix} {hiding} hides docsam's own package 'model' ({PROJECT_ROOT / 'model'}): "
        f"rename it, or take {folder} off PYTHONPATH\n"
    )
