"""`convert-dataset` and `evaluate --pred` never import torch or scipy; registering them, nothing heavy.

Each check runs in a fresh interpreter. The two commands are registered on an app of their own, so that
the check covers exactly these commands (the whole app's start is checked by the CLI tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PROJECT_ROOT
from convert_helpers import coco_document, coco_source

NEVER = ("torch", "torchvision", "transformers", "scipy")
NOT_AT_START = (*NEVER, "cv2", "pycocotools")

_RUN = """
import json, sys
import typer
from docsam_cli.commands import convert_dataset, evaluate

app = typer.Typer()
app.command("convert-dataset")(convert_dataset.main)
app.command("evaluate")(evaluate.main)
try:
    app(sys.argv[1:])
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "loaded": sorted(name for name in %r if name in sys.modules)}))
"""


def _run(*arguments: object, watched: tuple[str, ...] = NEVER) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _RUN % (watched,), *map(str, arguments)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_registration_and_help_import_nothing_heavy() -> None:
    for command in ("convert-dataset", "evaluate"):
        assert _run(command, "--help", watched=NOT_AT_START) == {"code": 0, "loaded": []}


@pytest.mark.slow  # three fresh interpreters that import the readers and metrics
def test_convert_and_evaluate_pred_run_without_torch_or_scipy(tmp_path: Path) -> None:
    source = coco_source(tmp_path / "src")
    out = tmp_path / "unified"
    assert _run("convert-dataset", source, "--from", "coco", "-o", out) == {"code": 0, "loaded": []}
    predictions = source / "annotations.json"
    assert _run("evaluate", out, "--pred", predictions) == {"code": 0, "loaded": []}
    results = tmp_path / "results.json"
    document = coco_document()
    results.write_text(json.dumps([{**a, "score": 0.9} for a in document["annotations"]]))
    assert _run("evaluate", predictions, "--pred", results) == {"code": 0, "loaded": []}
