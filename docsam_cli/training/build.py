"""The network a run starts from: Mask2Former COCO + MiniLM (`train`), fresh (`train --from-scratch`),
a DocSAM checkpoint (`finetune`), or the architecture of a checkpoint to resume.

Weights only ever come from local files, or from names `docsam download-weights` stored (never fetched
here). The training dropout rates are applied to the configuration through `settings.Regularisation`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from docsam_cli.training.settings import Regularisation
from model.checkpoint import (
    CheckpointError,
    checkpoint_config,
    model_with_weights,
    read_state_dict,
    stored_config,
)
from model.config import DocSAMConfig
from model.docsam import DocSAM
from model.init import initialise, load_mask2former, load_text_encoder


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a weights file, a downloaded model folder holding one, or a name `docsam
    download-weights` stored (`mask2former-swin-base-coco-panoptic`, `all-minilm-l6-v2`: the registry's
    initialisations for `train`). Raises `WeightsError` or `CheckpointError`."""
    from docsam_cli.weights import resolve_weights

    return read_state_dict(resolve_weights(str(path)).path)


def model_from_mask2former(
    config: DocSAMConfig, mask2former: Path | None, text_encoder: Path, regularisation: Regularisation
) -> DocSAM:
    """The reference's starting point: fresh init, COCO Mask2Former backbone + pixel-decoder encoder
    (skipped when `mask2former` is None: training from scratch), all-MiniLM-L6-v2 text encoder."""
    model = DocSAM(regularisation.apply(config))
    initialise(model)
    if mask2former is not None:
        load_mask2former(model, read_weights(mask2former), str(mask2former))
    load_text_encoder(model, read_weights(text_encoder), str(text_encoder))
    return model


def model_from_checkpoint(
    path: Path,
    regularisation: Regularisation,
    variant: str | None = None,
    config: DocSAMConfig | None = None,
) -> DocSAM:
    """Any DocSAM checkpoint (official or ours), loaded strictly, for fine-tuning."""
    state = read_state_dict(path)
    return model_with_weights(
        regularisation.apply(checkpoint_config(path, state, variant, config)), state, str(path)
    )


def architecture_of(path: Path, regularisation: Regularisation) -> DocSAM:
    """An uninitialised model shaped like the checkpoint at `path` (its weights are loaded on resume)."""
    config = stored_config(path)
    if config is None:
        raise CheckpointError(f"{path}: carries no DocSAM config; not written by docsam train")
    return DocSAM(regularisation.apply(config))
