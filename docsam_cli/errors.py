"""The error types and exit codes every command shares.

`InputError` is the one error of a file the user handed us (an image, a PDF, an annotation or prediction
file) that cannot be used: the batch reports its one line and goes on. Its message shows the path exactly
and on one line (see `docsam_cli.names.display_path`). `UsageError` is a request that cannot start (an
unusable output folder, an unavailable device, weights that do not load): nothing was processed.

The app (`docsam_cli.app`) turns whatever reaches it into one `error:` line and an exit code: a
`UsageError` exits USAGE, an `InputError` FAILED, any other exception INTERNAL.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from docsam_cli.names import display_path


class ExitCode(enum.IntEnum):
    """What `docsam` returns; README documents the same table."""

    OK = 0  # every page / file done
    FAILED = 1  # some pages or files failed, or the run's own files (coco.json) could not be written
    USAGE = 2  # bad options or arguments, unusable output folder, missing weights: nothing was processed
    INTERNAL = 3  # an unexpected error inside docsam (rerun with --debug for the traceback)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention); pages already done stay done


class InputError(Exception):
    """A source that cannot be read, with a one-line reason; the batch reports it and goes on.

    `str(error)` is the line to show the user (`path: reason` or `path (page 3): reason`): no traceback,
    no newlines, whatever poppler, Pillow or a parser said.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, page: int | None = None) -> None:
        self.path = Path(path)
        self.reason = _one_line_reason(str(reason)) or "unknown error"
        self.page = page
        super().__init__(str(self))

    def __str__(self) -> str:
        where = display_path(self.path)
        if self.page is not None:
            where = f"{where} (page {self.page})"
        return f"{where}: {self.reason}"


def _one_line_reason(reason: str) -> str:
    """`reason` with its line breaks, and the blanks around them, made one space: a multi-line message of
    poppler or a parser becomes one line, while a file name inside keeps its spaces (`Brief  an.png`)."""
    return " ".join(line.strip() for line in reason.splitlines() if line.strip())


class WrongFormat(InputError):
    """The file is not in the format being read (a converter skips it when it was found by walking a
    folder, and reports it when it was named)."""


class UsageError(Exception):
    """The command cannot run as asked, found after its options were parsed: an output folder that cannot
    be written, a device that is not there, weights that cannot be loaded. `str(error)` is the one line to
    show; the exit code is `ExitCode.USAGE`, since nothing was processed."""
