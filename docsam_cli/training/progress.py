"""A Rich progress bar on stderr: step, loss, learning rate, iterations per second and time left."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from docsam_cli.console import message_options, print_plain, shows_progress, stderr_console


class TrainingProgress:
    """The bar is shown as `segment`'s is (not with `-q`, only when stderr is a terminal), and never when
    disabled (other ranks, `--no-progress`); `note` lines are printed either way."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        console = stderr_console()
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} it/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and shows_progress(console, message_options().quiet)),
        )
        self._task = self._progress.add_task(
            "train", total=total, completed=start, loss="-", lr="-", speed="-"
        )

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, lr: float, iterations_per_second: float) -> None:
        self._progress.update(
            self._task,
            completed=step,
            loss=f"{loss:.4g}",
            lr=f"{lr:.3g}",
            speed=f"{iterations_per_second:.2f}",
        )

    def note(self, message: str) -> None:
        """A line of the run's summary (validation results): not with `-q`."""
        if not message_options().quiet:
            print_plain(self._progress.console, message)
