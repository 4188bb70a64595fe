"""A fake cgroup tree for the tests of what a process's cgroups limit (its CPU quota, its memory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import cgroups


def fake_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: str, files: dict[str, str]) -> None:
    """A cgroup tree under tmp_path with `files` (paths under it: contents) and /proc/self/cgroup `own`."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self").write_text(own)
    monkeypatch.setattr(cgroups, "CGROUPS", tmp_path)
    monkeypatch.setattr(cgroups, "OWN_CGROUPS", tmp_path / "self")
