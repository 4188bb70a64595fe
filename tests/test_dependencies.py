"""The dependency floors in pyproject.toml allow no release lacking an API the code uses."""

from __future__ import annotations

import pytest
from cli_helpers import PROJECT_ROOT
from packaging.requirements import Requirement


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement(name: str, requirements: list[str] | None = None) -> Requirement:
    """`name`'s requirement among `requirements`, by default the project's dependencies."""
    texts = pyproject()["project"]["dependencies"] if requirements is None else requirements
    (found,) = [Requirement(text) for text in texts if Requirement(text).name == name]
    return found


def test_pillow_floor_has_sized_default_fonts():
    """The overlay calls `ImageFont.load_default(size=...)`, new in Pillow 10.1."""
    assert "load_default(size=" in (PROJECT_ROOT / "docsam_cli/writers/overlay.py").read_text(
        encoding="utf-8"
    )
    specifier = requirement("pillow").specifier
    assert "10.1.0" in specifier and "10.0.1" not in specifier


def test_rich_floor_reads_tty_compatible():
    """The bars' and the spinner's terminal rule (`console.shows_progress`) leaves `TTY_COMPATIBLE=1` to
    Rich's `is_terminal`, which reads it from 14.0 on: Rich 13 ignored it, so no bar was drawn where a user
    declared a log viewer a terminal with it (a CI log that renders ANSI, as Rich's documentation says)."""
    assert "TTY_COMPATIBLE" in (PROJECT_ROOT / "docsam_cli/console.py").read_text(encoding="utf-8")
    specifier = requirement("rich").specifier
    assert "14.0.0" in specifier and "13.9.4" not in specifier


def test_setuptools_floor_reads_an_spdx_license():
    """`project.license` is an SPDX expression (PEP 639), which setuptools reads from 77 on: 69 to 76 stop
    the build with "`project.license` must be valid exactly by one definition"."""
    config = pyproject()
    assert isinstance(config["project"]["license"], str)
    specifier = requirement("setuptools", config["build-system"]["requires"]).specifier
    assert "77.0.1" in specifier and "76.1.0" not in specifier
