"""Every benchmark script imports: they are run by hand and on the GPU machine, not by the test suite, so a
renamed import would otherwise only show there."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted(path.stem for path in (Path(__file__).parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", [name for name in BENCHMARKS if name != "__init__"])
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__, f"benchmarks/{name}.py says what it measures"


@pytest.mark.parametrize("name", [name for name in BENCHMARKS if name != "__init__"])
def test_no_benchmark_module_shadows_an_installed_one(name: str) -> None:
    # A script run as `python benchmarks/x.py` has benchmarks/ first on sys.path: a module there named like
    # an installed one (transformers imports `kernels` when it is there) would be imported in its place.
    assert importlib.util.find_spec(name) is None, f"benchmarks/{name}.py shadows an installed module"


def test_write_speed_runs_the_batch_runner_behind_a_stand_in_model(monkeypatch, capsys) -> None:
    """`write_speed.py --writers` (a GPU-checks step) drives `SegmentRun` with docsam's own listing."""
    from benchmarks import write_speed

    arguments = "--writers 1 --pages 2 --model-seconds 0.01 --instances 2 --size 120,80 --workers 1"
    monkeypatch.setattr("sys.argv", ["write_speed.py", *arguments.split()])
    write_speed.main()
    assert "writers 1: " in capsys.readouterr().out


def test_weights_load_with_the_architecture_their_file_names(tiny_weights) -> None:
    """`--weights FILE` alone: the config `save_model` stored (or the detected variant), not `--variant`'s
    default, which refused every file but a DocSAM-Base one."""
    import argparse

    from benchmarks.common import add_model_arguments, build_model, model_label

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(["--weights", str(tiny_weights), "--device", "cpu"])
    model, _ = build_model(args)
    assert model.config.backbone.embed_dim == 12
    assert model_label(parser.parse_args([])) == "DocSAM-base"


@pytest.mark.parametrize("option", ["--pages", "--threads", "--batch-size", "--pages-per-batch", "--workers"])
def test_segment_speed_refuses_counts_below_one(option, monkeypatch, capsys) -> None:
    from benchmarks import segment_speed

    monkeypatch.setattr("sys.argv", ["segment_speed.py", option, "0"])
    with pytest.raises(SystemExit):
        segment_speed._parser().parse_args()
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err


def test_a_device_that_is_not_there_is_one_line_not_a_traceback(monkeypatch) -> None:
    import argparse

    from benchmarks.common import add_model_arguments, build_model

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available"):
        build_model(parser.parse_args(["--device", "cuda"]))


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("write_speed", "--repeats 0", "argument --repeats: must be at least 1, got 0"),
        ("roi_align_speed", "--repeats 0", "argument --repeats: must be at least 1, got 0"),
        ("roi_align_speed", "--threads 0", "argument --threads: must be at least 1, got 0"),
        ("roi_align_speed", "--threads -1", "argument --threads: must be at least 1, got -1"),
        ("train_speed", "--iters 0", "argument --iters: must be at least 1, got 0"),
        ("train_speed", "--device cuda", "--device cuda: CUDA is not available on this machine"),
        ("train_speed", "--device cpu --precision fp16", "fp16 needs a CUDA device"),
    ],
)
def test_benchmarks_refuse_unusable_arguments_in_one_line(script, arguments, message, monkeypatch, capsys):
    """`--repeats 0` ended in a StatisticsError, `--device cuda` without CUDA in torch's RuntimeError, both
    tracebacks after the work had started; now argparse's one-line error (exit 2)."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    module = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr("sys.argv", [f"{script}.py", *arguments.split()])
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_train_speed_computes_with_the_threads_docsam_train_takes(monkeypatch):
    """`docsam train` caps torch's threads at the cgroup's CPU quota (`fit_threads_to_cpus`); the benchmark
    left torch one thread per CPU of the machine, measuring another thread count than training runs with."""
    import torch

    from benchmarks import train_speed
    from docsam_cli.errors import UsageError

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("docsam_cli.runtime.usable_cpus", lambda: 1)

    def set_up(device):  # the process is set up: stop before the model is built
        raise UsageError("stopped")

    monkeypatch.setattr(train_speed, "pick_device", set_up)
    monkeypatch.setattr("sys.argv", ["train_speed.py", "--device", "cpu"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(SystemExit):
            train_speed.main()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_segment_speed_inputs_decode_on_every_worker_as_segment_does(tmp_path, monkeypatch) -> None:
    """`--inputs DIR --workers 8` decoded at most 4 pages at a time (`iter_pages`' default look-ahead), where
    `docsam segment --workers 8` keeps its 8 threads busy: the rate it printed for 8 workers was that of 4."""
    import threading
    import time
    from types import SimpleNamespace

    import numpy as np

    from benchmarks import segment_speed

    lock, running, most = threading.Lock(), [0], [0]

    def load() -> SimpleNamespace:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return SimpleNamespace(image=np.zeros((4, 4, 3), np.uint8))

    tasks = [SimpleNamespace(load=load) for _ in range(16)]
    monkeypatch.setattr("docsam_cli.inputs.collect_documents", lambda *args, **kwargs: [])
    monkeypatch.setattr("docsam_cli.inputs.iter_page_tasks", lambda documents, options: tasks)
    monkeypatch.setattr(segment_speed, "_measure", lambda *args: (1.0, 0, None))
    args = segment_speed._parser().parse_args(["--inputs", str(tmp_path), "--workers", "8", "--pages", "16"])
    segment_speed._inputs(args, None, "cpu", None)
    assert most[0] == 8
