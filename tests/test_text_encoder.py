"""The text encoder's per-name cache of class-name embeddings."""

from __future__ import annotations

import copy

import pytest
import torch

import model.text_encoder


@pytest.fixture
def encoder(tiny_model, monkeypatch: pytest.MonkeyPatch):
    """A copy of the tiny model's text encoder (eval mode, cache empty) keeping at most 3 names, counting
    the names it computes."""
    copied = copy.deepcopy(tiny_model.text_encoder)
    copied._cache.clear()
    copied.computed = []
    encode = copied._encode

    def counted(names: list[str], device: torch.device) -> torch.Tensor:
        copied.computed.extend(names)
        return encode(names, device)

    monkeypatch.setattr(copied, "_encode", counted)
    monkeypatch.setattr(model.text_encoder, "MAX_CACHED_NAMES", 3)
    return copied


def cached_names(encoder) -> list[str]:
    return list(encoder._cache[encoder.cache_key()])


def test_ever_new_names_keep_the_cache_bounded_dropping_the_least_recently_used(encoder):
    """A Python caller asking with a new name each time (a name per page) grew the cache by one embedding a
    name for ever. It now keeps the most recently used names, up to its bound; a name kept is not computed
    again, one dropped is computed again when asked."""
    for index in range(5):
        encoder([f"name {index}"])
    assert cached_names(encoder) == ["name 2", "name 3", "name 4"]
    encoder(["name 2"])  # kept: not computed again, now the most recently used
    encoder(["name 5"])
    assert cached_names(encoder) == ["name 4", "name 2", "name 5"]
    assert encoder.computed == [f"name {index}" for index in (0, 1, 2, 3, 4, 5)]
    encoder(["name 0"])  # dropped: computed again
    assert encoder.computed[-1] == "name 0"


def test_a_call_with_more_names_than_the_cache_keeps_gets_every_embedding_in_order(encoder):
    distinct = ["text", "table", "figure", "title", "list"]
    with torch.no_grad():
        expected = encoder._encode(distinct, torch.device("cpu"))[[0, 1, 2, 3, 4, 1]]
    assert torch.equal(encoder([*distinct, "table"]), expected)
    assert cached_names(encoder) == ["figure", "title", "list"]
