"""Typed reading of the JSON files `convert-dataset` and `evaluate` read, one field at a time.

Every reader goes through `JsonField`, so a missing field, a string where a number belongs, a list where
an object belongs, NaN or a negative size all end the same way: one `InputError` that names the file and
the field as a JSON path (`annotations.json: images[3].height: expected a positive whole number, got
'600'`). JSON `null` counts as absent for optional fields.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TypeGuard

from docsam_cli.errors import InputError

_EXCERPT = 40


class JsonField:
    """A value of a JSON document and where it is in it."""

    __slots__ = ("file", "value", "where")

    def __init__(self, file: Path, value: object, where: str = "") -> None:
        self.file = file
        self.value = value
        self.where = where

    @classmethod
    def load(cls, path: Path) -> JsonField:
        """The parsed document `path`. Raises InputError for unreadable or malformed files."""
        try:
            with path.open("rb") as handle:
                return cls(path, json.load(handle))
        except json.JSONDecodeError as error:
            raise InputError(path, f"invalid JSON: {error}") from None
        except OSError as error:  # its strerror: the error's own text names the path again
            raise InputError(path, f"cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise InputError(path, f"cannot read: {error}") from None
        except RecursionError:  # valid JSON, but deeper than Python's reader goes
            raise InputError(path, "cannot read: JSON nested too deeply") from None
        except ValueError as error:  # json reads whole numbers of up to Python's conversion limit only
            digits = sys.get_int_max_str_digits()
            reason = f"a number of more than {digits} digits" if "integer string" in str(error) else error
            raise InputError(path, f"cannot read: {reason}") from None

    # --- errors ---------------------------------------------------------------------------------------

    def problem(self, reason: str) -> InputError:
        """An error about this field: `<file>: <where>: <reason>`."""
        return InputError(self.file, f"{self.where}: {reason}" if self.where else reason)

    def expected(self, what: str) -> InputError:
        return self.problem(f"expected {what}, got {describe(self.value)}")

    # --- structure ------------------------------------------------------------------------------------

    def is_object(self) -> bool:
        return isinstance(self.value, dict)

    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def get(self, key: str) -> JsonField | None:
        """The field `key` of this object, or None when it is absent or null. Raises InputError when this
        is not an object."""
        if not isinstance(self.value, dict):
            raise self.expected("an object")
        value = self.value.get(key)
        return None if value is None else JsonField(self.file, value, self._child(key))

    def __getitem__(self, key: str) -> JsonField:
        """The required field `key`. Raises InputError when this is not an object or `key` is missing."""
        if not isinstance(self.value, dict):
            raise self.expected("an object")
        if key not in self.value:
            raise InputError(self.file, f"{self._child(key)}: missing")
        return JsonField(self.file, self.value[key], self._child(key))

    def items(self) -> list[JsonField]:
        """The elements of this list. Raises InputError when this is not a list."""
        if not isinstance(self.value, list):
            raise self.expected("a list")
        return [
            JsonField(self.file, value, f"{self.where}[{index}]") for index, value in enumerate(self.value)
        ]

    def _child(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    # --- values ---------------------------------------------------------------------------------------

    def text(self) -> str:
        """A string with something other than white space in it, stripped."""
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.expected("a non-empty string")
        return self.value.strip()

    def identifier(self) -> int | str:
        """An id: a whole number or a non-empty string."""
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            return self.value
        if isinstance(self.value, str) and self.value.strip():
            return self.value
        raise self.expected("an id (a whole number or a string)")

    def number(self, *, minimum: float | None = None) -> float:
        """A finite number, at least `minimum` when given."""
        value = self.value
        if not is_finite(value):
            raise self.expected("a number")
        if minimum is not None and value < minimum:
            raise self.expected(f"a number >= {minimum:g}")
        return float(value)

    def size(self) -> int:
        """A page dimension: a positive whole number (600 or 600.0)."""
        value = self.value
        if not is_finite(value) or value != int(value) or value <= 0:
            raise self.expected("a positive whole number")
        return int(value)

    def count(self) -> int:
        """A non-negative whole number (RLE run lengths)."""
        value = self.value
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.expected("a whole number >= 0")
        return value

    def flag(self) -> bool:
        """A COCO flag: 0, 1, false or true."""
        if self.value in (0, 1) and not isinstance(self.value, float):
            return bool(self.value)
        raise self.expected("0 or 1")


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that is not a bool (JSON true is not 1 here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: object) -> TypeGuard[int | float]:
    """A number (`is_number`) that a float holds: not NaN or an infinity, nor a whole number of more than
    308 digits, which `math.isfinite` and `float` refuse with OverflowError."""
    try:
        return is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


def describe(value: object) -> str:
    """A short, exact description of a JSON value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if is_number(value):
        text = repr(value)
        return text if len(text) <= _EXCERPT else f"a whole number of {len(text.lstrip('-'))} digits"
    if isinstance(value, str):
        if not value.strip():
            return "an empty string" if not value else "a blank string"
        text = value if len(value) <= _EXCERPT else value[: _EXCERPT - 3] + "..."
        return repr(text)
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
