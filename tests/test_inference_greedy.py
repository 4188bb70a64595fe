"""The device-side greedy walk and the NMS visiting order against the plain sequential loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.inference.greedy import Walk, earlier_suppressors, ranks, visiting_order, walk_to_the_end


def sequential_walk(suppresses: np.ndarray, order: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """The reference's loop: visit in order, keep what no kept candidate removed, remove what it
    suppresses."""
    kept = np.zeros(len(order), dtype=bool)
    removed = ~alive.copy()
    for index in order:
        if not removed[index]:
            kept[index] = True
            removed |= suppresses[index]
    return kept


def random_relation(rng: np.random.Generator, size: int, density: float) -> np.ndarray:
    relation = np.triu(rng.random((size, size)) < density, 1)
    return relation | relation.T


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.9, 1.0])
def test_walk_matches_the_sequential_loop(density):
    rng = np.random.default_rng(int(density * 100))
    for size in (1, 2, 7, 40):
        suppresses = random_relation(rng, size, density)
        order = rng.permutation(size)
        alive = rng.random(size) < 0.8
        earlier = earlier_suppressors(torch.from_numpy(suppresses), ranks(torch.from_numpy(order)))
        kept = walk_to_the_end(earlier, torch.from_numpy(alive))
        np.testing.assert_array_equal(kept.numpy(), sequential_walk(suppresses, order, alive))


def test_batched_walks_are_independent():
    rng = np.random.default_rng(1)
    relations = np.stack([random_relation(rng, 12, 0.4) for _ in range(5)])
    orders = np.stack([rng.permutation(12) for _ in range(5)])
    alive = rng.random((5, 12)) < 0.9
    earlier = earlier_suppressors(torch.from_numpy(relations), ranks(torch.from_numpy(orders)))
    kept = walk_to_the_end(earlier, torch.from_numpy(alive))
    for index in range(5):
        expected = sequential_walk(relations[index], orders[index], alive[index])
        np.testing.assert_array_equal(kept[index].numpy(), expected)


def test_a_chain_settles_one_link_per_round_and_says_when_it_has_not():
    """A path 0-1-2-...-19 visited in that order keeps every other candidate; each round can only settle the
    head of the chain, so a short burst reports itself unsettled and resuming finishes the walk."""
    size = 20
    suppresses = np.zeros((size, size), dtype=bool)
    suppresses[np.arange(size - 1), np.arange(1, size)] = True
    suppresses |= suppresses.T
    earlier = earlier_suppressors(torch.from_numpy(suppresses), torch.arange(size))
    walk = Walk.start(torch.ones(size, dtype=torch.bool)).advance(earlier, rounds=3)
    assert not bool(walk.settled())
    assert walk.kept[:6].tolist() == [True, False, True, False, True, False]
    while not bool(walk.settled()):
        walk = walk.advance(earlier, rounds=3)
    assert walk.kept.tolist() == [index % 2 == 0 for index in range(size)]


def test_nobody_takes_part_in_an_empty_walk():
    earlier = torch.zeros(0, 0)
    assert walk_to_the_end(earlier, torch.zeros(0, dtype=torch.bool)).shape == (0,)
    assert bool(Walk.start(torch.zeros(3, dtype=torch.bool)).settled())


def test_visiting_order_is_labels_then_descending_scores_then_position():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    scores = rng.choice(np.array([0.0, 0.25, 0.5, 0.5, 1.0], dtype=np.float32), 200)  # many ties
    order = visiting_order(torch.from_numpy(labels), torch.from_numpy(scores))
    np.testing.assert_array_equal(order.numpy(), np.lexsort((-scores.astype(np.float64), labels)))


def test_ranks_invert_the_order():
    order = torch.tensor([3, 0, 2, 1])
    assert ranks(order).tolist() == [1, 3, 2, 0]
    assert ranks(torch.stack([order, order.flip(0)]))[1].tolist() == [2, 0, 1, 3]


def test_a_complete_walk_goes_on_past_its_first_burst(monkeypatch):
    """A chain 0-1-...-39 settles one link per round, more rounds than one burst has: `walk_to_the_end`
    advances until every candidate is decided (the reference's loop keeps every other candidate)."""
    size = 40
    suppresses = np.zeros((size, size), dtype=bool)
    suppresses[np.arange(size - 1), np.arange(1, size)] = True
    suppresses |= suppresses.T
    checks = []
    real_settled = Walk.settled

    def counted_settled(walk: Walk) -> torch.Tensor:
        checks.append(walk)
        assert len(checks) <= size, "the walk stopped advancing"
        return real_settled(walk)

    monkeypatch.setattr(Walk, "settled", counted_settled)
    earlier = earlier_suppressors(torch.from_numpy(suppresses), torch.arange(size))
    kept = walk_to_the_end(earlier, torch.ones(size, dtype=torch.bool))
    assert kept.tolist() == [index % 2 == 0 for index in range(size)]
    assert len(checks) > 1  # more than one burst
