"""Where an option's value came from when the user did not type it.

`train` and `finetune` take option values from files: a `--config` file, and the `run.json` that `--resume`
reads. Both fill Click's `default_map`, whose values go through the same checks as typed ones; an error
about such a value names the file and the key that hold it (`'warmup' in run.json`), not the option the
user never typed (`--warmup`). This module keeps that record in the command's context, for the app's
error policy (`docsam_cli.app`) and the training command line alike; it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from docsam_cli.names import display_path

_ORIGINS = "docsam.origins"  # ctx.meta key: option name → where its default_map value came from


def key_in_file(key: object, path: Path) -> str:
    """How an error names a value of the file at `path`: its key as written and the file."""
    return f"{str(key)!r} in {display_path(path)}"


def add_file_defaults(ctx: typer.Context, values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """Make `values` (option name → value, read from a file) the defaults of the command's options, and
    remember `origins` (option name → `key_in_file`) for the errors about them; a later file wins."""
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[_ORIGINS] = {**ctx.meta.get(_ORIGINS, {}), **{name: origins[name] for name in values}}


def file_origin(ctx: typer.Context, name: str) -> str | None:
    """Where the value of option `name` came from (`key_in_file`) when a file gave it, else None."""
    return ctx.meta.get(_ORIGINS, {}).get(name)


def given_by_file(ctx: typer.Context, name: str) -> str | None:
    """As `file_origin`, once Click has settled the value of option `name`: None when the command line (or
    the option's own default) gave it."""
    source = ctx.get_parameter_source(name)
    return file_origin(ctx, name) if source is not None and source.name == "DEFAULT_MAP" else None
