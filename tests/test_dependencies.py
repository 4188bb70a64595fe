"""The dependency floors in pyproject.toml allow no release lacking an API the code uses."""

from __future__ import annotations

import pytest
from cli_helpers import PROJECT_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# What the lowest release each floor or pin allows requires of the project's other dependencies, as its
# METADATA says (`pip download --no-deps NAME==VERSION`, then its `Requires-Dist` lines); torch 2.14.1 and
# gdown 6.5 require none of them with a version, and ocrd 3.10 (the ocrd extra) shapely>=2 and Pillow>=7.2.
REQUIRED_BY_THE_LOWEST = {
    "transformers==5.18.0": [
        "huggingface-hub<3.0,>=1.31.0", "numpy>=1.17", "pyyaml>=5.1", "tokenizers<0.24.0,>=0.23.1",
        "safetensors>=0.8.0",
    ],
    "huggingface_hub==2.4.0": ["filelock>=3.10.0", "pyyaml>=5.1"],
    "torchvision==0.29.1": ["numpy", "torch>=2.14.0", "pillow!=8.3.*,>=5.3.0"],
    "typer==0.29.0": ["rich>=13.8.0"],
    "shapely==2.0.0": ["numpy>=1.14"],
    "pycocotools==2.0.8": ["numpy"],
}  # fmt: skip


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement(name: str, requirements: list[str] | None = None) -> Requirement:
    """`name`'s requirement among `requirements`, by default the project's dependencies."""
    texts = pyproject()["project"]["dependencies"] if requirements is None else requirements
    wanted = canonicalize_name(name)
    (found,) = [Requirement(text) for text in texts if canonicalize_name(Requirement(text).name) == wanted]
    return found


def lowest_allowed(requirement: Requirement) -> Version:
    """The lowest version `requirement` allows: its pin, or its floor."""
    (lowest,) = [
        Version(clause.version) for clause in requirement.specifier if clause.operator in ("==", ">=")
    ]
    return lowest


@pytest.mark.parametrize("dependency", REQUIRED_BY_THE_LOWEST)
def test_each_floor_allows_the_lowest_release_of_the_others(dependency: str):
    """`tokenizers>=0.21` and `safetensors>=0.4` stood beside `transformers>=5.18`, which needs tokenizers
    0.23.1 and safetensors 0.8: floors that no install could have, so they said nothing of what the code
    runs with. Each floor is now at least what the lowest allowed release of every other dependency needs."""
    release = Requirement(dependency)
    assert lowest_allowed(requirement(release.name)) == lowest_allowed(release)
    for text in REQUIRED_BY_THE_LOWEST[dependency]:
        needed = Requirement(text)
        floors = [clause.version for clause in needed.specifier if clause.operator == ">="]
        if floors:
            ours = lowest_allowed(requirement(needed.name))
            assert ours >= Version(floors[0]) and ours in needed.specifier, (release.name, text)


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
