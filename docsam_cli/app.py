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


# Subcommands: importing a module registers its command (decorated with @app.command), except the two whose
# entry points are plain functions, registered explicitly below.
from docsam_cli.commands import (  # noqa: E402, F401
    convert_dataset,
    download_weights,
    evaluate,
    finetune,
    segment,
    train,
)

app.command("convert-dataset")(convert_dataset.main)
app.command("evaluate")(evaluate.main)


def main() -> None:
    app()
