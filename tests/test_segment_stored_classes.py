"""`docsam segment` with neither --classes nor --preset prompts a model fine-tuned by docsam with the classes
and dataset name its weights file carries (`save_model(..., classes=, dataset=)`), a fine-tuned zoo model
with those the registry knows, and says so with -v; weights without them keep the default preset, and
--classes, --preset and --domain still win."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import error_lines, run_docsam, write_page
from segment_helpers import FAST_GEOMETRY, run_segment
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.errors import ExitCode
from docsam_cli.presets import PRESETS
from docsam_cli.weights.cache import CacheRecord, converted_path, sha256_file, write_record
from model import save_model


@pytest.fixture(scope="module")
def finetuned_weights(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("finetuned") / "model.safetensors"
    save_model(tiny_model, path, classes=["heading", "paragraph"], dataset="Newspapers")
    return path


def folder_classes(out: Path) -> list[str]:
    return json.loads((out / ".docsam" / "classes.json").read_text())


def verbose_segment(weights: Path | str, out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["-v", "segment", "--weights", str(weights), "--out", str(out), *FAST_GEOMETRY, *args]
    )
    return result.exit_code, result.stderr


def test_the_weights_classes_and_dataset_name_are_the_default(tmp_path, finetuned_weights):
    page = write_page(tmp_path / "page.png")
    code, stderr = verbose_segment(finetuned_weights, tmp_path / "out", str(page))
    assert code == ExitCode.OK, stderr
    assert folder_classes(tmp_path / "out") == ["heading", "paragraph"]
    assert f"using the classes stored in {finetuned_weights}" in stderr
    assert "classes: heading, paragraph; domain 'Newspapers'" in stderr


def test_a_run_folder_given_as_weights_gives_its_classes_too(tmp_path, finetuned_weights):
    """`--weights runs/news` (the folder holding model.safetensors) took PubLayNet's classes."""
    page = write_page(tmp_path / "page.png")
    code, stderr = verbose_segment(finetuned_weights.parent, tmp_path / "out", str(page))
    assert code == ExitCode.OK, stderr
    assert folder_classes(tmp_path / "out") == ["heading", "paragraph"]
    assert f"using the classes stored in {finetuned_weights.parent} (heading, paragraph" in stderr


def install_as(name: str, weights: Path) -> Path:
    """`weights` stored in the cache as the zoo entry `name`, as an older `download-weights` stored it: a
    converted file without the entry's classes."""
    path = converted_path(name)
    path.parent.mkdir(parents=True)
    shutil.copyfile(weights, path)
    digest = sha256_file(path)
    write_record(CacheRecord(name, path.name, path.stat().st_size, digest, f"file:{weights}", digest))
    return path


def test_a_zoo_model_fine_tuned_on_doclaynet_finds_its_classes(tmp_path, tiny_weights, monkeypatch):
    """`--weights docsam-large-doclaynet` prompted with PubLayNet's five classes and domain."""
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "home"))
    installed = install_as("docsam-large-doclaynet", tiny_weights)
    page = write_page(tmp_path / "page.png")
    doclaynet = PRESETS["doclaynet"]
    for weights, out in (("docsam-large-doclaynet", "by-name"), (installed, "by-file")):
        code, stderr = verbose_segment(weights, tmp_path / out, str(page))
        assert code == ExitCode.OK, stderr
        assert folder_classes(tmp_path / out) == list(doclaynet.classes)
        assert "using the classes docsam-large-doclaynet was fine-tuned on (Caption, Footnote" in stderr
        assert f"domain {doclaynet.domain!r}" in stderr


def test_weights_without_classes_keep_the_default_preset(tmp_path, tiny_weights):
    page = write_page(tmp_path / "page.png")
    code, stderr = verbose_segment(tiny_weights, tmp_path / "out", str(page))
    assert code == ExitCode.OK, stderr
    assert folder_classes(tmp_path / "out") == list(PRESETS["publaynet"].classes)
    assert "stored in" not in stderr and "domain 'PubLayNet'" in stderr


def test_options_still_choose_the_classes(tmp_path, finetuned_weights):
    page = write_page(tmp_path / "page.png")
    code, _, stderr = run_segment(finetuned_weights, tmp_path / "a", str(page), "--preset", "publaynet")
    assert code == ExitCode.OK, stderr
    assert folder_classes(tmp_path / "a") == list(PRESETS["publaynet"].classes)
    code, _, stderr = run_segment(finetuned_weights, tmp_path / "b", str(page), "--classes", "figure")
    assert code == ExitCode.OK, stderr
    assert folder_classes(tmp_path / "b") == ["figure"]
    code, stderr = verbose_segment(finetuned_weights, tmp_path / "c", str(page), "--domain", "Gazettes")
    assert code == ExitCode.OK, stderr
    assert "classes: heading, paragraph; domain 'Gazettes'" in stderr


