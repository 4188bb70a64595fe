"""Where and how the commands talk to the user: stderr, one `error:` line per problem, never markup.

Progress bars, summaries, logs and errors go to stderr; stdout is reserved for data (JSON lines). Every text
that can contain a file name is printed as plain `rich.text.Text`, so `[draft]` or `[/red]` in a name is
shown as it is and never parsed as Rich markup.

How much is said is set by the message options every command accepts (`-v`, `-q`, `--debug`; declared
in `docsam_cli.app`) and read with `message_options()`. Library code logs through `logging` (loggers under
`docsam_cli` and `model`); `configure_logging` routes those records to stderr as `info: ...` lines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console
from rich.text import Text

from docsam_cli.errors import InputError
from docsam_cli.names import one_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

LOGGERS = ("docsam_cli", "model")
# The `extra` of an info record about the whole run (its classes, its geometry, the weights it starts from),
# which every process of a run under a launcher (torchrun, srun) logs alike: shown by rank 0 alone. Lines
# about a process (its device, its threads, its model's loading time) or a page are shown by each.
RUN_WIDE = {"run_wide": True}
STDOUT_NAME = "stdout"  # how messages name standard output


def stderr_console() -> Console:
    return Console(file=_Stderr(), highlight=False, soft_wrap=True)  # type: ignore[arg-type]


class _Stderr:
    """`sys.stderr` as it is at each write (a test runner's capture; under a progress bar, the stream Rich
    redirected), its write failures passed over: a message that cannot be written (`2> run.log` on a full
    disk, a log reader gone) ended the run at the first `error:` line, losing that page's JSON line and every
    page after it, and made a run that did everything exit 1. The data and the exit code are the run's."""

    @property
    def stream(self) -> TextIO | None:
        stream = sys.stderr
        return getattr(stream, "rich_proxied_file", stream)

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def write(self, text: str) -> int:
        with suppress(OSError):
            if self.stream is not None:  # closed (`2>&-`)
                self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        with suppress(OSError):
            if self.stream is not None:
                self.stream.flush()


def ignore_unusable_terminal_width() -> None:
    """Drop a `COLUMNS` that is no width (0, as some containers and editor shells set it): Rich, and
    Typer's help through it, would print every message and help text at width 0, that is not at all."""
    columns = os.environ.get("COLUMNS")
    if columns is not None and not (columns.strip().isdigit() and int(columns) > 0):
        del os.environ["COLUMNS"]


def use_utf8_stdout() -> None:
    """Data on stdout in UTF-8 whatever the locale: JSON text exchanged between systems must be UTF-8 (RFC
    8259), and a page's line is. Under a locale of another encoding (`LANG=de_DE.ISO-8859-1` on an older
    server, `PYTHONIOENCODING`), Python's stdout wrote `première` in Latin-1 bytes, which `jq` rejects, and
    a name beyond that encoding (`報告.png`) ended the run as an internal error."""
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors=sys.stdout.errors)


def shows_progress(console: Console, quiet: bool) -> bool:
    """Whether a progress bar is drawn on `console`: not with `-q`, and only on a terminal (a bar redrawn
    in a log file is noise)."""
    return not quiet and _on_a_terminal(console)


def _on_a_terminal(console: Console) -> bool:
    """Rich's `is_terminal` but for `FORCE_COLOR`, which asks for colours, not for a terminal: carried into
    a batch job's environment (set for CI, or in a shell profile), it had Rich redraw the bar ten times a
    second into the job's log file. Rich's `TTY_COMPATIBLE=1` still declares the stream a terminal."""
    if not console.is_terminal:
        return False
    if os.environ.get("TTY_COMPATIBLE") == "1":
        return True
    try:
        return console.file.isatty()
    except ValueError:  # closed
        return False


def print_error(console: Console, message: str) -> None:
    """`error: <message>` on one line, the message shown exactly (see `docsam_cli.names.one_line`)."""
    console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)))


def print_plain(console: Console, message: str) -> None:
    """A line of plain text (summaries, notes), never parsed as markup."""
    console.print(Text(message))


def write_data(text: str) -> None:
    """`text` on stdout, flushed at once (see `writing_stdout`)."""
    with writing_stdout():
        sys.stdout.write(text)


