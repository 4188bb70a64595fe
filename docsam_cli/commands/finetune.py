"""`docsam finetune`: adapt any DocSAM checkpoint (official `.pth` or ours) to new datasets and class names.

Class names are prompts, so new classes need no head surgery: they come from the datasets' categories.
Defaults follow the reference's fine-tuning demo (`run_train_demo.sh`: LR 2e-5, batch 4, 4000 iterations,
640 crops); its dataset-specific models used 40000 iterations, batch 16 and 800×800 crops.
"""

from __future__ import annotations

from typing import Annotated

import typer

from docsam_cli.app import app
from docsam_cli.commands.train import (
    Accumulate,
    BatchSize,
    BestMetric,
    CheckpointEvery,
    Data,
    Device,
    Dropout,
    DropPath,
    Iters,
    KeepLast,
    LearningRate,
    LogEvery,
    Output,
    PatchSize,
    Precision,
    Resume,
    Schedule,
    Seed,
    ShortRange,
    ShowProgress,
    TextDropout,
    ValEvery,
    Validation,
    ValImages,
    Warmup,
    WeightDecay,
    Workers,
    execute,
    fail,
    make_plan,
)
from docsam_cli.training.build import Regularisation, model_from_checkpoint
from docsam_cli.weights import WeightsError, resolve_weights
from model.docsam import DocSAM


@app.command("finetune")
def finetune(
    data: Data,
    output: Output,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Starting checkpoint: a name from `docsam download-weights --list` or a file (.pth or "
            ".safetensors); not needed with --resume.",
        ),
    ] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="base or large [detected from the checkpoint].")
    ] = None,
    freeze_backbone: Annotated[
        bool, typer.Option("--freeze-backbone", help="Keep the Swin backbone fixed (no gradient, eval mode).")
    ] = False,
    validation: Validation = None,
    val_every: ValEvery = 200,
    val_images: ValImages = 10,
    best_metric: BestMetric = "mAP",
    iters: Iters = 4000,
    batch_size: BatchSize = 4,
    accumulate: Accumulate = 1,
    lr: LearningRate = 2e-5,
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
    """Fine-tune a DocSAM checkpoint on your own pages (e.g. converted PAGE XML) and class names."""
    if not resume and weights is None:
        raise typer.BadParameter("name the checkpoint to start from", param_hint="--weights")
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
        freeze_backbone=freeze_backbone,
        progress=progress,
    )

    def starting_model() -> DocSAM:
        try:
            resolved = resolve_weights(weights)
        except WeightsError as error:
            fail(str(error))
        return model_from_checkpoint(resolved.path, plan.regularisation, variant or resolved.variant)

    execute(plan, starting_model)