def test_the_training_crop_stored_with_the_weights_is_the_default_window(tmp_path, tiny_model):
    """Weights trained with another --patch-size were segmented at 640x640 windows unless --window was
    given again; the crop stored with them (file or run folder) is now the default, --window still wins."""
    save_model(tiny_model, tmp_path / "run" / "model.safetensors", patch=(96, 64))
    page = write_page(tmp_path / "page.png")
    for index, window in enumerate([[], ["--window", "128"]]):
        run = ["-w", str(tmp_path / "run"), "-o", str(tmp_path / f"out{index}"), "--short-side", "192"]
        result = CliRunner().invoke(app, ["-v", "segment", *run, "--device", "cpu", *window, str(page)])
        assert result.exit_code == ExitCode.OK, result.stderr
        expected = "windows 128x128 at stride 64x64" if window else "windows 96x64 at stride 48x32"
        assert expected in result.stderr


def test_a_run_trained_keep_size_is_segmented_keep_size(tmp_path, tiny_model):
    """Weights trained with --keep-size were segmented with the page resized to an 800-px short side
    unless --keep-size was given again; the rule stored with them is now the default, --no-keep-size
    still wins."""
    save_model(tiny_model, tmp_path / "run" / "model.safetensors", patch=(96, 64), keep_size=True)
    page = write_page(tmp_path / "page.png")
    for index, rule in enumerate([[], ["--no-keep-size"]]):
        run = ["-w", str(tmp_path / "run"), "-o", str(tmp_path / f"out{index}"), "--short-side", "192"]
        result = CliRunner().invoke(app, ["-v", "segment", *run, "--device", "cpu", *rule, str(page)])
        assert result.exit_code == ExitCode.OK, result.stderr
        expected = "short side 192;" if rule else "short side 192-192, keep size;"
        assert f"geometry: {expected} windows 96x64" in result.stderr


def test_the_training_short_range_stored_with_the_weights_is_the_default_short_side(tmp_path, tiny_model):
    """Weights trained with another --short-range (validated at its mean) were segmented at an 800-px short
    side (keep-size: in 640..1280) unless --short-side was given again; the range stored with them is now the
    default, --short-side still wins."""
    save_model(tiny_model, tmp_path / "run" / "model.safetensors", patch=(96, 64), short_range=(150, 250))
    page = write_page(tmp_path / "page.png")
    cases = [
        ([], "short side 200;"),
        (["--keep-size"], "short side 150-250, keep size;"),
        (["--short-side", "192"], "short side 192;"),
    ]
    for index, (options, expected) in enumerate(cases):
        run = ["-w", str(tmp_path / "run"), "-o", str(tmp_path / f"out{index}"), "--device", "cpu", *options]
        result = CliRunner().invoke(app, ["-v", "segment", *run, str(page)])
        assert result.exit_code == ExitCode.OK, result.stderr
        assert f"geometry: {expected} windows 96x64" in result.stderr


def test_unusable_stored_classes_are_a_usage_error_before_any_page(tmp_path):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(weights), metadata={"docsam_classes": "not json"})
    page = write_page(tmp_path / "page.png")
    code, _, stderr = run_segment(weights, tmp_path / "out", str(page))
    assert code == ExitCode.USAGE
    assert error_lines(stderr) == [
        f"error: {weights}: its stored class names are not usable (Expecting value: line 1 column 1 (char 0))"
    ]
    assert not (tmp_path / "out" / ".docsam" / "classes.json").exists()


def test_reading_the_stored_classes_does_not_import_torch(tmp_path, finetuned_weights):
    """A batch of bad files is still refused without torch when the classes come from the weights."""
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    report = "import atexit, sys; atexit.register(lambda: print('torch:', 'torch' in sys.modules))"
    args = ["segment", str(broken), "-o", str(tmp_path / "out"), "-w", str(finetuned_weights)]
    completed = run_docsam(*args, prelude=report, timeout=60)
    assert completed.returncode == ExitCode.FAILED, completed.stderr
    assert completed.stdout.splitlines()[-1] == "torch: False"
    assert folder_classes(tmp_path / "out") == ["heading", "paragraph"]
