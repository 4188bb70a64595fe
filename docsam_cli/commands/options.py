"""Options that several commands declare alike: the model to run and the page geometry (`segment`, and
`evaluate --weights`), as `Annotated` aliases, the pixel limit of every command that decodes pages
(`max_image_pixels_option`), and `checked`, to turn a parser into an option parser.

    def evaluate(..., device: Device = ModelSpec.device, precision: PrecisionChoice = ModelSpec.precision)

Everything here is cheap to import: parsing options never loads torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from docsam_cli.names import display_path
from docsam_cli.precision import Precision
from docsam_cli.runtime import DEVICE_HELP, check_device_name
from docsam_cli.user_paths import expand_user
from docsam_cli.weights.registry import Variant

if TYPE_CHECKING:
    from model.config import DocSAMConfig

T = TypeVar("T")
MODEL, GEOMETRY = "Model", "Geometry"  # help panels


def typed(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was given (on the command line or from the environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as a Typer option parser: its ValueError becomes a usage error naming the option."""

    def parser(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None

    return parser


def parse_output_folder(text: str | Path) -> Path:
    """`--out`: an empty value (an unset shell variable, most likely) is refused rather than read as `.`
    (Typer passes the default through the parser as it is), and `-`, stdout elsewhere on the command line,
    rather than made a folder named `-`."""
    if isinstance(text, Path):
        return text
    if not text.strip():
        raise ValueError("an empty folder name; write . for the current folder")
    if text == "-":
        raise ValueError("a folder is needed, not - (stdout); write ./- for a folder named -")
    return Path(expand_user(text))


def path_arguments(texts: Iterable[str], what: str) -> list[str]:
    """`texts`, paths and globs given as arguments, with a leading `~` expanded (`expand_user`: a glob
    quoted for docsam to expand, `'~/scans/**/*.tif'`, keeps it from the shell). An empty one (an unset
    shell variable, most likely), which the file system would read as the current folder, raises
    ValueError naming `what`."""
    texts = list(texts)
    if any(not text.strip() for text in texts):
        raise ValueError(f"{what}: an empty path; write . for the current folder")
    return [expand_user(text) for text in texts]


def max_image_pixels_help(pages: str) -> str:
    """The help of `--max-image-pixels` (`PIXEL_LIMIT_HINT` names it) for a command that decodes `pages`."""
    return f"Refuse {pages} larger than this many pixels (decompression-bomb guard; 0: no limit)."


def max_image_pixels_option(pages: str, panel: str) -> Any:
    """The `Annotated` type of `--max-image-pixels` for a command that decodes `pages`, in its help `panel`;
    its default is `DEFAULT_MAX_IMAGE_PIXELS`. Every error over the limit advises this option
    (`PIXEL_LIMIT_HINT`), so every command that can report one takes it."""
    return Annotated[
        int,
        typer.Option("--max-image-pixels", min=0, help=max_image_pixels_help(pages), rich_help_panel=panel),
    ]


VariantChoice = Annotated[
    Variant | None,
    typer.Option(
        "--variant",
        case_sensitive=False,
        help="Architecture (default: detected from the weights file).",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
MODEL_CONFIG_HELP = "Architecture JSON, for variants other than base and large."


def read_model_config(path: Path) -> DocSAMConfig:
    """`--model-config` of `train` and `finetune`, read as the option's value (before the run starts, before
    its datasets and its `--out`). Raises ValueError naming the option and the file for a file that is no
    usable config, or whose architecture torch cannot build, or the CPU (where every model is built) has no
    room for (`model.checkpoint.refuse_unheld`): a usage error, naming the --config file or run.json where
    one gave the path (`command_line.value_from`)."""
    from model.config import DocSAMConfig

    try:
        config = DocSAMConfig.from_json(path)
        _refuse_unbuilt(config, display_path(path))
    except ValueError as error:
        raise ValueError(f"--model-config {error}") from None
    return config


def refuse_unbuildable(config: DocSAMConfig, source: str, option: str) -> None:
    """A usage error naming `option` and `source` when torch cannot build the architecture of `config`, or
    the CPU, where every model is built, has not the memory its tensors alone take
    (`model.checkpoint.refuse_unheld`); found on the meta device, before anything is allocated."""
    try:
        _refuse_unbuilt(config, source)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _refuse_unbuilt(config: DocSAMConfig, source: str) -> None:
    """`model.checkpoint.CheckpointError` (a ValueError) naming `source` for an architecture torch cannot
    build or whose tensors the CPU has no room for, found on the meta device."""
    from model.checkpoint import meta_model, refuse_unheld

    refuse_unheld(meta_model(config, source), source)


ModelConfig = Annotated[
    Path | None,
    typer.Option(
        "--model-config",
        exists=True,
        dir_okay=False,
        help=MODEL_CONFIG_HELP,
        rich_help_panel=MODEL,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        parser=checked(check_device_name),
        metavar="DEVICE",
        help=f"{DEVICE_HELP}.",
        rich_help_panel=MODEL,
    ),
]
PrecisionChoice = Annotated[
    Precision,
    typer.Option(
        "--precision",
        case_sensitive=False,
        help="fp32 (the reference's arithmetic), bf16 or fp16 (CUDA) autocast.",
        rich_help_panel=MODEL,
    ),
]
ShortSide = Annotated[
    str | None,
    typer.Option(
        "--short-side",
        metavar="N|LOW,HIGH",
        help="Resize the short side to N, or to (LOW+HIGH)//2; with the keep-size rule, a short side in "
        "LOW..HIGH is kept, else brought into it (default: the weights' training --short-range, else "
        "704,896, i.e. 800, or 640,1280 with the keep-size rule).",
        rich_help_panel=GEOMETRY,
    ),
]
Window = Annotated[
    str | None,
    typer.Option(
        "--window",
        metavar="N|H,W",
        help="Window size (default: the weights' training crop or zoo window, else 640).",
        rich_help_panel=GEOMETRY,
    ),
]
Stride = Annotated[
    str | None,
    typer.Option(
        "--stride",
        metavar="N|H,W",
        help="Window stride (default: half the window).",
        rich_help_panel=GEOMETRY,
    ),
]
KeepSize = Annotated[
    bool | None,
    typer.Option(
        "--keep-size/--no-keep-size",
        help="Keep the page size when its short side is in range (default: the weights' rule: on for the "
        "keep-size model and weights trained with --keep-size).",
        show_default=False,
        rich_help_panel=GEOMETRY,
    ),
]
