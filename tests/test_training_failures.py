"""How `docsam train` / `docsam finetune` end when something goes wrong: one `error:` line and the exit code
of README's table (1 a bad data file or a failed run, 2 a request that cannot start, 130 interrupted).

The tiny parity model is fine-tuned for a step or two on a small synthetic dataset, in this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import overridden, run_docsam
from training_helpers import write_layout
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.distributed import Distributed
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels, set_max_image_pixels
from docsam_cli.names import display_path
from docsam_cli.training.checkpoints import list_checkpoints
from docsam_cli.training.data import MixedTrainingData, worker_death
from docsam_cli.training.run_log import read_log
from docsam_cli.training.sampler import SampleKey
from docsam_cli.training.trainer import MainStopped, StopRequests

RUN = [
    "--iters", "2", "--batch-size", "2", "--short-range", "48,56", "--patch-size", "40,40",
    "--log-every", "1", "--no-progress", "--device", "cpu", "--workers", "0", "--val-every", "0",
]  # fmt: skip


def page(index: int, annotations: list[dict] | None = None) -> tuple[np.ndarray, dict]:
    image = np.random.default_rng(index).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    coco = {
        "images": [{"id": index, "height": 64, "width": 72, "file_name": f"p{index}.png"}],
        "categories": [{"id": 1, "name": "text"}, {"id": 2, "name": "table"}],
        "annotations": annotations
        or [
            {"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]},
            {"id": 2, "category_id": 2, "bbox": [10, 34, 50, 20]},
        ],
    }
    return image, coco


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "data", {f"p{index}": page(index) for index in range(2)})


def finetune(data: Path, weights: Path, out: Path, *extra: str) -> tuple[int, str]:
    """(exit code, stderr) of `docsam finetune DATA --weights WEIGHTS -o OUT` with the small run's options,
    those EXTRA gives replaced."""
    arguments = [
        "finetune",
        str(data),
        "--weights",
        str(weights),
        "-o",
        str(out),
        *overridden(RUN, extra),
        *extra,
    ]
    result = CliRunner().invoke(app, arguments)
    return result.exit_code, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- 1. a bad data file ---------------------------------------------------------------------------


def test_a_bad_image_is_the_same_one_line_error_with_and_without_workers(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    for image in (data / "image").iterdir():
        image.write_bytes(image.read_bytes()[:60])  # truncated
    outcomes = {}
    for workers in ("0", "2"):
        code, stderr = finetune(data, tiny_weights, tmp_path / f"run{workers}", "--workers", workers)
        outcomes[workers] = (code, error_lines(stderr))
    assert outcomes["0"] == outcomes["2"]
    code, lines = outcomes["2"]
    assert code == 1 and len(lines) == 1, lines
    assert "image/p" in lines[0] and "truncated or corrupt image data" in lines[0]
    assert "internal error" not in lines[0] and "Traceback" not in lines[0]


def test_a_bbox_value_that_is_not_a_number_names_the_json_and_the_annotation(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    bad = {"id": 9, "category_id": 1, "bbox": [10, 10, "20px", 5]}
    data = write_layout(tmp_path / "bad", {f"p{index}": page(index, [bad]) for index in range(2)})
    code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    assert "coco/p0.json" in lines[0] and "annotation 9: bad bbox" in lines[0] and "'20px'" in lines[0]


def test_pages_over_the_pixel_limit_can_be_let_through_as_the_error_says(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """A page over the pixel limit stopped the run with "raise the limit with --max-image-pixels if the
    file is trusted": train and finetune had no such option, so following the advice was a usage error and
    a dataset of large scans could not be trained on at any setting. Started again as the error says, the
    run trains, its data-loading workers under the same limit."""
    saved = max_image_pixels()
    try:
        code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--max-image-pixels", "4000")
        lines = error_lines(stderr)
        assert code == 1 and len(lines) == 1, stderr
        assert "p0.png: 72x64 = 4608 pixels exceeds the decompression-bomb limit of 4000 pixels" in lines[0]
        assert "(raise the limit with --max-image-pixels if the file is trusted)" in lines[0]
        again = ("--max-image-pixels", "4608", "--workers", "2")
        code, stderr = finetune(data, tiny_weights, tmp_path / "run", *again)
        assert code == 0, stderr
        assert finetune(data, tiny_weights, tmp_path / "default")[0] == 0
        assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS  # a run without the option: the default
    finally:
        set_max_image_pixels(saved)


def test_listed_files_that_are_not_there_are_found_as_the_run_starts(
    tiny_weights: Path, tmp_path: Path
) -> None:
    """A listed image or json that is not there stopped the run only when a batch first sampled its page,
    possibly hours in (and never, for a page no batch drew); every listed file's existence is now checked
    as the run starts, one error line naming the list, how many files are missing and the first ones."""
    data = write_layout(tmp_path / "data", {f"p{index}": page(index) for index in range(6)})
    for name in ("image/p1.png", "coco/p1.json", "image/p4.png", "coco/p5.json"):
        (data / name).unlink()
    code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--iters", "1")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    shown = ", ".join(str(data / name) for name in ("image/p1.png", "coco/p1.json", "image/p4.png"))
    assert lines[0] == f"error: {data / 'list.txt'} names 4 files that are not there: {shown} and 1 more"
    assert not (tmp_path / "run" / "log.jsonl").exists()  # before any step


@pytest.mark.parametrize(
    ("file", "content", "reason"),
    [
        ("dataset.json", '{"name": "News",}', "invalid JSON"),
        ("dataset.json", '{"name": 3}', "name: expected a string"),
        ("list.txt", b"\xff\xfea\x00.", "it opens with UTF-16's byte order mark"),
    ],
)
@pytest.mark.parametrize("role", ["DATASET", "--val"])
def test_a_datasets_file_that_cannot_be_used_is_a_failed_run_as_readme_says(
    file: str, content: str | bytes, reason: str, role: str, data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """README: a file of a dataset that cannot be used (a dataset.json that is no valid JSON among them)
    stops the run with one error line naming it, exit 1. A bad dataset.json or list of a DATASET or
    --val was taken for no dataset at all: a usage error, exit 2."""
    split = write_layout(tmp_path / "split", {"p0": page(0)})
    (split / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    arguments = (split, "--val", str(data)) if role == "DATASET" else (data, "--val", str(split))
    code, stderr = finetune(arguments[0], tiny_weights, tmp_path / "run", *arguments[1:], "--iters", "1")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {split / file}: {reason}")


# --- 2. requests that cannot start ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing weights file", "no-such.safetensors"),
        ("weights name not downloaded", "docsam-large"),
        ("fp16 on the CPU", "--precision fp16"),
        ("out is a file", "exists and is not a folder"),
        ("missing dataset", "no such dataset folder"),
        ("missing val", "no such dataset folder"),
        ("val without its list", "no list_val.txt or list.txt"),
        ("batch does not split", "--batch-size 2"),
    ],
)
def test_requests_that_cannot_start_are_usage_errors(
    case: str, expected: str, data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    weights, dataset, out, extra = str(tiny_weights), data, tmp_path / "run", []
    if case == "missing weights file":
        weights = str(tmp_path / "no-such.safetensors")
    elif case == "weights name not downloaded":
        weights = "docsam-large"
    elif case == "fp16 on the CPU":
        extra = ["--precision", "fp16"]
    elif case == "out is a file":
        out.write_text("")
    elif case == "missing dataset":
        dataset = tmp_path / "absent"
    elif case == "missing val":
        extra = ["--val", str(tmp_path / "absent")]
    elif case == "val without its list":  # a split listing only its training pages
        (data / "list.txt").rename(data / "list_train.txt")
        extra = ["--val", str(data)]
    elif case == "batch does not split":
        extra = ["--accumulate", "3"]
    code, stderr = finetune(dataset, Path(weights), out, *extra)
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1 and expected in lines[0], stderr
    assert "Errno" not in stderr
    assert out.is_file() if case == "out is a file" else not out.exists()  # no empty folder left behind


@pytest.mark.slow
def test_a_resume_that_cannot_write_keeps_the_log_whole(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """Resuming rewrites log.jsonl without the lines after the checkpoint; on a full disk (here a file-size
    limit) the rewrite in place cut the run's history short."""
    out = tmp_path / "run"
    assert finetune(data, tiny_weights, out)[0] == 0
    logged = (out / "log.jsonl").read_text(encoding="utf-8")
    limit = len(logged.encode()) - 10
    full_disk = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
    )
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(out), *RUN, "--resume"]
    completed = run_docsam(*arguments, prelude=full_disk)
    assert completed.returncode == 1, completed.stderr
    assert (out / "log.jsonl").read_text(encoding="utf-8") == logged


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_ends_a_run_with_data_loader_workers(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """With data-loader workers (`--workers`, 4 by default) a checkpoint that could not be written (a full
    disk) printed its error line, then the process never ended: the error's traceback still held the data
    loader, and Python's exit sent its workers SIGTERM, which they ignore (the run alone decides when to
    stop), and waited for them forever. Here the disk is full for files over 1 MB."""
    out = tmp_path / "run"
    full_disk = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))"
    )
    extra = ["--workers", "1", "--checkpoint-every", "1"]
    arguments = [
        "finetune",
        str(data),
        "--weights",
        str(tiny_weights),
        "-o",
        str(out),
        *overridden(RUN, extra),
    ]
    completed = run_docsam(*arguments, *extra, prelude=full_disk, timeout=120)
    assert completed.returncode == 1, completed.stderr
    assert error_lines(completed.stderr) == [
        f"error: {out / 'checkpoints' / 'step-00000001'}: cannot write the checkpoint: File too large"
    ]


