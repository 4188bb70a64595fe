"""Which sample each process loads at each step: epoch shuffles, sharding over ranks, accumulation chunks.

The run is one endless stream of sample positions 0, 1, 2, ...; position p reads shuffled index
`perm_e[p mod L]` of epoch `e = p // L` (a fresh permutation per epoch, like
`DistributedSampler(shuffle=True)` with `set_epoch`). Step k consumes positions [k·B, (k+1)·B) for a
global batch B, cut into `world_size × accumulation` chunks of the per-process micro-batch b: chunk
j = a·world_size + rank is what process `rank` runs at micro-step a. So a run with W processes and A
accumulation steps sees exactly the chunks, in the same grouping per optimiser step, as one process with
W·A accumulation steps, and a resumed run continues at position k·B.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from docsam_cli.training.sample_random import derive_seed


@dataclass(frozen=True)
class SampleKey:
    """What a data-loader worker needs to build one sample deterministically."""

    position: int  # global position in the run's sample stream (seeds the sample's random draws)
    index: int  # shuffled dataset index (image = index mod the chosen dataset's size, as the reference)
    step: int  # optimiser step (0-based) the sample belongs to (selects the curriculum's datasets)


@dataclass(frozen=True)
class BatchLayout:
    """How a global batch is split over processes and accumulation steps."""

    global_batch: int
    world_size: int = 1
    accumulation: int = 1

    def __post_init__(self) -> None:
        chunks = self.world_size * self.accumulation
        if self.global_batch < 1 or self.global_batch % chunks:
            raise ValueError(
                f"batch size {self.global_batch} must be a positive multiple of processes × accumulation "
                f"steps ({self.world_size} × {self.accumulation})"
            )

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world_size * self.accumulation)

    def chunk(self, step: int, micro_step: int, rank: int) -> int:
        """Index of the chunk that `rank` runs at `micro_step` of `step`, within the whole run."""
        return (step * self.accumulation + micro_step) * self.world_size + rank

    def positions(self, step: int, micro_step: int, rank: int) -> range:
        start = self.chunk(step, micro_step, rank) * self.micro_batch
        return range(start, start + self.micro_batch)


class TrainingSampler(Sampler[SampleKey]):
    """Endless keys for one process, from `start_step` on; batch them by `layout.micro_batch`."""

    def __init__(self, length: int, layout: BatchLayout, rank: int, seed: int, start_step: int = 0) -> None:
        if length < 1:
            raise ValueError("no training samples")
        self.length = length
        self.layout = layout
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.int64)

    def index(self, position: int) -> int:
        epoch = position // self.length
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch) % 2**63)
            self._permutation = torch.randperm(self.length, generator=generator)
            self._epoch = epoch
        return int(self._permutation[position % self.length])

    def __iter__(self) -> Iterator[SampleKey]:
        step = self.start_step
        while True:
            for micro_step in range(self.layout.accumulation):
                for position in self.layout.positions(step, micro_step, self.rank):
                    yield SampleKey(position, self.index(position), step)
            step += 1
