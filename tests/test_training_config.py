"""`docsam train/finetune --config`: a finished run's run.json (or a JSON / YAML file) replays the run,
options on the command line override it, and unusable files are one usage error."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import typer
from cli_helpers import overridden
from training_helpers import write_layout
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.training.checkpoints import list_checkpoints
from docsam_cli.training.command_line import training_command
from docsam_cli.training.run_log import RUN_FILE, read_log, write_run_file
from docsam_cli.training.settings import AugmentSettings, DatasetSpec, RunPlan, cli

FINETUNE = ["finetune", "pages,weight=2", "more", "-o", "runs/a", "--weights", "tiny.safetensors"]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[RunPlan]:
    """The plans the commands hand to the training launcher (which does not run)."""
    plans: list[RunPlan] = []

    def fake_run(plan: RunPlan, starting_model) -> Path:
        plans.append(plan)
        return plan.output / "model.safetensors"

    monkeypatch.setattr("docsam_cli.training.launch.run", fake_run)
    return plans


def invoke(*arguments: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == code, result.output
    return result.output


def test_a_recorded_run_replays_with_overrides(started: list[RunPlan], tmp_path: Path) -> None:
    invoke(*FINETUNE, "--val", "check", "--iters", "7", "--keep-size", "--precision", "bf16", "--no-progress")
    first = started[-1]
    assert first.record["command"] == "finetune"
    assert (
        first.record["settings"]["iters"] == 7 and first.record["settings"]["weights"] == "tiny.safetensors"
    )
    write_run_file(tmp_path, first.record, world_size=1, identity={"seed": 0})

    invoke("finetune", "--config", str(tmp_path / RUN_FILE), "-o", "runs/b")
    replayed = started[-1]
    assert replayed.output == Path("runs/b")
    assert replayed.options == first.options and replayed.augmentation == first.augmentation
    assert (replayed.datasets, replayed.validation) == (first.datasets, first.validation)
    assert replayed.regularisation == first.regularisation and replayed.device == first.device
    settings = dict(replayed.record["settings"])
    assert settings.pop("out") == "runs/b"
    assert settings == {key: value for key, value in first.record["settings"].items() if key != "out"}

    invoke("finetune", "--config", str(tmp_path / RUN_FILE), "--lr", "0.5", "--val", "other", "--progress")
    overridden = started[-1]
    assert overridden.options.lr == 0.5 and overridden.options.progress
    assert overridden.validation == (DatasetSpec(Path("other")),)  # a repeatable option is replaced whole
    assert overridden.options.iterations == 7 and overridden.augmentation.keep_size


def test_a_run_replays_and_resumes_from_another_folder(
    started: list[RunPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json keeps paths as typed and the folder they were typed in: a replay or a resume started
    elsewhere reads them from there. Typed again on resume, they must lead to the same files."""
    work = tmp_path / "work"
    for folder in ("pages", "more"):
        (work / folder).mkdir(parents=True)
    (work / "tiny.safetensors").write_bytes(b"")
    monkeypatch.chdir(work)
    invoke(*FINETUNE, "--val", "more")
    first = started[-1]
    assert first.record["folder"] == str(work) and first.record["settings"]["weights"] == "tiny.safetensors"
    run = work / "runs" / "a"
    run.mkdir(parents=True)
    write_run_file(run, first.record, world_size=1, identity={"seed": 0})

    monkeypatch.chdir(tmp_path)
    invoke("finetune", "--config", str(run / RUN_FILE), "-o", "runs/b")
    invoke("finetune", "--resume", "-o", str(run))
    for plan in started[-2:]:
        assert [(d.path, d.weight) for d in plan.datasets] == [(work / "pages", 2.0), (work / "more", None)]
        assert [d.path for d in plan.validation] == [work / "more"]
        assert plan.record["settings"]["weights"] == str(work / "tiny.safetensors")
    invoke("finetune", "--resume", "-o", str(run), "work/pages,weight=2", str(work / "more"))
    # Without -o, the replay's --out is the recorded one, read from there as the other paths are: it was
    # taken from the current folder (tmp/runs/a, a run nobody asked for), where a replay in the run's own
    # folder is refused ('already holds a run: pass --resume to continue it, or another --out').
    invoke("finetune", "--config", str(run / RUN_FILE))
    assert started[-1].output == run
    output = invoke("finetune", "--resume", "-o", str(run), "pages,weight=2", "more", code=2)
    assert "DATASET differs from the run's run.json" in " ".join(output.split())


