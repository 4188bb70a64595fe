"""Decoder-layer branches are modules (`instance.fc1`, `instance.layers.0`); files with the reference's flat
names (`instance_fc1`, `instance_decoder.0`), ours from earlier versions included, still load."""

from __future__ import annotations

import torch
from safetensors import safe_open

from model import load_model, save_model
from model.checkpoint import to_reference_keys, write_safetensors

FLAT_NAMES = {  # module name in this package → flat name in the reference and in older files
    ".instance.fc1.": ".instance_fc1.",
    ".instance.pos_fc1.": ".instance_pos_fc1.",
    ".instance.layers.": ".instance_decoder.",
    ".instance.fc2.": ".instance_fc2.",
    ".instance.pos_fc2.": ".instance_pos_fc2.",
    ".semantic.fc1.": ".semantic_fc1.",
    ".semantic.pos_fc1.": ".semantic_pos_fc1.",
    ".semantic.layers.": ".semantic_decoder.",
    ".semantic.fc2.": ".semantic_fc2.",
    ".semantic.pos_fc2.": ".semantic_pos_fc2.",
}


def flat_named(key: str) -> str:
    for module_name, flat_name in FLAT_NAMES.items():
        key = key.replace(module_name, flat_name)
    return key


def test_older_files_with_flat_branch_names_load(tmp_path, tiny_model, tiny_config):
    state = tiny_model.state_dict()
    old = {flat_named(key): value for key, value in state.items()}
    renamed = [key for key in old if key not in state]
    assert len(renamed) == sum(".instance." in key or ".semantic." in key for key in state) > 0
    path = tmp_path / "old.safetensors"
    write_safetensors(old, path)
    loaded = load_model(path, config=tiny_config).state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_saved_files_use_module_names_and_reference_names_stay_flat(tmp_path, tiny_model):
    path = tmp_path / "new.safetensors"
    save_model(tiny_model, path)
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert any(".instance.layers.0." in key for key in keys)
    assert not any(flat in key for key in keys for flat in FLAT_NAMES.values())
    reference = to_reference_keys(tiny_model.state_dict())
    assert (
        "mask2former.model.transformer_module.decoder.decoder_layers.0.semantic_decoder.3.norm3.bias"
        in reference
    )
    assert not any(".instance.layers." in key for key in reference)
