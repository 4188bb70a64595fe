"""Where and how the commands talk to the user: stderr, one `error:` line per problem, never markup.

Progress bars, summaries and errors go to stderr; stdout is reserved for data (JSON lines). Every text
that can contain a file name is printed as plain `rich.text.Text`, so `[draft]` or `[/red]` in a name is
shown as it is and never parsed as Rich markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from docsam_cli.names import one_line


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(console: Console, message: str) -> None:
    """`error: <message>` on one line, the message shown exactly (see `docsam_cli.names.one_line`)."""
    console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)))


def print_plain(console: Console, message: str) -> None:
    """A line of plain text (summaries, notes), never parsed as markup."""
    console.print(Text(message))