@contextmanager
def writing_stdout() -> Iterator[None]:
    """Write to stdout inside, flushed at the end. A reader that went away (`| head -1`, BrokenPipeError)
    ends the run quietly (see `docsam_cli.app`); stdout that cannot be written otherwise (`> results.jsonl`
    on a full disk) is an InputError naming it, so that the run stops with one `error:` line and exit 1
    rather than as an internal error; so is a closed stdout (`>&-`: Python's `sys.stdout` is then None,
    which Rich, printing the help, would pass over in silence)."""
    if sys.stdout is None:
        raise InputError(STDOUT_NAME, "cannot write: stdout is closed")
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise InputError(STDOUT_NAME, f"cannot write: {error.strerror or error}") from None


@dataclass
class MessageOptions:
    """How much a command says on stderr."""

    verbose: int = 0  # 1: info logs (model loading, device, geometry, per-page timings); 2: debug logs too
    quiet: bool = False  # no progress bar and no summary; errors and data lines are still written
    debug: bool = False  # an internal error shows its traceback


_message_options = MessageOptions()


def message_options() -> MessageOptions:
    """The message options of the running command (process-wide, as a CLI process runs one command)."""
    return _message_options


def reset_message_options() -> None:
    """Back to the defaults: the app calls this as each command line starts (tests run many in one
    process)."""
    global _message_options
    _message_options = MessageOptions()
    configure_logging(0)


class _LevelPrefixFormatter(logging.Formatter):
    """`info: message`, like the `error:` lines; the message on one line, file names escaped as in every
    message (a traceback, when one is logged, follows on its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {one_line(record.getMessage())}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time, so that log lines go above a progress bar (which
    wraps stderr while it is shown) and into a test runner's capture."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_LevelPrefixFormatter())
        self.addFilter(_shown_by_this_process)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _shown_by_this_process(record: logging.LogRecord) -> bool:
    """A record marked `RUN_WIDE` is shown by the launcher's rank 0 alone (by the one process without one)."""
    if not getattr(record, "run_wide", False):
        return True
    from docsam_cli.distributed import launched_rank

    return launched_rank() == 0


def configure_logging(verbose: int) -> None:
    """Warnings always; info records from `-v`, debug records from `-vv`. Safe to call repeatedly."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
            logger.addHandler(_StderrHandler())


@contextmanager
def filtered_logs(keep: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Within the block, the records of docsam's loggers reach stderr only where `keep` passes them."""
    handlers = [
        handler
        for name in LOGGERS
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, _StderrHandler)
    ]
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


class Reporter(Protocol):
    """What a batch tells the user, whoever shows it: the console (`ConsoleReporter`), or, in a run spread
    over several processes, the console of one of them and nothing from the others."""

    def start(self, label: str) -> None:
        """Progress begins (the total is not known in advance)."""

    def advance(self) -> None:
        """One more page accounted for (done, skipped or failed)."""

    def error(self, message: str) -> None:
        """One problem, shown as one `error:` line."""

    def data(self, line: str) -> None:
        """A data line for stdout (a JSON line, its newline included)."""

    def summary(self, lines: Sequence[str]) -> None:
        """The run is over: progress ends and its summary follows."""


class ConsoleReporter:
    """Progress bar and summary on stderr (both silenced when `quiet`), `error:` lines on stderr, data lines
    on stdout. Use it as a context manager so that the progress bar is removed however the run ends."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = stderr_console()
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop()

    def start(self, label: str) -> None:
        if self._progress is not None or not shows_progress(self.console, self.quiet):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn(label, markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            # Rich would print what goes to stdout above the bar, on stderr: JSON lines piped or redirected
            # (`| jq`, `> results.jsonl`) must reach stdout; printed on the terminal, they keep the bar whole.
            redirect_stdout=sys.stdout is not None and sys.stdout.isatty(),  # None: closed (`>&-`)
        )
        self._task = self._progress.add_task(label, total=None)
        self._progress.start()

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def error(self, message: str) -> None:
        print_error(self.console, message)

    def data(self, line: str) -> None:
        write_data(line)

    def summary(self, lines: Sequence[str]) -> None:
        self._stop()
        if not self.quiet:
            for line in lines:
                print_plain(self.console, line)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