def test_an_output_folder_holding_a_run_needs_resume(data: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert finetune(data, tiny_weights, out, "--iters", "1")[0] == 0
    code, stderr = finetune(data, tiny_weights, out, "--iters", "1")
    assert code == 2 and "already holds a run" in stderr and "--resume" in stderr


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["checkpoints", ".docsam"])
def test_a_read_only_folder_the_run_writes_in_is_refused_before_the_first_step(
    folder: str, data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """`OUT/checkpoints/` owned by a colleague (or left read-only): the run trained until its first checkpoint
    and failed there, exit 1, the steps lost; a read-only `OUT/.docsam/` stopped it with `[Errno 13]
    Permission denied: '.../lock'`, exit 1. Each is now refused as the run starts, as `segment` refuses a
    read-only `page/`: one line naming it, exit 2, before any step."""
    out = tmp_path / "run"
    (out / folder).mkdir(parents=True)
    (out / folder).chmod(0o555)
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(out), *RUN]
    completed = run_docsam(*arguments, "--checkpoint-every", "1", obey_permissions=True)
    (out / folder).chmod(0o755)
    assert completed.returncode == 2, completed.stderr
    assert error_lines(completed.stderr) == [
        f"error: --out {out}: cannot write in {out / folder}: Permission denied"
    ], completed.stderr
    assert not (out / "log.jsonl").exists()


