"""The text encoder's per-name cache of class-name embeddings."""

from __future__ import annotations

import copy
import threading

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


def test_two_threads_sharing_the_model_may_take_the_same_name_at_once(encoder):
    """A model shared by threads (a server's) looked a name up, then took it out of the cache to put it back
    as the most recently used; another thread taking it between the two made this one fail with KeyError.
    Here the other thread takes 'text' out just as this one comes to take it, and is still computing
    'table' then: this one computes 'text' again instead, and both get its embedding."""
    expected = encoder(["text"])
    other_inside, this_done = threading.Event(), threading.Event()
    other: dict[str, torch.Tensor] = {}
    worker = threading.Thread(target=lambda: other.setdefault("embeddings", encoder(["text", "table"])))
    encode = encoder._encode

    def held_encode(names: list[str], device: torch.device) -> torch.Tensor:
        if threading.current_thread() is worker:  # 'text' taken out, 'table' being computed
            other_inside.set()
            this_done.wait(timeout=30)
        return encode(names, device)

    class OtherThreadFirst(dict):
        """The cache, letting the other thread take 'text' at this thread's first look at it."""

        def __contains__(self, name: object) -> bool:
            seen = super().__contains__(name)
            self._other_thread_first()  # between the look and the take
            return seen

        def pop(self, name, *default):
            self._other_thread_first()
            return super().pop(name, *default)

        def _other_thread_first(self) -> None:
            if threading.current_thread() is threading.main_thread() and not other_inside.is_set():
                worker.start()
                other_inside.wait(timeout=30)

    encoder._encode = held_encode
    encoder._cache[encoder.cache_key()] = OtherThreadFirst(encoder._cache[encoder.cache_key()])
    try:
        this = encoder(["text"])
    finally:
        this_done.set()
        if other_inside.is_set():
            worker.join(timeout=30)
    assert torch.equal(this, expected)
    assert torch.equal(other["embeddings"][0], expected[0])
