"""`docsam evaluate`: score predictions against ground truth with the reference's metrics.

Only option parsing happens at import; the readers and metrics (pycocotools, OpenCV) are imported when the
command runs, and the model (torch) only for `--weights`.
"""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from docsam_cli.atomic import atomic_write_text, can_write_in, remove_left_temporaries
from docsam_cli.commands.options import (
    MODEL,
    Device,
    KeepSize,
    ModelConfig,
    PrecisionChoice,
    ShortSide,
    Stride,
    VariantChoice,
    Window,
    max_image_pixels_option,
    typed,
)
from docsam_cli.console import message_options, print_error, print_plain, stderr_console, write_data
from docsam_cli.datasets.classes import parse_mapping
from docsam_cli.datasets.convert import FORMATS
from docsam_cli.datasets.images import within
from docsam_cli.datasets.records import DEFAULT_LEVELS, LEVELS, parse_levels
from docsam_cli.errors import ExitCode, InputError, UsageError
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from docsam_cli.names import display_path
from docsam_cli.presets import refuse_repeated_classes, refuse_undecodable
from docsam_cli.runtime import GeometryOptions, ModelSpec
from docsam_cli.user_paths import expand_user
from docsam_cli.writers.page_outputs import STATE_DIR

if TYPE_CHECKING:
    from docsam_cli.datasets.ground_truth import GroundTruth
    from docsam_cli.evaluation import EvaluationResult
    from model.instances import PageInstances

_AUTO = "auto"
GtFormat = enum.Enum(
    "GtFormat",
    {name: name for name in (_AUTO, "unified", "coco", *(name for name in FORMATS if name != "coco"))},
    type=str,
)
PredFormat = enum.Enum("PredFormat", {name: name for name in (_AUTO, "coco", "page")}, type=str)

_TRUTH = "Ground truth"
_PREDICTIONS = "Predictions"
_REPORT = "Scoring and report"
_NONE: list[str] = []
MaxImagePixels = max_image_pixels_option(
    "the ground truth's images, and pages it or the predictions state,", _TRUTH
)


