"""The command line of `docsam train` / `docsam finetune`, derived from the settings' declaration.

`training_command(StartingPoint)` turns `command(plan: RunPlan, start: StartingPoint)` into a Typer command
whose parameters are every `Option` field of `RunPlan` (and of the settings it holds) and of the command's
own starting-point dataclass, plus `--config FILE`. Defaults, help texts, panels, choices and bounds all
come from `docsam_cli.training.settings`; a command with other defaults passes settings instances that
override them (`finetune`'s `TrainingOptions(iterations=4000, ...)`).

`--config` replays a run: it reads the `run.json` a run wrote (or a JSON / YAML mapping of option names to
values) into Click's `default_map`, so recorded values replace the declared defaults, options typed on the
command line replace both, and every value goes through the same parsing and checks as a typed one.

`--resume` continues the run in `--out` as it was started: the run's `run.json` is an implicit `--config`
(read the same way), and an option typed on the command line that differs from the record is a usage error,
except those that change where and how the run goes, not what it computes (`RESUME_MAY_CHANGE`).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, get_origin, get_type_hints

import typer

from docsam_cli.commands.options import checked
from docsam_cli.config_origins import add_file_defaults, file_origin, given_by_file, key_in_file
from docsam_cli.console import message_options, print_error, print_plain, stderr_console
from docsam_cli.distributed import launched_rank
from docsam_cli.errors import ExitCode, InputError, UsageError
from docsam_cli.interruption import terminate_as_interrupt
from docsam_cli.names import display_path, one_line
from docsam_cli.training.run_log import FOLDER_KEY, RUN_FILE, run_settings
from docsam_cli.training.settings import PANELS, Option, RunPlan
from docsam_cli.user_paths import expand_user

if TYPE_CHECKING:
    from model.docsam import DocSAM

Start = TypeVar("Start")
Command = Callable[[RunPlan, Start], None]

# The options a resumed run may give other values than its run.json records: they change where and how the
# run goes (processes, device, what it reports, which checkpoints it keeps, the pixel limit that the error of
# a page over it advises raising), not its results.
RESUME_MAY_CHANGE = frozenset(
    {"out", "workers", "max_image_pixels", "device", "progress", "log_every", "checkpoint_every", "keep_last"}
)
_RESUMED = "docsam.resumed"  # ctx.meta key: the `_Resumed` of the run.json that --resume read
_FOLDER = "docsam.folder"  # ctx.meta key: the other working folder a replayed or resumed run started in


class _Missing(typer.BadParameter):
    """A required option that neither the command line nor a file gave."""

    def format_message(self) -> str:
        """The message alone: Click's 'invalid value:' before it would call invalid a value not given."""
        return self.message


@dataclass(frozen=True)
class _Resumed:
    """What `--resume` read: the run.json's settings and where each is in it, and the defaults (and their
    origins) a `--config` file had given before them."""

    recorded: dict[str, Any]
    record_origins: dict[str, str]
    config: dict[str, Any]
    config_origins: dict[str, str | None]


