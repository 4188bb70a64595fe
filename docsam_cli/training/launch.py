"""One training run from its parts: process group, datasets, model (fresh or resumed), validation, loop.

`train` and `finetune` differ only in the model they start from and their defaults; both end here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from docsam_cli.distributed import setup, teardown
from docsam_cli.runtime import keep_freed_memory
from docsam_cli.training.build import architecture_of
from docsam_cli.training.checkpoints import MODEL_FILE, list_checkpoints
from docsam_cli.training.data import MixedTrainingData
from docsam_cli.training.datasets import LayoutDataset
from docsam_cli.training.settings import AugmentSettings, RunPlan
from docsam_cli.training.trainer import Trainer
from docsam_cli.training.validation import LayoutValidator
from model.docsam import DocSAM
from model.inference import Geometry


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


def validation_geometry(augmentation: AugmentSettings) -> Geometry:
    """The test-time geometry of the training augmentation: the mean short side (or the keep-size rule on
    the same range), the patch as the window."""
    if augmentation.keep_size:
        return Geometry(short_range=augmentation.short_range, patch=augmentation.patch, keep_size=True)
    short = sum(augmentation.short_range) // 2
    return Geometry(short_range=(short, short), patch=augmentation.patch)


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
    keep_freed_memory()
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
            validator = LayoutValidator(
                [LayoutDataset(spec.path, spec.name, stage="test") for spec in plan.validation],
                validation_geometry(plan.augmentation),
                plan.validation_images,
            )
        trainer = Trainer(model, data, plan.options, plan.output, distributed, validator)
        return trainer.run(checkpoint, plan.record)
    finally:
        teardown()
