"""What `docsam train` / `docsam finetune` say on stderr: the progress bar follows `segment`'s rule (drawn
only when stderr is a terminal, never with `-q`).

The tiny parity model is fine-tuned for one step on a small synthetic dataset, in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training_helpers import write_layout
from typer.testing import CliRunner

from docsam_cli.app import app

RUN = [
    "--iters", "1", "--batch-size", "2", "--short-range", "48,56", "--patch-size", "40,40",
    "--device", "cpu", "--workers", "0", "--val-every", "0",
]  # fmt: skip


def page(index: int) -> tuple[np.ndarray, dict]:
    image = np.random.default_rng(index).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    coco = {
        "images": [{"id": index, "height": 64, "width": 72, "file_name": f"p{index}.png"}],
        "categories": [{"id": 1, "name": "text"}],
        "annotations": [{"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]}],
    }
    return image, coco


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_layout(root / "data", {f"p{index}": page(index) for index in range(2)})


@pytest.mark.parametrize(
    ("terminal", "quiet", "bar"),
    [(True, False, True), (True, True, False), (False, False, False)],
    ids=["terminal", "terminal -q", "not a terminal"],
)
def test_the_progress_bar_is_drawn_on_a_terminal_unless_quiet(
    terminal: bool,
    quiet: bool,
    bar: bool,
    data: Path,
    tiny_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if terminal else "0")  # Rich's is_terminal
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *RUN]
    result = CliRunner().invoke(app, arguments + (["-q"] if quiet else []))
    assert result.exit_code == 0, result.output
    assert ("ETA" in result.stderr) == bar, result.stderr


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "-q"])
def test_quiet_leaves_out_the_validation_lines_and_the_weights_line(
    quiet: bool, data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    run = [*RUN[: RUN.index("--val-every")], "--val-every", "1", "--val", str(data)]
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *run]
    result = CliRunner().invoke(app, arguments + (["-q"] if quiet else []))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("step 1: ") and " mAP " in line for line in lines) != quiet, result.stderr
    assert any(line.startswith("weights: ") for line in lines) != quiet, result.stderr
