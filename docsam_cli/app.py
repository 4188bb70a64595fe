"""The `docsam` command-line application: the command table, the message options, the error policy.

Commands are registered by module path (`COMMANDS`); a command's module is imported only when that command
runs or shows its help, so `docsam --help` and `docsam --version` import no command's dependencies (torch
above all) and return at once. A command module defines its command as a plain function whose parameters
are Typer options, keeps torch & co. inside that function, and does not import this module.

Every command also accepts the message options `-v/--verbose`, `-q/--quiet` and `--debug`, declared once
here and added to each command as it is loaded; `docsam -v segment ...` and `docsam segment ... -v` are the
same.

Whatever goes wrong ends as one `error:` line on stderr and an exit code (`docsam_cli.errors.ExitCode`):
a bad option or argument exits USAGE, as does a `UsageError` (a request that cannot start) and a
`PermissionError` (a path in a folder the user may not search); an `InputError` that reaches the app exits
FAILED; any other exception is an internal error, exit INTERNAL, its traceback
shown with `--debug`. Ctrl-C exits INTERRUPTED.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import MarkupMode, TyperCommand, TyperGroup, TyperOption
from typer.main import get_command_from_info
from typer.models import CommandInfo

from docsam_cli import __version__
from docsam_cli.config_origins import file_origin, given_by_file
from docsam_cli.console import (
    configure_logging,
    ignore_unusable_terminal_width,
    message_options,
    print_error,
    reset_message_options,
    stderr_console,
    use_utf8_stdout,
    write_data,
    writing_stdout,
)
from docsam_cli.errors import ExitCode, InputError, UsageError
from docsam_cli.model_package import use_own_model
from docsam_cli.names import display_path
from docsam_cli.user_paths import expand_user

if TYPE_CHECKING:  # Typer's own copy of click
    from typer._click import Command, Context, Parameter


@dataclass(frozen=True)
class CommandEntry:
    name: str
    target: str  # "package.module:function"
    summary: str  # its line in `docsam --help`
    # The `error:` line of a Ctrl-C the command leaves to the app: what a rerun finds.
    interrupted: str = "interrupted (what was finished stays; rerun to go on)"


COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry(
        "segment",
        "docsam_cli.commands.segment:segment",
        "Segment images and PDFs: COCO JSON, PAGE XML, overlays, JSON lines.",
    ),
    CommandEntry(
        "download-weights",
        "docsam_cli.commands.download_weights:download_weights",
        "Download checkpoints into the verified cache, list them, register copies.",
    ),
    CommandEntry(
        "evaluate",
        "docsam_cli.commands.evaluate:main",
        "Score predictions, or a model, against ground truth.",
        interrupted="interrupted; no report written",
    ),
    CommandEntry(
        "convert-dataset",
        "docsam_cli.commands.convert_dataset:main",
        "Convert annotated pages (PAGE, ALTO, COCO, ...) into the unified training layout.",
    ),
    CommandEntry(
        "train",
        "docsam_cli.commands.train:train",
        "Train DocSAM on datasets in the unified layout.",
    ),
    CommandEntry(
        "finetune",
        "docsam_cli.commands.finetune:finetune",
        "Fine-tune a DocSAM checkpoint on new datasets and class names.",
    ),
)
_ENTRIES = {entry.name: entry for entry in COMMANDS}
MESSAGES_PANEL = "Messages"


# --- message options ---------------------------------------------------------------------------------


def _on_verbose(value: int) -> None:
    if value:
        options = message_options()
        options.verbose += value
        configure_logging(options.verbose)


def _on_quiet(value: bool) -> None:
    if value:
        message_options().quiet = True


def _on_debug(value: bool) -> None:
    if value:
        message_options().debug = True


Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        expose_value=False,
        callback=_on_verbose,
        rich_help_panel=MESSAGES_PANEL,
        help="Say more on stderr: -v model loading, device, geometry, per-page timings; -vv debug details.",
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        expose_value=False,
        callback=_on_quiet,
        rich_help_panel=MESSAGES_PANEL,
        help="No progress bar and no summary (errors are always shown).",
    ),
]
Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        expose_value=False,
        callback=_on_debug,
        rich_help_panel=MESSAGES_PANEL,
        help="Show the traceback of an internal error.",
    ),
]


def _message_options(verbose: Verbose = 0, quiet: Quiet = False, debug: Debug = False) -> None:
    """Declares the message options every command accepts (see `_load`)."""


# --- commands, loaded when used ----------------------------------------------------------------------


class _Listed(TyperCommand):
    """A command as `docsam --help` lists it, its module not imported."""

    def __init__(self, entry: CommandEntry) -> None:
        super().__init__(entry.name, help=entry.summary, short_help=entry.summary)
        self.entry = entry


class _Help:
    """Help text written as data is (`writing_stdout`): `docsam --help > /dev/full` is one `error:` line
    and exit 1, not Rich's traceback. Flags and counts show no value type: Typer's `--recursive <bool>`
    and `-v <int>` read as options taking a value, and `segment scans -v 2` takes 2 as an input. Choices
    read in any case show as spelt (`<mAP|AP50|...>`), where Typer shows them lower-cased. The command's
    own text is wrapped to the terminal (`_reflowed`)."""

    def format_help(self, ctx: Context, formatter: Any) -> None:
        self.help = _reflowed(self.help)
        for param in self.get_params(ctx):
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and descriptor.is_choice and param.metavar is None:
                spelt = (str(getattr(choice, "value", choice)) for choice in descriptor.choices)
                param.metavar = f"<{'|'.join(spelt)}>"
        with writing_stdout():  # Typer's Rich help prints to stdout itself, inside format_help
            super().format_help(ctx, formatter)


def _reflowed(text: str | None) -> str | None:
    """`text` (a docstring) with each paragraph on one line: Typer's Rich help keeps a docstring's line
    breaks, made at the source's width, so that on a terminal of another width a paragraph's lines were
    ragged and a sentence broke in the middle (`2 usage error` / `(nothing processed)`)."""
    if text is None:
        return None
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(text).split("\n\n"))


class _Context(typer.Context):
    """A command's context whose option values from a `--config` file (Click's `default_map`) are held
    to what a typed value is, before Typer converts them (`_refuse_non_finite`)."""

    def lookup_default(self, name: str, call: bool = True) -> Any:
        value = super().lookup_default(name, call)
        param = next((param for param in self.command.params if param.name == name), None)
        if param is not None:
            _refuse_non_finite(self, param, value, file_origin(self, name))
        return value


class _Command(_Help, TyperCommand):
    """A command whose command line is read as the user means it, before any value is converted:

    * an option taking one value may be given once: Click keeps the last value silently, so
      `--classes table --classes figure` would look for figures alone, and `--out a ... --out b` (an alias,
      a script adding its own) would write where the user did not look. Options that repeat (`--format`,
      `--map`), count (`-v`) or are flags are untouched;
    * a path starts with `~` as the shell expands it (`docsam_cli.user_paths`), also where the shell leaves
      it (`--from=~/usb/w.pth`), before Typer checks that the file exists; an empty one (an unset shell
      variable, most likely: `--images "$IMAGES"`), which Typer reads as the current folder, is refused;
    * a number is finite: `nan` and `inf`, which Python reads as floats, are refused as such before Typer
      checks an option's range, which would say that NaN is not `≤ 9600`; also from a `--config` file.

    A value a file gave (`--config`, the run.json of `--resume`) that fails a check is named by the file and
    its key, not by the option the user did not type (`config_origins`)."""

    context_class = _Context

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as error:
            origin = given_by_file(ctx, error.param.name) if error.param is not None else None
            if origin is not None and error.param_hint is None:
                error.param_hint = origin
            raise

    def make_parser(self, ctx: Context) -> Any:
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_args(args: list[str]) -> tuple[dict[str, Any], list[str], list[Parameter]]:
            values, rest, order = parse(args)
            if not ctx.resilient_parsing:
                _refuse_repeated_options(ctx, order)
                _refuse_empty_paths(ctx, self.get_params(ctx), values)
                _refuse_non_finite_numbers(ctx, self.get_params(ctx), values)
            return _user_paths_expanded(self.get_params(ctx), values), rest, order

        parser.parse_args = parse_args  # Click builds its parser class itself: wrapped, not subclassed
        return parser


def _refuse_repeated_options(ctx: Context, order: Sequence[Parameter]) -> None:
    """A usage error for the first option in `order` (the parameters as parsed, one per use) that takes
    one value and was given more than once."""
    seen: list[Parameter] = []
    for param in order:
        if not isinstance(param, TyperOption) or param.multiple or param.count or param.is_flag:
            continue
        if param in seen:
            ctx.fail(
                f"{_typed_name(param)} given twice; give it once, with a list as one comma-separated value"
            )
        seen.append(param)


def _typed_name(param: Parameter) -> str:
    """An option as the user types it (its long flag), an argument as --help names it (`GROUND_TRUTH`)."""
    if param.param_type_name == "argument":
        return param.display_name_raw.upper()
    return next((name for name in param.opts if name.startswith("--")), param.opts[0])


def _path_values(params: Sequence[Parameter], values: dict[str, Any]) -> Iterator[tuple[Parameter, Any]]:
    """The path-typed parameters given a value in the parsed `values`, and that value."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if (
            descriptor is not None
            and descriptor.annotation is Path
            and values.get(param.name or "") is not None
        ):
            yield param, values[param.name]


