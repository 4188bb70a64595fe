"""The training loop in-process on a small synthetic dataset: checkpoints, keep-last, best-by-metric, frozen
backbone, the log, resume guards and the command-line checks."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from training_helpers import write_layout
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.errors import InputError, UsageError
from docsam_cli.training.build import architecture_of
from docsam_cli.training.checkpoints import (
    MODEL_FILE,
    STATE_FILE,
    TrainerState,
    capture_rng,
    list_checkpoints,
    load_trainer_state,
    restore_rng,
    resumed_best,
    save_best,
    save_checkpoint,
    save_final,
)
from docsam_cli.training.data import MixedTrainingData, collate
from docsam_cli.training.datasets import LayoutDataset
from docsam_cli.training.launch import resume_point
from docsam_cli.training.run_log import LOG_FILE, RunLog, read_log
from docsam_cli.training.sample_random import SeededRandom
from docsam_cli.training.settings import (
    AugmentSettings,
    DatasetSpec,
    Regularisation,
    RunPlan,
    TrainingOptions,
)
from docsam_cli.training.trainer import Diverged, Interrupted, Trainer, forward_loss, seed_chunk
from model.checkpoint import load_model, load_weights
from model.docsam import DocSAM


@pytest.fixture
def dataset(tmp_path: Path) -> LayoutDataset:
    rng = np.random.default_rng(0)
    pages = {}
    for index in range(3):
        image = rng.integers(0, 255, (64, 72, 3), dtype=np.uint8)
        annotations = [
            {"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]},
            {"id": 2, "category_id": 2, "bbox": [10, 34, 50, 20]},
        ]
        pages[f"page{index}"] = (
            image,
            {
                "images": [{"id": index, "height": 64, "width": 72, "file_name": f"page{index}.png"}],
                "categories": [{"id": 1, "name": "text"}, {"id": 2, "name": "table"}],
                "annotations": annotations,
            },
        )
    return LayoutDataset(write_layout(tmp_path / "data", pages), name="Synthetic")


def small_model(tiny_config, tiny_reference_state) -> DocSAM:
    """The tiny parity model with the default (reference) training dropout."""
    model = DocSAM(Regularisation().apply(tiny_config))
    load_weights(model, tiny_reference_state)
    return model


def options(**changes) -> TrainingOptions:
    values = dict(
        iterations=4, batch_size=2, lr=1e-3, workers=0, log_every=1, checkpoint_every=1, keep_last=2
    )
    return TrainingOptions(**{**values, "validate_every": 2, "progress": False, **changes})


def data_of(dataset: LayoutDataset, seed: int = 0) -> MixedTrainingData:
    return MixedTrainingData([dataset], AugmentSettings((48, 56), (40, 40)), seed=seed)


def test_run_writes_checkpoints_best_log_and_keeps_the_backbone_frozen(
    dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    model = small_model(tiny_config, tiny_reference_state)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    scores = iter([0.5, 0.3])  # validations at steps 2 and 4: the first is the best
    output = tmp_path / "run"
    trainer = Trainer(
        model,
        data_of(dataset),
        options(freeze_backbone=True),
        output,
        validator=lambda m: {"mAP": next(scores)},
    )
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert len(trainer.optimizer.param_groups) == 1
    final = trainer.run()

    backbone_after, decoder_after = model.backbone.state_dict(), model.decoder.state_dict()
    assert all(torch.equal(v, backbone_after[k]) for k, v in backbone_before.items())
    assert any(not torch.equal(v, decoder_after[k]) for k, v in decoder_before.items())
    assert [path.name for path in list_checkpoints(output)] == ["step-00000003", "step-00000004"]
    state = load_trainer_state(list_checkpoints(output)[-1])
    assert state.step == 4 and state.best == {"metric": "mAP", "value": 0.5, "step": 2}
    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 2, "mAP": 0.5}
    log = read_log(output)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r["validation"]["mAP"] for r in log if "validation" in r] == [0.5, 0.3]
    reloaded = load_model(final)  # what `segment --weights` does: the config travels in the file
    trained = model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.state_dict().items())


def test_resume_guards(dataset, tiny_config, tiny_reference_state, tmp_path) -> None:
    output = tmp_path / "run"
    Trainer(
        small_model(tiny_config, tiny_reference_state), data_of(dataset), options(iterations=1), output
    ).run()
    plan = RunPlan(datasets=[DatasetSpec(dataset.root)], output=output, options=options())
    with pytest.raises(UsageError, match="--resume"):
        resume_point(plan, world_size=1)
    checkpoint = resume_point(RunPlan(**{**plan.__dict__, "resume": True}), world_size=1)
    other_seed = Trainer(
        architecture_of(checkpoint / MODEL_FILE, Regularisation()),
        data_of(dataset, seed=1),
        options(seed=1),
        output,
    )
    with pytest.raises(ValueError, match="seed"):
        other_seed.resume(checkpoint)
    # A checkpoint whose optimiser state was stored for another parameter layout (e.g. written by a docsam
    # version with other backbone parameter names) is refused instead of failing at the first step.
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    state["run"]["parameters"] = list(reversed(state["run"]["parameters"]))
    torch.save(state, checkpoint / STATE_FILE)
    same_run = Trainer(
        architecture_of(checkpoint / MODEL_FILE, Regularisation()), data_of(dataset), options(), output
    )
    with pytest.raises(ValueError, match="parameter layout"):
        same_run.resume(checkpoint)
    # A run of two processes resumed by one would draw other batches: refused, naming both counts.
    state["run"]["parameters"] = list(reversed(state["run"]["parameters"]))
    assert state["run"]["processes"] == 1
    state["run"]["processes"] = 2
    torch.save(state, checkpoint / STATE_FILE)
    with pytest.raises(ValueError, match="the run had 2 processes, this one has 1; resume it with as many"):
        same_run.resume(checkpoint)
    del state["run"]["processes"]  # a checkpoint of an earlier version: no count, resumed as it was
    torch.save(state, checkpoint / STATE_FILE)
    assert same_run.resume(checkpoint) == 1


def test_command_line_checks(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--text-encoder" in result.output
    result = runner.invoke(
        app, ["finetune", str(tmp_path), "-o", str(tmp_path / "out"), "--weights", "x", "--precision", "fp8"]
    )
    assert result.exit_code == 2 and "precision" in result.output
    result = runner.invoke(
        app, ["finetune", f"{tmp_path},weight=2", "-o", str(tmp_path / "o"), "--weights", "x"]
    )
    assert result.exit_code == 2 and "unified layout" in result.output  # an argument that is no dataset


@pytest.mark.slow
def test_benchmark_script_runs_on_cpu(reference_fixtures) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    config = reference_fixtures / "tiny-config.json"
    command = [sys.executable, str(script), "--config", str(config), "--device", "cpu", "--size", "64"]
    command += ["--batch-size", "1", "--iters", "1", "--warmup", "0", "--instances", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"batch 1 of 64x64: \d+\.\d+ it/s", result.stdout), result.stdout


def test_bf16_autocast_trains_on_the_cpu_and_fp16_is_refused(
    dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """bf16 autocast runs the network on the CPU (the criterion stays float32); fp16 needs CUDA."""
    model = small_model(tiny_config, tiny_reference_state).train()
    data = data_of(dataset)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(model, data, options(precision="fp16"), tmp_path / "fp16")
    trainer = Trainer(model, data, options(precision="bf16"), tmp_path / "bf16")
    batch = collate([data.sample(index, SeededRandom(0, index)) for index in range(2)])
    seed_chunk(0, 0)
    output, losses = forward_loss(model, batch, trainer.criterion, "bf16")
    assert output.last.class_logits.dtype == torch.bfloat16
    assert losses.total.dtype == torch.float32 and torch.isfinite(losses.total)
    losses.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_run_saved_with_more_gpus_resumes_on_a_machine_with_fewer(monkeypatch) -> None:
    """A checkpoint holds the generator state of every GPU its machine had; restoring state 1 on a
    one-GPU machine raised IndexError (torch.cuda.default_generators[1]) and the resume failed."""
    state = capture_rng()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", lambda saved, device: restored.append(device))
    restore_rng(state)
    assert restored == [0]


def test_a_nan_loss_stops_the_run_before_the_weights_change(
    dataset, tiny_config, tiny_reference_state, tmp_path, monkeypatch
) -> None:
    """The loss is checked before the optimiser step: the weights are not updated with a NaN loss, and the
    error says where the run can be resumed from."""
    model = small_model(tiny_config, tiny_reference_state)
    trainer = Trainer(model, data_of(dataset), options(iterations=3, validate_every=0), tmp_path / "run")
    real_forward_loss = forward_loss

    def nan_at_step_2(*args, **kwargs):
        output, losses = real_forward_loss(*args, **kwargs)
        nan = trainer.optimizer.state and len(list_checkpoints(tmp_path / "run")) == 1
        return output, replace(losses, total=losses.total * (math.nan if nan else 1.0))

    monkeypatch.setattr("docsam_cli.training.trainer.forward_loss", nan_at_step_2)
    with pytest.raises(
        Diverged, match=r"^loss is nan at step 2; try a lower --lr in a new run, .*step-00000001\)$"
    ):
        trainer.run()
    after_step_1 = load_model(list_checkpoints(tmp_path / "run")[-1] / MODEL_FILE).state_dict()
    kept = model.state_dict()
    assert all(torch.equal(value, kept[key]) for key, value in after_step_1.items())
    assert not (tmp_path / "run" / MODEL_FILE).exists()


def test_a_stop_signal_ends_the_run_after_the_step_with_a_checkpoint(
    dataset, tiny_config, tiny_reference_state, tmp_path, monkeypatch
) -> None:
    """Ctrl-C during step 2 (no checkpoint due until step 4): step 2 is finished, its checkpoint written
    as a periodic one, and `Interrupted` says so; the previous handler is back afterwards."""
    trainer = Trainer(
        small_model(tiny_config, tiny_reference_state),
        data_of(dataset),
        options(iterations=6, checkpoint_every=4, validate_every=0),
        tmp_path / "run",
    )
    real_forward_loss, calls = forward_loss, []

    def interrupt_in_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real_forward_loss(*args, **kwargs)

    monkeypatch.setattr("docsam_cli.training.trainer.forward_loss", interrupt_in_step_2)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(
        Interrupted, match=r"^interrupted at step 2; checkpoint written, continue with --resume$"
    ):
        trainer.run()
    assert signal.getsignal(signal.SIGINT) is handler
    assert [path.name for path in list_checkpoints(tmp_path / "run")] == ["step-00000002"]
    assert load_trainer_state(list_checkpoints(tmp_path / "run")[-1]).step == 2
    assert [record["step"] for record in read_log(tmp_path / "run")] == [1, 2]


@contextlib.contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """Writing a file beyond `size` bytes fails (EFBIG, as ENOSPC on a full disk) while entered."""
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, previous_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


@pytest.mark.parametrize("failing", ["weights", "trainer state"])
def test_a_checkpoint_that_cannot_be_written_is_one_error_and_leaves_nothing_behind(
    failing, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A full disk while the weights (safetensors) or the trainer state (torch.save) are written is an
    InputError naming the checkpoint (exit status 1, not an internal error), the half-written folder is
    removed and the earlier checkpoint stays."""
    model, output = small_model(tiny_config, tiny_reference_state), tmp_path / "run"
    state = TrainerState(step=1, optimizer={}, scaler={}, rng={}, best=None, run={})
    first = save_checkpoint(output, model, state, keep_last=2, stored={})
    weights_size = (first / MODEL_FILE).stat().st_size
    state = replace(state, step=2, optimizer={"big": torch.zeros(weights_size // 4 + 2**20)})
    with (
        files_limited_to(2**20 if failing == "weights" else weights_size + 2**20),
        pytest.raises(InputError, match=r"step-00000002: cannot write the checkpoint: File too large$"),
    ):
        save_checkpoint(output, model, state, keep_last=2, stored={})
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["step-00000001"]
    assert load_trainer_state(first).step == 1


@pytest.mark.parametrize("written", ["best", "final"])
def test_weights_that_cannot_be_published_are_one_error_naming_what_the_user_knows(
    written, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A full disk while best/ or the final weights were written was an internal error (exit 3) naming the
    hidden staging folder (`run/.best.tmp/model.safetensors`); it is now an InputError (exit 1, one line)
    naming best/ or model.safetensors, as a checkpoint's is, and the staging folder is removed."""
    model, output = small_model(tiny_config, tiny_reference_state), tmp_path / "run"
    output.mkdir()
    target, what = {
        "best": (output / "best", "the best weights"),
        "final": (output / MODEL_FILE, "the final weights"),
    }[written]
    with files_limited_to(2**20), pytest.raises(InputError) as raised:
        if written == "best":
            save_best(output, model, {"mAP": 0.5}, 2, {})
        else:
            save_final(output, model, {})
    assert str(raised.value) == f"{target}: cannot write {what}: File too large"
    assert list(output.iterdir()) == []


def test_best_that_cannot_be_renamed_into_place_is_one_error_and_the_earlier_best_stays(
    tiny_config, tiny_reference_state, tmp_path, monkeypatch
) -> None:
    """The rename of `.best.tmp/` to `best/` failing (an I/O error, a network file system) was silent: the
    earlier `best/` had been renamed away to `.best.<pid>.<random>.old`, and the run went on without one."""
    model, output = small_model(tiny_config, tiny_reference_state), tmp_path / "run"
    save_best(output, model, {"mAP": 0.5}, 2, {})
    real_replace = os.replace

    def staging_refused(source, destination):
        if Path(source).name == ".best.tmp":
            raise OSError(errno.EIO, "Input/output error", os.fspath(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", staging_refused)
    with pytest.raises(InputError) as raised:
        save_best(output, model, {"mAP": 0.7}, 4, {})
    assert str(raised.value) == f"{output / 'best'}: cannot write the best weights: Input/output error"
    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 2, "mAP": 0.5}
    assert sorted(path.name for path in output.iterdir()) == ["best"]


def test_best_keeps_its_weights_with_their_metrics_when_replacing_it_fails(
    tiny_config, tiny_reference_state, tmp_path, monkeypatch
) -> None:
    """best/ was rewritten in place, weights first: a run killed (or failing) before its metrics.json was
    written left the new weights beside the earlier step's metrics."""
    model, output = small_model(tiny_config, tiny_reference_state), tmp_path / "run"
    save_best(output, model, {"mAP": 0.5}, 2, {})
    published = (output / "best" / MODEL_FILE).read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1)

    def killed(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        save_best(output, model, {"mAP": 0.7}, 4, {})
    monkeypatch.undo()

    assert (output / "best" / MODEL_FILE).read_bytes() == published
    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 2, "mAP": 0.5}
    assert sorted(path.name for path in output.iterdir()) == ["best"]
    save_best(output, model, {"mAP": 0.7}, 4, {})
    assert (output / "best" / MODEL_FILE).read_bytes() != published
    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 4, "mAP": 0.7}
    assert sorted(path.name for path in output.iterdir()) == ["best"]


@pytest.mark.parametrize("torn", ['{"step": 3, "loss": 7', "\0" * 40])
def test_a_log_torn_by_a_full_disk_or_a_crash_does_not_stop_the_resume(torn: str, tmp_path: Path) -> None:
    """A run stopped while writing a line of log.jsonl (a full disk, which the README says to --resume
    from once there is room; a crashed node, which leaves NUL bytes) left a torn last line, and --resume
    stopped at once with 'error: Expecting ',' delimiter: line 1 column 22 (char 21)'. The torn line is
    left out: the resumed log reads as if the run had never stopped."""
    kept = [{"step": 1, "loss": 2.0, "lr": 1e-3}, {"step": 2, "validation": {"mAP": 0.5}}]
    lines = "".join(json.dumps(record) + "\n" for record in kept)
    (tmp_path / LOG_FILE).write_text(lines + torn, encoding="utf-8")
    log = RunLog(tmp_path, start_step=2)
    log.write({"step": 3, "loss": 1.0, "lr": 1e-3})
    log.close()
    assert read_log(tmp_path) == [*kept, {"step": 3, "loss": 1.0, "lr": 1e-3}]
    assert (tmp_path / LOG_FILE).read_text(encoding="utf-8").count("\n") == 3


@pytest.mark.parametrize("swapping_best", [False, True])
def test_a_resumed_run_removes_what_a_run_killed_while_publishing_left_behind(
    swapping_best, dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A run killed (kill -9, the OOM killer) while writing best/ or its final weights left safetensors'
    own temporary file, as large as the weights, beside them for good. Those writes now go through staging
    folders, which the resumed run removes, with the temporaries of `atomic_open` (run.json's); a kill
    between the two renames that swap best/ left it under its old name, which is put back."""
    output = tmp_path / "run"
    run_options = options(iterations=1, validate_every=1)
    model = small_model(tiny_config, tiny_reference_state)
    Trainer(model, data_of(dataset), run_options, output, validator=lambda m: {"mAP": 0.5}).run()
    best_weights = (output / "best" / MODEL_FILE).read_bytes()
    for staging in (".best.tmp", ".model.safetensors.tmp"):
        (output / staging).mkdir()
        (output / staging / ".model.safetensors.0123abcd.tmp").write_bytes(b"")
        (output / staging / ".tmpAbC123").write_bytes(b"half-written weights")
    (output / ".run.json.89abcdef.tmp").write_text("{")
    if swapping_best:
        (output / "best").rename(output / ".best.4242.old")
    (output / MODEL_FILE).unlink()  # killed while writing it

    checkpoint = list_checkpoints(output)[-1]
    resumed = Trainer(
        architecture_of(checkpoint / MODEL_FILE, Regularisation()), data_of(dataset), run_options, output
    )
    resumed.run(resume=checkpoint)

    assert [path.name for path in output.iterdir() if path.name.startswith(".")] == []
    assert load_model(output / MODEL_FILE) is not None
    assert (output / "best" / MODEL_FILE).read_bytes() == best_weights
    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 1, "mAP": 0.5}


def test_a_resumed_run_replaces_best_only_with_better_weights_than_it_holds(
    dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A run killed after publishing best/ at step 3 but before its checkpoint of step 4 resumed from step 2
    with the best score step 2's checkpoint recorded: it replaced the better weights in best/ with any that
    beat that older score (step 3 validated again on a GPU need not give the same figures)."""
    output = tmp_path / "run"
    run_options = options(validate_every=1, checkpoint_every=2, keep_last=5)
    scores = iter([0.5, 0.6, 0.9, 0.1])
    model = small_model(tiny_config, tiny_reference_state)
    Trainer(model, data_of(dataset), run_options, output, validator=lambda m: {"mAP": next(scores)}).run()
    best_weights = (output / "best" / MODEL_FILE).read_bytes()
    shutil.rmtree(list_checkpoints(output)[-1])  # killed before the checkpoint of step 4
    (output / MODEL_FILE).unlink()

    checkpoint = list_checkpoints(output)[-1]
    assert load_trainer_state(checkpoint).best == {"metric": "mAP", "value": 0.6, "step": 2}
    scores = iter([0.7, 0.8])
    resumed = Trainer(
        architecture_of(checkpoint / MODEL_FILE, Regularisation()),
        data_of(dataset),
        run_options,
        output,
        validator=lambda m: {"mAP": next(scores)},
    )
    resumed.run(resume=checkpoint)

    assert json.loads((output / "best" / "metrics.json").read_text()) == {"step": 3, "mAP": 0.9}
    assert (output / "best" / MODEL_FILE).read_bytes() == best_weights
    assert load_trainer_state(list_checkpoints(output)[-1]).best == {"metric": "mAP", "value": 0.9, "step": 3}


def test_a_checkpoint_removes_the_half_written_checkpoints_of_a_killed_run(
    tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A run killed while writing the checkpoint of a Ctrl-C at step 5 (or resumed with another
    --checkpoint-every) never writes that step again: its staging folder goes with the next checkpoint."""
    leftover = tmp_path / "run" / "checkpoints" / ".step-00000005.tmp"
    leftover.mkdir(parents=True)
    (leftover / MODEL_FILE).write_bytes(b"half-written")
    state = TrainerState(step=4, optimizer={}, scaler={}, rng={}, best=None, run={})
    save_checkpoint(tmp_path / "run", small_model(tiny_config, tiny_reference_state), state, 2, {})
    assert [path.name for path in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000004"]


def test_a_run_started_again_before_its_first_checkpoint_keeps_no_best_of_the_earlier_attempt(
    dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    """A run that stopped before its first checkpoint (a data-loader worker killed for want of memory: 'start
    it again with fewer --workers or a smaller --batch-size') is started again into its folder, which
    restarts log.jsonl and run.json; the first attempt's best/ stayed, so best/ held weights of another
    run, and a resume of the new run compared its validations with that attempt's score."""
    output = tmp_path / "run"
    first = options(iterations=1, validate_every=1, checkpoint_every=5)
    model = small_model(tiny_config, tiny_reference_state)
    Trainer(model, data_of(dataset), first, output, validator=lambda m: {"mAP": 0.9}).run()
    shutil.rmtree(output / "checkpoints")  # stopped after its validation, before its checkpoint
    (output / MODEL_FILE).unlink()
    assert resume_point(RunPlan(datasets=(DatasetSpec(dataset.root),), output=output), 1) is None

    again = options(iterations=1, validate_every=0)
    Trainer(small_model(tiny_config, tiny_reference_state), data_of(dataset), again, output).run()

    assert not (output / "best").exists()
    assert load_trainer_state(list_checkpoints(output)[-1]).best is None


def test_a_new_run_leaves_a_best_folder_that_no_run_wrote(
    dataset, tiny_config, tiny_reference_state, tmp_path
) -> None:
    output = tmp_path / "project"
    (output / "best").mkdir(parents=True)
    (output / "best" / "notes.txt").write_text("mine", encoding="utf-8")
    run_options = options(iterations=1, validate_every=0)
    Trainer(small_model(tiny_config, tiny_reference_state), data_of(dataset), run_options, output).run()
    assert (output / "best" / "notes.txt").read_text(encoding="utf-8") == "mine"


class _SummaryWriter:
    """Stands in for torch's TensorBoard writer (the tensorboard package is optional): records how it was
    opened and what it was given."""

    opened: ClassVar[list[dict]] = []

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.opened.append({"log_dir": log_dir, "purge_step": purge_step})

    def add_scalar(self, name: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def tensorboard(monkeypatch) -> list[dict]:
    """Make `tensorboard` importable, with `torch.utils.tensorboard.SummaryWriter` the stand-in."""
    import importlib.machinery
    import types

    package = types.ModuleType("tensorboard")
    package.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    writer_module = types.ModuleType("torch.utils.tensorboard")
    writer_module.SummaryWriter = _SummaryWriter
    monkeypatch.setitem(sys.modules, "tensorboard", package)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", writer_module)
    monkeypatch.setattr(_SummaryWriter, "opened", [])
    return _SummaryWriter.opened


def test_a_resumed_log_hides_the_tensorboard_points_the_stopped_run_wrote_after_its_checkpoint(
    tensorboard, tmp_path: Path
) -> None:
    """log.jsonl drops the lines a stopped run wrote after the checkpoint a resume starts from; its
    TensorBoard events stayed, so the resumed run's curves drew those steps twice (and a run started again
    in the folder of one that stopped before its first checkpoint showed that attempt's curves too).
    The writer now purges the events from the first step the run writes again."""
    RunLog(tmp_path, start_step=0).close()
    RunLog(tmp_path, start_step=200).close()
    assert [opened["purge_step"] for opened in tensorboard] == [1, 201]
    assert {opened["log_dir"] for opened in tensorboard} == {str(tmp_path / "tensorboard")}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"step": 3, "mAP": 0.', "not valid JSON (Expecting ',' delimiter: line 1 column 21 (char 20))"),
        (b"[3, 0.9]", "not the step and mAP score docsam writes there"),
        (b'{"mAP": 0.9}', "not the step and mAP score docsam writes there"),
        (b'{"step": 3, "mAP": "high"}', "not the step and mAP score docsam writes there"),
    ],
)
def test_a_resumed_run_with_a_damaged_best_metrics_file_is_told_which_file(tmp_path, content, reason) -> None:
    """A best/metrics.json that is not valid JSON said only `error: Expecting value: ...` on resume, and
    one that is JSON of another shape ended in a traceback (AttributeError, KeyError, TypeError)."""
    metrics = tmp_path / "best" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_bytes(content)
    state = TrainerState(step=4, optimizer={}, scaler={}, rng={}, best=None, run={})

    with pytest.raises(ValueError) as raised:
        resumed_best(tmp_path, state, "mAP")

    assert str(raised.value) == (
        f"{metrics}: {reason}, so the run cannot compare its validations with the weights beside it; put "
        f"back the file, or remove {metrics.parent} to let the run's next validation write it again"
    )
