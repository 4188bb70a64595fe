from __future__ import annotations

import json

import pytest
import torch

from model import DocSAMConfig, variant_config
from model.config import VARIANTS


def test_reference_fixture_config_is_read_completely(reference_fixtures):
    raw = json.loads((reference_fixtures / "tiny-config.json").read_text())
    config = DocSAMConfig.from_json(reference_fixtures / "tiny-config.json")
    assert config.backbone.embed_dim == raw["swin_backbone_config"]["embed_dim"]
    assert list(config.backbone.depths) == raw["swin_backbone_config"]["depths"]
    assert config.feature_size == raw["mask2former_config"]["feature_size"]
    assert config.hidden_dim == raw["mask2former_config"]["hidden_dim"]
    assert config.num_queries == raw["mask2former_config"]["num_queries"]
    assert config.min_num_queries == raw["docsam_config_attributes"]["min_num_queries"]
    assert config.selection_nms_iou == raw["hard_coded_in_reference"]["nms_iou_in_query_selection"]


def test_json_round_trip(tmp_path):
    for name in ("base", "large"):
        path = tmp_path / f"{name}.json"
        variant_config(name).to_json(path)
        assert DocSAMConfig.from_json(path) == variant_config(name)


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path, reference_fixtures):
    """`--model-config arch.json` saved by Notepad ("UTF-8 with BOM") or PowerShell (UTF-16) was refused,
    'arch.json: not a usable DocSAM config (Unexpected UTF-8 BOM (decode using utf-8-sig) ...)'."""
    text = (reference_fixtures / "tiny-config.json").read_text(encoding="utf-8")
    expected = DocSAMConfig.from_json(reference_fixtures / "tiny-config.json")
    for name, data in (("bom.json", text.encode("utf-8-sig")), ("utf16.json", text.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        assert DocSAMConfig.from_json(tmp_path / name) == expected, name


def test_selection_thresholds_follow_the_reference():
    config = variant_config("base")
    assert [config.selection_threshold(s) for s in (1, 2, 3, 4)] == [0.00125, 0.0025, 0.005, 0.01]


def test_bad_configs_are_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json"):
        DocSAMConfig.from_json(path)
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("huge")


def test_shipped_config_files_equal_the_builtin_variants():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "model" / "configs"
    for name in ("base", "large"):
        assert DocSAMConfig.from_json(folder / f"{name}.json") == variant_config(name)


def test_variants_table_is_the_one_the_weights_registry_uses():
    """The registry (imported at CLI start, so without `model`) names its variants by literal: they must be
    the table's."""
    from typing import get_args

    from docsam_cli.weights.registry import REGISTRY, Variant

    assert set(get_args(Variant)) == set(VARIANTS)
    assert {entry.variant for entry in REGISTRY if entry.variant is not None} == set(VARIANTS)
    assert [config.backbone.embed_dim for config in VARIANTS.values()] == [128, 192]  # Swin-B, Swin-L
    with pytest.raises(TypeError):
        VARIANTS["huge"] = variant_config("large")  # read-only: derived tables cannot drift at run time


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        (None, "swin_backbone_config", [], "'swin_backbone_config' must be a section ({...}), got []"),
        (None, "mask2former_config", None, "'mask2former_config' must be a section ({...}), got null"),
        ("swin_backbone_config", "embed_dim", "12", "embed_dim must be an integer, got '12'"),
        ("swin_backbone_config", "mlp_ratio", "4", "mlp_ratio must be a number, got '4'"),
        (
            "swin_backbone_config",
            "depths",
            [2, 2, 2.5, 2],
            "depths must be a list of integers, got (2, 2, 2.5, 2)",
        ),
        ("swin_backbone_config", "qkv_bias", 1, "qkv_bias must be true or false, got 1"),
        ("mask2former_config", "hidden_dim", None, "hidden_dim must be an integer, got None"),
        ("mask2former_config", "num_queries", True, "num_queries must be an integer, got True"),
        (
            "mask2former_config",
            "feature_size",
            40,
            "feature_size must be a multiple of 32 (GroupNorm with 32 groups), got 40",
        ),
        ("swin_backbone_config", "depths", 2, "depths must be a list of integers, got 2"),
        (
            "hard_coded_in_reference",
            "roi_align_output",
            [],
            "roi_align_output must be a square size [n, n] of integers, got []",
        ),
        (
            "hard_coded_in_reference",
            "learnable_pos_embed_grid",
            [256, 128],
            "learnable_pos_embed_grid must be a square size [n, n] of integers, got [256, 128]",
        ),
        ("hard_coded_in_reference", "roi_align_output", [0, 0], "roi_size must be at least 1, got 0"),
        (
            "mask2former_config",
            "num_attention_heads",
            3,
            "hidden_dim (64) must be a multiple of num_attention_heads (3)",
        ),
        ("mask2former_config", "num_attention_heads", 0, "num_attention_heads must be at least 1, got 0"),
        (
            "swin_backbone_config",
            "num_heads",
            [5, 2, 4, 8],
            "Swin stage 1's width (12) must be a multiple of num_heads[0] (5)",
        ),
        (
            "text_encoder_config",
            "num_attention_heads",
            5,
            "hidden_size (384) must be a multiple of num_attention_heads (5)",
        ),
        ("swin_backbone_config", "window_size", 0, "window_size must be at least 1, got 0"),
        ("swin_backbone_config", "num_channels", 1, "num_channels must be 3 (pages enter in colour), got 1"),
        (
            "swin_backbone_config",
            "patch_size",
            8,
            "patch_size must be 4 (the only value DocSAM builds: its decoder reads the features at strides 4 "
            "to 32), got 8",
        ),
        ("docsam_config_attributes", "decoder_layers", 0, "decoder_layers must be at least 1, got 0"),
        ("docsam_config_attributes", "min_num_queries", -5, "min_num_queries must be at least 1, got -5"),
        ("docsam_config_attributes", "max_num_queries", 0, "max_num_queries must be at least 1, got 0"),
        (
            "hard_coded_in_reference",
            "pixel_decoder_levels",
            2,
            "pixel_decoder_levels must be 3, as in the reference, got 2",
        ),
        ("mask2former_config", "dropout", 2.0, "dropout must be between 0 and 1, got 2.0"),
        (
            "hard_coded_in_reference",
            "proposal_wh_divisor",
            0,
            "proposal_wh_divisor must be a number above 0, got 0",
        ),
        (
            "docsam_config_attributes",
            "dice_weight",
            float("nan"),
            "dice_weight must be a number of at least 0, got NaN",
        ),
        (
            "text_encoder_config",
            "vocab_size",
            100,
            "vocab_size must be at least 30522 (the ids of the WordPiece tokenizer shipped in "
            "model/tokenizer), got 100",
        ),
    ],
    ids=[
        "list-section",
        "null-section",
        "str-int",
        "str-float",
        "float-in-list",
        "int-bool",
        "null",
        "bool-int",
        "groupnorm",
        "int-for-list",
        "empty-size",
        "non-square-size",
        "zero-size",
        "heads-not-dividing",
        "no-heads",
        "swin-heads-not-dividing",
        "text-heads-not-dividing",
        "zero-window",
        "grey-input",
        "patch-not-stride-4",
        "no-decoder-layer",
        "negative-minimum",
        "no-query-kept",
        "pixel-decoder-levels",
        "dropout-above-one",
        "zero-divisor",
        "nan-weight",
        "vocabulary-too-small",
    ],
)
def test_configs_of_wrong_types_or_widths_are_refused_naming_the_file(
    reference_fixtures, tmp_path, section, key, value, reason
):
    data = json.loads((reference_fixtures / "tiny-config.json").read_text())
    (data if section is None else data.setdefault(section, {}))[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        DocSAMConfig.from_json(path)
    assert str(error.value) == f"{path}: not a usable DocSAM config ({reason})"


def test_a_config_nested_deeper_than_json_reads_is_refused_naming_the_file(tmp_path):
    """A --model-config nested deeper than Python's JSON reader goes ended segment, train and evaluate as
    'error: internal error: RecursionError: maximum recursion depth exceeded while decoding a JSON array'
    (exit 3); it is refused naming the file, as invalid JSON is."""
    path = tmp_path / "deep.json"
    path.write_text('{"docsam_config_attributes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError) as error:
        DocSAMConfig.from_json(path)
    assert str(error.value) == f"{path}: not a usable DocSAM config (JSON nested too deeply to read)"


@pytest.mark.parametrize("made", ["nothing", "folder"])
def test_a_config_that_cannot_be_read_says_why_once(tmp_path, made):
    """`train --model-config arch.json` of a file not there said 'arch.json: not a usable DocSAM config
    ([Errno 2] No such file or directory: 'arch.json')', the path twice and Python's errno between."""
    path = tmp_path / "arch.json"
    if made == "folder":
        path.mkdir()
    with pytest.raises(ValueError) as error:
        DocSAMConfig.from_json(path)
    reason = "No such file or directory" if made == "nothing" else "Is a directory"
    assert str(error.value) == f"{path}: cannot read it ({reason})"


def test_every_way_of_building_a_config_checks_it():
    from dataclasses import replace

    from model.config import SwinConfig, TextEncoderConfig

    with pytest.raises(ValueError, match="embed_dim must be an integer"):
        SwinConfig(embed_dim="12")
    with pytest.raises(ValueError, match="hidden_size must be an integer"):
        TextEncoderConfig(hidden_size=384.0)
    with pytest.raises(ValueError, match="mask_feature_size must be a multiple of 64"):
        replace(variant_config("base"), hidden_dim=96, mask_feature_size=96)
    with pytest.raises(ValueError, match="patch_size must be 4"):
        replace(variant_config("base"), backbone=SwinConfig(patch_size=2))
    assert SwinConfig(mlp_ratio=4).mlp_ratio == 4  # an int is a valid float (JSON writes 4.0 as 4 too)


def test_fewer_queries_than_the_selection_keeps_build_and_run(tiny_config):
    """The reference keeps the best min(min_num_queries, queries) and caps at max_num_queries: a model with
    fewer queries than either (DocSAM's 100 and 900 with 50 queries) is a valid one."""
    from dataclasses import replace

    from model import DocSAM

    assert DocSAMConfig(num_queries=50).num_queries == 50
    config = replace(tiny_config, num_queries=12, min_num_queries=16, max_num_queries=14)
    model = DocSAM(config).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 255, class_names=[["table", "X _background_"]])
    counts = [stage.class_logits.shape[1] for stage in out.stages]
    assert counts[0] == 12 and all(0 < count <= 12 for count in counts[1:]), counts


def test_the_tokenizer_has_the_vocabulary_size_the_config_checks():
    from model.config import TOKENIZER_VOCAB_SIZE
    from model.text_encoder import load_tokenizer

    assert load_tokenizer().get_vocab_size() == TOKENIZER_VOCAB_SIZE


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("swin_backbone_config", "hidden_act", "relu", 'hidden_act must be "gelu"'),
        ("swin_backbone_config", "use_absolute_embeddings", True, "use_absolute_embeddings must be false"),
        ("mask2former_config", "common_stride", 8, "common_stride must be 4"),
        ("docsam_config_attributes", "query_selection", False, "query_selection must be true"),
        ("docsam_config_attributes", "num_levels", 3, "num_levels must be 4"),
        ("swin_backbone_config", "num_layers", 3, "num_layers must be the number of depths, got 3"),
    ],
)
def test_fields_the_reference_reads_are_not_silently_ignored(reference_fixtures, section, key, value, reason):
    """A config that sets a field DocSAM reads to a value docsam does not build is refused instead of running
    as another network."""
    data = json.loads((reference_fixtures / "tiny-config.json").read_text())
    data[section][key] = value
    with pytest.raises(ValueError, match=reason):
        DocSAMConfig.from_dict(data)
    data[section][key] = json.loads((reference_fixtures / "tiny-config.json").read_text())[section][key]
    assert DocSAMConfig.from_dict(data) == DocSAMConfig.from_json(reference_fixtures / "tiny-config.json")


def test_docsams_overrides_win_over_the_mask2former_section(reference_fixtures):
    """The reference's configuration is the Mask2Former checkpoint's config.json, then DocSAM's overrides: a
    file that keeps the checkpoint's values in `mask2former_config` builds what the overrides say."""
    data = json.loads((reference_fixtures / "tiny-config.json").read_text())
    data["mask2former_config"].update(decoder_layers=10, class_weight=2.0, init_std=0.01)
    config = DocSAMConfig.from_dict(data)
    assert (config.decoder_layers, config.class_weight, config.init_std) == (4, 1.0, 0.02)
