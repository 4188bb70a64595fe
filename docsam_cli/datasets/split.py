"""Deterministic train/val/test splits (`--split train=0.8,val=0.1,test=0.1 --seed 0`)."""

from __future__ import annotations

import math
import random
import re

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_split(text: str) -> dict[str, float]:
    """`name=fraction,...` → normalised fractions (`train=8,val=1,test=1` is 80/10/10). Raises ValueError,
    also for one split alone, which normalising would give every image.

    Names become folder names, so they are restricted to letters, digits, `_`, `-`, `.`.
    """
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep or not _SPLIT_NAME.match(name):
            raise ValueError(f"'{part}' is not of the form name=fraction")
        if name in fractions:
            raise ValueError(f"split '{name}' given twice")
        try:
            fraction = float(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a number") from None
        if not math.isfinite(fraction) or fraction < 0:
            raise ValueError(f"fraction of '{name}' must be a non-negative number")
        fractions[name] = fraction
    if len(fractions) == 1:  # normalised, its fraction would be 1: `--split val=0.3` put every image in val
        (name,) = fractions
        raise ValueError(
            f"only split '{name}' is named, which would get every image; name each split with its "
            "fraction (train=0.7,val=0.3)"
        )
    total = sum(fractions.values())
    if total <= 0:
        raise ValueError("the split fractions add up to 0")
    return {name: fraction / total for name, fraction in fractions.items()}


def assign(names: list[str], fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Split `names` by `fractions`: same names, fractions and seed → same split, whatever the input order.

    Sizes are the largest-remainder rounding of `fraction * len(names)`, so they add up exactly.
    """
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    exact = {name: fraction * len(shuffled) for name, fraction in fractions.items()}
    sizes = {name: math.floor(value) for name, value in exact.items()}
    leftover = len(shuffled) - sum(sizes.values())
    for name in sorted(exact, key=lambda n: sizes[n] - exact[n])[:leftover]:
        sizes[name] += 1
    result, start = {}, 0
    for name, size in sizes.items():
        result[name] = sorted(shuffled[start : start + size])
        start += size
    return result
