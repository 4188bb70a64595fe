"""Class renaming, merging and selection (`--map old=new`, `--drop`, `--keep`)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

BACKGROUND = "_background_"  # the reference drops a category of this name: the background is implicit


def dropped_by_loader(listed: Iterable[str]) -> set[str]:
    """The classes the reference's loader drops from a per-image json that lists `listed` categories: the
    background, and "text word" where "table" is listed too."""
    names = set(listed)
    return {BACKGROUND} | ({"text word"} if {"table", "text word"} <= names else set())


def clean_name(name: str) -> str:
    """Class names go one per line into `class_name/*.txt`, and on one line into overlay labels and legend
    rows: collapse whitespace, newlines included. (A label with a line break ran over the legend row below
    it, and with a font beyond the bundled one Pillow's text layout refused it, failing the page.)"""
    return " ".join(name.split())


def parse_names(values: Iterable[str]) -> list[str]:
    """Names from repeatable options, each of which may hold a comma-separated list (`\\,` is a comma
    inside a name)."""
    names = (clean_name(part) for value in values for part in split_list(value))
    return [name for name in names if name]


def split_list(text: str) -> list[str]:
    """The parts of a comma-separated list, unescaped (`\\,` is a comma inside a part), as written."""
    return [_unescape(part) for part in _split(text, ",")]


def parse_mapping(values: Iterable[str]) -> dict[str, str]:
    """`old=new` pairs (repeatable, comma-separated; `\\,` and `\\=` are a comma and an equals sign
    inside a name). Raises ValueError for a malformed pair, and for a name given two new names."""
    mapping: dict[str, str] = {}
    for value in values:
        for pair in _split(value, ","):
            sides = [clean_name(_unescape(side)) for side in _split(pair, "=", maxsplit=1)]
            if len(sides) < 2 or not all(sides):
                raise ValueError(f"'{pair}' is not of the form old=new")
            old, new = sides
            if mapping.setdefault(old, new) != new:  # the last would win without a word
                raise ValueError(
                    f"'{old}' is renamed twice, to '{mapping[old]}' and '{new}': give it one new name"
                )
    return mapping


def split_pairs(text: str) -> list[list[str]]:
    """The items of a comma-separated list, each cut at its first `=` into its sides (one side for an item
    without `=`), unescaped: `\\,` and `\\=` are a comma and an equals sign inside a side."""
    return [[_unescape(side) for side in _split(item, "=", maxsplit=1)] for item in _split(text, ",")]


def _split(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    """`text` cut at each `separator` that no backslash escapes (at most `maxsplit` cuts); the escapes
    stay in the parts, for `_unescape`."""
    parts, current, cuts = [], "", 0
    characters = iter(text)
    for character in characters:
        if character == "\\":
            current += character + next(characters, "")
        elif character == separator and cuts != maxsplit:
            parts.append(current)
            current, cuts = "", cuts + 1
        else:
            current += character
    return [*parts, current]


def mapping_text(old: str, new: str) -> str:
    """The `old=new` pair `parse_mapping` reads back as it: commas, equals signs and backslashes escaped."""
    return "=".join(re.sub(r"([\\,=])", r"\\\1", name) for name in (old, new))


def map_option(old: str, new: str) -> str:
    """The `--map old=new` option that merges `old` into `new`, quoted for a POSIX shell, as a message gives
    it to copy (`--map 'text line=Text Line'`)."""
    return f"--map {shlex.quote(mapping_text(old, new))}"


def _unescape(text: str) -> str:
    """A backslash stands for the character after it: `\\,` → `,`, `\\=` → `=`, `\\\\` → `\\`."""
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


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
