"""The dependency floors in pyproject.toml allow no release lacking an API the code uses."""

from __future__ import annotations

import pytest
from cli_helpers import PROJECT_ROOT
from packaging.requirements import Requirement


def requirement(name: str) -> Requirement:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (found,) = [Requirement(text) for text in project["dependencies"] if Requirement(text).name == name]
    return found


def test_pillow_floor_has_sized_default_fonts():
    """The overlay calls `ImageFont.load_default(size=...)`, new in Pillow 10.1."""
    assert "load_default(size=" in (PROJECT_ROOT / "docsam_cli/writers/overlay.py").read_text(
        encoding="utf-8"
    )
    specifier = requirement("pillow").specifier
    assert "10.1.0" in specifier and "10.0.1" not in specifier
