"""DocSAM (CVPR 2025) as a PyTorch module that loads the official checkpoints unchanged.

Typical use::

    from model import load_model
    model = load_model("docsam_large_all_dataset.pth")          # variant detected from the weights
    out = model(pixel_values, class_names=[["table", "figure", "PubLayNet _background_"]] * n)
    out.last.instance_mask_logits, out.last.class_logits, out.last.boxes

The names below are imported on first use, so that `import model.instances` (plain NumPy records, read by
`evaluate` and the writers) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.checkpoint import CheckpointError, load_model, load_weights, read_state_dict, save_model
    from model.config import DocSAMConfig, SwinConfig, TextEncoderConfig, variant_config
    from model.docsam import DocSAM
    from model.outputs import DocSAMOutput, StageOutput

_MODULES = {
    "CheckpointError": "model.checkpoint",
    "load_model": "model.checkpoint",
    "load_weights": "model.checkpoint",
    "read_state_dict": "model.checkpoint",
    "save_model": "model.checkpoint",
    "DocSAMConfig": "model.config",
    "SwinConfig": "model.config",
    "TextEncoderConfig": "model.config",
    "variant_config": "model.config",
    "DocSAM": "model.docsam",
    "DocSAMOutput": "model.outputs",
    "StageOutput": "model.outputs",
}

__all__ = [
    "CheckpointError",
    "DocSAM",
    "DocSAMConfig",
    "DocSAMOutput",
    "StageOutput",
    "SwinConfig",
    "TextEncoderConfig",
    "load_model",
    "load_weights",
    "read_state_dict",
    "save_model",
    "variant_config",
]


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])
