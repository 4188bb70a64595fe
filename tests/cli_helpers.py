"""Running `docsam` in tests: in-process through Typer's runner, or as a real process (exit codes,
imports)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from instances_factory import make_instances, rect_mask
from PIL import Image
from typer.testing import CliRunner

import docsam_cli.batch as batch
from docsam_cli.app import app

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["--classes", "text,figure", "--domain", "Test"]


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `docsam ARGS` run in this process."""
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def overridden(options: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """A helper's `options` (flags, each followed by its value where it takes one) less the flags that
    `overrides` gives again: docsam refuses an option given twice, so a test's own value replaces the
    helper's."""
    given = {item for item in overrides if item.startswith("-")}
    kept: list[str] = []
    dropping = False
    for item in options:
        if item.startswith("-"):
            dropping = item in given
            if not dropping:
                kept.append(item)
        elif dropping:
            dropping = False  # the dropped flag's value
        else:
            kept.append(item)
    return kept


def segment(out: Path, *args: str) -> tuple[int, list[dict], str]:
    """(exit code, JSON lines, stderr) of `docsam segment -o OUT` with CLASSES (unless ARGS give them) and
    ARGS, in this process."""
    code, stdout, stderr = invoke("segment", "-o", str(out), *overridden(CLASSES, args), *args)
    return code, [json.loads(line) for line in stdout.splitlines() if line.strip()], stderr


def stand_in_model(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The network replaced: nothing is loaded, every page gets one rectangle of the first class. Records
    `requests` (the request of each run), `loads` (one entry each time the weights would be read) and
    `batches` (the page sizes of each call)."""
    seen = SimpleNamespace(requests=[], loads=[], batches=[])
    weights = SimpleNamespace(
        entry=None, path=Path("stand-in.safetensors"), keep_size=False, patch=None, short_range=None
    )

    def segmenter(loaded: object, request: batch.SegmentRequest, geometry: object):
        seen.requests.append(request)

        def segment(images):
            seen.batches.append([image.shape[:2] for image in images])
            return [
                make_instances([rect_mask(*image.shape[:2], 2, 2, 20, 20)], [0], request.class_names)
                for image in images
            ]

        return segment

    def resolve(spec):
        return SimpleNamespace(weights=weights, load=lambda: seen.loads.append(spec))

    monkeypatch.setattr(batch, "resolve_model", resolve)
    monkeypatch.setattr(batch, "model_segmenter", segmenter)
    return seen


def help_text(*command: str) -> str:
    """`docsam COMMAND --help` as one line of words (Rich wraps it in boxes to the terminal's width)."""
    code, stdout, stderr = invoke(*command, "--help")
    assert code == 0, stderr
    return " ".join(stdout.replace("│", " ").split())


def run_docsam(
    *args: str, prelude: str = "", timeout: float = 300, obey_permissions: bool = False
) -> subprocess.CompletedProcess[str]:
    """`docsam ARGS` as a real process (what `python -m docsam_cli` runs); `prelude` is Python run before
    the app starts (a fault to inject, a probe to install). `obey_permissions`: file permissions bind the
    process even when the tests run as root."""
    code = f"{prelude}\nfrom docsam_cli.app import main\nmain()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    as_root = obey_permissions and os.geteuid() == 0
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        preexec_fn=_drop_permission_override if as_root else None,
    )


def _drop_permission_override() -> None:
    """In the child before it runs Python: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the
    capability bounding set, so that root is bound by file permissions like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_page(path: Path, height: int = 48, width: int = 40) -> Path:
    """A small grey page image."""
    Image.fromarray(np.full((height, width, 3), 200, dtype=np.uint8)).save(path, format="PNG")
    return path
