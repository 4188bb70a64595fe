"""Download progress on stderr with Rich, fed by gdown's byte callback or huggingface_hub's tqdm hook."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from docsam_cli.console import message_options, shows_progress, stderr_console


class TransferBar:
    """One file's bar. `report` suits gdown (absolute counts); `tqdm_class` suits huggingface_hub."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def report(self, completed: int, total: int | None) -> None:
        self._progress.update(self._task, completed=completed, total=total)

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)

    def start(self, total: int | None, initial: int) -> None:
        self._progress.update(self._task, total=total, completed=initial)

    @property
    def tqdm_class(self) -> Callable[..., _TqdmBridge]:
        """A stand-in for `tqdm` that huggingface_hub creates per file (it accepts non-tqdm callables)."""
        return functools.partial(_TqdmBridge, self)


class _TqdmBridge:
    """The part of tqdm's interface huggingface_hub's downloader uses, forwarded to a Rich bar."""

    def __init__(self, bar: TransferBar, *, total: int | None = None, initial: int = 0, **_: Any) -> None:
        self._bar = bar
        bar.start(total, initial)

    def update(self, amount: int = 1) -> None:
        self._bar.advance(amount)

    def close(self) -> None:
        """Nothing to release: the Rich display is owned by `transfer_progress`."""

    def __enter__(self) -> _TqdmBridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def transfer_progress(description: str) -> Iterator[TransferBar]:
    """Show a byte progress bar on stderr while the block runs."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    console = stderr_console()
    with Progress(
        *columns, console=console, disable=not shows_progress(console, message_options().quiet)
    ) as progress:
        yield TransferBar(progress, progress.add_task(description, total=None))
