"""The Swin backbone (transformers' `SwinBackbone`): reference outputs, small maps, checkpoint renames."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import load_model
from model.backbone import transformers_config

ENCODER = "mask2former.model.pixel_level_module.encoder."


@pytest.fixture(scope="module")
def io(reference_fixtures):
    return load_file(str(reference_fixtures / "tiny-io.safetensors"))


def check_reference_features(backbone: torch.nn.Module, io: dict[str, torch.Tensor], case: str) -> None:
    """Feature maps of a fixture case within the fixture README's backbone tolerance (float32 CPU)."""
    with torch.no_grad():
        features = backbone(io[f"{case}.input.pixel_values"].float())
    assert isinstance(features, list) and len(features) == 4
    for index, feature in enumerate(features):
        expected = io[f"{case}.backbone.stage{index + 1}"]
        torch.testing.assert_close(feature, expected, atol=1e-4, rtol=1e-4, msg=f"{case} stage{index + 1}")


@pytest.mark.parametrize("case", ["a", "b"])
def test_feature_maps_match_the_reference(tiny_model, io, case):
    check_reference_features(tiny_model.backbone, io, case)


def test_maps_smaller_than_a_window_keep_windows_and_shifts(tiny_config, tiny_reference_state, io):
    """Every block partitions into full windows, shifted on odd blocks, whatever the map size: a Swin that
    shrank its window for a small map (and kept that change, as transformers' plain Swin does) would give
    later, larger pages other results."""
    model = load_model(tiny_reference_state, config=tiny_config)  # own copy: the shared one must not change
    window = tiny_config.backbone.window_size
    with torch.no_grad():
        for height, width in [(60, 60), (17, 23), (3, 5)]:
            features = model.backbone(torch.rand(1, 3, height, width) * 255)
            for stage, feature in enumerate(features):
                scale = 4 * 2**stage
                assert feature.shape[-2:] == (-(-height // scale), -(-width // scale))
            assert max(features[-1].shape[-2:]) < window
    check_reference_features(model.backbone, io, "a")


def test_checkpoint_renames_are_transformers_own(tmp_path, tiny_config, tiny_reference_state, tiny_model):
    """transformers loading the official (4.x-named) Swin entries itself gives the weights we load."""
    from transformers import SwinBackbone

    save_file(
        {key.removeprefix(ENCODER): value for key, value in tiny_reference_state.items() if ENCODER in key},
        str(tmp_path / "model.safetensors"),
    )
    transformers_config(tiny_config.backbone).save_pretrained(tmp_path)
    # (no `kernels` hub layers: transformers 5.25 asks for that package by default, and it is not needed here)
    theirs = SwinBackbone.from_pretrained(tmp_path, use_kernels=False).state_dict()
    ours = tiny_model.backbone.swin.state_dict()
    # The Swin model's final LayerNorm is never used by SwinBackbone; we drop it.
    assert set(theirs) - set(ours) == {"swin.layernorm.weight", "swin.layernorm.bias"}
    assert set(ours) <= set(theirs)
    for key, value in ours.items():
        assert torch.equal(theirs[key], value), key
