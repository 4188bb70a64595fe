"""The greedy walk of the reference's mask NMS, run on the device in parallel rounds.

The reference visits candidates in a fixed order and keeps one unless a candidate kept earlier suppresses
it. Written as an equation, `kept[i] = no kept j visited before i suppresses i`: each value depends only on
earlier ones, so the walk's result is the equation's unique solution, and most of it can be decided at
once. Every round keeps the undecided candidates that no undecided earlier candidate can suppress (nothing
can remove them any more) and drops every candidate they suppress. A round settles at least the first
undecided candidate in the order, usually far more; a handful of rounds settle a page.

Rounds run in fixed bursts without looking at the result; `Walk.settled()` is a device flag the caller
reads together with other numbers it needs anyway, and only an unsettled walk costs another burst.
Batched walks (`(..., K)` candidates, `(..., K, K)` relations) run independent walks side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROUNDS_PER_BURST = 8  # rounds between settledness checks; page walks rarely need more than four


def visiting_order(labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Indices in the reference's NMS order: labels ascending, scores descending within a label, ties in
    input order (two stable sorts, least significant key first)."""
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_label = torch.sort(labels[by_score], stable=True).indices
    return by_score[by_label]


def ranks(order: torch.Tensor) -> torch.Tensor:
    """Position of every candidate in `order` (the inverse permutation, along the last axis)."""
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def earlier_suppressors(suppresses: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """`(..., K, K)` float32: 1 at `[j, i]` when candidate j is visited before i and would remove it.

    `suppresses` is the (symmetric) relation "either removes the other if visited first"; float so that a
    round is one matrix product.
    """
    before = rank[..., :, None] < rank[..., None, :]
    return (suppresses & before).to(torch.float32)


@dataclass
class Walk:
    """The state of one or more walks: who is kept, who is still undecided."""

    kept: torch.Tensor  # (..., K) bool
    undecided: torch.Tensor  # (..., K) bool

    @classmethod
    def start(cls, alive: torch.Tensor) -> Walk:
        """A walk over the candidates marked in `alive` (others never take part)."""
        return cls(kept=torch.zeros_like(alive), undecided=alive.clone())

    def advance(self, earlier: torch.Tensor, rounds: int | None = None) -> Walk:
        """`rounds` (default `ROUNDS_PER_BURST`) more rounds under the relation `earlier` (see
        `earlier_suppressors`)."""
        kept, undecided = self.kept.clone(), self.undecided.clone()
        for _ in range(ROUNDS_PER_BURST if rounds is None else rounds):
            roots = undecided & ~_reached(undecided, earlier)
            kept |= roots
            undecided &= ~(roots | _reached(roots, earlier))
        return Walk(kept=kept, undecided=undecided)

    def admit(self, newcomers: torch.Tensor, earlier: torch.Tensor) -> Walk:
        """This walk extended to `newcomers` (`(..., K)` bool), which no candidate of the walk may follow in
        the visiting order (within one label, for label-blocked relations): those its kept candidates
        suppress are dropped, the others join undecided. On a settled walk that is exactly where a walk
        over both sets stands once it has passed the walk's own candidates, so walking on finishes it."""
        return Walk(kept=self.kept, undecided=self.undecided | (newcomers & ~_reached(self.kept, earlier)))

    def settled(self) -> torch.Tensor:
        """0-dim bool on the device: every walk has decided every candidate."""
        return ~self.undecided.any()


def _reached(sources: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """Candidates that some candidate in `sources` precedes and suppresses."""
    return (sources.unsqueeze(-2).to(earlier.dtype) @ earlier).squeeze(-2) > 0


def walk_to_the_end(earlier: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The kept candidates of a complete walk (one synchronisation per burst; for callers with nothing else
    to read from the device)."""
    walk = Walk.start(alive).advance(earlier)
    while not bool(walk.settled()):
        walk = walk.advance(earlier)
    return walk.kept
