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
from docsam_cli.datasets.model import LEVELS, BadInput
from docsam_cli.datasets.predictions import PRED_FORMATS, load_predictions
from docsam_cli.datasets.predictions import detect_format as detect_prediction_format
from docsam_cli.evaluation import EvaluationResult, evaluate

_DEFAULT_LEVELS = ["regions"]
_NONE: list[str] = []


def main(
    ground_truth: Annotated[
        Path,
        typer.Argument(help="Ground truth: a unified split folder, a COCO file, or files of a --gt-format."),
    ],
    pred: Annotated[
        Path,
        typer.Option(
            help="Predictions: segment's COCO dataset file (matched by file name), a COCO results list "
            "(image ids of the ground truth), or segment's PAGE files."
        ),
    ],
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
        pred_fmt = (
            detect_prediction_format(pred) if pred_format == "auto" else _choice(pred_format, PRED_FORMATS)
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        truth = load_ground_truth(ground_truth, gt_fmt, levels)
        predictions = load_predictions(pred, pred_fmt, truth, levels)
    except BadInput as error:
        console.print(f"error: {error}", markup=False)
        raise typer.Exit(1) from None
    errors = [*truth.errors, *predictions.errors]
    for error in errors:
        console.print(f"error: {error}", markup=False)
    if not truth.images:
        console.print(f"error: {ground_truth}: no ground-truth images", markup=False)
        raise typer.Exit(1)
    result = evaluate(truth.images, predictions.pages, class_map)
    _tables(console, result)
    if json_out == "-":
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif json_out:
        atomic_write_text(json_out, json.dumps(result.to_json(), indent=2) + "\n")
    if errors:
        raise typer.Exit(1)


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
