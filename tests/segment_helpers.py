"""Running `docsam segment` in tests with the tiny parity model and a small, fast geometry."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import overridden
from typer.testing import CliRunner

from docsam_cli.app import app

# The tiny-e2e fixture's geometry: short side 192, 224x192 windows (fast, and what the reference ran).
FAST_GEOMETRY = ["--short-side", "192", "--window", "224,192", "--device", "cpu"]
# Pages resized to a 64-pixel short side, a ninth of FAST_GEOMETRY's pixels: for runs whose subject is not
# the masks (which pages, which files, which messages).
TINY_GEOMETRY = ["--short-side", "64", "--window", "64", "--device", "cpu"]
E2E_CLASSES = ["--classes", "text,table,list,title,figure", "--domain", "Synthetic"]


def run_segment(weights: Path, out: Path, *args: str) -> tuple[int, list[dict], str]:
    """(exit code, JSON-line records from stdout, stderr)."""
    result = CliRunner().invoke(
        app,
        ["segment", "--weights", str(weights), "--out", str(out), *overridden(FAST_GEOMETRY, args), *args],
        catch_exceptions=False,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, records, result.stderr


def leftover_temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]
