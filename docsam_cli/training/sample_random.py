"""Random draws of the data pipeline, one independent stream per sample.

The reference draws from the process-global `random` / `np.random` state, never seeded, so its samples
depend on worker scheduling and cannot be replayed (docs/design.md, "reproducible sampling"). Here every
sample position gets its own generator seeded from (run seed, position): the same position yields the same
sample whatever the number of data-loader workers, processes or restarts, which is what makes `--resume`
and `torchrun` runs reproduce a single uninterrupted process.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class SampleRandom(Protocol):
    """The three kinds of draw the reference's training dataset makes, in its call order."""

    def choice(self, probabilities: Sequence[float]) -> int:
        """An index drawn with the given probabilities (`np.random.choice(n, p=...)`)."""
        ...

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high], both inclusive (`random.randint`)."""
        ...

    def uniform(self, low: float, high: float) -> float:
        """A float in [low, high) (`random.uniform`)."""
        ...


def derive_seed(*keys: int) -> int:
    """A 64-bit seed mixing the keys (numpy's SeedSequence: well separated for neighbouring keys)."""
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1, np.uint64)[0])


class SeededRandom:
    """`SampleRandom` on a private `random.Random` seeded from `derive_seed(*keys)`."""

    def __init__(self, *keys: int) -> None:
        self._random = random.Random(derive_seed(*keys))

    def choice(self, probabilities: Sequence[float]) -> int:
        return self._random.choices(range(len(probabilities)), weights=probabilities)[0]

    def randint(self, low: int, high: int) -> int:
        return self._random.randint(low, high)

    def uniform(self, low: float, high: float) -> float:
        return self._random.uniform(low, high)
