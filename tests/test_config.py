from __future__ import annotations

import json

import pytest

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
