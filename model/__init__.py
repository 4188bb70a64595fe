"""DocSAM (CVPR 2025) as a PyTorch module that loads the official checkpoints unchanged.

Typical use::

    from model import load_model
    model = load_model("docsam_large_all_dataset.pth")          # variant detected from the weights
    out = model(pixel_values, class_names=[["table", "figure", "PubLayNet _background_"]] * n)
    out.last.instance_mask_logits, out.last.class_logits, out.last.boxes
"""

from model.checkpoint import CheckpointError, load_model, load_weights, read_state_dict, save_model
from model.config import DocSAMConfig, SwinConfig, TextEncoderConfig, variant_config
from model.docsam import DocSAM
from model.outputs import DocSAMOutput, StageOutput

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