def test_a_second_run_into_a_run_folder_in_use_is_refused(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """`segment` locks its output folder, training did not: the same command started twice (two terminals,
    a job launched again) trained twice into one folder, the second rewriting run.json and emptying
    log.jsonl, and each removing the other's half-written checkpoint as a killed run's leftover. A run now
    holds the folder's lock, and a second one stops at once, naming the process, before writing there."""
    from docsam_cli.folder_lock import folder_lock

    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out, "docsam training run"):  # the first run, in this process (flock locks conflict
        code, stderr = finetune(data, tiny_weights, out, "--iters", "1")  # between open files too)
        assert code == 2 and error_lines(stderr) == [
            f"error: --out {out}: another docsam training run (process {os.getpid()}) is writing into this "
            "folder; wait for it to end, or use another --out"
        ], stderr
        assert not (out / "run.json").exists() and not (out / "log.jsonl").exists()
    assert finetune(data, tiny_weights, out, "--iters", "1")[0] == 0  # free again once the first run ends


_KILLED_WITH_A_WORKER = """
import os, signal, sys, time
from pathlib import Path
from docsam_cli.folder_lock import folder_lock
from docsam_cli.training.trainer import init_loader_worker
with folder_lock(Path(sys.argv[1]), "docsam training run"):
    worker = os.fork()
    if worker == 0:
        init_loader_worker(0, None)
        time.sleep(60)
        os._exit(0)
    print(worker, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_lock_of_a_killed_run_goes_with_it_not_with_its_data_loader_workers(tmp_path: Path) -> None:
    """Data-loader workers are forked from the run and share its lock: a run killed with kill -9 (the OOM
    killer) left them holding it for the seconds they take to notice, and a --resume started at once was
    refused, naming the dead process. The workers let go of it when they start."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    run = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WITH_A_WORKER, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker = int(run.stdout.readline())  # the worker keeps the pipe open: no waiting for its end
    run.stdout.close()
    try:
        assert run.wait(timeout=60) == -signal.SIGKILL
        os.kill(worker, 0)  # the worker outlives the run
        with open(out / ".docsam" / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the worker holds it
    finally:
        os.kill(worker, signal.SIGKILL)


# --- 3. a diverging run ---------------------------------------------------------------------------


def test_a_diverging_run_stops_with_the_step_and_the_last_checkpoint(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """With a huge learning rate the features become non-finite at the next step, where RoIAlign would fail
    on the boxes; the run stops there with one line instead. It said "(try a lower --lr; last checkpoint:
    …/step-00000001)", pointing at a resume, which refuses another --lr (a resumed run keeps its settings),
    and a new run into the same --out, which it holds: the line now says what works, and that runs."""
    out = tmp_path / "run"
    code, stderr = finetune(data, tiny_weights, out, "--lr", "1e8", "--iters", "3", "--checkpoint-every", "1")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    last = display_path(list_checkpoints(out)[-1])
    assert lines[0] == (
        "error: loss is nan at step 2; try a lower --lr in a new run, with another --out "
        f"(a resumed run keeps its --lr; last checkpoint: {last})"
    )
    assert last.endswith("step-00000001")
    assert not (out / "model.safetensors").exists()
    assert finetune(data, tiny_weights, out, "--resume", "--lr", "1e-4")[0] == 2  # keeps its --lr
    assert finetune(data, tiny_weights, tmp_path / "new", "--lr", "1e-4", "--iters", "3")[0] == 0


def kill_the_worker_at(monkeypatch: pytest.MonkeyPatch, out: Path, step: int) -> None:
    """A data-loader worker asked for a sample of 0-based `step` is killed with SIGKILL, as the kernel's
    out-of-memory killer does, once the run folder holds `step` checkpoints (the training process may fetch
    ahead of the step it runs)."""
    get_item = MixedTrainingData.__getitem__

    def killed(self: MixedTrainingData, key: SampleKey) -> object:
        if torch.utils.data.get_worker_info() is not None and key.step == step:
            while len(list_checkpoints(out)) < step:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return get_item(self, key)

    monkeypatch.setattr(MixedTrainingData, "__getitem__", killed)


@pytest.mark.parametrize(
    ("step", "advice"),
    [
        (0, "the run has no checkpoint yet: start it again with fewer --workers or a smaller --batch-size"),
        (1, "continue the run from its last checkpoint (RUN) with --resume and fewer --workers"),
    ],
)
def test_a_data_loader_worker_killed_for_memory_is_a_failed_run_saying_what_to_do(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int, advice: str
) -> None:
    """torch reports a worker the OOM killer took as `RuntimeError: DataLoader worker (pid N) is killed by
    signal: Killed.`, which was an internal error (exit 3). The advice is what works: `--resume` needs a
    checkpoint and refuses another `--batch-size`; a folder without a checkpoint takes a new run."""
    out = tmp_path / "run"
    kill_the_worker_at(monkeypatch, out, step)
    run = ["--iters", "3", "--checkpoint-every", "1"]
    code, stderr = finetune(data, tiny_weights, out, *run, "--workers", "1")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    killed = (
        "a data-loader worker was killed (signal 9: Killed), most likely by the system for want of memory"
    )
    last = display_path(out / "checkpoints" / "step-00000001")
    assert lines[0] == f"error: {killed}; {advice.replace('RUN', last)}", stderr
    assert not (out / "model.safetensors").exists()
    monkeypatch.undo()  # the advice works: resume from the checkpoint, or start again in the same folder
    again = ["--resume"] if step else []
    code, stderr = finetune(data, tiny_weights, out, *run, *again, "--workers", "0")
    assert code == 0 and (out / "model.safetensors").exists(), stderr


def test_torchs_other_reports_of_a_dead_worker_are_recognised_and_nothing_else() -> None:
    killed = RuntimeError("DataLoader worker (pid 7) is killed by signal: Segmentation fault. ")
    gone = RuntimeError("DataLoader worker (pid(s) 7) exited unexpectedly")
    gone.__cause__ = killed
    assert worker_death(gone) == "a data-loader worker was killed (signal 11: Segmentation fault)"
    exited = "DataLoader worker (pid 7) exited unexpectedly with exit code 1. Details are lost due to ..."
    assert worker_death(RuntimeError(exited)) == "a data-loader worker exited unexpectedly (exit code 1)"
    assert worker_death(RuntimeError("DataLoader worker (pid(s) 7, 8) exited unexpectedly")) == (
        "a data-loader worker ended unexpectedly"
    )
    assert worker_death(RuntimeError("CUDA error: an illegal memory access was encountered")) is None


# --- 4. interrupted -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_process_group_writes_a_checkpoint_and_exits_130(
    data: Path, tiny_weights: Path, tmp_path: Path, number: signal.Signals
) -> None:
    """What Slurm does at a time limit: SIGTERM to every process (data-loader workers included); what the
    terminal closing does to a run not started with `nohup`: SIGHUP to them. The step under way is finished
    and checkpointed; `--resume` goes on from it."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "docsam_cli", "finetune", str(data), "--weights", str(tiny_weights)]
    extra = ["--iters", "1000", "--checkpoint-every", "1000", "--workers", "1"]
    command += ["-o", str(out), *overridden(RUN, extra), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not read_log(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    step = max(record["step"] for record in read_log(out))
    assert error_lines(stderr) == [
        f"error: interrupted at step {step}; checkpoint written, continue with --resume"
    ]
    assert [path.name for path in list_checkpoints(out)] == [f"step-{step:08d}"]


def test_a_sighup_the_caller_ignores_stays_ignored_through_the_training_loop() -> None:
    """`nohup` ignores SIGHUP: the terminal closing leaves its run going, and the trainer's handling of the
    signals that stop a run leaves it so."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopRequests() as requests:
            signal.raise_signal(signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert not requests.requested
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_second_sighup_leaves_the_training_loop_to_write_its_checkpoint() -> None:
    """The terminal closing sends a run in its foreground two SIGHUPs within a moment: the second, taken for
    a second request to stop at once, cut the checkpoint of the step the first one asked for."""
    ended = []

    def before(number: int, frame: object) -> None:  # stands in for the default action (it would end pytest)
        ended.append(number)

    previous = signal.signal(signal.SIGHUP, before)
    try:
        with StopRequests() as requests:
            signal.raise_signal(signal.SIGHUP)
            signal.raise_signal(signal.SIGHUP)  # the kernel's, as the shell exits
        assert signal.getsignal(signal.SIGHUP) is before
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert requests.requested and ended == []


class _Terminated(Exception):
    """What this test's own SIGTERM handler raises: the process would have ended there."""


def _terminated(number: int, frame: object) -> None:
    raise _Terminated


def test_sigterm_while_the_run_starts_is_an_interruption(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's time limit while the datasets are read (before the trainer takes over the signals)
    ends the run as Ctrl-C does: one error line, exit 130 (it ended the process: 143, no line)."""
    from docsam_cli.training import launch

    reading = launch.training_data

    def terminated_while_reading(plan):
        os.kill(os.getpid(), signal.SIGTERM)
        return reading(plan)

    monkeypatch.setattr(launch, "training_data", terminated_while_reading)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (code, error_lines(stderr)) == (130, ["error: interrupted"])


@dataclass(frozen=True)
class Rank1(Distributed):
    """Rank 1 of 2 without a process group: rank 0's side is its answers to `from_main`, one per call in
    turn (what rank 0 stopped with, or None: its part went well; None once they run out); the collectives
    that carry no message do nothing. Rank 0's first part is taking the run folder's lock."""

    answers: list[MainStopped | None] = field(default_factory=list)
    steps: list[None] = field(default_factory=list)  # one per value averaged (a step's loss among them)
    rank_0_values: list[float] = field(default_factory=list)  # rank 0's side of `mean`, one per call in turn
    rank_0_gathered: list = field(default_factory=list)  # rank 0's side of `gather` (else this rank's value)

    def wrap(self, model):
        return model

    def mean(self, value):
        self.steps.append(None)
        return (value + self.rank_0_values.pop(0)) / 2 if self.rank_0_values else value

    def barrier(self) -> None:
        pass

    def from_main(self, value):
        assert value is None, "rank 1 has nothing to send"
        return self.answers.pop(0) if self.answers else None

    def gather(self, value):
        return [self.rank_0_gathered.pop(0) if self.rank_0_gathered else value, value]


def test_a_missing_val_is_the_usage_error_on_every_rank_not_only_the_validating_one(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a launcher only rank 0 validates; a missing `--val` stopped it alone, and the other ranks went on
    into the first collective with no peer left (`internal error: ... Connection closed by peer` under
    srun, `error: interrupted` under torchrun). Here as rank 1 of 2, without a process group: it must stop
    before the model loads with the usage error."""
    import docsam_cli.training.launch as launch

    monkeypatch.setattr(launch, "setup", lambda device: Rank1(rank=1, world_size=2))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--val", str(tmp_path / "absent"))
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: --val ") and "no such dataset folder" in lines[0]


@pytest.mark.parametrize("given", ["relative", "absolute"])
def test_a_rank_in_another_working_folder_stops_the_run_when_paths_are_relative(
    given: str, data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same command on two machines (torchrun on each, srun falling back to /tmp where the folder is
    missing), one started in another folder: each rank read the relative DATASET, --val and --out from its
    own working folder, so that rank trained on another dataset of that name, or stopped alone with `no
    such dataset folder`, and made its own run folder there. As `segment` does with relative inputs, every
    rank now stops as the run starts, naming the ranks and rank 0's folder. Absolute paths are read alike
    from any folder. Here as rank 1 of 2, rank 0 in /home/someone/project."""
    import docsam_cli.training.launch as launch

    monkeypatch.chdir(tmp_path)
    rank = Rank1(rank=1, world_size=2, rank_0_gathered=["/home/someone/project"])
    monkeypatch.setattr(launch, "setup", lambda device: rank)
    dataset, out = (Path("data"), Path("run")) if given == "relative" else (data, tmp_path / "run")
    code, stderr = finetune(dataset, tiny_weights, out, "--val", str(dataset))
    if given == "absolute":
        assert code == 0, stderr
        return
    assert code == 2 and error_lines(stderr) == [
        "error: rank 1 runs in another working folder than rank 0 (/home/someone/project): the paths of "
        "DATASET, --val and --out are named by relative paths, which each rank reads from its own working "
        "folder; start every rank in the same folder, or give the paths of DATASET, --val and --out as "
        "absolute paths"
    ], stderr
    assert not rank.steps


def test_a_checkpoint_rank_0_cannot_write_stops_every_rank_with_its_error_line(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a launcher rank 0 alone writes checkpoints, `best/` and the final weights. When it could not
    (a full disk), it stopped with the error line and the others failed in their next collective with no
    peer left: `error: internal error: RuntimeError: ... Connection closed by peer`, exit 3. Here as rank 1
    of 2, rank 0's side played by a stand-in for the process group: its answer is that failure."""
    import docsam_cli.training.launch as launch

    full = f"{tmp_path / 'run' / 'checkpoints' / 'step-00000001'}: cannot write the checkpoint: disk full"

    # Rank 0 locks the folder, loads no validation pages (none asked for), writes run.json and the log line
    # of step 1, then cannot write the checkpoint of step 1.
    answers = [None, None, None, None, MainStopped(full, usage=False)]
    monkeypatch.setattr(launch, "setup", lambda device: Rank1(rank=1, world_size=2, answers=answers))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--checkpoint-every", "1")
    assert code == 1 and error_lines(stderr) == [f"error: {full}"], stderr


def test_a_validation_page_rank_0_cannot_read_stops_every_rank_with_its_error_line(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone loads the `--val` pages, as the run starts: a truncated one stopped it with its error
    line, and the others failed in the next collective (`internal error: ... Connection closed by peer`).
    Rank 1's side, as above: it must stop with rank 0's line before its first step."""
    import docsam_cli.training.launch as launch

    unreadable = f"{data / 'image' / 'p0.png'}: truncated or corrupt image data"
    answers = [None, MainStopped(unreadable, usage=False)]  # the lock, then the validation pages
    monkeypatch.setattr(launch, "setup", lambda device: Rank1(rank=1, world_size=2, answers=answers))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--val", str(data))
    assert code == 1 and error_lines(stderr) == [f"error: {unreadable}"], stderr
    assert not list_checkpoints(tmp_path / "run")


def test_a_run_file_rank_0_cannot_write_as_the_run_starts_stops_every_rank_before_its_first_step(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone writes run.json and opens log.jsonl as the run starts; when it could not (a full disk),
    the others went on into their first step and failed there (`internal error: ... Connection closed by
    peer`). Rank 1's side, as above: it must stop with rank 0's line before any step."""
    import docsam_cli.training.launch as launch

    full = "[Errno 28] No space left on device"
    # The lock, the validation pages (none), run.json.
    rank = Rank1(rank=1, world_size=2, answers=[None, None, MainStopped(full, usage=False)])
    monkeypatch.setattr(launch, "setup", lambda device: rank)
    code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    assert code == 1 and error_lines(stderr) == [f"error: {full}"], stderr
    assert not rank.steps


@pytest.mark.parametrize("name", ["run.json", "log.jsonl"])
def test_a_run_file_that_cannot_be_written_is_named_in_the_error_line(
    name: str, data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk as the run starts said only `error: [Errno 28] No space left on device`, naming no file;
    the line now names it, as a checkpoint's does."""
    import errno

    import docsam_cli.training.run_log as run_log

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_log, "atomic_open" if name == "run.json" else "atomic_write_text", full)
    code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    lines = error_lines(stderr)
    assert code == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {tmp_path / 'run' / name}: cannot write ")
    assert lines[0].endswith(": No space left on device")


def test_a_run_folder_rank_0_finds_locked_stops_every_rank_with_its_usage_error(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone takes the run folder's lock. When another run held it, rank 0 stopped with the usage
    error and, under a plain srun, the others went on and failed in their first collective with no peer
    left (`internal error: ... Connection closed by peer`, exit 3). Rank 1's side, as above: it stops with
    rank 0's line and exit code before the model loads."""
    import docsam_cli.training.launch as launch

    locked = f"--out {tmp_path / 'run'}: another docsam training run (process 7) is writing into this folder"
    rank = Rank1(rank=1, world_size=2, answers=[MainStopped(locked, usage=True)])
    monkeypatch.setattr(launch, "setup", lambda device: rank)
    monkeypatch.setattr(launch, "load_starting_model", lambda starting_model: pytest.fail("model loaded"))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    assert (code, error_lines(stderr)) == (2, [f"error: {locked}"]), stderr
    assert not rank.steps


def test_a_log_line_rank_0_cannot_write_mid_run_stops_every_rank_with_its_error_line(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone writes log.jsonl; when a line could not be written mid-run (a full disk), rank 0
    stopped with its error line and the others failed in their next collective with no peer left
    (`internal error: ... Connection closed by peer`, exit 3). Rank 1's side, as above: rank 0 cannot
    write the line of step 1; rank 1 stops there with that line, not after its next step."""
    import docsam_cli.training.launch as launch
    from docsam_cli.training.trainer import Trainer

    full = f"{tmp_path / 'run' / 'log.jsonl'}: cannot write the training log: No space left on device"
    # The lock, the validation pages (none), run.json, the line of step 1.
    rank = Rank1(rank=1, world_size=2, answers=[None, None, None, MainStopped(full, usage=False)])
    monkeypatch.setattr(launch, "setup", lambda device: rank)
    steps, step = [], Trainer._step
    monkeypatch.setattr(Trainer, "_step", lambda self, *args: steps.append(None) or step(self, *args))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run", "--iters", "3")
    assert code == 1 and error_lines(stderr) == [f"error: {full}"], stderr
    assert len(steps) == 1


def test_decoder_inputs_diverged_on_rank_0_alone_stop_every_rank_before_the_backward(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-finite features (or boxes out of reach) on one rank stopped that rank alone, in its forward,
    with `loss is nan`, while the others went on into the backward's gradient exchange and failed there
    with no peer left (`internal error: ... Connection closed by peer`, exit 3). Rank 1's side, as above:
    rank 0's first forward diverged (its flag, 1, is averaged with rank 1's); rank 1 stops with the same
    line before any step."""
    import docsam_cli.training.launch as launch

    monkeypatch.setattr(launch, "setup", lambda device: Rank1(rank=1, world_size=2, rank_0_values=[1.0]))
    code, stderr = finetune(data, tiny_weights, tmp_path / "run")
    diverged = "error: loss is nan at step 1; the run has no checkpoint yet: start it again with a lower --lr"
    assert (code, error_lines(stderr)) == (1, [diverged]), stderr


def test_a_rank_that_cannot_start_leaves_rank_0s_lock_file_alone(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that cannot start removes the --out it created. Every rank found the folder missing as it
    started, so a rank other than 0 that could not start (weights missing on its machine) unlinked the
    lock file rank 0 held in it: a second run could then lock a new file and write into the folder too.
    Only rank 0, which holds the lock, tidies. Here rank 1 fails as rank 0 holds the lock."""
    import contextlib

    import docsam_cli.training.launch as launch
    from docsam_cli.folder_lock import folder_lock

    out = tmp_path / "run"
    with contextlib.ExitStack() as rank_0:

        def setup(device: str) -> Distributed:
            rank_0.enter_context(folder_lock(out, "docsam training run"))  # as rank 0 does meanwhile
            return Rank1(rank=1, world_size=2)

        monkeypatch.setattr(launch, "setup", setup)
        monkeypatch.setenv("RANK", "1")
        code, stderr = finetune(data, tiny_weights, out, "--val", str(tmp_path / "absent"))
        assert code == 2, stderr
        assert (out / ".docsam" / "lock").read_text().startswith(f"{os.getpid()} ")


@pytest.mark.parametrize("cause", ["device", "launcher", "malformed"])
def test_a_run_that_cannot_take_its_device_or_process_group_leaves_no_empty_run_folder(
    cause: str, data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that cannot start removes the --out it created, but not when the device was not there
    (`--device cuda` on a machine without) or `WORLD_SIZE` was set without a launcher: the error came
    after the folder was made, and an empty one stayed behind. A `WORLD_SIZE` that is no number is refused
    so too (it was `invalid literal for int()`, a failed run)."""
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    if cause != "device":
        monkeypatch.setenv("WORLD_SIZE", "2" if cause == "launcher" else "abc")
    else:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "run"
    code, stderr = finetune(data, tiny_weights, out, *(["--device", "cuda"] if cause == "device" else []))
    assert code == 2 and len(error_lines(stderr)) == 1, stderr
    assert not out.exists()
    if cause == "malformed":
        assert (
            "error: WORLD_SIZE is 'abc', not a number of processes: start the command with torchrun" in stderr
        )


@pytest.mark.parametrize("where", ["new folder in a new folder", "existing folder"])
def test_a_run_that_cannot_start_leaves_no_trace_above_or_inside_its_run_folder(
    where: str, data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that cannot start removed the --out it had created, but not the folders it had made above it
    (`-o runs/2026/news`: runs/2026 stayed), nor, in an existing folder, the OUT/.docsam it had made there
    (its lock file). Neither stays now; the folder's own files do."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "runs" / "run" if where.startswith("new") else tmp_path / "existing"
    if where == "existing folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(path.name for path in tmp_path.iterdir())
    code, stderr = finetune(data, tiny_weights, out, "--device", "cuda")
    assert code == 2 and len(error_lines(stderr)) == 1, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    if where == "existing folder":
        assert [path.name for path in out.iterdir()] == ["notes.txt"]


def test_a_resume_with_another_process_count_is_refused_before_the_model_loads(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of one process resumed by two (or the other way round) draws other batches, and is refused;
    but only once the datasets were read and the model loaded (minutes on real data), and as a failed run
    (exit 1), though nothing ran. It is a request that cannot start: a usage error, found from run.json."""
    import docsam_cli.training.launch as launch

    out = tmp_path / "run"
    assert finetune(data, tiny_weights, out, "--iters", "1")[0] == 0
    monkeypatch.setattr(launch, "setup", lambda device: Rank1(rank=1, world_size=2))
    monkeypatch.setattr(launch, "load_starting_model", lambda starting_model: pytest.fail("model loaded"))
    result = CliRunner().invoke(app, ["finetune", "--resume", "-o", str(out)])
    assert result.exit_code == 2 and error_lines(result.stderr) == [
        f"error: {out / 'checkpoints' / 'step-00000001'}: the run had 1 processes, this one has 2; resume it "
        "with as many (torchrun --nproc_per_node), so that its batches are drawn as before"
    ], result.stderr


def test_a_requeued_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_from_step_0(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that a scheduler requeues (SLURM --requeue, a preemptible VM) runs the same command every
    time, with --resume. Killed before its first checkpoint, the requeued job was refused for good:
    'error: --out OUT: no checkpoint to resume from', exit 2. It now starts the run from step 0 with the
    settings run.json records, saying so in one warning line; the run then resumes as usual."""
    from docsam_cli.training.trainer import Trainer

    out = tmp_path / "run"
    step = Trainer._step

    def killed_at_step_2(self, network, batches, index):
        if index == 1:
            raise OSError("the node went away")  # as kill -9 before step 2's checkpoint
        return step(self, network, batches, index)

    with monkeypatch.context() as first_attempt:
        first_attempt.setattr(Trainer, "_step", killed_at_step_2)
        assert finetune(data, tiny_weights, out, "--checkpoint-every", "2")[0] == 1
    assert (out / "run.json").is_file() and list_checkpoints(out) == []
    code, stderr = finetune(data, tiny_weights, out, "--checkpoint-every", "2", "--resume")
    assert code == 0, stderr
    assert (
        f"warning: --resume: --out {display_path(out)} holds no checkpoint yet; starting the run from step 0"
        in (stderr.splitlines())
    )
    assert [record["step"] for record in read_log(out)] == [1, 2]
    code, stderr = finetune(data, tiny_weights, out, "--checkpoint-every", "2", "--resume", "--iters", "2")
    assert code == 0 and "holds no checkpoint yet" not in stderr  # resumed from its step-2 checkpoint


def test_a_resume_of_checkpoints_without_their_run_file_is_refused(
    data: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """Checkpoints whose run.json is gone (removed by hand): the settings a resume keeps cannot be checked,
    so it is refused as before, with a line that says why (no run to start from step 0 either)."""
    out = tmp_path / "run"
    assert finetune(data, tiny_weights, out, "--iters", "1")[0] == 0
    (out / "run.json").unlink()
    code, stderr = finetune(data, tiny_weights, out, "--iters", "1", "--resume")
    assert code == 2 and error_lines(stderr) == [
        f"error: --out {display_path(out)}: holds checkpoints but no run.json to check the resumed run's "
        "settings against; start a new run in another --out"
    ], stderr


def test_a_torchrun_restart_resumes_the_run_its_first_attempt_started(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun --max-restarts starts the same command again when a rank dies. The restarted attempt found
    the first attempt's checkpoints and refused the folder (`already holds a run: pass --resume`), on every
    restart. It now resumes from the newest checkpoint when the launcher's store (kept through restarts)
    says this launch started the run; another launch into the folder is still refused."""
    from torch.distributed import HashStore

    import docsam_cli.training.launch as launch
    from docsam_cli.training.trainer import Trainer

    store, out = HashStore(), tmp_path / "run"
    monkeypatch.setattr(launch, "setup", lambda device: Distributed(store=store))
    step = Trainer._step

    def dies_at_step_2(self, network, batches, index):
        if index == 1:
            raise OSError("the node went away")
        return step(self, network, batches, index)

    with monkeypatch.context() as first_attempt:
        first_attempt.setattr(Trainer, "_step", dies_at_step_2)
        assert finetune(data, tiny_weights, out, "--checkpoint-every", "1")[0] == 1
    assert finetune(data, tiny_weights, out, "--checkpoint-every", "1")[0] == 0  # the restart
    assert [record["step"] for record in read_log(out)] == [1, 2]

    monkeypatch.setattr(launch, "setup", lambda device: Distributed(store=HashStore()))  # another launch
    code, stderr = finetune(data, tiny_weights, out, "--checkpoint-every", "1")
    assert code == 2 and "already holds a run" in stderr


def test_a_run_refused_by_another_that_locked_the_new_folder_first_leaves_that_runs_lock(
    data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs started into one new --out at about the same time (a job array's tasks, the command typed in
    two terminals): the one that created the folder but took the lock second (its device slower to start)
    was refused, and then tidied the folder it had created, unlinking the lock file of the run training
    there (and `.docsam/`); a third run into the folder took a new lock and trained beside it, rewriting
    run.json and log.jsonl. A refused run leaves a folder whose lock another run holds as it is."""
    import contextlib

    import docsam_cli.training.launch as launch
    from docsam_cli.folder_lock import folder_lock, folder_replaced

    out, start = tmp_path / "run", launch.setup
    with contextlib.ExitStack() as other_run:

        def slow_device(device: str) -> Distributed:
            other_run.enter_context(folder_lock(out, "docsam training run"))  # meanwhile, in the new folder
            return start(device)

        monkeypatch.setattr(launch, "setup", slow_device)
        code, stderr = finetune(data, tiny_weights, out)
        assert code == 2 and "another docsam training run" in stderr, stderr
        assert not folder_replaced(out)  # the other run's lock file is still the one it holds
