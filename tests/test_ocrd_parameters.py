"""The processor's parameters, as OCR-D hands them over (checked against `ocrd-tool.json`, defaults filled
in), read into docsam's settings the way `docsam segment` reads the same options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ocrd_validators", reason="the OCR-D processor needs the `ocrd` extra")

from ocrd_validators import ParameterValidator

from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS
from docsam_cli.ocrd.parameters import SegmentSettings
from docsam_cli.presets import PRESETS
from docsam_cli.runtime import MAX_SIDE, GeometryOptions, ModelSpec
from docsam_cli.writers.page_map import parse_page_map

TOOL_FILE = Path(__file__).resolve().parents[1] / "docsam_cli" / "ocrd" / "ocrd-tool.json"
TOOL = json.loads(TOOL_FILE.read_text(encoding="utf-8"))["tools"]["ocrd-docsam-segment"]
SIZES = ("short_side", "short_side_max", "window", "stride")  # `docsam segment`'s sizes, as numbers


def as_ocrd_passes_them(**given) -> dict:
    """The parameters after OCR-D's validation (which fills in the defaults); fails on an invalid one."""
    parameters = dict(given)
    report = ParameterValidator(json.loads(json.dumps(TOOL))).validate(parameters)
    assert report.is_valid, report.to_xml()
    return parameters


def settings(**given) -> SegmentSettings:
    return SegmentSettings.from_parameters(as_ocrd_passes_them(**given))


def test_no_parameters_mean_what_no_options_mean():
    chosen = settings()
    assert chosen.model == ModelSpec()
    assert chosen.geometry == GeometryOptions()
    publaynet = PRESETS["publaynet"]
    assert (chosen.class_names, chosen.domain) == (publaynet.classes, publaynet.domain)
    assert chosen.page_map is None and chosen.existing_regions == "replace" and chosen.batch_size == 16


def test_model_prompts_and_mapping_are_read_as_their_options():
    chosen = settings(
        weights="/models/tiny.safetensors",
        variant="base",
        model_config="tiny.json",
        device="cuda:1",
        precision="bf16",
        classes="table, figure,text line",
        domain="Archive",
        page_map={"stamp": "GraphicRegion:stamp"},
        existing_regions="keep",
        batch_size=4,
    )
    assert chosen.model == ModelSpec("/models/tiny.safetensors", "base", Path("tiny.json"), "cuda:1", "bf16")
    assert chosen.class_names == ("table", "figure", "text line") and chosen.domain == "Archive"
    assert chosen.page_map == parse_page_map("stamp=GraphicRegion:stamp")
    assert chosen.existing_regions == "keep" and chosen.batch_size == 4
    assert settings(preset="doclaynet").class_names == PRESETS["doclaynet"].classes


def test_a_model_config_path_expands_its_tilde(monkeypatch):
    """`"model_config": "~/arch.json"` in a parameter file (no shell to expand it) was a folder named `~`."""
    monkeypatch.setenv("HOME", "/home/archivist")
    assert settings(model_config="~/arch.json").model.model_config == Path("/home/archivist/arch.json")


def test_sizes_are_numbers_as_ocrd_reads_them():
    """`-P short_side 800` reaches the processor as the number 800."""
    assert settings(short_side=800).geometry == GeometryOptions(short_side=(800, 800))
    assert settings(short_side=640, short_side_max=1280, keep_size=True).geometry == GeometryOptions(
        short_side=(640, 1280), keep_size=True
    )
    squares = GeometryOptions(window=(512, 512), stride=(256, 256))
    assert settings(window=512, stride=256.0).geometry == squares
    assert settings(keep_size=False).geometry.keep_size is False


def test_max_image_pixels_is_read_as_the_option_is():
    """`docsam segment --max-image-pixels`'s default and meaning: 0 is no limit."""
    assert settings().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    assert settings(max_image_pixels=300_000_000).max_image_pixels == 300_000_000
    assert settings(max_image_pixels=0).max_image_pixels is None


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"short_side_max": 900}, "short_side"),
        ({"short_side": 900, "short_side_max": 800}, "short_side_max"),
        ({"classes": "table", "preset": "doclaynet"}, "--preset"),
        ({"classes": " , "}, "--classes"),
        ({"device": "gpu"}, "device"),
        ({"page_map": {"stamp": "Stamp"}}, "page_map"),
        ({"page_map": {"stamp": "TextRegion:stamp"}}, "page_map"),
        ({"window": 1}, "window must be at least 2"),
        ({"window": 256, "stride": 320}, "stride 320 is longer than window 256"),
    ],
)
def test_what_the_schema_cannot_check_is_refused_naming_the_parameter(given, named):
    with pytest.raises(ValueError, match=named):
        settings(**given)


@pytest.mark.parametrize(
    "given",
    [
        {"short_side": "800"},
        {"window": 0},
        {"batch_size": 2.5},
        {"existing_regions": "merge"},
        {"max_image_pixels": -1},
        {"max_image_pixels": 1.5},
        {"bogus": 1},
        # Above `docsam segment`'s limit: they were taken, then every page failed to allocate 100s of GB.
        *({name: MAX_SIDE + 1} for name in SIZES),
    ],
)
def test_ocrd_itself_refuses_values_of_the_wrong_kind(given):
    report = ParameterValidator(json.loads(json.dumps(TOOL))).validate(dict(given))
    assert not report.is_valid


def test_weights_trained_by_docsam_bring_their_classes(tmp_path, tiny_model):
    """As `docsam segment`: without classes or preset, a docsam-trained file's classes and dataset name."""
    from model import save_model

    weights = tmp_path / "model.safetensors"
    save_model(tiny_model, weights, classes=["heading", "paragraph"], dataset="Newspapers")
    chosen = settings(weights=str(weights))
    assert (chosen.class_names, chosen.domain) == (("heading", "paragraph"), "Newspapers")
    preset = settings(weights=str(weights), preset="doclaynet")
    assert preset.class_names == PRESETS["doclaynet"].classes


def test_a_fine_tuned_zoo_model_brings_the_classes_the_registry_knows(tmp_path):
    """`weights: docsam-large-doclaynet`, or its published file as an OCR-D resource, took PubLayNet's
    classes; a zoo model whose classes are unknown keeps the default."""
    doclaynet, publaynet = PRESETS["doclaynet"], PRESETS["publaynet"]
    resource = tmp_path / "docsam_large_doclaynet.pth"
    resource.write_bytes(b"official weights")
    for weights in ("docsam-large-doclaynet", str(resource)):
        chosen = settings(weights=weights)
        assert (chosen.class_names, chosen.domain) == (doclaynet.classes, doclaynet.domain)
    chosen = settings(weights="docsam-large-m6doc")
    assert (chosen.class_names, chosen.domain) == (publaynet.classes, publaynet.domain)
