"""Paths as the user types them: a leading `~` expanded, and where the user's home folder is.

The shell expands `~` only at the start of a word, so `--out=~/results` or `--from=~/usb/w.pth` reach
docsam as written; every path docsam reads from its command line, a config file or the environment goes
through `expand_user`, as the shell would have expanded it.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_folder() -> Path | None:
    """The user's home folder: `$HOME` when it is an absolute path, else the password database's entry (as
    Python takes an unset HOME); None when neither gives one. An empty or relative HOME (`HOME= docsam ...`,
    a service that sets it empty) counts as unset, as GLib has it, not as the root folder or the current
    folder Python's `expanduser` makes of it."""
    configured = os.environ.get("HOME", "")
    if os.path.isabs(configured):
        return Path(configured)
    try:
        import pwd

        entry = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):  # not POSIX, or a uid the database does not know (containers)
        return None
    return Path(entry) if os.path.isabs(entry) else None


def expand_user(path: str | os.PathLike[str]) -> str:
    """`path` with a leading `~` (`~`, `~/scans`) replaced by the home folder and `~user/...` by that user's,
    as the shell expands a word; anything else, and a `~` with no home to stand for, unchanged."""
    text = os.fspath(path)
    if not text.startswith("~"):
        return text
    head, separator, rest = text.partition("/")
    if head != "~":
        return os.path.expanduser(text)
    home = home_folder()
    if home is None:
        return text
    return os.path.join(home, rest) if separator else str(home)
