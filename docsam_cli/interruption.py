"""SIGTERM as Ctrl-C for a batch command: Slurm's time limit, `timeout` and `kill` end the run the way Ctrl-C
does (the pages being written are finished and reported, exit 130), not in the middle of a page's writes with
their JSON lines lost. Training uses it while it starts; its loop has its own handling
(`docsam_cli.training.trainer.StopRequests`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """While entered (in the main thread), Ctrl-C and SIGTERM are held back, and acted on as it ends, as
    their handlers then in place would have (KeyboardInterrupt, or the end of the process): for a step that
    must not be cut in two, such as the two renames that swap a new folder in for an old one. A signal the
    caller ignores stays ignored. Python handlers are swapped rather than the signals blocked: a thread of
    the process that does not block them (a progress display's) would take them in its stead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    held = [number for number, handler in previous.items() if handler not in (signal.SIG_IGN, None)]
    for number in held:
        signal.signal(number, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for number in held:
            signal.signal(number, previous[number])
        if received:
            _deliver(received[0], previous[received[0]])


def _deliver(number: int, handler: signal.Handlers | Callable[[int, FrameType | None], object]) -> None:
    """Act on the signal `number` as `handler`, the one in place, does."""
    if callable(handler):
        handler(number, None)
    else:  # SIG_DFL: it ends the process
        signal.raise_signal(number)
