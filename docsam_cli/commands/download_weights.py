"""`docsam download-weights`: fetch checkpoints into the verified cache, list them, register hand copies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.filesize import decimal

from docsam_cli.commands.options import path_arguments
from docsam_cli.console import message_options, print_error, print_plain, stderr_console, write_data
from docsam_cli.errors import ExitCode, UsageError
from docsam_cli.weights.cache import cache_status, docsam_home
from docsam_cli.weights.errors import WeightsError
from docsam_cli.weights.registry import LICENCE_NOTE, REGISTRY, WeightsEntry, entry_names, find_entry


def download_weights(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAME", help="Registered names (see --list).")
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Download every registered checkpoint.")] = False,
    list_entries: Annotated[
        bool, typer.Option("--list", help="List names, sizes, licences and what is cached.")
    ] = False,
    from_file: Annotated[
        str | None,  # not a Path: that would cut a URL's `//` before `_local_file` could name it
        typer.Option(
            "--from", metavar="FILE", help="Register FILE, copied in by hand, as NAME (no network)."
        ),
    ] = None,
) -> None:
    """Download checkpoints into the cache ($DOCSAM_HOME, default $XDG_CACHE_HOME/docsam or ~/.cache/docsam)
    as checked safetensors.

    Interrupted downloads resume on the next run; DOCSAM_OFFLINE=1 or HF_HUB_OFFLINE=1 forbids the network.
    """
    names = names or []
    if list_entries:
        _list(names, all_entries, from_file)
        return
    entries, source = _chosen_entries(names, all_entries, from_file)

    # Imported here so that `docsam --help` and `--list` do not load torch, gdown and huggingface_hub.
    from docsam_cli.weights.install import ensure_cached, register_file

    console = stderr_console()

    def say(message: str) -> None:
        if not message_options().quiet:
            print_plain(console, message)

    failed = False
    for entry in entries:
        try:
            if source is not None:
                register_file(entry, source, say)
            else:
                ensure_cached(entry, say)
        except WeightsError as error:
            print_error(console, str(error))
            failed = True
    if failed:
        raise typer.Exit(ExitCode.FAILED)


def _list(names: list[str], all_entries: bool, from_file: str | None) -> None:
    """`--list`, alone. Raises UsageError."""
    if names or all_entries or from_file is not None:
        raise UsageError("--list takes no names or other options")
    try:
        _print_listing()
    except WeightsError as error:  # no cache folder to look in
        raise UsageError(str(error)) from None


def _chosen_entries(
    names: list[str], all_entries: bool, from_file: str | None
) -> tuple[list[WeightsEntry], Path | None]:
    """The registered weights to fetch (`names`, or every one with `--all`), and the file `--from` gives
    for the one name it takes. Raises UsageError."""
    if from_file is not None and (len(names) != 1 or all_entries):
        raise UsageError("--from FILE takes exactly one NAME")
    source = _local_file(from_file) if from_file is not None else None
    if all_entries and names:
        raise UsageError("--all takes no names")
    if not all_entries and not names:
        raise UsageError("name the weights to download, or use --all or --list")
    return (list(REGISTRY) if all_entries else [_lookup(name) for name in names]), source


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _local_file(from_file: str) -> Path:
    """`--from`'s file, its leading `~` expanded and an empty one refused as every path option's are (text,
    not a path option, so the app does neither). A URL (a site's mirror of the weights) is refused: it
    takes files already here. Raises UsageError."""
    try:
        (text,) = path_arguments([from_file], "--from")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if _URL.match(text) and not Path(text).exists():
        raise UsageError(
            f"--from {text}: a URL; --from takes a file on this machine: download it first (a browser, "
            "curl), then give its path"
        )
    return Path(text)


def _lookup(name: str) -> WeightsEntry:
    entry = find_entry(name)
    if entry is None:
        raise UsageError(f"{name}: unknown weights name (known: {', '.join(entry_names())})")
    return entry


def _print_listing() -> None:
    rows = [("NAME", "SOURCE", "SIZE", "LICENCE", "CACHED")]
    for entry in REGISTRY:
        status = cache_status(entry.name)
        if status.state == "cached":
            size, cached = decimal(status.size or 0), "yes"
        else:
            size = (
                decimal(entry.size)
                if entry.size
                else f"~{decimal(entry.approx_size)}"
                if entry.approx_size
                else "?"
            )
            cached = {"absent": "no", "partial": f"partial ({decimal(status.size or 0)})"}.get(
                status.state, "broken: download again"
            )
        source = "local file (--from)" if status.registered_from_file else entry.source.label
        rows.append((entry.name, source, size, entry.licence, cached))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    write_data("\n".join([*lines, "", LICENCE_NOTE, f"Cache: {docsam_home()}"]) + "\n")
