"""`docsam train`: train DocSAM on unified-layout datasets from the Mask2Former COCO weights (or scratch).

The options shared with `docsam finetune` are declared in `docsam_cli.training.settings`; this module adds
where the run starts from. Multi-GPU / multi-node: launch the same command through torchrun, e.g.
`torchrun --nproc_per_node 8 -m docsam_cli train ...` (`--batch-size` stays the global batch).
Heavy modules (torch, the model) are imported when the command runs, not when the CLI starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from docsam_cli.commands.options import read_model_config, refuse_unbuildable
from docsam_cli.console import RUN_WIDE
from docsam_cli.names import display_path
from docsam_cli.training.command_line import execute, training_command
from docsam_cli.training.settings import MODEL, RunPlan, cli
from docsam_cli.weights.registry import Variant
from model.config import DocSAMConfig

if TYPE_CHECKING:
    from model.docsam import DocSAM

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartingPoint:
    """What `docsam train` starts from (not needed with --resume)."""

    text_encoder: Path | None = field(
        default=None,
        metadata=cli(
            "--text-encoder",
            help="all-MiniLM-L6-v2 weights (model.safetensors, its folder, or its download-weights name); "
            "needed to start a run.",
            panel=MODEL,
            file="path",
        ),
    )
    mask2former: Path | None = field(
        default=None,
        metadata=cli(
            "--mask2former",
            help="transformers Mask2Former Swin COCO-panoptic checkpoint (file, folder, or its "
            "download-weights name) of the variant.",
            panel=MODEL,
            file="path",
        ),
    )
    from_scratch: bool = field(
        default=False,
        metadata=cli(
            "--from-scratch/--no-from-scratch",
            help="No Mask2Former weights: fresh backbone and pixel decoder.",
            panel=MODEL,
        ),
    )
    variant: Variant = field(default="base", metadata=cli("--variant", help="Architecture.", panel=MODEL))
    model_config: DocSAMConfig | None = field(
        default=None,
        metadata=cli(
            "--model-config",
            help="Architecture JSON instead of --variant.",
            panel=MODEL,
            file="path",
            text=Path | None,
            parse=read_model_config,
        ),
    )


@training_command(StartingPoint)
def train(plan: RunPlan, start: StartingPoint) -> None:
    """Train DocSAM as the reference does: Mask2Former COCO backbone + MiniLM, all datasets mixed."""
    if not plan.resume and start.text_encoder is None:
        raise typer.BadParameter("the MiniLM weights are needed to start a run", param_hint="--text-encoder")
    if not plan.resume and start.mask2former is not None and start.from_scratch:
        raise typer.BadParameter(
            "not together with --from-scratch: give one of them", param_hint="--mask2former"
        )
    if not plan.resume and start.mask2former is None and not start.from_scratch:
        raise typer.BadParameter("give --mask2former, or --from-scratch", param_hint="--mask2former")

    architecture = start.model_config
    if architecture is None:
        from model.config import variant_config

        architecture = variant_config(start.variant)
        refuse_unbuildable(architecture, f"DocSAM-{start.variant.capitalize()}", "--variant")

    def starting_model() -> DocSAM:
        from docsam_cli.training.build import model_from_mask2former

        if start.mask2former is None:
            logger.info(
                "loading MiniLM %s (no Mask2Former: --from-scratch)",
                display_path(start.text_encoder),
                extra=RUN_WIDE,
            )
        else:
            mask2former, text_encoder = display_path(start.mask2former), display_path(start.text_encoder)
            logger.info("loading Mask2Former %s and MiniLM %s", mask2former, text_encoder, extra=RUN_WIDE)
        return model_from_mask2former(
            architecture, start.mask2former, start.text_encoder, plan.regularisation
        )

    execute(plan, starting_model)
