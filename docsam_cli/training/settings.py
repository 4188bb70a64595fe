"""Every setting of a training run, declared once: its default, its help text and its help panel.

`RunPlan` and the settings it holds (`TrainingOptions`, `AugmentSettings`, `Regularisation`) are what the
training code consumes. A field that is also an option of `docsam train` / `docsam finetune` carries an
`Option` in its metadata, from which `docsam_cli.training.command_line` derives the options of both
commands; so a default or a help text is written here and nowhere else (`finetune`'s other defaults are
overrides of these, see `docsam_cli/commands/finetune.py`).

This module imports no torch: the commands' `--help` must start instantly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from docsam_cli.commands.options import max_image_pixels_help
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS
from docsam_cli.precision import PRECISIONS, Precision
from docsam_cli.runtime import check_device_name, is_device_name
from docsam_cli.user_paths import expand_user

if TYPE_CHECKING:
    from model.config import DocSAMConfig

Size = tuple[int, int]  # (height, width); for a short-side range (low, high)
# The names `model.optim` implements, repeated here because importing it imports torch (a test keeps the
# lists equal). The variants are the weights registry's `Variant`.
Schedule = Literal["cosine", "step", "fix"]
# What `docsam_cli.training.validation` measures; any of them can select best/.
BestMetric = Literal["mAP", "AP50", "AP75", "mAF", "mIoU"]
METRICS: tuple[BestMetric, ...] = get_args(BestMetric)

REFERENCE_SHORT_RANGE: Size = (704, 896)  # random short side of the reference's training scripts
KEEP_SIZE_SHORT_RANGE: Size = (640, 1280)  # the range of its keep-size scripts

# Help panels of the options, in the order `--help` shows them.
DATA = "Data"
MODEL = "Model"
OPTIMISATION = "Optimisation"
DEVICE = "Precision and device"
CHECKPOINTS = "Checkpoints and validation"
LOGGING = "Logging"
PANELS = (DATA, MODEL, OPTIMISATION, DEVICE, CHECKPOINTS, LOGGING)
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit seed
MIN_TRAINING_PATCH = 33  # a side of 32 leaves the stride-32 level 1 x 1 pixel


@dataclass(frozen=True)
class Option:
    """How a settings field appears on the command line.

    `name` (the long flag without dashes, `-` → `_`; an argument's own name) is also the key of the option
    in `run.json` and `--config` files. A field whose command-line form is text (sizes as `H,W`, datasets as
    `PATH[,name=...]`) gives that form's type as `text`, and `parse` (text → value) and `show`
    (value → text, for the default shown in `--help`).
    """

    flags: tuple[str, ...]
    help: str
    panel: str | None  # None: Typer's own panel (arguments)
    metavar: str | None = None
    min: float | None = None
    max: float | None = None
    argument: bool = False  # positional; `flags` is then its name
    required: bool = False  # from the command line or from --config
    recorded: bool = True  # written to run.json (not --resume: an action, not a setting)
    text: Any = None
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], Any] | None = None
    # A file or folder ("path"), or DATASETs whose PATHs are ("dataset"): run.json keeps it as typed, and
    # a replay or resume from another folder reads it from the folder the run was started in.
    file: Literal["path", "dataset"] | None = None
    # The value as the command reads it, in its canonical case (text → text, ValueError if it is none): run
    # and run.json see `cpu` for `--device CPU`, as they see a choice option's own spelling.
    canonical: Callable[[str], str] | None = None

    @property
    def name(self) -> str:
        if self.argument:
            return self.flags[0]
        flag = next(flag for flag in self.flags if flag.startswith("--"))
        return flag.split("/")[0].removeprefix("--").replace("-", "_")


def cli(*flags: str, help: str, panel: str | None, **details: Any) -> dict[str, Option]:
    """Field metadata that makes a settings field a command-line option."""
    return {"option": Option(flags, help, panel, **details)}


# Field metadata of a field holding another settings dataclass, whose options belong to the same commands.
GROUP = {"group": True}


def _parse_output(text: str | Path) -> Path:
    """`--out`, refused when empty (from the command line or a --config file) as `segment`'s is."""
    from docsam_cli.commands.options import parse_output_folder

    try:
        return parse_output_folder(text)
    except ValueError as error:
        raise ValueError(f"--out: {error}") from None


def _size_parser(option_name: str) -> Callable[[str], Size]:
    def parse(text: str) -> Size:
        from docsam_cli.runtime import parse_size  # the project's one "N" / "H,W" parser

        return parse_size(text, option_name)

    return parse


def _parse_patch(text: str) -> Size:
    """`--patch-size`: also refused where training cannot run it (a side of 32 leaves the backbone's
    stride-32 level 1 x 1 pixel, which its training-mode normalisation refuses after the model loaded)."""
    patch = _size_parser("--patch-size")(text)
    if min(patch) < MIN_TRAINING_PATCH:
        raise ValueError(f"--patch-size sides must be at least {MIN_TRAINING_PATCH}, got {text!r}")
    return patch


def _show_size(size: Size) -> str:
    return f"{size[0]},{size[1]}"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as given on the command line: `PATH[,name=NAME][,weight=W][,start=ITER]`.

    `weight` replaces the reference's sampling probability (∝ sqrt of the class count) by an explicit one;
    `start` is the first iteration at which the dataset is sampled (curriculum).
    """

    path: Path
    name: str | None = None
    weight: float | None = None
    start: int = 0

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """The options are the trailing `,key=value` parts; commas before them belong to PATH (a folder
        named after a document's title), unless a part looks like a misspelt option (`colour=red`,
        `name`)."""
        path, options = _peel_dataset_options(text)
        if not path.strip():  # an unset shell variable, most likely: not the current folder
            raise ValueError(f"{text!r}: an empty path; write . for the current folder")
        values: dict[str, Any] = {}
        for option_text in options:
            key, _, value = option_text.partition("=")
            try:
                values[key] = value if key == "name" else float(value) if key == "weight" else int(value)
            except ValueError:
                raise ValueError(f"{text!r}: {key} must be a number, got {value!r}") from None
        if not 0 < values.get("weight", 1.0) < math.inf or values.get("start", 0) < 0:
            raise ValueError(f"{text!r}: weight must be a finite positive number and start non-negative")
        if values.get("name") == "":
            raise ValueError(f"{text!r}: name must not be empty")
        return cls(Path(expand_user(path)), **values)


_DATASET_KEYS = ("name", "weight", "start")


def _peel_dataset_options(text: str) -> tuple[str, list[str]]:
    parts = text.split(",")
    options: list[str] = []
    while len(parts) > 1 and parts[-1].partition("=")[0] in _DATASET_KEYS and "=" in parts[-1]:
        options.insert(0, parts.pop())
    for part in parts[1:]:
        if "=" in part or part in _DATASET_KEYS:
            raise ValueError(f"{text!r}: expected PATH[,name=NAME][,weight=W][,start=ITER], got {part!r}")
    return ",".join(parts), options


def _parse_datasets(texts: Sequence[str], flag: str = "--val") -> tuple[DatasetSpec, ...]:
    """The datasets given to `flag`; a ValueError names it (`--val: '': an empty path; ...`)."""
    try:
        return tuple(DatasetSpec.parse(text) for text in texts)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def _parse_training_datasets(texts: Sequence[str]) -> tuple[DatasetSpec, ...]:
    """DATASET...: as `--val`, and one of them is sampled from the first iteration."""
    specs = _parse_datasets(texts, "DATASET")
    if specs and min(spec.start for spec in specs) > 0:
        raise ValueError("at least one DATASET must be sampled from the first iteration (start=0)")
    return specs


@dataclass(frozen=True)
class AugmentSettings:
    """The reference's training augmentation: a random size, then a patch crop (or a 20 % resize)."""

    # None: the range of the chosen rule (set in __post_init__, so the field always holds a range).
    short_range: Size = field(
        default=None,
        metadata=cli(
            "--short-range",
            help="Random short side LO,HI (with --keep-size: the range the page size is brought into); "
            "validation and segment with the weights use the mean (with --keep-size, the range). Default "
            f"{_show_size(REFERENCE_SHORT_RANGE)}, with --keep-size {_show_size(KEEP_SIZE_SHORT_RANGE)}.",
            panel=DATA,
            metavar="LO,HI",
            text=str | None,
            parse=_size_parser("--short-range"),
            show=_show_size,
        ),
    )
    patch: Size = field(
        default=(640, 640),
        metadata=cli(
            "--patch-size",
            help="Training crop H,W (also the validation window; stored with the weights: segment's default "
            "window).",
            panel=DATA,
            metavar="H,W",
            text=str,
            parse=_parse_patch,
            show=_show_size,
        ),
    )
    keep_size: bool = field(
        default=False,
        metadata=cli(
            "--keep-size/--no-keep-size",
            help="The keep-size rule of the reference's keepsize model: start from the page's own size, "
            "multiply height and width by independent random factors 2^U(-0.2,0.2), then bring the short "
            "side into --short-range and cap each side at twice it (stored with the weights: segment's "
            "default).",
            panel=DATA,
        ),
    )
    resize_probability: float = 0.2  # whole page squeezed to the patch instead of a crop
    min_overlap: float = 4.0  # px a kept box must reach into the patch on both axes

    def __post_init__(self) -> None:
        if self.short_range is None:
            default = KEEP_SIZE_SHORT_RANGE if self.keep_size else REFERENCE_SHORT_RANGE
            object.__setattr__(self, "short_range", default)
        low, high = self.short_range
        if not 0 < low <= high:
            raise ValueError(f"short range must satisfy 0 < low <= high, got {self.short_range}")
        if min(self.patch) <= 0:
            raise ValueError(f"patch sides must be positive, got {self.patch}")


@dataclass(frozen=True)
class Regularisation:
    """Training-time dropout rates (the reference's by default; all 0 = deterministic forward).

    Dropout is a training setting, not part of a checkpoint's identity: the reference trains with dropout
    0.1 in every decoder/fusion layer (attention included), Swin stochastic depth rising to 0.3 and MiniLM
    dropout 0.1 (active in train mode although the text encoder gets no gradient).
    """

    decoder_dropout: float = field(
        default=0.1, metadata=cli("--dropout", help="Decoder dropout.", panel=MODEL, min=0.0, max=1.0)
    )
    drop_path: float = field(
        default=0.3,
        metadata=cli("--drop-path", help="Swin stochastic depth (maximum).", panel=MODEL, min=0.0, max=1.0),
    )
    text_dropout: float = field(
        default=0.1, metadata=cli("--text-dropout", help="MiniLM dropout.", panel=MODEL, min=0.0, max=1.0)
    )

    def apply(self, config: DocSAMConfig) -> DocSAMConfig:
        text = replace(
            config.text,
            hidden_dropout_prob=self.text_dropout,
            attention_probs_dropout_prob=self.text_dropout,
        )
        backbone = replace(config.backbone, drop_path_rate=self.drop_path)
        return replace(config, decoder_dropout=self.decoder_dropout, backbone=backbone, text=text)


@dataclass(frozen=True)
class TrainingOptions:
    """The loop's settings. Defaults are the reference's all-dataset recipe (batch 32, AdamW at 4e-5 with
    weight decay 1e-2, cosine schedule, 360k iterations, 4 data-loading workers)."""

    iterations: int = field(
        default=360_000, metadata=cli("--iters", help="Optimiser steps.", panel=OPTIMISATION, min=1)
    )
    batch_size: int = field(
        default=32,
        metadata=cli(
            "--batch-size",
            help="Global batch (all processes and accumulation steps).",
            panel=OPTIMISATION,
            min=1,
        ),
    )
    accumulation: int = field(
        default=1,
        metadata=cli("--accumulate", help="Gradient accumulation steps.", panel=OPTIMISATION, min=1),
    )
    lr: float = field(
        default=4e-5, metadata=cli("--lr", help="Base learning rate (AdamW).", panel=OPTIMISATION, min=0.0)
    )
    weight_decay: float = field(
        default=1e-2, metadata=cli("--weight-decay", help="AdamW weight decay.", panel=OPTIMISATION, min=0.0)
    )
    schedule: Schedule = field(
        default="cosine",
        metadata=cli(
            "--schedule",
            help="The reference's learning-rate schedules: cosine (restarting, 0.2x per cycle), step "
            "(x0.1 at 1/2, 3/4 and the end) or fix (x0.1 after the last iteration).",
            panel=OPTIMISATION,
        ),
    )
    warmup: int = field(
        default=0,
        metadata=cli(
            "--warmup",
            help="Linear warm-up steps, part of --iters: the LR rises from LR/N to LR over the first N "
            "steps, then the schedule runs over the rest (0: none, as the reference).",
            panel=OPTIMISATION,
            min=0,
        ),
    )
    seed: int = field(
        default=0,
        metadata=cli(
            "--seed",
            help="Seed of data order, augmentation, dropout and initialisation.",
            panel=OPTIMISATION,
            min=0,
            max=MAX_SEED,
        ),
    )
    precision: Precision = field(
        default="fp32",
        metadata=cli(
            "--precision",
            help="fp32 (the reference), or bf16 / fp16 autocast of the network (fp16: CUDA only).",
            panel=DEVICE,
        ),
    )
    workers: int = field(
        default=4,
        metadata=cli(
            "--workers",
            help="Data-loading processes per training process (at most the CPU cores it may use).",
            panel=DATA,
            min=0,
        ),
    )
    max_image_pixels: int = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata=cli(
            "--max-image-pixels",
            help=max_image_pixels_help("training and validation images"),
            panel=DATA,
            min=0,
        ),
    )
    freeze_backbone: bool = field(
        default=False,
        metadata=cli(
            "--freeze-backbone/--no-freeze-backbone",
            help="Keep the Swin backbone fixed (no gradient, eval mode).",
            panel=MODEL,
        ),
    )
    checkpoint_every: int = field(
        default=200,
        metadata=cli("--checkpoint-every", help="Checkpoint every N iterations.", panel=CHECKPOINTS, min=1),
    )
    keep_last: int = field(
        default=3, metadata=cli("--keep-last", help="Checkpoints kept.", panel=CHECKPOINTS, min=1)
    )
    validate_every: int = field(
        default=200,
        metadata=cli("--val-every", help="Validate every N iterations (0: never).", panel=CHECKPOINTS, min=0),
    )
    best_metric: BestMetric = field(
        default="mAP",
        metadata=cli("--best-metric", help="Validation metric that selects best/.", panel=CHECKPOINTS),
    )
    log_every: int = field(
        default=10, metadata=cli("--log-every", help="Log the loss every N iterations.", panel=LOGGING, min=1)
    )
    progress: bool = field(
        default=True, metadata=cli("--progress/--no-progress", help="Progress bar on stderr.", panel=LOGGING)
    )

    def __post_init__(self) -> None:
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("schedule", self.schedule, get_args(Schedule))
        _check_choice("best metric", self.best_metric, METRICS)
        if self.iterations < 1:
            raise ValueError("iterations must be at least 1")
        for flag, value in (("--lr", self.lr), ("--weight-decay", self.weight_decay)):
            if not (math.isfinite(value) and value >= 0):  # settings built without the command line too
                raise ValueError(f"{flag} must be a finite number of at least 0, got {value}")
        if min(self.log_every, self.checkpoint_every, self.keep_last) < 1 or self.validate_every < 0:
            raise ValueError("log/checkpoint intervals and keep-last must be positive")


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