def main(
    ctx: typer.Context,
    ground_truth: Annotated[
        Path,
        typer.Argument(
            help="Ground truth: a unified split folder, a COCO file, or files of a --gt-format.",
            show_default=False,
        ),
    ],
    gt_format: Annotated[
        GtFormat,
        typer.Option(case_sensitive=False, help="Format of the ground truth.", rich_help_panel=_TRUTH),
    ] = GtFormat.auto,
    level: Annotated[
        list[str],
        typer.Option(
            metavar="[" + "|".join(LEVELS) + "]",
            help="PAGE, ALTO or ICDAR 2013 elements to score (repeat or comma-list); PAGE predictions "
            "against a unified split are read at the levels it was converted with unless given.",
            rich_help_panel=_TRUTH,
        ),
    ] = DEFAULT_LEVELS,
    images: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Folder of the ground truth's images, when they are not where the annotations say.",
            rich_help_panel=_TRUTH,
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Class list file of YOLO ground truth, where none lies beside it (as in convert-dataset).",
            rich_help_panel=_TRUTH,
        ),
    ] = None,
    pred: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Predictions: segment's COCO dataset file (matched by file name), a COCO results list "
            "(image ids of the ground truth; segment's coco_results.json those of its coco.json), or "
            "segment's PAGE files.",
            rich_help_panel=_PREDICTIONS,
        ),
    ] = None,
    pred_format: Annotated[
        PredFormat,
        typer.Option(case_sensitive=False, help="Format of the predictions.", rich_help_panel=_PREDICTIONS),
    ] = PredFormat.auto,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Run this model (path or zoo name) on the ground truth's images, instead of --pred.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    variant: VariantChoice = None,
    model_config: ModelConfig = None,
    domain: Annotated[
        str | None,
        typer.Option(
            help="Background prompt domain (default: the dataset's name, if known).", rich_help_panel=MODEL
        ),
    ] = None,
    device: Device = ModelSpec.device,
    precision: PrecisionChoice = ModelSpec.precision,
    max_image_pixels: MaxImagePixels = DEFAULT_MAX_IMAGE_PIXELS,
    short_side: ShortSide = None,
    window: Window = None,
    stride: Stride = None,
    keep_size: KeepSize = None,
    mapping: Annotated[
        list[str],
        typer.Option(
            "--map",
            help=r"Prediction class → ground-truth class: pred=gt (repeatable; \, and \= inside a name).",
            rich_help_panel=_REPORT,
        ),
    ] = _NONE,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            help="Write the full report as JSON to this file ('-': stdout).",
            rich_help_panel=_REPORT,
        ),
    ] = None,
) -> None:
    """Score predictions (mask and box AP at maxDets 40/400/4000, mAF, mIoU), overall and per class."""
    try:
        levels = parse_levels(level)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--level") from None
    try:
        class_map = parse_mapping(mapping)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--map") from None
    if (pred is None) == (weights is None):
        raise typer.BadParameter("give exactly one of --pred and --weights")
    try:
        geometry = GeometryOptions.parse(short_side, window, stride, keep_size)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    model_options = {"--variant": variant, "--model-config": model_config, "--domain": domain}
    _check_model_options(ctx, weights, geometry, model_options)
    _check_class_names(domain, mapping)
    inputs = {"ground truth": ground_truth, "--images": images, "--classes": classes, "--pred": pred}
    json_out = _report_target(json_out, weights, inputs)
    from docsam_cli.datasets.ground_truth import load_ground_truth
    from docsam_cli.evaluation import evaluate

    inner = _predictions_inside(ground_truth, pred)
    gt_fmt, pred_fmt = _formats(ground_truth, inner, gt_format, pred, pred_format)
    if gt_fmt == "unified" and pred_fmt == "page" and not typed(ctx, "level"):
        levels = _split_levels(ground_truth, levels)
    _check_inputs(ground_truth, levels, gt_fmt, pred_fmt if pred is not None else None, images, classes)
    console = stderr_console()
    if message_options().quiet and json_out is None:  # said before the scoring, which may take minutes
        print_plain(console, "warning: -q without --json: the scores are shown nowhere (--json - for stdout)")
    set_max_image_pixels(max_image_pixels)  # images read for their size, and those the model runs on
    try:
        truth = load_ground_truth(ground_truth, gt_fmt, levels, images, inner, classes)
        if weights is None:
            predicted, prediction_errors, prediction_warnings = _read_predictions(
                truth, pred, pred_fmt, levels
            )
        else:
            run = (weights, variant, model_config, device, precision, geometry)
            predicted, prediction_errors = _run_model(truth, ground_truth, domain, *run)
            prediction_warnings = []
    except InputError as error:
        print_error(console, str(error))
        raise typer.Exit(ExitCode.FAILED) from None
    # A page whose ground truth could not be read is that error, not a prediction of a page not in it.
    predicted = {key: page for key, page in predicted.items() if key not in truth.unreadable}
    errors = [*truth.errors, *prediction_errors]
    for error in errors:
        print_error(console, str(error))
    for warning in dict.fromkeys([*truth.warnings, *prediction_warnings]):  # one file may be both
        print_plain(console, f"warning: {warning}")
    if not truth.images:
        print_error(console, _nothing_to_score(ground_truth, gt_fmt, errors))
        raise typer.Exit(ExitCode.FAILED)
    # Unless the errors above explain it, predictions that match no ground-truth page are a wrong --pred.
    if pred is not None and not errors and not predicted.keys() & {image.name for image in truth.images}:
        print_error(console, _unmatched_predictions(pred, len(predicted)))
        raise typer.Exit(ExitCode.FAILED)
    result = evaluate(truth.images, predicted, class_map, truth.class_names())
    _report(console, result, json_out)
    if errors:
        raise typer.Exit(ExitCode.FAILED)


