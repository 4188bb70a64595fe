from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from docsam_cli import __version__
from docsam_cli.app import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"docsam {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_module_entry_point():
    completed = subprocess.run(
        [sys.executable, "-m", "docsam_cli", "--version"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"docsam {__version__}"