@dataclass(frozen=True)
class _Declared:
    """One option of a command: its declaration and this command's default for it."""

    option: Option
    owner: type
    field: Field
    default: Any

    @classmethod
    def of(cls, owner: type, item: Field, overrides: Mapping[type, Any]) -> _Declared:
        if owner in overrides:
            default = getattr(overrides[owner], item.name)
        elif item.default_factory is not MISSING:
            default = item.default_factory()
        else:
            default = item.default
        return cls(item.metadata["option"], owner, item, default)

    @property
    def name(self) -> str:
        return self.option.name

    @property
    def takes_sequence(self) -> bool:
        """Whether the field holds a sequence (a pair such as `Size`, the DATASETs), by its declared type."""
        hint = get_type_hints(self.owner)[self.field.name]
        return get_origin(hint) in (tuple, list, Sequence)

    @property
    def flag(self) -> str:
        """The option as the user types it (`--lr`), `DATASET` for the argument."""
        return "DATASET" if self.option.argument else "--" + self.name.replace("_", "-")

    def parameter(self, annotation: Any, callbacks: Mapping[str, Callable[..., Any]]) -> inspect.Parameter:
        """The Typer parameter: `Annotated[type, typer.Option(...)]` with the command-line default, and its
        callback in `callbacks` (by option name), if it has one."""
        spec = self.option
        details: dict[str, Any] = {"help": spec.help, "rich_help_panel": spec.panel, "metavar": spec.metavar}
        if spec.argument:
            info = typer.Argument(show_default=False, **details)
        else:
            callback = callbacks.get(self.name)
            parser = checked(spec.canonical) if spec.canonical is not None else None
            info = typer.Option(
                *spec.flags,
                min=spec.min,
                max=spec.max,
                parser=parser,
                case_sensitive=False,  # choices, as every command's
                callback=callback,
                **details,
            )
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=self.command_line_default(),
            annotation=Annotated[spec.text if spec.text is not None else annotation, info],
        )

    def command_line_default(self) -> Any:
        if self.default is MISSING or self.default in (None, ()):
            return None
        return self.option.show(self.default) if self.option.show else self.default

    def value(self, given: Any) -> Any:
        """The field value for what the command line (or --config) gave. Raises `_Missing` for a missing
        required option, ValueError for text that does not parse."""
        if given is None or given == [] or given == ():
            if self.option.required:
                flag = "DATASET" if self.option.argument else "/".join(self.option.flags)
                raise _Missing(f"missing {flag} (give it on the command line or in --config)")
            return self.default
        return self.option.parse(given) if self.option.parse else given

    def value_from(self, given: Any, origin: str | None) -> Any:
        """`value(given)`; a value that does not parse is a usage error naming `origin` where a file gave
        it (`config_origins.key_in_file`), not the option the user did not type. One typed is the parser's
        own line, which names the option (`--model-config arch.json: ...`, `--out: ...`), as segment's
        errors of the same options read; Click's 'invalid value:' before it named nothing more."""
        try:
            return self.value(given)
        except ValueError as error:
            if origin is None:
                raise UsageError(str(error)) from None
            raise typer.BadParameter(str(error), param_hint=origin) from None


def _declared(cls: type, overrides: Mapping[type, Any]) -> Iterator[_Declared]:
    """The options of a settings dataclass and of the settings groups it holds, in declaration order."""
    hints = get_type_hints(cls)
    for item in fields(cls):
        if item.metadata.get("group"):
            yield from _declared(hints[item.name], overrides)
        elif "option" in item.metadata:
            yield _Declared.of(cls, item, overrides)


def _build(
    cls: type, values: Mapping[str, Any], overrides: Mapping[type, Any], origin: Callable[[str], str | None]
) -> Any:
    """An instance of a settings dataclass from the command's values (its groups built likewise); `origin`
    names the file that gave an option's value, if one did (`config_origins.given_by_file`)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for item in fields(cls):
        if item.metadata.get("group"):
            kwargs[item.name] = _build(hints[item.name], values, overrides, origin)
        elif "option" in item.metadata:
            declared = _Declared.of(cls, item, overrides)
            kwargs[item.name] = declared.value_from(values[declared.name], origin(declared.name))
    return cls(**kwargs)


def _recordable(value: Any) -> Any:
    """A command-line value as JSON stores it (paths as text, sequences as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_recordable(item) for item in value]
    return value


def _rebased(value: Any, kind: str, folder: Path) -> Any:
    """A file option's value (`kind` "path", or "dataset": a list of DATASET texts) with each relative path
    that exists in `folder` made absolute there; anything else (a zoo name, a path found nowhere, None) as
    it was, for the usual checks to report."""
    return _each_path(value, kind, lambda text: _rebased_path(text, folder))


