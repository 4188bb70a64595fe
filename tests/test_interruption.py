"""SIGTERM and SIGHUP as Ctrl-C for `segment` (`docsam_cli.interruption`)."""

from __future__ import annotations

import signal

import pytest

from docsam_cli.interruption import interrupts_held, terminate_as_interrupt


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_an_ignored_signal_stays_ignored(number: signal.Signals) -> None:
    """A caller that ignores SIGTERM (`trap '' TERM`) or SIGHUP (`nohup`) keeps the process running through
    one."""
    previous = signal.signal(number, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            signal.raise_signal(number)
        assert signal.getsignal(number) == signal.SIG_IGN
    finally:
        signal.signal(number, previous)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_is_an_interrupt_while_entered(number: signal.Signals) -> None:
    previous = signal.signal(number, lambda number, frame: None)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            signal.raise_signal(number)
    finally:
        signal.signal(number, previous)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_waits_for_a_step_that_must_not_be_cut_in_two(number: signal.Signals) -> None:
    """`interrupts_held` (convert-dataset --overwrite's two renames) holds back every signal that stops a run:
    a SIGHUP, which `terminate_as_interrupt` also turns into an interrupt, raised KeyboardInterrupt between
    the renames, leaving no --out and the old dataset hidden."""
    steps = []
    # Python's own Ctrl-C handler, as in `docsam`: importing OCR-D core (its tests) installs cysignals' one
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(), interrupts_held():
            signal.raise_signal(number)
            steps.append("second rename")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert steps == ["second rename"]


@pytest.mark.parametrize(("number", "ends"), [(signal.SIGTERM, True), (signal.SIGHUP, False)])
def test_a_second_sighup_does_not_end_the_run_as_a_second_sigterm_does(
    number: signal.Signals, ends: bool
) -> None:
    """The terminal closing sends a run in its foreground two SIGHUPs within a moment (the shell's, then the
    kernel's as the shell exits): the second ended the run outright while it finished the pages being
    written, without `coco.json` or a word in the log. A second SIGTERM still ends it at once."""
    ended = []

    def before(each: int, frame: object) -> None:  # stands in for the default action, which would end pytest
        ended.append(each)

    previous = signal.signal(number, before)
    try:
        with terminate_as_interrupt():
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(number)
            signal.raise_signal(number)
        assert signal.getsignal(number) is before
    finally:
        signal.signal(number, previous)
    assert ended == ([number] if ends else [])
