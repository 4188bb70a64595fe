"""docsam's network is the top-level package `model`, installed beside `docsam_cli`.

A `model.py` or `model/` that comes before it on Python's module path (`sys.path`) would be imported instead,
and every command would fail on a missing `model.checkpoint`. `python -m docsam_cli` (so torchrun's ranks)
and `python -m docsam_cli.ocrd` put the working folder first, where ML projects often keep a `model.py`:
`use_own_model` takes that entry off again, unless the working folder holds docsam's own `model` (a source
checkout). A `model` of the user's ahead of docsam's otherwise (PYTHONPATH) is named in one line saying what
to do. Every entry point calls it before anything imports `model`; it imports nothing (`find_spec`), so
`docsam --help` stays instant. The processes docsam starts inherit the corrected `sys.path` (fork, spawn and
forkserver pass it on).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import docsam_cli
from docsam_cli.names import display_path

PACKAGE = "model"


def use_own_model() -> str | None:
    """Make `import model` import docsam's own package: None when it does, else the line saying what hides
    it and what to do."""
    own = (Path(docsam_cli.__file__).resolve().parent.parent / PACKAGE).resolve()
    hiding = _hiding(own)
    if hiding is not None and _put_first_by_python_m(hiding.parent):
        del sys.path[0]
        hiding = _hiding(own)
    if hiding is None:
        return None
    folder = hiding.parent
    where = "PYTHONPATH" if folder in _pythonpath() else "Python's module path (sys.path)"
    return (
        f"{display_path(hiding)} hides docsam's own package '{PACKAGE}' ({display_path(own)}): "
        f"rename it, or take {display_path(folder)} off {where}"
    )


def _hiding(own: Path) -> Path | None:
    """The file (`model.py`) or folder (`model/`) `import model` would import instead of `own`, if any."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if spec.origin is None:  # a folder without `__init__.py` (a namespace package)
        return Path(folders[0]).resolve() if folders else None
    found = Path(spec.origin).resolve()
    found = found.parent if folders else found
    return None if found == own else found


def _put_first_by_python_m(folder: Path) -> bool:
    """Whether `folder` is first on `sys.path` as the working folder `python -m` puts there (not with -P
    or -I)."""
    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is None or sys.flags.isolated or getattr(sys.flags, "safe_path", 0):
        return False
    return bool(sys.path) and Path(sys.path[0]).resolve() == folder


def _pythonpath() -> list[Path]:
    """The folders PYTHONPATH puts on `sys.path` (an empty entry, as a trailing `:` makes, the working
    folder)."""
    value = os.environ.get("PYTHONPATH", "")
    return [Path(entry).resolve() for entry in value.split(os.pathsep)] if value else []
