"""SIGTERM and SIGHUP as Ctrl-C for a batch command: Slurm's time limit, `timeout`, `kill` and the terminal
closing under a run not started with `nohup` end the run the way Ctrl-C does (the pages being written are
finished and reported, exit 130), not in the middle of a page's writes with their JSON lines lost and
`coco.json` left without the pages done. Training uses it while it starts; its loop has its own handling
(`docsam_cli.training.trainer.StopRequests`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, a time limit, the terminal closing
_TERMINATING = STOP_SIGNALS[1:]  # those Python does not turn into KeyboardInterrupt itself
Handler = signal.Handlers | Callable[[int, FrameType | None], object]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While entered (in the main thread), the first SIGTERM or SIGHUP raises KeyboardInterrupt; it puts the
    previous handlers back, so that a second signal acts as before (ends the process), but for a second
    SIGHUP (`first_stop_taken`). A signal the caller ignores (`trap '' TERM`, `nohup`'s SIGHUP, inherited as
    ignored) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _TERMINATING}
    taken = {number: handler for number, handler in previous.items() if handler not in (signal.SIG_IGN, None)}

    def interrupt(number: int, frame: FrameType | None) -> None:
        nonlocal taken
        taken = first_stop_taken(number, taken)
        raise KeyboardInterrupt

    for number in taken:
        signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in taken.items():
            signal.signal(number, handler)


def first_stop_taken(number: int, previous: dict[int, Handler]) -> dict[int, Handler]:
    """Put the `previous` handlers back once the stop signal `number` was taken, so that a second signal acts
    as before (ends the process), but for SIGHUP after a SIGHUP, which is ignored from then on: the terminal
    closing sends two to a run in its foreground (the shell's, then the kernel's as the shell exits), and
    the second, which came within a moment of the first, killed the run while it finished the pages being
    written. Returns the handlers still to put back when the caller is done (SIGHUP's, if so)."""
    for each, handler in previous.items():
        signal.signal(each, handler)
    if number != signal.SIGHUP or signal.SIGHUP not in previous:
        return {}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return {signal.SIGHUP: previous[signal.SIGHUP]}


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """While entered (in the main thread), Ctrl-C, SIGTERM and SIGHUP are held back, and acted on as it ends,
    as their handlers then in place would have (KeyboardInterrupt, or the end of the process): for a step
    that must not be cut in two, such as the two renames that swap a new folder in for an old one. A
    signal the caller ignores stays ignored. Python handlers are swapped rather than the signals blocked:
    a thread of the process that does not block them (a progress display's) would take them in its
    stead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
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


def _deliver(number: int, handler: Handler) -> None:
    """Act on the signal `number` as `handler`, the one in place, does."""
    if callable(handler):
        handler(number, None)
    else:  # SIG_DFL: it ends the process
        signal.raise_signal(number)
