"""SIGTERM as Ctrl-C for a batch command: Slurm's time limit, `timeout` and `kill` end the run the way Ctrl-C
does (the pages being written are finished and reported, exit 130), not in the middle of a page's writes with
their JSON lines lost. Training uses it while it starts; its loop has its own handling
(`docsam_cli.training.trainer.StopRequests`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While entered (in the main thread), the first SIGTERM raises KeyboardInterrupt; it puts the previous
    handler back, so that a second SIGTERM acts as before (ends the process). A SIGTERM the caller ignores
    (`trap '' TERM`, inherited as ignored) stays ignored."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield
        return

    def interrupt(number: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
