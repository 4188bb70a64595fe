"""The options of `docsam train` / `docsam finetune`: one declaration (`docsam_cli.training.settings`) for
both commands, finetune's defaults as overrides of it, choices, panels, `-o/--out`, and a start that
imports no torch."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from docsam_cli.app import MESSAGES_PANEL, app, load_command
from docsam_cli.commands.finetune import FINETUNE_OPTIONS
from docsam_cli.precision import PRECISIONS
from docsam_cli.training import settings
from docsam_cli.training.settings import (
    PANELS,
    AugmentSettings,
    Regularisation,
    RunPlan,
    TrainingOptions,
)
from docsam_cli.weights.registry import Variant

SHARED_GROUPS = (RunPlan, TrainingOptions, AugmentSettings, Regularisation)


def command(name: str) -> typer.core.TyperCommand:
    return load_command(name)


def parameters(name: str) -> dict[str, typer.core.TyperOption | typer.core.TyperArgument]:
    return {parameter.name: parameter for parameter in command(name).params}


def choices_of(parameter: typer.core.TyperOption) -> tuple[str, ...]:
    """The values of a `Literal[...]` (or `Literal[...] | None`) option."""
    annotation = parameter.type_descriptor.annotation
    if get_origin(annotation) is not Literal:
        (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
    assert get_origin(annotation) is Literal, annotation
    return get_args(annotation)


def declared(cls: type) -> dict[str, tuple[object, settings.Option]]:
    """Option name → (declared default, declaration) of one settings dataclass."""
    result = {}
    for item in fields(cls):
        if "option" in item.metadata:
            default = item.default_factory() if item.default_factory is not MISSING else item.default
            result[item.metadata["option"].name] = (default, item.metadata["option"])
    return result


def command_line_default(default: object, option: settings.Option) -> object:
    if default is MISSING or default in (None, ()):
        return None
    return option.show(default) if option.show else default


def test_both_commands_take_the_shared_options_from_one_declaration() -> None:
    shared = {name: spec for cls in SHARED_GROUPS for name, spec in declared(cls).items()}
    train, finetune = parameters("train"), parameters("finetune")
    assert set(shared) <= set(train) and set(shared) <= set(finetune)
    for name, (default, option) in shared.items():
        expected = command_line_default(default, option)
        assert train[name].default == expected, name
        assert train[name].help == finetune[name].help == option.help, name
        if not option.argument:
            flags = {flag for declaration in option.flags for flag in declaration.split("/")}
            for parameter in (train[name], finetune[name]):
                assert {*parameter.opts, *parameter.secondary_opts} == flags, name
    # finetune differs only where FINETUNE_OPTIONS overrides TrainingOptions.
    different = {name for name in shared if train[name].default != finetune[name].default}
    assert different == {"iters", "batch_size", "lr"}
    assert (
        (finetune["iters"].default, finetune["batch_size"].default, finetune["lr"].default)
        == (
            FINETUNE_OPTIONS.iterations,
            FINETUNE_OPTIONS.batch_size,
            FINETUNE_OPTIONS.lr,
        )
        == (4000, 4, 2e-5)
    )
    # One workers default for the loop and the commands (they used to disagree).
    assert train["workers"].default == finetune["workers"].default == TrainingOptions().workers


def test_every_option_sits_in_a_help_panel_and_the_output_folder_is_out() -> None:
    for name in ("train", "finetune"):
        params = parameters(name)
        for parameter in params.values():
            if isinstance(parameter, typer.core.TyperOption) and parameter.name != "config":
                assert parameter.rich_help_panel in (*PANELS, MESSAGES_PANEL), (name, parameter.name)
        assert set(params["out"].opts) == {"-o", "--out"}
        assert not any("--output" in parameter.opts for parameter in params.values())


@pytest.mark.parametrize(
    ("option", "choices"),
    [
        ("--schedule", ("cosine", "step", "fix")),
        ("--best-metric", settings.METRICS),
        ("--precision", PRECISIONS),
        ("--variant", ("base", "large")),
    ],
)
def test_enumerated_options_are_choices(option: str, choices: tuple[str, ...]) -> None:
    runner = CliRunner()
    for name in ("train", "finetune"):
        (parameter,) = [p for p in command(name).params if option in p.opts]
        assert choices_of(parameter) == tuple(choices)
        result = runner.invoke(app, [name, "data", "-o", "out", option, "nonsense"])
        assert result.exit_code == 2, result.output
        # Named as Typer names choices read in any case, lower-cased (`--best-metric` 'map' for mAP).
        assert all(choice.casefold() in result.output for choice in choices), result.output


def test_names_repeated_without_torch_match_their_sources() -> None:
    """The schedule and variant names are written in `settings` and the weights registry to keep --help
    free of torch."""
    from model.config import VARIANTS
    from model.optim import SCHEDULES

    assert get_args(settings.Schedule) == SCHEDULES
    assert get_args(Variant) == tuple(VARIANTS)


def test_missing_and_unparsable_values_are_usage_errors() -> None:
    runner = CliRunner()
    cases = [
        (["train", "-o", "out"], "DATASET"),
        (["finetune", "data", "--weights", "w"], "--out"),
        (["finetune", "data", "-o", "o", "--weights", "w", "--patch-size", "a,b"], "--patch-size"),
        (["finetune", "data", "-o", "o", "--weights", "w", "--short-range", "900,700"], "short range"),
        (["finetune", "data", "-o", "o", "--weights", "w", "--device", "gpu"], "cuda:N"),
        (["finetune", "data,colour=red", "-o", "o", "--weights", "w"], "PATH[,name=NAME]"),
        (["finetune", "data", "-o", "o", "--weights", "w", "--iters", "0"], "--iters"),
        (["finetune", "data,start=5", "-o", "o", "--weights", "w"], "sampled from the first iteration"),
        (["finetune", "a", "b,weight=nan", "-o", "o", "--weights", "w"], "DATASET: 'b,weight=nan'"),
        (["finetune", "d", "--val", "v,weight=abc", "-o", "o", "--weights", "w"], "--val: 'v,weight=abc'"),
        # An unset variable: the current folder was read as the dataset. The error names which one.
        (["finetune", "", "-o", "o", "--weights", "w"], "DATASET: '': an empty path; write ."),
        (["train", "d", "--val", "", "-o", "o"], "--val: '': an empty path; write . for the current folder"),
        (["finetune", "d", "--val", ",name=v", "-o", "o", "--weights", "w"], "--val: ',name=v': an empty"),
        # A 32-px side failed once the model had loaded (exit 1, run.json left); a huge one ran out of memory.
        (["finetune", "data", "-o", "o", "--weights", "w", "--patch-size", "32"], "at least 33"),
        (["finetune", "data", "-o", "o", "--weights", "w", "--short-range", "40000"], "at most 32768"),
    ]
    for arguments, expected in cases:
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert expected in result.output, (arguments, result.output)


def test_finetune_takes_a_model_config_for_checkpoints_of_no_shipped_variant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference_fixtures: Path, tiny_reference_state
) -> None:
    """An official-style `.pth` stores no config and the tiny one's Swin width is no variant's: the error
    names the file and the option, which finetune has (the same as segment's)."""
    import torch

    checkpoint = tmp_path / "tiny.pth"
    torch.save(tiny_reference_state, checkpoint)
    models = []

    def fake_run(plan: RunPlan, starting_model):
        models.append(starting_model())
        return plan.output / "model.safetensors"

    monkeypatch.setattr("docsam_cli.training.launch.run", fake_run)
    start = ["finetune", "data", "-o", str(tmp_path / "out"), "--weights", str(checkpoint), "--device", "cpu"]
    runner = CliRunner()

    result = runner.invoke(app, start)
    assert result.exit_code == 1 and f"{checkpoint}: Swin width 12" in result.output
    assert "pass --model-config" in result.output and not models

    config = reference_fixtures / "tiny-config.json"
    result = runner.invoke(app, [*start, "--model-config", str(config)])
    assert result.exit_code == 0, result.output
    assert models[0].config.backbone.embed_dim == 12
    assert parameters("finetune")["model_config"].help == parameters("segment")["model_config"].help

    unusable = tmp_path / "bad.json"
    unusable.write_text('{"swin_backbone_config": [], "mask2former_config": {}}')
    result = runner.invoke(app, [*start, "--model-config", str(unusable)])
    assert result.exit_code == 2 and "not a usable DocSAM config" in result.output

    result = runner.invoke(app, [*start, "--model-config", str(config), "--variant", "base"])
    assert result.exit_code == 2
    assert "--variant and --model-config both name the architecture" in result.output
    assert len(models) == 1


def test_train_refuses_an_unusable_model_config_before_the_run_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As finetune does: `train --model-config` that is no usable config was read only once the datasets
    were read, then ended the run with exit status 1 and left an empty --out behind."""
    started = []
    monkeypatch.setattr("docsam_cli.training.launch.run", lambda plan, model: started.append(plan))
    unusable = tmp_path / "bad.json"
    unusable.write_text('{"mask2former_config": {"hidden_dim": 100}}')
    out = tmp_path / "out"
    arguments = ["train", "data", "-o", str(out), "--from-scratch", "--text-encoder", "minilm"]
    result = CliRunner().invoke(app, [*arguments, "--model-config", str(unusable), "--device", "cpu"])
    assert result.exit_code == 2 and "--model-config" in result.output, result.output
    assert "not a usable DocSAM config" in result.output and not started and not out.exists()


def test_train_refuses_a_model_config_of_sizes_torch_cannot_hold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference_fixtures: Path
) -> None:
    """A config whose every field passes its checks may still be one torch cannot build: `train
    --model-config` with encoder_feedforward_dim 2^64 ended as 'error: internal error: TypeError: empty():
    ... Overflow when unpacking long long' and 16 frames of torch's C++ stack (exit 3) once the model was
    built. It is now refused with the unusable configs, naming the file, before the run starts."""
    import json

    started = []
    monkeypatch.setattr("docsam_cli.training.launch.run", lambda plan, model: started.append(model()))
    data = json.loads((reference_fixtures / "tiny-config.json").read_text())
    data["mask2former_config"]["encoder_feedforward_dim"] = 2**64
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(data))
    out = tmp_path / "out"
    arguments = ["train", "data", "-o", str(out), "--from-scratch", "--text-encoder", "minilm"]
    result = CliRunner().invoke(app, [*arguments, "--model-config", str(huge), "--device", "cpu"])
    assert result.exit_code == 2 and "--model-config" in result.output, result.output
    assert f"{huge}: an architecture of sizes torch cannot hold" in " ".join(result.output.split())
    assert not started and not out.exists()


@pytest.mark.parametrize("architecture", ["--model-config", "--variant"])
def test_train_refuses_an_architecture_the_cpu_has_no_room_for_before_the_run_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference_fixtures: Path, architecture: str
) -> None:
    """A model is built on the CPU, whatever device it trains on: `train` of an architecture whose tensors
    alone take more than the memory free there (DocSAM-Large on a small machine, a width of 10^10) started
    building it and ended in the kernel's out-of-memory killer, or as an internal error, torch's
    'DefaultCPUAllocator: can't allocate memory' for a width of 10^10. It is now refused
    before the run starts, naming the option, the file or variant and both figures; no --out is made."""
    started = []
    monkeypatch.setattr(
        "docsam_cli.training.launch.run", lambda plan, model: started.append(plan) or plan.output / "model"
    )
    monkeypatch.setattr("model.memory.available_cpu_memory", lambda: 10**6)
    out = tmp_path / "out"
    arguments = [
        "train",
        "data",
        "-o",
        str(out),
        "--from-scratch",
        "--text-encoder",
        "minilm",
        "--device",
        "cpu",
    ]
    config = reference_fixtures / "tiny-config.json"
    given, named = (
        ([str(config)], str(config)) if architecture == "--model-config" else (["large"], "DocSAM-Large")
    )
    result = CliRunner().invoke(app, [*arguments, architecture, *given])
    message = " ".join(result.output.split())
    said = (
        f"error: {architecture} {named}: "
        if architecture == "--model-config"
        else f"error: invalid value for {architecture}: {named}: "
    )
    assert result.exit_code == 2 and message.startswith(said), result.output
    assert re.search(
        rf"{architecture}:? {re.escape(named)}: an architecture of [\d,]+ parameters, "
        r"whose tensors alone take \d+ MB, more than the 1 MB of memory free on cpu",
        message,
    ), message
    assert not started and not out.exists()

    monkeypatch.setattr("model.memory.available_cpu_memory", lambda: 10**10)
    result = CliRunner().invoke(app, [*arguments, architecture, *given])
    assert result.exit_code == 0 and len(started) == 1, result.output
