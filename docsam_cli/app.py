"""The `docsam` command-line application: one Typer app, one module per subcommand."""

from __future__ import annotations

import typer

from docsam_cli import __version__

app = typer.Typer(
    name="docsam",
    help="Segment document images and PDFs with DocSAM: COCO JSON, PAGE XML, overlays, JSON lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"docsam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """DocSAM document segmentation."""


# Subcommands register themselves here, one line each.
from docsam_cli.commands import download_weights  # noqa: E402, F401


def main() -> None:
    app()
