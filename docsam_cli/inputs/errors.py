"""The one error type of the input layer: a file (or one page of it) that cannot become a page image."""

from __future__ import annotations

import os
from pathlib import Path


class InputError(Exception):
    """A source that cannot be read, with a one-line reason; the batch reports it and goes on.

    `str(error)` is the line to show the user (`path: reason` or `path (page 3): reason`): no traceback,
    no newlines, whatever poppler or Pillow said.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, page: int | None = None) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split()) or "unknown error"
        self.page = page
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path} (page {self.page})" if self.page is not None else str(self.path)
        return f"{where}: {self.reason}"
