"""Class renaming, merging and selection (`--map old=new`, `--drop`, `--keep`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BACKGROUND = "_background_"  # the reference drops a category of this name: the background is implicit


def clean_name(name: str) -> str:
    """Class names go one per line into `class_name/*.txt`: collapse whitespace, newlines included."""
    return " ".join(name.split())


def parse_names(values: Iterable[str]) -> list[str]:
    """Names from repeatable options, each of which may hold a comma-separated list."""
    return [clean_name(part) for value in values for part in value.split(",") if clean_name(part)]


def parse_mapping(values: Iterable[str]) -> dict[str, str]:
    """`old=new` pairs (repeatable, comma-separated). Raises ValueError for a malformed pair."""
    mapping: dict[str, str] = {}
    for value in values:
        for pair in value.split(","):
            old, sep, new = pair.partition("=")
            old, new = clean_name(old), clean_name(new)
            if not sep or not old or not new:
                raise ValueError(f"'{pair}' is not of the form old=new")
            mapping[old] = new
    return mapping


@dataclass
class ClassFilter:
    """Applies `mapping` first, then `keep` (if given) and `drop` to the mapped names."""

    mapping: dict[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    keep: frozenset[str] | None = None
    seen: set[str] = field(default_factory=set)  # source names met, to report options that matched nothing

    def apply(self, name: str) -> str | None:
        """The output class of a source class name, or None when it is left out."""
        name = clean_name(name)
        self.seen.add(name)
        mapped = self.mapping.get(name, name)
        if mapped == BACKGROUND or mapped in self.drop:
            return None
        if self.keep is not None and mapped not in self.keep:
            return None
        return mapped

    def unused(self) -> list[str]:
        """Options that matched no class in the data (likely typos)."""
        mapped = {self.mapping.get(name, name) for name in self.seen}
        unused = [f"--map {old}={new}" for old, new in self.mapping.items() if old not in self.seen]
        unused += [f"--drop {name}" for name in sorted(self.drop) if name not in mapped]
        unused += [f"--keep {name}" for name in sorted(self.keep or ()) if name not in mapped]
        return unused