_DATASETS_HELP = (
    "Training splits in the unified layout (`docsam convert-dataset`), each PATH[,name=NAME][,weight=W]"
    "[,start=ITER]: NAME prefixes the background prompt (default: the dataset's own name), W replaces the "
    "reference's sampling probability (proportional to the square root of the class count; give one to "
    "every DATASET or to none), ITER adds the set at that iteration (curriculum)."
)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs besides the starting model."""

    datasets: Sequence[DatasetSpec] = field(
        metadata=cli(
            "datasets",
            argument=True,
            required=True,
            help=_DATASETS_HELP,
            panel=None,
            metavar="DATASET...",
            text=list[str] | None,
            parse=_parse_training_datasets,
            file="dataset",
        )
    )
    output: Path = field(
        metadata=cli(
            "--out",
            "-o",
            required=True,
            help="Run folder: checkpoints, log.jsonl, run.json, best/, model.safetensors.",
            panel=CHECKPOINTS,
            metavar="FOLDER",
            text=str,
            parse=_parse_output,
            file="path",
        )
    )
    options: TrainingOptions = field(default_factory=TrainingOptions, metadata=GROUP)
    augmentation: AugmentSettings = field(default_factory=AugmentSettings, metadata=GROUP)
    regularisation: Regularisation = field(default_factory=Regularisation, metadata=GROUP)
    validation: Sequence[DatasetSpec] = field(
        default=(),
        metadata=cli(
            "--val",
            help="Validation split (repeatable; same syntax as DATASET).",
            panel=CHECKPOINTS,
            metavar="DATASET",
            text=list[str] | None,
            parse=_parse_datasets,
            file="dataset",
        ),
    )
    validation_images: int = field(
        default=10, metadata=cli("--val-images", help="Pages per validation split.", panel=CHECKPOINTS, min=1)
    )
    resume: bool = field(
        default=False,
        metadata=cli(
            "--resume",
            help="Continue the run in --out from its last checkpoint with the settings its run.json records "
            "(options not given come from it; only --workers, --max-image-pixels, --device, --progress, "
            "--log-every, --checkpoint-every and --keep-last may differ).",
            panel=CHECKPOINTS,
            recorded=False,
        ),
    )
    device: str = field(
        default="auto",
        metadata=cli(
            "--device",
            help="auto (CUDA if available), cpu, cuda or cuda:N; under torchrun, cuda is each process's "
            "own GPU.",
            panel=DEVICE,
            metavar="auto|cpu|cuda|cuda:N",
            canonical=check_device_name,
        ),
    )
    # The command and option values the run was started with, as run.json records them.
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_device_name(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