def _refuse_empty_paths(ctx: Context, params: Sequence[Parameter], values: dict[str, Any]) -> None:
    """A usage error for an empty path given to a path-typed parameter that has no parser of its own
    (`--out` has, and says so in its words)."""
    for param, value in _path_values(params, values):
        texts = value if isinstance(value, list | tuple) else [value]
        if param.type_descriptor.parameter_info.parser is None and any(not text.strip() for text in texts):
            ctx.fail(f"{_typed_name(param)}: an empty path; write . for the current folder")


def _refuse_non_finite_numbers(ctx: Context, params: Sequence[Parameter], values: dict[str, Any]) -> None:
    """`_refuse_non_finite` for each value in the parsed `values`."""
    for param in params:
        _refuse_non_finite(ctx, param, values.get(param.name or ""))


def _refuse_non_finite(ctx: Context, param: Parameter, value: Any, origin: str | None = None) -> None:
    """A usage error if `param` is float-typed and `value` (typed text, or a config file's number, which
    `origin` names) is NaN or an infinity (`nan`, `inf`, `1e999`, YAML's `.nan`): every such option needs a
    finite number."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.annotation is not float or not isinstance(value, str | float):
        return
    try:
        number = float(value)
    except ValueError:
        return  # Typer says what it is not
    where = origin if origin is not None else _typed_name(param)
    if math.isnan(number):
        ctx.fail(f"{where}: {value!r} is not a number")
    if math.isinf(number):
        ctx.fail(f"{where}: {value!r} is not a finite number")


def _user_paths_expanded(params: Sequence[Parameter], values: dict[str, Any]) -> dict[str, Any]:
    """The parsed `values` with `expand_user` applied to those of the path-typed parameters."""
    for param, value in _path_values(params, values):
        values[param.name] = (
            [expand_user(v) for v in value] if isinstance(value, list | tuple) else expand_user(value)
        )
    return values


def _click_command(info: CommandInfo, markup_mode: MarkupMode) -> Command:
    return get_command_from_info(info, pretty_exceptions_short=False, rich_markup_mode=markup_mode)


def _load(entry: CommandEntry, markup_mode: MarkupMode) -> Command:
    module_name, _, function_name = entry.target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    command = _click_command(
        CommandInfo(name=entry.name, callback=function, short_help=entry.summary, cls=_Command), markup_mode
    )
    command.params.extend(_click_command(CommandInfo(callback=_message_options), markup_mode).params)
    return command


class DocsamGroup(_Help, TyperGroup):
    """The `docsam` command: subcommands loaded on use, and the app-wide error policy."""

    def list_commands(self, ctx: Context) -> list[str]:
        others = [name for name in super().list_commands(ctx) if name not in _ENTRIES]
        return [*_ENTRIES, *others]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        entry = _ENTRIES.get(cmd_name)
        return _Listed(entry) if entry is not None else super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Listed):
            command = _load(command.entry, self.rich_markup_mode)
        return name, command, rest

    def invoke(self, ctx: Context) -> Any:
        options = message_options()
        configure_logging(options.verbose)
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort, BrokenPipeError):
            raise  # usage errors and exits are reported by `main`; a closed stdout pipe ends the run quietly
        except KeyboardInterrupt:
            # Caught here: Typer would turn Ctrl-C into a silent exit 130 before `main` could report it.
            entry = _ENTRIES.get(ctx.invoked_subcommand or "")
            print_error(stderr_console(), entry.interrupted if entry is not None else "interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except UsageError as error:
            print_error(stderr_console(), str(error))
            raise typer.Exit(ExitCode.USAGE) from None
        except InputError as error:
            print_error(stderr_console(), str(error))
            raise typer.Exit(ExitCode.FAILED) from None
        except PermissionError as error:
            # A path given that lies in a folder the user may not search: Python's `Path.exists()`,
            # `is_dir()` and `is_file()` raise for it (they return False for a missing one), wherever a
            # command looks at it. The place is unusable, as a read-only output folder is; no bug.
            where = f"{display_path(error.filename)}: " if error.filename is not None else ""
            print_error(stderr_console(), f"{where}{error.strerror or error}")
            raise typer.Exit(ExitCode.USAGE) from None
        except Exception as error:
            if options.debug:
                traceback.print_exc()
            hint = "" if options.debug else " (rerun with --debug for the traceback)"
            print_error(stderr_console(), f"internal error: {type(error).__name__}: {error}{hint}")
            raise typer.Exit(ExitCode.INTERNAL) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """As click's, but a usage error is one `error:` line (click's own report spans several)."""
        reset_message_options()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as error:  # click's usage errors
            if type(error).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                print_error(stderr_console(), _usage_message(error))
            sys.exit(error.exit_code)
        except typer.Abort:
            print_error(stderr_console(), "interrupted")
            sys.exit(ExitCode.INTERRUPTED)
        except InputError as error:  # raised before any command runs: `--version` cannot write stdout
            print_error(stderr_console(), str(error))
            sys.exit(ExitCode.FAILED)
        sys.exit(result if isinstance(result, int) else ExitCode.OK)


def _usage_message(error: typer.TyperException) -> str:
    # Typer validates choices through pydantic, whose messages start "Value error, ".
    message = error.format_message().replace("Value error, ", "")
    if type(error).__name__ == "MissingParameter":  # no value of the user's in it, its choices on lines
        message = " ".join(message.split())  # of their own ("Choose from:\n\tpage,\n\t...")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    context = getattr(error, "ctx", None)
    if context is not None:
        message += f" (see '{context.command_path} --help')"
    return message


# --- the app -----------------------------------------------------------------------------------------


def _on_version(value: bool) -> None:
    if value:
        write_data(f"docsam {__version__}\n")
        raise typer.Exit()


app = typer.Typer(
    name="docsam",
    cls=DocsamGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_on_version,
            is_eager=True,
            expose_value=False,
            help="Print the version and exit.",
        ),
    ] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Segment document images and PDFs with DocSAM: COCO JSON, PAGE XML, overlays, JSON lines.

    Exit codes: 0 every page or file done, 1 some failed (each named by an error: line), 2 usage error
    (nothing processed), 3 internal error, 130 interrupted.
    """


def load_command(name: str) -> Command:
    """The click command `docsam NAME` runs, its module imported (for tests and documentation tools)."""
    group = typer.main.get_command(app)
    return _load(_ENTRIES[name], group.rich_markup_mode)


def main() -> None:
    ignore_unusable_terminal_width()
    use_utf8_stdout()
    hidden = use_own_model()
    if hidden is not None:
        print_error(stderr_console(), hidden)
        sys.exit(ExitCode.USAGE)
    app()