def test_yaml_config_with_command_line_overrides(started: list[RunPlan], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "datasets: [pages, 'more,name=More']\nout: runs/y\ntext_encoder: minilm\nfrom_scratch: true\n"
        "iters: 12\nschedule: step\nkeep_size: true\npatch_size: 320,480\n"
    )
    invoke("train", "--config", str(config), "--iters", "20", "--batch-size", "8")
    plan = started[-1]
    assert plan.datasets == (DatasetSpec(Path("pages")), DatasetSpec(Path("more"), name="More"))
    assert plan.output == Path("runs/y")
    assert (plan.options.iterations, plan.options.batch_size, plan.options.schedule) == (20, 8, "step")
    # --keep-size without --short-range uses the keep-size recipe's range.
    assert plan.augmentation == AugmentSettings(short_range=(640, 1280), patch=(320, 480), keep_size=True)
    assert plan.options.lr == 4e-5  # not in the file, not typed: the declared default


def test_a_replay_turns_off_the_switches_its_config_turns_on(started: list[RunPlan], tmp_path: Path) -> None:
    """`--config run.json` of a run with `--keep-size` and `--freeze-backbone` (or a train run's
    `--from-scratch`) gave them as defaults that no option typed could turn off: the switches had no `--no-`
    form, so a replay to compare the run without them meant editing run.json. `--no-keep-size`,
    `--no-freeze-backbone` and `--no-from-scratch` override the file as any typed option does."""
    invoke(*FINETUNE, "--keep-size", "--freeze-backbone")
    first = started[-1]
    assert first.augmentation.keep_size and first.options.freeze_backbone
    write_run_file(tmp_path, first.record, world_size=1, identity={"seed": 0})
    invoke("finetune", "--config", str(tmp_path / RUN_FILE), "-o", "runs/b", "--no-keep-size")
    assert not started[-1].augmentation.keep_size and started[-1].options.freeze_backbone
    assert started[-1].augmentation.short_range == AugmentSettings().short_range  # the rule's own range
    invoke("finetune", "--config", str(tmp_path / RUN_FILE), "-o", "runs/c", "--no-freeze-backbone")
    assert started[-1].augmentation.keep_size and not started[-1].options.freeze_backbone
    config = tmp_path / "train.yaml"
    config.write_text("datasets: pages\nout: runs/t\ntext_encoder: minilm\nfrom_scratch: true\n")
    invoke("train", "--config", str(config), "--no-from-scratch", "--mask2former", "m2f")
    assert not started[-1].record["settings"]["from_scratch"]


def test_a_config_file_names_options_as_typed(started: list[RunPlan], tmp_path: Path) -> None:
    """README: --config takes "any JSON/YAML mapping of option names to values". A file naming options as
    they are typed (`batch-size`, `--short-range`) was refused as unknown options; only run.json's
    `batch_size` was taken. Both spellings are now the same option."""
    config = tmp_path / "run.yaml"
    config.write_text("batch-size: 2\n--short-range: 300,400\nlog_every: 3\n")
    invoke(*FINETUNE, "--config", str(config))
    plan = started[-1]
    assert (plan.options.batch_size, plan.options.log_every) == (2, 3)
    assert plan.augmentation.short_range == (300, 400)
    assert plan.record["settings"]["batch_size"] == 2


def test_a_config_file_may_give_one_dataset_without_a_list(started: list[RunPlan], tmp_path: Path) -> None:
    """`datasets: data/train` (and `val: data/val`) in a YAML or JSON config, one dataset as it is typed
    once on the command line, was refused with 'invalid value for 'DATASET...': Value must be an
    iterable'; a single value is now a list of one."""
    config = tmp_path / "run.yaml"
    config.write_text("datasets: pages,weight=2\nval: checked\nout: runs/y\nweights: tiny.safetensors\n")
    invoke("finetune", "--config", str(config))
    plan = started[-1]
    assert plan.datasets == (DatasetSpec(Path("pages"), weight=2.0),)
    assert plan.validation == (DatasetSpec(Path("checked")),)
    assert plan.record["settings"]["datasets"] == ["pages,weight=2"]


