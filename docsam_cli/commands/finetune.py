"""`docsam finetune`: adapt any DocSAM checkpoint (official `.pth` or ours) to new datasets and class names.

Class names are prompts, so new classes need no head surgery: they come from the datasets' categories.
The options are `docsam train`'s (`docsam_cli.training.settings`) with the defaults of the reference's
fine-tuning demo (`run_train_demo.sh`: LR 2e-5, batch 4, 4000 iterations, 640 crops); its dataset-specific
models used 40000 iterations, batch 16 and 800×800 crops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from docsam_cli.commands.options import MODEL_CONFIG_HELP, read_model_config
from docsam_cli.console import RUN_WIDE
from docsam_cli.errors import UsageError
from docsam_cli.names import display_path
from docsam_cli.runtime import VARIANT_AND_CONFIG
from docsam_cli.training.command_line import execute, training_command
from docsam_cli.training.settings import MODEL, RunPlan, TrainingOptions, cli
from docsam_cli.weights.registry import Variant
from model.config import DocSAMConfig

if TYPE_CHECKING:
    from model.docsam import DocSAM

logger = logging.getLogger(__name__)

# Where fine-tuning's defaults differ from training's.
FINETUNE_OPTIONS = TrainingOptions(iterations=4000, batch_size=4, lr=2e-5)


@dataclass(frozen=True)
class StartingCheckpoint:
    """What `docsam finetune` starts from (not needed with --resume)."""

    weights: str | None = field(
        default=None,
        metadata=cli(
            "--weights",
            help="Starting checkpoint: a name from `docsam download-weights --list`, a file (.pth or "
            ".safetensors) or a run's folder.",
            panel=MODEL,
            file="path",
        ),
    )
    variant: Variant | None = field(
        default=None,
        metadata=cli("--variant", help="Architecture (default: detected from the checkpoint).", panel=MODEL),
    )
    model_config: DocSAMConfig | None = field(
        default=None,
        metadata=cli(
            "--model-config",
            help=MODEL_CONFIG_HELP,
            panel=MODEL,
            file="path",
            text=Path | None,
            parse=read_model_config,
        ),
    )


@training_command(StartingCheckpoint, FINETUNE_OPTIONS)
def finetune(plan: RunPlan, start: StartingCheckpoint) -> None:
    """Fine-tune a DocSAM checkpoint on your own pages (e.g. converted PAGE XML) and class names."""
    if not plan.resume and start.weights is None:
        raise typer.BadParameter("name the checkpoint to start from", param_hint="--weights")
    if start.variant is not None and start.model_config is not None:
        raise UsageError(VARIANT_AND_CONFIG)
    config = start.model_config

    def starting_model() -> DocSAM:
        from docsam_cli.training.build import model_from_checkpoint
        from docsam_cli.weights import resolve_weights

        # A WeightsError is a usage error (see launch).
        resolved = resolve_weights(start.weights, start.variant)
        logger.info("loading %s", display_path(resolved.path), extra=RUN_WIDE)
        return model_from_checkpoint(resolved.path, plan.regularisation, start.variant, config)

    execute(plan, starting_model)
