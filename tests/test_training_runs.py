"""Whole `docsam finetune` runs as users start them (subprocesses): kill and resume, torchrun with 2 ranks.

The tiny parity model is fine-tuned on PubLayNet pages converted by `convert-dataset`, with small crops so
that each run takes seconds. Dropout and stochastic depth stay on (the defaults): their randomness must
replay exactly too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from training_helpers import convert_publaynet

from docsam_cli.training.run_log import read_log
from model.checkpoint import save_model

pytestmark = pytest.mark.slow

RUN = [
    "--iters", "6", "--batch-size", "2", "--lr", "1e-3", "--short-range", "96,112", "--patch-size", "80,80",
    "--log-every", "1", "--checkpoint-every", "2", "--keep-last", "5", "--no-progress", "--device", "cpu",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def layout(tmp_path_factory, shared_data: Path) -> Path:
    return convert_publaynet(shared_data, tmp_path_factory.mktemp("publaynet") / "PubLayNet")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(tiny_model, path)
    return path


def finetune_command(layout: Path, weights: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "docsam_cli", "finetune", str(layout), "--weights", str(weights),
            "-o", str(output), *RUN, *extra]  # fmt: skip


def run(command: list[str]) -> None:
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(output: Path) -> list[tuple[int, float, float]]:
    """(step, loss, learning rate) of every logged step."""
    return [(r["step"], r["loss"], r["lr"]) for r in read_log(output) if "loss" in r]


def assert_same_log(first: Path, second: Path, rel: float) -> None:
    a, b = losses(first), losses(second)
    assert [(step, lr) for step, _, lr in a] == [(step, lr) for step, _, lr in b]
    assert [loss for _, loss, _ in a] == pytest.approx([loss for _, loss, _ in b], rel=rel)


def assert_same_weights(first: Path, second: Path, atol: float) -> None:
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    assert worst <= atol, f"weights differ by up to {worst:.3g}"


def test_killed_run_resumes_like_an_uninterrupted_one(layout, weights, tmp_path) -> None:
    run(finetune_command(layout, weights, tmp_path / "whole", "--workers", "0"))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        finetune_command(layout, weights, killed, "--workers", "1"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(step >= 3 for step, _, _ in losses(killed)):  # checkpoint 2 written, step 3 done
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    logged_before_kill = max(step for step, _, _ in losses(killed))

    run(finetune_command(layout, weights, killed, "--workers", "1", "--resume"))
    # Lines the killed process logged after its last checkpoint were dropped and written again.
    assert logged_before_kill >= 3 and [step for step, _, _ in losses(killed)] == list(range(1, 7))
    assert_same_log(killed, tmp_path / "whole", rel=1e-6)
    assert_same_weights(killed, tmp_path / "whole", atol=1e-6)


def test_torchrun_two_processes_match_one_process(layout, weights, tmp_path) -> None:
    """2 processes × batch 1 equal 1 process × 2 accumulation steps of batch 1 (same chunks, same seeds).

    1 process running the batch of 2 in one forward is another computation: query selection pads the kept
    queries of the images of one forward to a common count and those rows stay live (docs/design.md, "live
    padding rows"), and the losses average over the pairs of a forward (per process, as the reference's
    DDP). Compared loosely."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = finetune_command(layout, weights, tmp_path / "ddp", "--workers", "0")
    run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", *command[2:]])
    run(finetune_command(layout, weights, tmp_path / "accumulated", "--workers", "0", "--accumulate", "2"))
    run(finetune_command(layout, weights, tmp_path / "together", "--workers", "0"))

    ddp = losses(tmp_path / "ddp")
    assert [step for step, _, _ in ddp] == list(range(1, 7))
    assert_same_log(tmp_path / "ddp", tmp_path / "accumulated", rel=1e-6)  # measured: bit-identical
    assert_same_weights(tmp_path / "ddp", tmp_path / "accumulated", atol=1e-6)
    together = [loss for _, loss, _ in losses(tmp_path / "together")]
    assert [loss for _, loss, _ in ddp] == pytest.approx(together, rel=0.1)  # measured: within 5 %