def test_a_null_in_a_config_file_is_the_option_not_given(started: list[RunPlan], tmp_path: Path) -> None:
    """A key whose value is null (`lr: null`, or `lr:` with nothing after it) is the option not given, as
    run.json writes it for each option a run was not given (`val`, `model_config`): the command's own
    default (finetune's LR, not train's), or the command line's value; a required one is missing."""
    (config := tmp_path / "replay.yaml").write_text("lr: null\nkeep_size:\nval: null\niters: null\n")
    invoke(*FINETUNE, "--config", str(config))
    invoke(*FINETUNE, "--config", str(config), "--lr", "0.5", "--keep-size")
    first, typed = started
    assert (first.options.lr, first.options.iterations, first.validation) == (2e-5, 4000, ())
    assert first.augmentation.keep_size is False and (typed.options.lr, typed.augmentation.keep_size) == (
        0.5,
        True,
    )
    config.write_text("datasets: null\n")
    output = invoke("finetune", "-o", "runs/a", "--weights", "w", "--config", str(config), code=2)
    assert output.startswith("error: missing DATASET (give it on the command line or in --config)"), output


def test_a_config_file_may_give_a_pair_as_a_list(started: list[RunPlan], tmp_path: Path) -> None:
    """`short_range: [300, 400]` and `"patch_size": [320, 480]`, a pair as YAML and JSON write one, were
    refused ("--short-range takes N or A,B (positive integers), got '[300, 400]'"); a list given to an
    option whose value is a pair is now its comma-separated value, as typed."""
    for name, text in (
        ("run.yaml", "short_range: [300, 400]\npatch_size: [320, 480]\n"),
        ("run.json", '{"short_range": [300, 400], "patch_size": [320, 480]}'),
    ):
        (config := tmp_path / name).write_text(text)
        invoke(*FINETUNE, "--config", str(config))
        plan = started[-1]
        assert (plan.augmentation.short_range, plan.augmentation.patch) == ((300, 400), (320, 480))
        assert plan.record["settings"]["short_range"] == "300,400"


