"""One training run from its parts: process group, datasets, model (fresh or resumed), validation, loop.

`train` and `finetune` differ only in the model they start from and their defaults; both end here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from docsam_cli.training.augment import AugmentSettings
from docsam_cli.training.build import Regularisation, architecture_of
from docsam_cli.training.checkpoints import MODEL_FILE, list_checkpoints
from docsam_cli.training.data import MixedTrainingData
from docsam_cli.training.datasets import DatasetSpec, LayoutDataset
from docsam_cli.training.distributed import setup, teardown
from docsam_cli.training.trainer import Trainer, TrainingOptions
from docsam_cli.training.validation import LayoutValidator
from model.docsam import DocSAM
from model.inference import Geometry


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs besides the starting model."""

    datasets: Sequence[DatasetSpec]
    output: Path
    options: TrainingOptions
    augmentation: AugmentSettings = field(default_factory=AugmentSettings)
    regularisation: Regularisation = field(default_factory=Regularisation)
    validation: Sequence[DatasetSpec] = ()
    validation_images: int = 10
    resume: bool = False
    device: str | None = None


def training_data(plan: RunPlan) -> MixedTrainingData:
    """The mixed dataset; explicit weights must be given for all datasets or for none."""
    specs = plan.datasets
    weighted = [spec.weight is not None for spec in specs]
    if any(weighted) and not all(weighted):
        raise ValueError("give a weight to every dataset or to none (then the reference's rule applies)")
    return MixedTrainingData(
        [LayoutDataset(spec.path, spec.name) for spec in specs],
        plan.augmentation,
        plan.options.seed,
        weights=[spec.weight for spec in specs] if all(weighted) else None,
        starts=[spec.start for spec in specs],
    )


def resume_point(plan: RunPlan) -> Path | None:
    """The newest checkpoint to resume from; refuses to start a new run over an existing one."""
    checkpoints = list_checkpoints(plan.output)
    if plan.resume:
        if not checkpoints:
            raise ValueError(f"{plan.output}: no checkpoint to resume from")
        return checkpoints[-1]
    if checkpoints:
        raise ValueError(
            f"{plan.output} already holds a run: pass --resume to continue it, or another output"
        )
    return None


def run(plan: RunPlan, starting_model: Callable[[], DocSAM]) -> Path:
    """Train (every process of a torchrun launch calls this); returns the final weights' path."""
    distributed = setup(plan.device)
    try:
        data = training_data(plan)
        checkpoint = resume_point(plan)
        torch.manual_seed(plan.options.seed)  # fresh initialisation (train) is part of the seeded run
        model = (
            architecture_of(checkpoint / MODEL_FILE, plan.regularisation)
            if checkpoint is not None
            else starting_model()
        )
        validator = None
        if plan.validation and distributed.is_main:
            short = sum(plan.augmentation.short_range) // 2
            validator = LayoutValidator(
                [LayoutDataset(spec.path, spec.name, stage="test") for spec in plan.validation],
                Geometry(short_range=(short, short), patch=plan.augmentation.patch),
                plan.validation_images,
            )
        trainer = Trainer(model, data, plan.options, plan.output, distributed, validator)
        return trainer.run(checkpoint)
    finally:
        teardown()
