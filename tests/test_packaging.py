"""docsam as pip installs it: the commands pyproject.toml declares, run where an extra was left out."""

from __future__ import annotations

import os
import subprocess
import sys

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