def test_a_config_files_paths_expand_their_tilde_as_typed_ones_do(
    started: list[RunPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_fixtures: Path
) -> None:
    """`model_config: ~/arch.json` in a YAML config was read as a folder named `~` (no such file), where
    `--model-config ~/arch.json` on the command line is the user's file."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(reference_fixtures / "tiny-config.json", home / "arch.json")
    monkeypatch.setenv("HOME", str(home))
    config = tmp_path / "run.yaml"
    config.write_text("datasets: pages\nout: runs/y\nweights: tiny.safetensors\nmodel_config: ~/arch.json\n")
    invoke("finetune", "--config", str(config))
    assert started[-1].record["settings"]["model_config"] == str(home / "arch.json")


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"itres": 5}', ".json", "unknown option(s) itres"),
        ('{"resume": true}', ".json", "unknown option(s) resume"),
        ('{"batch-size": 2, "batch_size": 4}', ".json", "names option(s) batch_size twice"),
        # A run.json whose settings are no mapping, or a YAML key that is a number, ended as 'error: internal
        # error: TypeError: ...' (exit 3).
        ('{"command": "finetune", "settings": 5}', ".json", "its settings are no mapping"),
        ('{"command": "finetune", "settings": "ab"}', ".json", "its settings are no mapping"),
        ("5: 1", ".yaml", "unknown option(s) 5;"),
        ('{"command": "train", "settings": {}}', ".json", "recorded by `docsam train`"),
        ("[1, 2]", ".json", "expected a mapping"),
        ("{not json", ".json", "run.cfg"),
        ("iters: [unclosed", ".yaml", "run.cfg"),
        ('{"iters": "many"}', ".json", "'iters' in "),
        ('{"schedule": "linear"}', ".json", "cosine"),
    ],
)
def test_unusable_config_is_a_usage_error(
    started: list[RunPlan], tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    config = tmp_path / f"run.cfg{suffix}"
    config.write_text(content)
    output = invoke(*FINETUNE, "--config", str(config), code=2)
    assert message in output
    assert not started


def test_a_config_file_saved_by_windows_tools_is_read(started: list[RunPlan], tmp_path: Path) -> None:
    """A run.json saved by Notepad ("UTF-8 with BOM") or PowerShell 5 (`Out-File -Encoding utf8` writes the
    byte order mark, its default is UTF-16) was refused, 'run.json: Unexpected UTF-8 BOM (decode using
    utf-8-sig)...'; the file is now read in the encoding JSON and YAML find in it. A file in no Unicode
    encoding is still one usage error naming it."""
    settings = {"batch_size": 2, "log_every": 3}
    for name, data in (
        ("bom.json", json.dumps(settings).encode("utf-8-sig")),
        ("utf16.json", json.dumps(settings).encode("utf-16")),
        ("utf16.yaml", "batch_size: 2\nlog_every: 3\n".encode("utf-16")),
    ):
        (config := tmp_path / name).write_bytes(data)
        invoke(*FINETUNE, "--config", str(config))
        assert (started[-1].options.batch_size, started[-1].options.log_every) == (2, 3), name
    started.clear()
    (latin := tmp_path / "latin.json").write_bytes('{"val": "Br\u00fccke"}'.encode("latin-1"))
    output = invoke(*FINETUNE, "--config", str(latin), code=2)
    assert "latin.json: cannot read it (not UTF-8 text" in " ".join(output.split()) and not started


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", '{"datasets": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("deep.yaml", "datasets: " + "[" * 100_000 + "]" * 100_000),
    ],
)
def test_a_config_file_nested_too_deeply_is_a_usage_error(
    started: list[RunPlan], tmp_path: Path, name: str, text: str
) -> None:
    """A --config nested deeper than Python's JSON or YAML reader goes ended the command as 'error:
    internal error: RecursionError: maximum recursion depth exceeded ...' (exit 3); it is one usage error
    naming the file, as a file of invalid JSON is."""
    (config := tmp_path / name).write_text(text)
    output = invoke(*FINETUNE, "--config", str(config), code=2)
    assert f"{name}: cannot read it (nested too deeply)" in " ".join(output.split()) and not started


def test_missing_config_file_is_a_usage_error(started: list[RunPlan], tmp_path: Path) -> None:
    output = invoke(*FINETUNE, "--config", str(tmp_path / "absent.json"), code=2)
    assert "absent.json" in output and not started


@pytest.mark.slow
def test_finished_run_replays_with_the_same_losses(tmp_path: Path, tiny_weights: Path) -> None:
    """A real (tiny) fine-tuning run, then `finetune --config <its run.json> -o <new folder>`: the same
    options are recorded and the first steps' losses are identical."""
    rng = np.random.default_rng(0)
    pages = {}
    for index in range(2):
        coco = {
            "images": [{"id": index, "height": 64, "width": 72, "file_name": f"p{index}.png"}],
            "categories": [{"id": 1, "name": "text"}, {"id": 2, "name": "table"}],
            "annotations": [
                {"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]},
                {"id": 2, "category_id": 2, "bbox": [10, 34, 50, 20]},
            ],
        }
        pages[f"p{index}"] = (rng.integers(0, 255, (64, 72, 3), dtype=np.uint8), coco)
    data = write_layout(tmp_path / "data", pages)
    first, second = tmp_path / "first", tmp_path / "second"
    invoke(
        *["finetune", str(data), "-o", str(first), "--weights", str(tiny_weights), "--device", "cpu"],
        *[
            "--iters",
            "3",
            "--batch-size",
            "1",
            "--lr",
            "1e-3",
            "--short-range",
            "48,56",
            "--patch-size",
            "40",
        ],
        *["--workers", "0", "--log-every", "1", "--checkpoint-every", "3", "--no-progress", "--keep-size"],
    )
    invoke("finetune", "--config", str(first / RUN_FILE), "-o", str(second))

    recorded = [json.loads((folder / RUN_FILE).read_text()) for folder in (first, second)]
    assert recorded[0]["settings"].pop("out") == str(first)
    assert recorded[1]["settings"].pop("out") == str(second)
    assert recorded[0] == recorded[1]
    assert recorded[0]["settings"]["keep_size"] and recorded[0]["settings"]["patch_size"] == "40"
    losses = [[r["loss"] for r in read_log(folder) if "loss" in r] for folder in (first, second)]
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def small_layout(folder: Path) -> Path:
    """Two 64x72 pages with a text and a table box each."""
    rng = np.random.default_rng(0)
    coco = {
        "images": [{"id": 0, "height": 64, "width": 72, "file_name": "p.png"}],
        "categories": [{"id": 1, "name": "text"}, {"id": 2, "name": "table"}],
        "annotations": [
            {"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]},
            {"id": 2, "category_id": 2, "bbox": [10, 34, 50, 20]},
        ],
    }
    pages = {f"p{index}": (rng.integers(0, 255, (64, 72, 3), dtype=np.uint8), coco) for index in range(2)}
    return write_layout(folder, pages)


@pytest.mark.slow
def test_resume_continues_with_the_recorded_settings(tmp_path: Path, tiny_weights: Path) -> None:
    """`--resume -o RUN` alone continues the run as started (its run.json is an implicit --config) and
    leaves run.json as it was; an option that differs from the record is a usage error naming it."""
    data, run = small_layout(tmp_path / "data"), tmp_path / "run"
    invoke(
        *["finetune", str(data), "-o", str(run), "--weights", str(tiny_weights), "--device", "cpu"],
        *[
            "--iters",
            "4",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--short-range",
            "48,56",
            "--patch-size",
            "40",
        ],
        *[
            "--workers",
            "0",
            "--log-every",
            "1",
            "--checkpoint-every",
            "2",
            "--val-every",
            "0",
            "--no-progress",
        ],
    )
    recorded, whole = (run / RUN_FILE).read_text(), read_log(run)
    shutil.rmtree(list_checkpoints(run)[-1])
    (run / "model.safetensors").unlink()

    output = invoke("finetune", "--resume", "-o", str(run), "--lr", "5e-4", code=2)
    assert "--lr" in output and RUN_FILE in output and not (run / "model.safetensors").exists()

    invoke("finetune", "--resume", "-o", str(run), "--workers", "0", "--no-progress", "--keep-last", "4")
    assert (run / RUN_FILE).read_text() == recorded  # not rewritten (it would record --keep-last 4)
    resumed = read_log(run)
    assert [(r["step"], r["lr"]) for r in resumed] == [(r["step"], r["lr"]) for r in whole]
    assert [r["step"] for r in whole] == [1, 2, 3, 4] and whole[0]["lr"] == 1e-3
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-5)
    assert (run / "model.safetensors").is_file()


def test_resume_refuses_recorded_options_given_other_values(started: list[RunPlan], tmp_path: Path) -> None:
    """Only the options of where and how a run goes may differ on resume; the rest are named."""
    started_in = ["-o", str(tmp_path), "--iters", "7", "--short-range", "96,112", "--no-progress"]
    invoke(*overridden(FINETUNE, started_in), *started_in)
    write_run_file(tmp_path, started[-1].record, world_size=1, identity={})
    same = ["--iters", "7", "--short-range", "96, 112"]  # the same values, however typed
    harmless = [
        "--workers",
        "1",
        "--max-image-pixels",
        "0",
        "--device",
        "cpu",
        "--progress",
        "--log-every",
        "3",
        "--checkpoint-every",
        "5",
    ]
    invoke("finetune", "--resume", "-o", str(tmp_path), *same, *harmless, "--keep-last", "9")
    resumed = started[-1]
    assert resumed.options.iterations == 7 and resumed.augmentation.short_range == (96, 112)
    assert resumed.datasets == started[0].datasets and resumed.options.workers == 1
    assert resumed.options.max_image_pixels == 0  # the limit a page over it says to raise

    output = invoke("finetune", "--resume", "-o", str(tmp_path), "--iters", "8", "--seed", "3", code=2)
    assert "--iters, --seed differ" in output and len(started) == 2


def test_resume_into_a_folder_without_a_run_starts_one_with_the_options_given(
    started: list[RunPlan], tmp_path: Path
) -> None:
    """A job that a scheduler requeues runs the same command, `--resume` included; killed before its run
    wrote run.json (or before the folder was made), the requeued one was refused for good: 'holds no run
    to resume (no run.json)', exit 2. The options given now start the run (`resume_point` says so)."""
    out = str(tmp_path / "none")
    invoke(*overridden(FINETUNE, ["-o", out]), "-o", out, "--iters", "7", "--resume")
    assert len(started) == 1 and started[0].resume
    assert started[0].output == Path(out) and started[0].options.iterations == 7
    assert started[0].record["settings"]["iters"] == 7
    output = invoke("finetune", "--resume", "-o", out, code=2)  # nothing recorded, nothing given
    assert f"missing DATASET (give it on the command line or in --config); --out {out} holds no run.json" in (
        " ".join(output.split())
    )
    assert len(started) == 1


def test_train_refuses_mask2former_weights_together_with_from_scratch(
    started: list[RunPlan], tmp_path: Path
) -> None:
    start = ["train", "pages", "-o", str(tmp_path / "run"), "--text-encoder", "minilm"]
    output = invoke(*start, "--from-scratch", "--mask2former", "m2f", code=2)
    assert "not together with --from-scratch" in output
    output = invoke(*start, code=2)
    assert "give --mask2former, or --from-scratch" in output
    assert started == []


def test_resume_takes_the_same_dataset_typed_in_another_form(
    started: list[RunPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data/pln/train` recorded; the absolute path, `./data/pln/train/` or `../data/pln/train` from a
    sub-folder lead to the same folder and were refused as "DATASET differs"; another folder still is."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "other").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    invoke("finetune", "data/train", "-o", "run", "--weights", "tiny.safetensors", "--iters", "3")
    write_run_file(tmp_path / "run", started[-1].record, world_size=1, identity={})
    for typed in (str(tmp_path / "data" / "train"), "./data/train/"):
        invoke("finetune", typed, "--resume", "-o", "run")
    monkeypatch.chdir(tmp_path / "sub")
    invoke("finetune", "../data/train", "--resume", "-o", "../run")
    output = invoke("finetune", "../data/other", "--resume", "-o", "../run", code=2)
    assert "DATASET differs" in output and len(started) == 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "inf", "--lr: 'inf' is not a finite number"),
        ("--weight-decay", "inf", "--weight-decay: 'inf' is not a finite number"),
        ("--seed", "-5", "--seed"),
        ("--seed", str(2**70), "--seed"),
    ],
)
def test_values_that_would_fail_the_run_later_are_usage_errors(
    started: list[RunPlan], option: str, value: str, message: str
) -> None:
    """An infinite learning rate trained NaN weights (exit 0 with one step); a negative or 70-bit seed failed
    after the model loaded, naming no option."""
    output = invoke(*FINETUNE, option, value, code=2)
    assert message in " ".join(output.split()) and started == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lr: .inf", "'lr' in {config}: inf is not a finite number"),
        ("dropout: .nan", "'dropout' in {config}: nan is not a number"),
    ],
)
def test_a_config_files_nan_or_infinity_is_refused_as_a_typed_one(
    started: list[RunPlan], tmp_path: Path, line: str, message: str
) -> None:
    """YAML's `.nan` for --dropout was refused as 'Input should be less than or equal to 1'. The file and
    its key are named, not the option the user did not type ('--lr: inf is not a finite number')."""
    config = tmp_path / "run.yaml"
    config.write_text(line + "\n")
    output = invoke(*FINETUNE, "--config", str(config), code=2)
    assert message.format(config=config) in " ".join(output.split()) and started == []


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ('"warmup": "abc"', "Input should be a valid integer"),  # Click's type check
        ('"iters": 1.5', "fractional part"),
        ('"schedule": "linear"', "'linear' is not one of 'cosine', 'step', 'fix'"),  # a choice
        ('"keep_size": 3', "Input should be a valid boolean"),
        ('"device": "tpu"', "'tpu' is not a device"),  # an option's own parser
        ('"short_range": "5,x"', "--short-range takes N or A,B"),  # parsed once every value is read
        ('"val": "v,colour=red"', "--val: 'v,colour=red': expected PATH"),
        # No command line gives these: `lr: true` trained at an LR of 1.0, a mapping became a path.
        ('"lr": true', "true: only a switch takes true or false"),
        ('"val": {"a": 1}', '{"a": 1}: a mapping, not a value'),
        # A list for an option of one value: `out: [a, b]` was a run folder named `a,b`.
        ('"out": ["a", "b"]', '["a", "b"]: a list, where the option takes one value'),
        ('"lr": [1, 2]', "[1, 2]: a list, where the option takes one value"),
        # Nor a list in a list: `val: [[a, b]]` was the path "['a', 'b']".
        ('"val": [["v", "w"]]', '[["v", "w"]]: a list of values, not of lists'),
        ('"val": [{"a": 1}]', '[{"a": 1}]: a list of values, not of mappings'),
        ('"short_range": [true, 5]', "[true, 5]: a list of values, not of true or false"),
        # Nor a null in a list: `short_range: [704, null]` was the text '704,None'.
        ('"short_range": [704, null]', "[704, null]: a list of values, not of null"),
        ('"val": ["v", null]', '["v", null]: a list of values, not of null'),
    ],
)
@pytest.mark.parametrize("read_by", ["--config", "--resume"])
def test_a_bad_value_from_a_file_names_the_file_and_its_key(
    started: list[RunPlan], tmp_path: Path, setting: str, reason: str, read_by: str
) -> None:
    """A value of a --config file, or of the run.json --resume reads, that failed a check was reported as
    the option's, 'invalid value for '--warmup': ...', although the user typed no --warmup; it names the
    file and the key that hold it, on one line, exit 2."""
    key = setting.split('"')[1]
    if read_by == "--config":
        holder = tmp_path / "replay.json"
        holder.write_text("{" + setting + "}")
        arguments = [*FINETUNE, "--config", str(holder)]
    else:
        holder = tmp_path / RUN_FILE
        recorded = f'"datasets": ["pages"], "out": {json.dumps(str(tmp_path))}, "weights": "w", {setting}'
        holder.write_text('{"command": "finetune", "settings": {' + recorded + "}}")
        arguments = ["finetune", "--resume", "-o", str(tmp_path)]
    output = invoke(*arguments, code=2)
    assert output.startswith(f"error: invalid value for '{key}' in {holder}: "), output
    assert reason in " ".join(output.split()) and f"--{key}'" not in output and not started


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize("content", ["absent", "huge"])
def test_a_typed_model_config_that_cannot_be_used_is_one_error_line_naming_the_file(
    started: list[RunPlan], tmp_path: Path, reference_fixtures: Path, command: str, content: str
) -> None:
    """`train` / `finetune --model-config arch.json` that cannot be read or built said 'error: invalid value:
    --model-config arch.json: ...', Click's prefix before the parser's own line, which names the option and
    the file already; it is now that line alone, as `segment --model-config` says it (the same for --out:
    'error: --out: an empty folder name ...', and for a DATASET not given: 'error: missing DATASET ...'),
    exit 2, no run started."""
    arch = tmp_path / "arch.json"
    if content == "huge":
        data = json.loads((reference_fixtures / "tiny-config.json").read_text())
        data["mask2former_config"]["encoder_feedforward_dim"] = 2**64
        arch.write_text(json.dumps(data))
    start = ["--from-scratch", "--text-encoder", "minilm"] if command == "train" else FINETUNE[-2:]
    arguments = [command, "pages", "-o", str(tmp_path / "run"), *start]
    output = " ".join(invoke(*arguments, "--model-config", str(arch), code=2).split())
    reason = (
        "cannot read it (No such file" if content == "absent" else "an architecture of sizes torch cannot"
    )
    assert output.startswith(f"error: --model-config {arch}: {reason}"), output
    assert not started and not (tmp_path / "run").exists()
    output = invoke(command, "pages", "-o", "", *start, code=2)
    assert output.startswith("error: --out: an empty folder name; write . for the current folder"), output
    output = invoke(command, "-o", str(tmp_path / "run"), *start, code=2)  # no DATASET: none is invalid
    assert output.startswith("error: missing DATASET (give it on the command line or in --config)"), output


@pytest.mark.parametrize(("typed", "reason"), [("abc", "valid integer"), ("-1", "greater than or equal")])
def test_a_bad_typed_value_over_a_files_value_is_named_by_its_option(
    started: list[RunPlan], tmp_path: Path, typed: str, reason: str
) -> None:
    """A value typed on the command line wins over the --config file's, and an error about it names the
    option the user typed (`--warmup`), not the file whose value it replaced."""
    (config := tmp_path / "replay.json").write_text('{"warmup": 5}')
    output = " ".join(invoke(*FINETUNE, "--config", str(config), "--warmup", typed, code=2).split())
    assert "'--warmup'" in output and reason in output and str(config) not in output, output
    assert not started


@pytest.mark.parametrize("content", ["absent", "huge"])
def test_a_model_config_a_file_names_is_refused_naming_that_file(
    started: list[RunPlan], tmp_path: Path, reference_fixtures: Path, content: str
) -> None:
    """`model_config: arch.json` in a --config file, arch.json not there or of sizes torch cannot hold, said
    'invalid value for --model-config: arch.json: ...', an option the user did not type; the file and key
    that gave the path are named, and the reason as before."""
    arch = tmp_path / "arch.json"
    if content == "huge":
        data = json.loads((reference_fixtures / "tiny-config.json").read_text())
        data["mask2former_config"]["encoder_feedforward_dim"] = 2**64
        arch.write_text(json.dumps(data))
    (config := tmp_path / "replay.yaml").write_text(f"model_config: {arch}\n")
    output = " ".join(invoke(*FINETUNE, "--config", str(config), code=2).split())
    reason = (
        "cannot read it (No such file" if content == "absent" else "an architecture of sizes torch cannot"
    )
    assert output.startswith(f"error: invalid value for 'model_config' in {config}: --model-config {arch}: ")
    assert reason in output and not started


@dataclass(frozen=True)
class _PairStart:
    """A starting point declaring `--pair` as a pair of numbers: a file may give it as a list."""

    pair: tuple[int, int] = field(
        default=(1, 1),
        metadata=cli(
            "--pair",
            help="A pair.",
            panel=None,
            text=str,
            parse=lambda text: tuple(map(int, text.split(","))),
        ),
    )


@dataclass(frozen=True)
class _TextStart:
    """A starting point declaring `--pair` as one text: a list for it is refused."""

    pair: str = field(default="a", metadata=cli("--pair", help="A text.", panel=None))


def test_which_options_take_a_list_in_a_file_is_each_commands_own(tmp_path: Path) -> None:
    """Which options of one value a --config file may give as a list was a module-wide set that each
    command built by `training_command` added its own to: a command declaring `--pair` as one text took
    `pair: [1, 2]` as the text '1,2' once another command declared a `--pair` of two numbers. Each
    command's own declaration decides now."""
    commands = typer.Typer()
    ran: list[object] = []
    for name, start in (("pairs", _PairStart), ("texts", _TextStart)):
        command = training_command(start)(lambda plan, starting_point: ran.append(starting_point))
        commands.command(name)(command)
    (config := tmp_path / "replay.yaml").write_text("pair: [2, 3]\n")
    common = ["pages", "-o", str(tmp_path / "run"), "--config", str(config)]
    result = CliRunner().invoke(commands, ["pairs", *common])
    assert result.exit_code == 0 and ran == [_PairStart(pair=(2, 3))], result.output
    result = CliRunner().invoke(commands, ["texts", *common])
    assert result.exit_code == 2 and "[2, 3]: a list, where the option takes one value" in result.output
    assert len(ran) == 1