def _check_model_options(
    ctx: typer.Context, weights: str | None, geometry: GeometryOptions, model_options: dict[str, object]
) -> None:
    """Refuse the options that set how the model runs without `--weights`. Raises typer.BadParameter."""
    if weights is None and geometry != GeometryOptions():
        raise typer.BadParameter("the geometry options need --weights (they set how the model sees pages)")
    given = [flag for flag, value in model_options.items() if value is not None]
    given += [f"--{name}" for name in ("device", "precision") if typed(ctx, name)]  # these have defaults
    if weights is None and given:  # predictions read from --pred are scored as they are
        raise typer.BadParameter(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --weights")


def _check_class_names(domain: str | None, mapping: list[str]) -> None:
    """Refuse a `--domain` or `--map` that is no text. Raises typer.BadParameter."""
    try:
        refuse_undecodable(domain, "--domain")
        for value in mapping:  # class names: the 'ignored:' line reads them as the model would
            refuse_undecodable(value, "--map")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _report_target(json_out: str | None, weights: str | None, inputs: dict[str, Path | None]) -> str | None:
    """`--json` as given (`-`: stdout), `~` expanded, a file checked before anything is read (see
    `_check_report_path`; `inputs` are the files and folders read, by what they are). Raises
    typer.BadParameter or UsageError."""
    if json_out is None:
        return None
    if not json_out.strip():
        raise typer.BadParameter("an empty file name ('-' for stdout)", param_hint="--json")
    json_out = expand_user(json_out)  # text, not a path option: '-' is stdout
    if json_out != "-":
        weights_file = Path(expand_user(weights)) if weights else None
        _check_report_path(Path(json_out), {**inputs, "--weights": weights_file})
    return json_out


def _formats(
    ground_truth: Path, inner: Path | None, gt_format: GtFormat, pred: Path | None, pred_format: PredFormat
) -> tuple[str, str]:
    """The formats of the ground truth and of the predictions, `auto` detected (the predictions' only where
    there is a --pred). Raises typer.BadParameter."""
    from docsam_cli.datasets.ground_truth import detect_format
    from docsam_cli.datasets.predictions import detect_format as detect_prediction_format

    try:
        gt_fmt = detect_format(ground_truth, inner) if gt_format.value == _AUTO else gt_format.value
        pred_fmt = pred_format.value
        if pred is not None and pred_fmt == _AUTO:
            pred_fmt = detect_prediction_format(pred)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return gt_fmt, pred_fmt


def _check_inputs(
    ground_truth: Path,
    levels: frozenset[str],
    gt_fmt: str,
    pred_fmt: str | None,
    images: Path | None,
    classes: Path | None,
) -> None:
    """Refuse levels, `--images` and `--classes` that the ground truth's format does not take, and a unified
    split without its list. Raises typer.BadParameter or UsageError."""
    _check_levels(levels, gt_fmt, pred_fmt)
    if gt_fmt == "unified":
        _check_split_list(ground_truth)
    if images is not None and gt_fmt == "unified":  # its list names image/<name>, as training reads it
        raise typer.BadParameter(
            "a unified split's images are those in its image/ folder (or their copies in image_resize/)",
            param_hint="--images",
        )
    if classes is not None and gt_fmt != "yolo":
        raise typer.BadParameter(f"only for YOLO ground truth, not {gt_fmt}", param_hint="--classes")


def _read_predictions(
    truth: GroundTruth, pred: Path, pred_fmt: str, levels: frozenset[str]
) -> tuple[dict[str, PageInstances], list[InputError], list[str]]:
    """The pages read from `--pred`, their errors and warnings. As the pages whose predictions could not be
    read are left out, so are their ground-truth images (`truth.images`). Raises InputError."""
    from docsam_cli.datasets.predictions import load_predictions

    predictions = load_predictions(pred, pred_fmt, truth, levels)
    predicted = {k: v for k, v in predictions.pages.items() if k not in predictions.unreadable}
    truth.images = [image for image in truth.images if image.name not in predictions.unreadable]
    return predicted, predictions.errors, predictions.warnings


def _report(console: Console, result: EvaluationResult, json_out: str | None) -> None:
    """Show the tables (unless -q: the figures stay available as data, --json) and write the JSON report
    (`-`: stdout)."""
    if not message_options().quiet:
        _tables(console, result)
    if json_out == "-":
        write_data(json.dumps(result.to_json(), indent=2) + "\n")
    elif json_out:
        _write_report(console, Path(json_out), result)


def _predictions_inside(ground_truth: Path, pred: Path | None) -> Path | None:
    """The folder of the predictions (segment's output folder holding the --pred file or folder: its
    coco.json, its page/ or a PAGE file of it; else the --pred folder) where it lies inside the ground
    truth's folder, for the ground truth's walk to leave out: predictions read as ground truth would be
    scored against themselves, and segment's alto/ beside its page/ would make the walk's XML PAGE and ALTO
    both. A file's own folder is no predictions' folder as such: a results list kept beside the ground
    truth's PAGE files leaves them read."""
    if pred is None or not ground_truth.is_dir():
        return None
    start = pred if pred.is_dir() else pred.parent
    outputs = [
        folder
        for folder in (start, *start.parents)
        if (folder / STATE_DIR).is_dir() and within(folder, ground_truth) and not within(ground_truth, folder)
    ]
    folder = next(iter(outputs), pred if pred.is_dir() else None)
    if folder is None or not within(folder, ground_truth) or within(ground_truth, folder):
        return None
    return folder


def _check_levels(levels: frozenset[str], gt_fmt: str, pred_fmt: str | None) -> None:
    """Refuse levels that nothing read selects, as convert-dataset refuses them, rather than score what
    was not asked for: ground truth read by a converter has its format's levels; a unified split or a COCO
    file is scored as it was made, so levels other than regions only choose what is read from PAGE
    predictions. Raises typer.BadParameter."""
    if gt_fmt in FORMATS and gt_fmt != "coco":
        supported = FORMATS[gt_fmt].levels
        if not levels <= supported:
            reason = f"{gt_fmt} ground truth supports {', '.join(sorted(supported))}"
            raise typer.BadParameter(reason, param_hint="--level")
    elif pred_fmt != "page" and levels != frozenset(DEFAULT_LEVELS):
        what = "a unified split" if gt_fmt == "unified" else "a COCO file"
        raise typer.BadParameter(
            f"{what} is scored with the elements it holds; --level chooses what is read from PAGE, ALTO or"
            " ICDAR 2013 ground truth and from PAGE predictions",
            param_hint="--level",
        )


def _check_report_path(path: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse, before anything is read, a --json file that cannot be written: a folder, one of the files
    read (`inputs`, by what they are: the report would replace them), or a file whose nearest existing
    folder (the atomic write creates the missing ones) is not a folder or not writable. A device or pipe
    (`/dev/stdout`) is written in place and taken as it is. Raises UsageError."""
    if path.is_dir():
        raise UsageError(f"--json {display_path(path)}: is a folder")
    if path.exists() and not path.is_file():
        return
    if path.is_file():
        _refuse_replacing_an_input(path, inputs)
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not folder.is_dir():
        raise UsageError(f"--json {display_path(path)}: {display_path(folder)} is not a folder")
    if (error := can_write_in(folder)) is not None:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"--json {display_path(path)}: cannot write in {display_path(folder)}: {reason}")


def _refuse_replacing_an_input(path: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse the existing file `path` as the --json report where it is one of the files read (`inputs`, by
    what they are) or a file of a folder read, other than an earlier report. Raises UsageError."""
    for what, source in inputs.items():
        if source is not None and source.is_file() and path.samefile(source):
            raise UsageError(f"--json {display_path(path)}: is the {what} file (the report would replace it)")
        if source is not None and source.is_dir() and _file_of_folder(path, source):
            raise UsageError(
                f"--json {display_path(path)}: is a file of the {what} folder {display_path(source)} "
                "(the report would replace it)"
            )


_REPORT_OPENING = re.compile(rb'\{\s*"images": \d+,\s*"classes": \[')
"""How a report `_write_report` wrote opens (`EvaluationResult.to_json`: image count, then classes)."""


def _file_of_folder(path: Path, folder: Path) -> bool:
    """Whether the existing file `path` lies in the input folder `folder` (ground truth or predictions
    walked there) and is no earlier report, which a rerun replaces: any other file there may be read."""
    if not within(path.resolve(), folder.resolve()):
        return False
    with path.open("rb") as file:
        return _REPORT_OPENING.match(file.read(256)) is None


def _write_report(console: Console, path: Path, result: EvaluationResult) -> None:
    """Write the JSON report; a failure (the disk filled up since the check) is one error line, exit 1."""
    try:
        remove_left_temporaries(path)
        atomic_write_text(path, json.dumps(result.to_json(), indent=2) + "\n")
    except OSError as error:
        print_error(
            console, f"--json {display_path(path)}: cannot write: {error.strerror or type(error).__name__}"
        )
        raise typer.Exit(ExitCode.FAILED) from None


def _run_model(
    truth: GroundTruth, ground_truth: Path, domain: str | None, *model_options: object
) -> tuple[dict[str, PageInstances], list[InputError]]:
    """Predictions of a model run on the ground truth's images (imports torch), and their errors; an image
    the model did not run on is left out of `truth.images`, as pages with unreadable predictions are: it is
    no miss. No image, no model loaded. `model_options` are `ModelRun`'s arguments before the domain (by
    default the dataset's name, if known)."""
    if not truth.images:
        return {}, []
    from docsam_cli.model_evaluation import ModelRun, prompt_classes
    from docsam_cli.weights import WeightsError
    from model import CheckpointError

    domain = domain if domain is not None else _dataset_domain(ground_truth)
    classes = prompt_classes(truth.images, sorted(truth.class_names()))
    try:
        refuse_repeated_classes(classes, "the ground truth")  # before the model loads
        predicted, errors = ModelRun(*model_options, domain).predict(truth.images, classes)
    except (WeightsError, CheckpointError) as error:  # before ValueError: a CheckpointError is one
        raise UsageError(str(error)) from None  # as in segment: nothing was scored
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    truth.images = [image for image in truth.images if image.name in predicted]
    return predicted, errors


def _nothing_to_score(ground_truth: Path, gt_fmt: str, errors: list[InputError]) -> str:
    """Why no ground-truth image is left: the errors above, or a unified split whose list names no image,
    as `convert-dataset --split` leaves a split that its fraction of too few images rounds to none."""
    from docsam_cli.datasets.layout import EMPTY_SPLIT, list_file

    if gt_fmt == "unified" and not errors:
        return (
            f"{display_path(list_file(ground_truth, 'test'))}: lists no images, so nothing can be scored "
            f"({EMPTY_SPLIT} or evaluate another split)"
        )
    return f"{display_path(ground_truth)}: no ground-truth image to score"


def _unmatched_predictions(pred: Path, pages: int) -> str:
    """Why nothing can be scored: no page was read from `--pred`, or none names a ground-truth image."""
    if not pages:
        return (
            f"{display_path(pred)}: no predicted page read from it (--pred takes segment's coco.json, a COCO"
            " results list or PAGE files)"
        )
    return (
        f"{display_path(pred)}: none of its {pages} predicted pages is an image of the ground truth"
        " (pages are matched by file name)"
    )


def _check_split_list(split: Path) -> None:
    """Refuse a unified split without the list evaluate reads (`list_val.txt`, else `list.txt`): nothing
    could be scored. Raises UsageError naming the folder and the lists."""
    from docsam_cli.datasets.layout import list_file

    try:
        list_file(split, "test")
    except InputError as error:
        raise UsageError(str(error)) from None


def _split_levels(split: Path, default: frozenset[str]) -> frozenset[str]:
    """The levels PAGE predictions are read at against a unified split: those it was converted with
    (`convert-dataset --level regions,lines` records them), so that the text lines segment writes into
    PAGE meet the split's `text line` ground truth; `default` for a split that records none."""
    from docsam_cli.datasets.layout import dataset_levels

    try:
        recorded = dataset_levels(split)
    except InputError as error:
        raise UsageError(str(error)) from None
    return recorded if recorded is not None else default


def _dataset_domain(ground_truth: Path) -> str:
    """The unified layout's dataset name (its background prompt in training), else no domain."""
    from docsam_cli.datasets.layout import dataset_name, is_layout

    return dataset_name(ground_truth) if ground_truth.is_dir() and is_layout(ground_truth) else ""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tables(console: Console, result: EvaluationResult) -> None:
    table = Table(title=f"{result.images} images", title_justify="left")
    table.add_column("class", overflow="fold")  # a long name wraps, whole, where a cut one reads as another
    for column in ("GT", "pred", "AP", "AP50", "AP75", "box AP", "F1", "IoU"):
        table.add_column(column, justify="right")
    for name, scores in result.per_class.items():
        table.add_row(
            Text(name),
            str(scores.gt),
            str(scores.predictions),
            *(_fmt(v) for v in (scores.ap, scores.ap50, scores.ap75, scores.box_ap, scores.f1, scores.iou)),
        )
    table.add_section()
    mask, box = result.mask, result.box
    table.add_row(
        "all", "", "", _fmt(mask["AP"]), _fmt(mask["AP50"]), _fmt(mask["AP75"]), _fmt(box["AP"]),
        _fmt(result.maf), _fmt(result.miou),
    )  # fmt: skip
    console.print(table)
    if result.images_without_predictions:
        count = len(result.images_without_predictions)
        print_plain(console, f"{count} images have no predictions (scored as misses)")
    if result.predictions_without_ground_truth:
        count = len(result.predictions_without_ground_truth)
        print_plain(console, f"{count} predicted pages are not images of the ground truth (not scored)")
    if result.rescaled_predictions:
        print_plain(
            console, f"{result.rescaled_predictions} pages were predicted at another size and rescaled"
        )
    for name, count in sorted(result.ignored_predictions.items()):
        hint = _map_hint(name, result.classes)
        print_plain(
            console, f"ignored: {count} predictions of class '{name}' (not in the ground truth; {hint})"
        )


def _map_hint(name: str, classes: list[str]) -> str:
    """How to score an ignored class: the `--map` to a ground-truth class that the model reads as the same
    name (`Table` in ALTO tags or a COCO file where segment's prompt was `table`), else a pointer to it."""
    from docsam_cli.datasets.classes import map_option
    from docsam_cli.presets import prompt_key

    alike = [gt for gt in classes if prompt_key(gt) == prompt_key(name)]
    if not alike:
        return "see --map"
    return f"the model reads it as the ground truth's '{alike[0]}': {map_option(name, alike[0])}"