def _resolved(value: Any, kind: str, folder: Path) -> Any:
    """As `_rebased`, but each path that exists, read from `folder`, is its real path: `data/train`,
    `./data/train/` and `/abs/data/train` typed on resume lead to the same folder as the recorded one."""
    return _each_path(value, kind, lambda text: _real_path(text, folder))


def _each_path(value: Any, kind: str, change: Callable[[str], str]) -> Any:
    """A file option's value with `change` applied to each path in it (a DATASET's options kept)."""
    if value is None:
        return None
    if kind == "dataset":
        return [change(path) + sep + rest for path, sep, rest in (v.partition(",") for v in value)]
    changed = change(str(value))
    return Path(changed) if isinstance(value, Path) else changed


def _real_path(text: str, folder: Path) -> str:
    path = folder / expand_user(text)  # an absolute path stays itself
    return os.path.realpath(path) if path.exists() else text


def _rebased_path(text: str, folder: Path) -> str:
    path = Path(expand_user(text))
    return str(folder / path) if not path.is_absolute() and (folder / path).exists() else text


def read_config(path: Path, command: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The option values of a config file (a run's `run.json`, or a JSON / YAML mapping of option names),
    and where each is in it (option name → `key_in_file`, for the errors about them).

    Raises typer.BadParameter (one line naming the file) when it cannot be used."""

    def unusable(reason: str) -> typer.BadParameter:
        return typer.BadParameter(f"{display_path(path)}: {one_line(reason)}", param_hint="--config")

    try:
        content = path.read_bytes()
    except OSError as error:
        raise unusable(f"cannot read it ({error.strerror or error})") from None
    try:
        data = _parse_config(content, yaml=path.suffix.lower() in (".yaml", ".yml"))
    except UnicodeDecodeError as error:
        raise unusable(f"cannot read it (not UTF-8 text: {error.reason} at byte {error.start})") from None
    except ValueError as error:
        raise unusable(str(error)) from None
    except RecursionError:  # valid JSON or YAML, but deeper than Python's readers go
        raise unusable("cannot read it (nested too deeply)") from None
    if not isinstance(data, dict):
        raise unusable("expected a mapping of option names to values")
    try:
        recorded_by, settings = run_settings(data)
    except ValueError as error:
        raise unusable(str(error)) from None
    names = [_setting_name(name) for name in settings]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise unusable(f"names option(s) {', '.join(twice)} twice")
    origins = {name: key_in_file(key, path) for name, key in zip(names, settings, strict=True)}
    settings = dict(zip(names, settings.values(), strict=True))
    if recorded_by is not None and recorded_by != command:
        raise unusable(f"recorded by `docsam {recorded_by}`, not `docsam {command}`")
    folder = data.get(FOLDER_KEY) if recorded_by is not None else None  # a run.json's
    if isinstance(folder, str) and Path(folder) != Path.cwd():
        settings[FOLDER_KEY] = folder  # taken out again by `_known_settings`
    return settings, origins


def _setting_name(name: Any) -> Any:
    """A config file's key as the setting it names: `batch-size` or `--batch-size`, the option as typed,
    is `batch_size`, as run.json writes it."""
    return name.removeprefix("--").replace("-", "_") if isinstance(name, str) else name


def _parse_config(content: bytes, yaml: bool) -> Any:
    """The file's mapping, its encoding found by the parser from its bytes: UTF-8 with or without the byte
    order mark Windows tools write (Notepad, PowerShell's `Out-File`), UTF-16 with one."""
    if not yaml:
        return json.loads(content)
    import yaml as pyyaml

    try:
        return pyyaml.safe_load(content)
    except pyyaml.YAMLError as error:
        raise ValueError(str(error)) from None


def _known_settings(
    ctx: typer.Context, path: Path, option: str, sequences: frozenset[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The option values of the config file at `path` and where each is in it (see `read_config`); unknown
    names are refused, and so are values no command line gives (`sequences`: see `_FileCallbacks`)."""
    try:
        settings, origins = read_config(path, ctx.info_name or "")
    except typer.BadParameter as error:
        error.param_hint = option
        raise
    if FOLDER_KEY in settings:
        ctx.meta[_FOLDER] = Path(settings.pop(FOLDER_KEY))
    known = {parameter.name for parameter in ctx.command.params} - {"config", "resume"}
    unknown = sorted(str(name) for name in set(settings) - known)  # YAML's keys may be numbers
    if unknown:
        listed = f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        raise typer.BadParameter(f"{display_path(path)}: {listed}", param_hint=option)
    for parameter in ctx.command.params:  # `datasets: data/train`: one DATASET, as typed once
        value = settings.get(parameter.name)
        if parameter.name in settings:
            _refuse_untypable(parameter, value, origins[parameter.name])
            _refuse_list_for_one_value(parameter, value, origins[parameter.name], sequences)
            _refuse_untypable_items(value, origins[parameter.name])
        if (parameter.multiple or parameter.nargs == -1) and isinstance(value, str):
            settings[parameter.name] = [value]
        elif not (parameter.multiple or parameter.nargs == -1) and isinstance(value, list):
            settings[parameter.name] = ",".join(map(str, value))  # `short_range: [704, 896]`: 704,896
    return settings, origins


def _refuse_untypable(parameter: Any, value: Any, origin: str) -> None:
    """Refuse (typer.BadParameter naming `origin`) a file's value that no command line could give the
    option: true or false where no switch takes it, which Click read as a number (`lr: true` trained at an
    LR of 1.0), and a mapping, which became its own text as a path."""
    if isinstance(value, bool) and not getattr(parameter, "is_flag", False):
        raise typer.BadParameter(f"{json.dumps(value)}: only a switch takes true or false", param_hint=origin)
    if isinstance(value, dict):
        raise typer.BadParameter(f"{json.dumps(value)}: a mapping, not a value", param_hint=origin)


def _refuse_list_for_one_value(parameter: Any, value: Any, origin: str, sequences: frozenset[str]) -> None:
    """Refuse (typer.BadParameter naming `origin`) a list given to an option that takes one value and
    whose text is no sequence (not in `sequences`): `out: [a, b]` became a run folder named `a,b`,
    `lr: [1, 2]` the text '1,2'."""
    takes_many = parameter.multiple or parameter.nargs == -1 or parameter.name in sequences
    if isinstance(value, list) and not takes_many:
        message = f"{json.dumps(value, default=str)}: a list, where the option takes one value"
        raise typer.BadParameter(message, param_hint=origin)


def _refuse_untypable_items(value: Any, origin: str) -> None:
    """Refuse (typer.BadParameter naming `origin`) a list holding what no command line types as one of an
    option's values, a list, a mapping, true or false, or null: `val: [[a, b]]` became the path
    "['a', 'b']", `short_range: [704, null]` the text '704,None'. (A null value, not in a list, is the
    option not given: run.json records one for each option a run was not given.)"""
    for item in value if isinstance(value, list) else ():
        if item is None or isinstance(item, bool | list | dict):
            message = f"{json.dumps(value, default=str)}: a list of values, not of {_kind(item)}"
            raise typer.BadParameter(message, param_hint=origin)


def _kind(item: bool | list | dict | None) -> str:
    """What a list holds instead of a value, as its error names it."""
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "true or false"
    return "lists" if isinstance(item, list) else "mappings"


@dataclass(frozen=True)
class _FileCallbacks:
    """The callbacks of one command that read its files of option values: `--config`'s, and those of
    `--resume` and `--out`, whichever Click processes second reading the run's record.

    `sequences` names the command's options of one value whose text is a comma-separated sequence
    (`--short-range 704,896`, by their declared types): a file may give their value as a list, which is
    that text; a list for any other option of one value is refused."""

    sequences: frozenset[str]

    def load_config(self, ctx: typer.Context, path: Path | None) -> Path | None:
        """Eager `--config` callback: the file's values become the defaults of the other options."""
        if path is None:
            return None
        add_file_defaults(ctx, *_known_settings(ctx, path, "--config", self.sequences))
        return path

    def on_resume(self, ctx: typer.Context, resume: bool) -> bool:
        if resume and ctx.params.get("out") is not None:
            self.load_run_record(ctx, ctx.params["out"])
        return resume

    def on_out(self, ctx: typer.Context, out: Path | None) -> Path | None:
        if ctx.params.get("resume") and out is not None:
            self.load_run_record(ctx, out)
        return out

    def of_options(self) -> dict[str, Callable[..., Any]]:
        """The callbacks of the declared options, by option name."""
        return {"resume": self.on_resume, "out": self.on_out}

    def load_run_record(self, ctx: typer.Context, out: Any) -> None:
        """`--resume` with `--out OUT`: OUT/run.json gives the defaults, as `--config OUT/run.json` would (it
        wins over a `--config` file). Click processes the options typed on the command line first, so this
        runs before any option that takes its value from the record. A folder without run.json holds no run
        that started (a run writes it before its first step): the options given start one
        (`resume_point`)."""
        path = Path(out) / RUN_FILE
        if not path.is_file():
            return
        settings, origins = _known_settings(ctx, path, "--resume", self.sequences)
        config = dict(ctx.default_map or {})
        config_origins = {name: file_origin(ctx, name) for name in config}
        ctx.meta[_RESUMED] = _Resumed(settings, origins, config, config_origins)
        add_file_defaults(ctx, settings, origins)


def _say_no_record(ctx: typer.Context, values: Mapping[str, Any], error: typer.BadParameter) -> None:
    """Add to `error` (a required option missing) that `--resume` found no run.json to take it from: the
    short `docsam finetune --resume -o runs/news` into a folder holding no run that started (a mistyped
    one, a run killed before it wrote run.json) starts a run from the options given, and there are none."""
    if values.get("resume") and _RESUMED not in ctx.meta and values.get("out") is not None:
        error.message += f"; --out {display_path(Path(values['out']))} holds no {RUN_FILE} to take it from"


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given on the command line. By the source's name: Typer runs its own copy of
    Click, whose `ParameterSource` it does not export."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _check_resumed(ctx: typer.Context, values: Mapping[str, Any], declared: list[_Declared]) -> None:
    """Refuse a resume whose typed (or `--config`) options differ from the run's record, naming them;
    `RESUME_MAY_CHANGE` options may differ. Values are compared parsed (`96, 112` is `96,112`)."""
    if _RESUMED not in ctx.meta:
        return
    resumed: _Resumed = ctx.meta[_RESUMED]
    folder = ctx.meta.get(_FOLDER)
    changed = []
    for item in declared:
        if item.name not in resumed.recorded or item.name in RESUME_MAY_CHANGE:
            continue
        if _typed(ctx, item.name):
            given, given_origin = _recordable(values[item.name]), None
        elif item.name in resumed.config:
            given, given_origin = resumed.config[item.name], resumed.config_origins[item.name]
        else:
            continue
        was = resumed.recorded[item.name]
        if item.option.file:  # typed here, recorded there: compare the files they lead to
            given = _resolved(given, item.option.file, Path.cwd())
            was = _resolved(was, item.option.file, folder if folder is not None else Path.cwd())
        if item.value_from(given, given_origin) != item.value_from(was, resumed.record_origins[item.name]):
            changed.append(item.flag)
    if changed:
        raise typer.BadParameter(
            f"{', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} from the run's {RUN_FILE}: "
            "a resumed run keeps its settings "
            f"(start a new run with --config instead)",
            param_hint="--resume",
        )


def _config_parameter(load_config: Callable[..., Any]) -> inspect.Parameter:
    """`--config FILE`, read by `load_config` (`_FileCallbacks.load_config`)."""
    return inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="Replay a run: its run.json (or a JSON / YAML file of option names and values) gives "
                "the defaults; options on the command line override it.",
                is_eager=True,
                callback=load_config,
                metavar="FILE",
            ),
        ],
    )


def training_command(start: type[Start], *overrides: Any) -> Callable[[Command[Start]], Callable[..., None]]:
    """Give `command(plan, start)` the options of `RunPlan` and of `start`'s dataclass, and `--config`.

    `overrides` are settings instances whose field values replace the declared defaults for this command.
    """
    by_class = {type(instance): instance for instance in overrides}
    declared = sorted(
        [*_declared(start, by_class), *_declared(RunPlan, by_class)],
        key=lambda item: -1 if item.option.panel is None else PANELS.index(item.option.panel),
    )
    hints = {item.owner: get_type_hints(item.owner) for item in declared}
    files = _FileCallbacks(frozenset(item.name for item in declared if item.takes_sequence))

    def decorate(command: Command[Start]) -> Callable[..., None]:
        def run_command(ctx: typer.Context, **values: Any) -> None:
            values.pop("config")
            folder = ctx.meta.get(_FOLDER)
            for item in declared:  # a config file's `~/...` as typed ones are; the record's paths, from
                if item.option.file:  # the folder it was made in
                    values[item.name] = _each_path(values[item.name], item.option.file, expand_user)
                if folder is not None and item.option.file and not _typed(ctx, item.name):
                    values[item.name] = _rebased(values[item.name], item.option.file, folder)
            record = {item.name: _recordable(values[item.name]) for item in declared if item.option.recorded}
            try:
                _check_resumed(ctx, values, declared)
                origin = functools.partial(given_by_file, ctx)
                plan = _build(RunPlan, values, by_class, origin)
                starting_point = _build(start, values, by_class, origin)
            except ValueError as error:
                raise typer.BadParameter(str(error)) from None
            except _Missing as error:
                _say_no_record(ctx, values, error)
                raise
            plan = replace(
                plan, record={"command": ctx.info_name, "settings": record, FOLDER_KEY: os.getcwd()}
            )
            command(plan, starting_point)

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        parameters = [
            item.parameter(hints[item.owner][item.field.name], files.of_options()) for item in declared
        ]
        signature = inspect.Signature([context, *parameters, _config_parameter(files.load_config)])
        run_command.__signature__ = signature
        run_command.__annotations__ = {name: p.annotation for name, p in signature.parameters.items()}
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(run_command, attribute, getattr(command, attribute))
        return run_command

    return decorate


def fail(message: str) -> NoReturn:
    """One `error:` line; the run failed (exit status 1)."""
    print_error(stderr_console(), message)
    raise typer.Exit(ExitCode.FAILED)


def stop(message: str) -> NoReturn:
    """One `error:` line; the run was interrupted (exit status 130)."""
    print_error(stderr_console(), message)
    raise typer.Exit(ExitCode.INTERRUPTED)


def execute(plan: RunPlan, starting_model: Callable[[], DocSAM]) -> None:
    """Run (every process of a torchrun launch calls this) and report the final weights; a known failure
    (a dataset, annotation, checkpoint or file error, a diverged loss) is one error line and exit status 1,
    an interruption one line and 130 (a `UsageError` goes on to the app: exit status 2); a SIGTERM before the
    trainer takes over the signals (datasets read, model loaded) is one as Ctrl-C is."""
    from docsam_cli.training.launch import run
    from docsam_cli.training.trainer import Interrupted

    try:
        with terminate_as_interrupt():
            final = run(plan, starting_model)
    except (ValueError, InputError, OSError) as error:
        fail(str(error))
    except Interrupted as error:
        stop(str(error))
    except KeyboardInterrupt:  # before the first step, or a second Ctrl-C
        stop("interrupted")
    if not message_options().quiet and launched_rank() == 0:  # once per run, not once per process
        print_plain(stderr_console(), f"weights: {display_path(final)}")
