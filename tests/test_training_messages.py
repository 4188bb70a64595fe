"""What `docsam train` / `docsam finetune` say on stderr: the progress bar follows `segment`'s rule (drawn
only when stderr is a terminal, never with `-q`).

The tiny parity model is fine-tuned for one step on a small synthetic dataset, in this process."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from training_helpers import write_layout
from typer.testing import CliRunner, Result

from docsam_cli.app import app

RUN = [
    "--iters", "1", "--batch-size", "2", "--short-range", "48,56", "--patch-size", "40,40",
    "--device", "cpu", "--workers", "0", "--val-every", "0",
]  # fmt: skip


def page(index: int, names: tuple[str, ...] = ("text",)) -> tuple[np.ndarray, dict]:
    image = np.random.default_rng(index).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    coco = {
        "images": [{"id": index, "height": 64, "width": 72, "file_name": f"p{index}.png"}],
        "categories": [{"id": number, "name": name} for number, name in enumerate(names, 1)],
        "annotations": [
            {"id": number, "category_id": number, "bbox": [8, 8 + 10 * number, 40, 8]}
            for number in range(1, len(names) + 1)
        ],
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


def test_the_weights_line_comes_once_per_run_from_rank_0_not_from_every_process(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun every process ended with the same `weights: ...` line (8 GPUs, 8 lines). A process
    whose launcher made it rank 1 (here alone: `RANK` set, no `WORLD_SIZE`) leaves it to rank 0."""
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *RUN]
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert not any(line.startswith("weights: ") for line in result.stderr.splitlines()), result.stderr


def test_a_class_only_in_a_validation_split_is_warned_about(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """A class that a --val split has and no DATASET has is never trained, and the run said nothing of
    it; it now says so as it starts, naming the classes and the split, and goes on."""
    one = write_layout(tmp_path / "one", {"p0": page(0, ("table", "text"))})
    two = write_layout(tmp_path / "two", {"p0": page(0, ("figure", "table", "text"))})
    run = [*RUN, "--val", str(one), "--val", str(two), "--val", str(data)]
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *run]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: --val {one}: class 'table' is in no training dataset; "
        "the run does not train the model to find it",
        f"warning: --val {two}: classes 'figure', 'table' are in no training dataset; "
        "the run does not train the model to find them",
    ], result.stderr


def test_verbose_says_what_model_is_loaded_on_which_device_and_each_logged_step(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """`-v` is to add model loading, device and timings (the top-level help, README): train and finetune
    said nothing more with it. Without -v none of it is said."""

    def finetune(out: Path, *extra: str) -> Result:
        arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(out), *RUN, *extra]
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        return result

    verbose = finetune(tmp_path / "run", "-v")
    info = [line for line in verbose.stderr.splitlines() if line.startswith("info: ")]
    assert info[:2] == ["info: training on cpu, fp32", f"info: loading {tiny_weights}"], verbose.stderr
    assert re.fullmatch(r"info: model ready in \d+\.\d s", info[2]), verbose.stderr
    assert re.fullmatch(r"info: step 1/1: loss \S+, lr \S+, \d+\.\d\d it/s", info[3]), verbose.stderr

    resumed = CliRunner().invoke(app, ["finetune", "--resume", "-o", str(tmp_path / "run"), "-v"])
    assert resumed.exit_code == 0, resumed.output
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000001"
    assert f"info: resuming from {checkpoint}" in resumed.stderr.splitlines(), resumed.stderr

    assert "info: " not in finetune(tmp_path / "plain").stderr


def test_verbose_lines_about_the_whole_run_come_from_rank_0_those_about_a_process_from_each(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun with -v every process said which weights the run starts from, and, resumed, the
    checkpoint it resumes from: the same lines once per process (8 GPUs, 8 lines). A process whose launcher
    made it rank 1 leaves them to rank 0; it still says its own device and its model's loading time."""
    monkeypatch.setenv("RANK", "1")
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *RUN]
    result = CliRunner().invoke(app, [*arguments, "-v"])
    assert result.exit_code == 0, result.output
    info = [line for line in result.stderr.splitlines() if line.startswith("info: ")]
    assert info[0] == "info: training on cpu, fp32", result.stderr
    assert re.fullmatch(r"info: model ready in \d+\.\d s", info[1]), result.stderr
    assert not [line for line in info if line.startswith("info: loading ")], result.stderr

    resumed = CliRunner().invoke(app, ["finetune", "--resume", "-o", str(tmp_path / "run"), "-v"])
    assert resumed.exit_code == 0, resumed.output
    assert "info: training on cpu, fp32" in resumed.stderr.splitlines(), resumed.stderr
    assert "info: resuming from " not in resumed.stderr, resumed.stderr


def test_more_workers_than_cores_are_capped_with_one_line_not_torchs_warning(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default --workers 4 on a 2-core laptop or Slurm allocation printed torch's UserWarning twice
    ("This DataLoader will create 4 worker processes in total. Our suggested max number of worker ...")."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "process_cpu_count", lambda: 1, raising=False)
    run = [*RUN[: RUN.index("--workers")], "--workers", "2", *RUN[RUN.index("--workers") + 2 :]]
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *run]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, [*arguments, "-v"])
    assert result.exit_code == 0, result.output
    assert not [warning for warning in caught if "worker" in str(warning.message)]
    assert "info: --workers 2: 1 data-loading process, as many as the CPU cores this process may use" in (
        result.stderr.splitlines()
    ), result.stderr


@pytest.mark.parametrize("flag", ["dataset", "--val"])
def test_a_dataset_whose_classes_the_model_reads_alike_is_refused_before_training(
    flag: str, data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """图 (figure) and 表 (table) both read as [UNK]: every page prompted both with the same tokens and the
    run trained them against each other. It is refused as it starts, naming the dataset and the classes."""
    alike = write_layout(tmp_path / "alike", {"p0": page(0, ("图", "表"))})
    dataset, run = (alike, RUN) if flag == "dataset" else (data, [*RUN, "--val", str(alike)])
    output = tmp_path / "run"
    arguments = ["finetune", str(dataset), "--weights", str(tiny_weights), "-o", str(output), *run]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"{alike} names a class twice: '表' (as '图'; the model reads both as the same tokens" in message
    assert message.endswith("rename or merge them with convert-dataset --map"), message
    assert not output.exists()
