"""Class → output element maps (`--page-map`, `--alto-map`): matching class names and parsing the specs.

A spec is a JSON file, inline JSON, or `class=Element[:detail],...` (a comma or `=` inside a class
name written `\\,`, `\\=`, as in `--classes`); JSON maps a class to
`"Element"`, `"Element:detail"`, `["Element", "detail"]` or `{"element": "Element", "<detail>": "detail"}`.
The detail is the PAGE `@type` or the ALTO tag label; each format validates its own entries. Class names
are matched ignoring case, spaces, hyphens, underscores and Unicode composition (`Section-header`,
`section_header` and `sectionheader` are one key, and so are `Ü` and `U` with a combining diaeresis).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from docsam_cli.datasets.classes import split_pairs
from docsam_cli.names import display_path
from docsam_cli.user_paths import expand_user

ClassMap = dict[str, tuple[str, str | None]]  # class name → (element, detail or None)
Kind = TypeVar("Kind")


def normalize_class(name: str) -> str:
    """The key a class name is matched by (see the module doc): composed Unicode (NFC), so that a name typed
    with `Ü` as one character matches the same name with `U` and a combining diaeresis (NFD, as macOS
    spells file names)."""
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFC", name)).lower()


@dataclass(frozen=True)
class MapSyntax:
    """How one format's map is named in messages and what its detail is called."""

    name: str  # "page map"
    detail: str  # "type"


def parse_class_map(spec: str, syntax: MapSyntax) -> ClassMap:
    """The (element, detail) pairs of a spec, not yet validated. Raises ValueError with a usage message."""
    text = spec.strip()
    if text.startswith("{") or _names_a_file(text):
        entries = _json_map(text, syntax)
    else:
        entries = [_split_entry(sides, spec, syntax) for sides in split_pairs(text) if "".join(sides).strip()]
    _refuse_a_class_named_twice([name for name, _ in entries], _map_name(spec, syntax))
    return {name.strip(): _element_and_detail(value, name, spec, syntax) for name, value in entries}


def validated_entries(
    spec: str, syntax: MapSyntax, class_map: ClassMap, validate: Callable[[str, str, str | None], Kind]
) -> dict[str, Kind]:
    """`validate(class name, element, detail)` of each entry of the map `spec` gave; its ValueError names
    the entry's class and, in a map file, the file (`page map map.json entry 'stamp': unknown PAGE element
    'Stamp': ...`): a map of twenty entries said which element it refused, not whose."""
    kinds = {}
    for name, (element, detail) in class_map.items():
        try:
            kinds[name] = validate(name, element, detail)
        except ValueError as error:
            raise ValueError(f"{_map_name(spec, syntax)} entry {name!r}: {error}") from None
    return kinds


def _map_name(spec: str, syntax: MapSyntax) -> str:
    """How messages name the map `spec` gave: with its file (`page map map.json`), or as `page map`."""
    text = spec.strip()
    return f"{syntax.name} {display_path(text)}" if _names_a_file(text) else syntax.name


def _names_a_file(text: str) -> bool:
    """Whether a (stripped) spec is the path of a JSON file, not inline JSON or `class=Element` items."""
    return not text.startswith("{") and Path(text).suffix.lower() == ".json"


def _refuse_a_class_named_twice(names: Sequence[str], map_name: str) -> None:
    """Raise ValueError for two entries that one class matches (`" a "` and `"a"`, `Text` and `text`):
    a map kept only one of them, unsaid."""
    seen: dict[str, str] = {}
    for name in names:
        key = normalize_class(name)
        if key in seen:
            raise ValueError(
                f"{map_name} names one class twice, as {seen[key]!r} and {name!r} (class names are "
                "matched ignoring case, spaces, hyphens and underscores): keep one entry"
            )
        seen[key] = name


def lookup(class_map: ClassMap | None, class_name: str) -> tuple[str, str | None] | None:
    """The entry for `class_name`, keys matched like `normalize_class`."""
    key = normalize_class(class_name)
    for name, entry in (class_map or {}).items():
        if normalize_class(name) == key:
            return entry
    return None


def unmatched(class_map: ClassMap | None, class_names: Sequence[str]) -> list[str]:
    """The classes `class_map` names that none of `class_names` matches (a typo, or a class of another run's
    list): their entries map nothing."""
    keys = {normalize_class(name) for name in class_names}
    return [name for name in class_map or {} if normalize_class(name) not in keys]


def unmatched_warning(option: str, class_map: ClassMap | None, class_names: Sequence[str]) -> str | None:
    """The warning for the classes `class_map` names that the run does not segment (`unmatched`), the map
    named as the user gave it (`--page-map`; the OCR-D parameter `page_map`); None if it names none."""
    names = unmatched(class_map, class_names)
    if not names:
        return None
    return (
        f"{option} names {'a class' if len(names) == 1 else 'classes'} that the run does not segment, which "
        f"it leaves unused: {', '.join(map(repr, names))} (the classes: {', '.join(class_names)})"
    )


class _KeyPairs(dict):
    """A JSON object that also keeps its entries as written, a key given twice twice (which a dict keeps
    once, the last)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _json_map(text: str, syntax: MapSyntax) -> list[tuple[str, object]]:
    """The entries of inline JSON, or of the JSON file `text` names, read as bytes so that json finds its
    encoding (UTF-8 with the byte order mark Windows tools write, UTF-16), as `evaluate` and `train` read
    their JSON."""
    document: str | bytes = text
    name = _map_name(text, syntax)
    if not text.startswith("{"):
        try:
            document = Path(expand_user(text)).read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        raw = json.loads(document, object_pairs_hook=_KeyPairs)
    except UnicodeDecodeError as error:
        raise ValueError(f"{name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is not valid JSON: {error}") from None
    except RecursionError:  # valid JSON, but deeper than Python's reader goes
        raise ValueError(f"{name} is JSON nested too deeply to read") from None
    if not isinstance(raw, dict):
        raise ValueError(f'{name} JSON must be an object: {{"class": "Element[:{syntax.detail}]", ...}}')
    return [(str(name), value) for name, value in raw.pairs]


def _split_entry(sides: list[str], spec: str, syntax: MapSyntax) -> tuple[str, str]:
    """A `class=Element[:detail]` item cut into its sides (`classes.split_pairs`: `\\,` and `\\=` are a
    comma and an equals sign inside a class name, as in `--classes`)."""
    if len(sides) != 2 or not all(side.strip() for side in sides):
        item = "=".join(sides).strip()
        raise ValueError(
            f"invalid {syntax.name} entry {item!r} in {spec!r}: use class=Element[:{syntax.detail}]"
        )
    name, value = sides
    return name.strip(), value.strip()


def _element_and_detail(value: object, name: str, spec: str, syntax: MapSyntax) -> tuple[str, str | None]:
    if isinstance(value, str):
        element, _, detail = value.partition(":")
        return element.strip(), detail.strip() or None
    if isinstance(value, list) and len(value) in (1, 2) and all(isinstance(v, str | None) for v in value):
        return value[0], value[1] if len(value) == 2 else None
    if isinstance(value, dict) and isinstance(value.get("element"), str):
        return value["element"], value.get(syntax.detail)
    raise ValueError(
        f"{_map_name(spec, syntax)} entry {name!r} must be 'Element[:{syntax.detail}]', got {value!r}"
    )
