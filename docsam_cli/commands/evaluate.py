"""`docsam evaluate`: score predictions against ground truth with the reference's metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from docsam_cli.atomic import atomic_write_text
from docsam_cli.datasets.classes import parse_mapping, parse_names
from docsam_cli.datasets.ground_truth import GT_FORMATS, detect_format, load_ground_truth
from docsam_cli.datasets.layout import dataset_name, is_layout
from docsam_cli.datasets.predictions import PRED_FORMATS, load_predictions
from docsam_cli.datasets.predictions import detect_format as detect_prediction_format
from docsam_cli.datasets.records import LEVELS
from docsam_cli.errors import InputError
from docsam_cli.evaluation import EvaluationResult, evaluate
from docsam_cli.model_evaluation import ModelRun
from docsam_cli.weights import WeightsError
from model import CheckpointError

_DEFAULT_LEVELS = ["regions"]
_NONE: list[str] = []


def main(
    ground_truth: Annotated[
        Path,
        typer.Argument(help="Ground truth: a unified split folder, a COCO file, or files of a --gt-format."),
    ],
    pred: Annotated[
        Path | None,
        typer.Option(
            help="Predictions: segment's COCO dataset file (matched by file name), a COCO results list "
            "(image ids of the ground truth), or segment's PAGE files. Or use --weights."
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Run this model (path or zoo name) on the ground truth's images instead of --pred."
        ),
    ] = None,
    variant: Annotated[str | None, typer.Option(help="With --weights: base or large.")] = None,
    model_config: Annotated[
        Path | None, typer.Option(help="With --weights: JSON architecture config.")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option(
            help="With --weights: background prompt domain (default: the dataset's name, if known)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="With --weights: auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="With --weights: fp32, bf16 or fp16.")] = "fp32",
    short_side: Annotated[str | None, typer.Option(help="With --weights: as in segment.")] = None,
    window: Annotated[str | None, typer.Option(help="With --weights: as in segment.")] = None,
    gt_format: Annotated[str, typer.Option(help=f"One of {', '.join(GT_FORMATS)}.")] = "auto",
    pred_format: Annotated[str, typer.Option(help=f"One of {', '.join(PRED_FORMATS)}.")] = "auto",
    level: Annotated[
        list[str], typer.Option(help=f"PAGE/ALTO elements to score: {', '.join(LEVELS)}.")
    ] = _DEFAULT_LEVELS,
    mapping: Annotated[
        list[str], typer.Option("--map", help="Prediction class → ground-truth class: pred=gt (repeatable).")
    ] = _NONE,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Write the full report as JSON to this file ('-': stdout).")
    ] = None,
) -> None:
    """Score predictions (mask and box AP at maxDets 40/400/4000, mAF, mIoU), overall and per class."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    levels = frozenset(parse_names(level))
    if not levels or not levels <= set(LEVELS):
        raise typer.BadParameter(f"choose from {', '.join(LEVELS)}", param_hint="--level")
    try:
        class_map = parse_mapping(mapping)
        gt_fmt = detect_format(ground_truth) if gt_format == "auto" else _choice(gt_format, GT_FORMATS)
        if pred is None:
            pred_fmt = pred_format
        elif pred_format == "auto":
            pred_fmt = detect_prediction_format(pred)
        else:
            pred_fmt = _choice(pred_format, PRED_FORMATS)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if (pred is None) == (weights is None):
        raise typer.BadParameter("give exactly one of --pred and --weights")
    try:
        truth = load_ground_truth(ground_truth, gt_fmt, levels)
        if weights is not None:
            prompt_domain = domain if domain is not None else _dataset_domain(ground_truth)
            run = ModelRun(
                weights, variant, model_config, device, precision, short_side, window, prompt_domain
            )
            predicted, prediction_errors = run.predict(truth.images)
        else:
            predictions = load_predictions(pred, pred_fmt, truth, levels)
            predicted, prediction_errors = predictions.pages, predictions.errors
    except InputError as error:
        console.print(f"error: {error}", markup=False)
        raise typer.Exit(1) from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    except (WeightsError, CheckpointError) as error:
        console.print(f"error: {error}", markup=False)
        raise typer.Exit(1) from None
    errors = [*truth.errors, *prediction_errors]
    for error in errors:
        console.print(f"error: {error}", markup=False)
    if not truth.images:
        console.print(f"error: {ground_truth}: no ground-truth images", markup=False)
        raise typer.Exit(1)
    result = evaluate(truth.images, predicted, class_map)
    _tables(console, result)
    if json_out == "-":
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif json_out:
        atomic_write_text(json_out, json.dumps(result.to_json(), indent=2) + "\n")
    if errors:
        raise typer.Exit(1)


def _dataset_domain(ground_truth: Path) -> str:
    """The unified layout's dataset name (its background prompt in training), else no domain."""
    return dataset_name(ground_truth) if ground_truth.is_dir() and is_layout(ground_truth) else ""


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices[1:]:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tables(console: Console, result: EvaluationResult) -> None:
    table = Table(title=f"{result.images} images", title_justify="left")
    for column in ("class", "GT", "pred", "AP", "AP50", "AP75", "box AP", "F1", "IoU"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, scores in result.per_class.items():
        table.add_row(
            name,
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
        console.print(
            f"{len(result.images_without_predictions)} images have no predictions (scored as misses)"
        )
    if result.rescaled_predictions:
        console.print(f"{result.rescaled_predictions} pages were predicted at another size and rescaled")
    for name, count in sorted(result.ignored_predictions.items()):
        console.print(f"ignored: {count} predictions of class '{name}' (not in the ground truth; see --map)")
