"""SIGTERM as Ctrl-C for `segment` (`docsam_cli.interruption`)."""

from __future__ import annotations

import signal

import pytest

from docsam_cli.interruption import terminate_as_interrupt


def test_an_ignored_sigterm_stays_ignored() -> None:
    """A caller that ignores SIGTERM (`trap '' TERM`) keeps the process running through one."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_an_interrupt_while_entered() -> None:
    previous = signal.signal(signal.SIGTERM, lambda number, frame: None)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
