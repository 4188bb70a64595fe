"""`docsam train`: train DocSAM on unified-layout datasets from the Mask2Former COCO weights (or scratch).

Options shared with `docsam finetune` are defined here as `Annotated` aliases; both commands end in
`docsam_cli.training.launch.run`. Multi-GPU / multi-node: launch the same command through torchrun, e.g.
`torchrun --nproc_per_node 8 -m docsam_cli train ...` (`--batch-size` stays the global batch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from docsam_cli.app import app
from docsam_cli.errors import InputError
from docsam_cli.training.augment import AugmentSettings
from docsam_cli.training.build import Regularisation, model_from_mask2former
from docsam_cli.training.datasets import DatasetSpec
from docsam_cli.training.launch import RunPlan, run
from docsam_cli.training.trainer import TrainingOptions
from model.config import DocSAMConfig, variant_config
from model.docsam import DocSAM

_DATA_HELP = (
    "Training splits in the unified layout (`docsam convert-dataset`), each PATH[,name=NAME][,weight=W]"
    "[,start=ITER]: NAME prefixes the background prompt (default: the dataset's own name), W replaces the "
    "reference's sampling probability (∝ sqrt of the class count), ITER adds the set at that iteration "
    "(curriculum)."
)

Data = Annotated[list[str], typer.Argument(metavar="DATASET...", help=_DATA_HELP, show_default=False)]
Output = Annotated[
    Path, typer.Option("--output", "-o", help="Run folder: checkpoints, log.jsonl, best/, model.safetensors.")
]
Validation = Annotated[
    list[str] | None,
    typer.Option("--val", metavar="DATASET", help="Validation split (repeatable; same syntax as DATASET)."),
]
ValEvery = Annotated[int, typer.Option("--val-every", min=0, help="Validate every N iterations (0: never).")]
ValImages = Annotated[int, typer.Option("--val-images", min=1, help="Pages per validation split.")]
BestMetric = Annotated[str, typer.Option("--best-metric", help="Metric that selects best/ (mAP, mAF, mIoU).")]
Iters = Annotated[int, typer.Option("--iters", min=1, help="Optimiser steps.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Global batch (all processes).")]
Accumulate = Annotated[int, typer.Option("--accumulate", min=1, help="Gradient accumulation steps.")]
LearningRate = Annotated[float, typer.Option("--lr", min=0.0, help="Base learning rate (AdamW).")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.")]
Schedule = Annotated[str, typer.Option("--schedule", help="cosine, step or fix (the reference's schedules).")]
Warmup = Annotated[int, typer.Option("--warmup", min=0, help="Linear warm-up iterations.")]
Precision = Annotated[str, typer.Option("--precision", help="fp32, or bf16 / fp16 autocast (CUDA).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N [CUDA if available].")]
Workers = Annotated[
    int, typer.Option("--workers", min=0, help="Data-loading processes per training process.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of data order, augmentation, dropout, init.")]
ShortRange = Annotated[
    str, typer.Option("--short-range", help="Random short side LO,HI (test time: the mean).")
]
PatchSize = Annotated[
    str, typer.Option("--patch-size", help="Training crop H,W (also the test-time window).")
]
Dropout = Annotated[float, typer.Option("--dropout", min=0.0, max=1.0, help="Decoder dropout.")]
DropPath = Annotated[
    float, typer.Option("--drop-path", min=0.0, max=1.0, help="Swin stochastic depth (max).")
]
TextDropout = Annotated[float, typer.Option("--text-dropout", min=0.0, max=1.0, help="MiniLM dropout.")]
LogEvery = Annotated[int, typer.Option("--log-every", min=1, help="Log the loss every N iterations.")]
CheckpointEvery = Annotated[
    int, typer.Option("--checkpoint-every", min=1, help="Checkpoint every N iterations.")
]
KeepLast = Annotated[int, typer.Option("--keep-last", min=1, help="Checkpoints kept.")]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --output from its last checkpoint (same datasets, seed and batch size; the "
        "curve equals an uninterrupted run's when the other options are unchanged too).",
    ),
]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]


def pair(text: str, option: str) -> tuple[int, int]:
    """`A,B` → (A, B) positive integers."""
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected two integers A,B, got {text!r}", param_hint=option) from None
    if min(first, second) < 1:
        raise typer.BadParameter(f"values must be positive, got {text!r}", param_hint=option)
    return first, second


def dataset_specs(values: list[str], option: str) -> list[DatasetSpec]:
    try:
        return [DatasetSpec.parse(value) for value in values]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def make_plan(
    data: list[str],
    output: Path,
    validation: list[str] | None,
    validation_images: int,
    short_range: str,
    patch_size: str,
    regularisation: Regularisation,
    resume: bool,
    device: str | None,
    **loop: Any,
) -> RunPlan:
    """The run described by the shared options; `loop` are `TrainingOptions` fields."""
    try:
        options = TrainingOptions(**loop)
        augmentation = AugmentSettings(pair(short_range, "--short-range"), pair(patch_size, "--patch-size"))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return RunPlan(
        datasets=dataset_specs(data, "DATASET"),
        output=output,
        options=options,
        augmentation=augmentation,
        regularisation=regularisation,
        validation=dataset_specs(validation or [], "--val"),
        validation_images=validation_images,
        resume=resume,
        device=device,
    )


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def execute(plan: RunPlan, starting_model: Callable[[], DocSAM]) -> None:
    """Run and report; known failures become one error line and exit status 1."""
    try:
        final = run(plan, starting_model)
    except (ValueError, InputError, OSError) as error:  # checkpoint, dataset, annotation errors included
        fail(str(error))
    typer.echo(f"weights: {final}", err=True)


@app.command("train")
def train(
    data: Data,
    output: Output,
    text_encoder: Annotated[
        Path | None,
        typer.Option(
            "--text-encoder",
            help="all-MiniLM-L6-v2 weights (model.safetensors or its folder); not needed with --resume.",
        ),
    ] = None,
    mask2former: Annotated[
        Path | None,
        typer.Option(
            "--mask2former",
            help="transformers Mask2Former Swin COCO-panoptic checkpoint (file or folder) of the variant.",
        ),
    ] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="No Mask2Former weights: fresh backbone and pixel decoder.")
    ] = False,
    variant: Annotated[str, typer.Option("--variant", help="base or large.")] = "base",
    model_config: Annotated[
        Path | None, typer.Option("--model-config", help="Architecture JSON instead of --variant.")
    ] = None,
    validation: Validation = None,
    val_every: ValEvery = 200,
    val_images: ValImages = 10,
    best_metric: BestMetric = "mAP",
    iters: Iters = 360_000,
    batch_size: BatchSize = 32,
    accumulate: Accumulate = 1,
    lr: LearningRate = 4e-5,
    weight_decay: WeightDecay = 1e-2,
    schedule: Schedule = "cosine",
    warmup: Warmup = 0,
    precision: Precision = "fp32",
    device: Device = None,
    workers: Workers = 4,
    seed: Seed = 0,
    short_range: ShortRange = "704,896",
    patch_size: PatchSize = "640,640",
    dropout: Dropout = 0.1,
    drop_path: DropPath = 0.3,
    text_dropout: TextDropout = 0.1,
    log_every: LogEvery = 10,
    checkpoint_every: CheckpointEvery = 200,
    keep_last: KeepLast = 3,
    resume: Resume = False,
    progress: ShowProgress = True,
) -> None:
    """Train DocSAM as the reference does: Mask2Former COCO backbone + MiniLM, all datasets mixed."""
    if not resume and text_encoder is None:
        raise typer.BadParameter("the MiniLM weights are needed to start a run", param_hint="--text-encoder")
    if not resume and (mask2former is None) != from_scratch:
        raise typer.BadParameter("give --mask2former, or --from-scratch", param_hint="--mask2former")
    plan = make_plan(
        data,
        output,
        validation,
        val_images,
        short_range,
        patch_size,
        Regularisation(dropout, drop_path, text_dropout),
        resume,
        device,
        iterations=iters,
        batch_size=batch_size,
        accumulation=accumulate,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        precision=precision,
        seed=seed,
        workers=workers,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        validate_every=val_every,
        best_metric=best_metric,
        progress=progress,
    )

    def starting_model() -> DocSAM:
        config = DocSAMConfig.from_json(model_config) if model_config is not None else variant_config(variant)
        return model_from_mask2former(config, mask2former, text_encoder, plan.regularisation)

    execute(plan, starting_model)
