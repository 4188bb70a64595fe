"""A Rich progress bar on stderr: step, loss, learning rate, iterations per second and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Shows nothing when disabled (other ranks, `--no-progress`)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
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
            console=Console(stderr=True),
            disable=not enabled,
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
        self._progress.console.print(message)
