"""Starting weights for training: the reference's fresh initialisation, Mask2Former COCO and MiniLM weights.

The reference builds `Mask2FormerForUniversalSegmentation.from_pretrained(<HF COCO panoptic folder>)`, so
transformers applies `Mask2FormerPreTrainedModel._init_weights` to everything, then copies the checkpoint's
Swin backbone and deformable pixel-decoder encoder over it; the text encoder holds all-MiniLM-L6-v2
(docs/design.md, "reference initialisation and schedule"). `initialise` reproduces the net effect of those
init rules on this package's modules; `load_mask2former` copies exactly the entries transformers copies
(`MASK2FORMER_PREFIXES`), renamed from the transformers checkpoint names (`model.pixel_level_module...`);
`load_text_encoder` copies MiniLM.

Unlike the reference's `ignore_mismatched_sizes=True` loader, a Mask2Former checkpoint that lacks one of
those entries or has another shape is an error (a Swin-L checkpoint for a Swin-B model would otherwise
silently train from random backbone weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from model.checkpoint import CheckpointError, misfit, to_model_keys
from model.decoder import PackedAttention
from model.docsam import DocSAM

# The entries transformers copies from the COCO checkpoint (Swin backbone, deformable pixel-decoder encoder
# with its input projections and level embeddings), in this package's names.
MASK2FORMER_PREFIXES = (
    "backbone.",
    "pixel_decoder.level_embed",
    "pixel_decoder.input_projections.",
    "pixel_decoder.encoder.layers.",
)


@torch.no_grad()
def initialise(model: DocSAM) -> None:
    """Fresh weights for every parameter outside the text encoder, as `_init_weights` leaves them.

    * Conv2d / Linear: weight N(0, init_std), bias 0 (everywhere, the deformable attention included).
    * Embedding: xavier-uniform inside the pixel decoder (its position tables); elsewhere N(0, init_std),
      except 4-wide tables (the proposal boxes) U(0, 1).
    * Packed attention projections (`nn.MultiheadAttention`'s own init): xavier-uniform, bias 0.
    * LayerNorm / GroupNorm: weight 1, bias 0; pixel-decoder `level_embed` and Swin relative-position
      tables: 0.

    Draws from torch's global generator. Raises RuntimeError if a parameter is covered by no rule (the
    module tree changed without this function).
    """
    std = model.config.init_std  # the config's, as `_init_weights` draws with
    done: set[int] = set()
    for name, module in model.named_modules():
        top = name.split(".")[0]
        if top == "text_encoder":
            continue
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, std)
            _zero(module.bias)
        elif isinstance(module, nn.Embedding):
            if top == "pixel_decoder":
                nn.init.xavier_uniform_(module.weight)
            elif module.embedding_dim == 4:
                nn.init.uniform_(module.weight, 0.0, 1.0)
            else:
                nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, PackedAttention):
            nn.init.xavier_uniform_(module.in_proj_weight)
            _zero(module.in_proj_bias)
        elif isinstance(module, nn.LayerNorm | nn.GroupNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            _zero(module.bias)
        elif hasattr(module, "relative_position_bias_table"):  # Swin's relative-position bias
            nn.init.zeros_(module.relative_position_bias_table)
        else:
            continue
        done.update(id(parameter) for parameter in module.parameters(recurse=False))
    nn.init.zeros_(model.pixel_decoder.level_embed)
    done.add(id(model.pixel_decoder.level_embed))
    missed = [
        name
        for name, parameter in model.named_parameters()
        if id(parameter) not in done and not name.startswith("text_encoder.")
    ]
    if missed:
        raise RuntimeError(f"no initialisation rule for {', '.join(missed)}")


def _zero(parameter: torch.Tensor | None) -> None:
    if parameter is not None:
        nn.init.zeros_(parameter)


def mask2former_entries(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `MASK2FORMER_PREFIXES` entries of a transformers `Mask2FormerForUniversalSegmentation` state dict,
    renamed.

    transformers names them `model.pixel_level_module.…`; the reference's DocSAM wrapper adds
    `mask2former.` in front, which `to_model_keys` maps onto this package's modules.
    """
    prefixed = {f"mask2former.{key}": value for key, value in state.items() if key.startswith("model.")}
    return {
        key: value for key, value in to_model_keys(prefixed).items() if key.startswith(MASK2FORMER_PREFIXES)
    }


@torch.no_grad()
def load_mask2former(model: DocSAM, state: Mapping[str, torch.Tensor], source: str = "Mask2Former") -> int:
    """Copy the Swin backbone and pixel-decoder encoder of a COCO Mask2Former checkpoint; returns the count.

    Raises CheckpointError when one of the expected entries is missing or has another shape.
    """
    entries = mask2former_entries(state)
    expected = {
        key: value for key, value in model.state_dict().items() if key.startswith(MASK2FORMER_PREFIXES)
    }
    missing = [key for key in expected if key not in entries]
    mismatched = [
        f"{key} {tuple(entries[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if key in entries and entries[key].shape != value.shape
    ]
    if missing or mismatched:
        details = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("wrong shape", mismatched))
            if keys
        )
        raise CheckpointError(f"{source}: not a Mask2Former checkpoint for this backbone ({details})")
    targets = model.state_dict()
    for key, value in entries.items():
        if key in expected:
            targets[key].copy_(value)
    return sum(key in expected for key in entries)


@torch.no_grad()
def load_text_encoder(model: DocSAM, state: Mapping[str, torch.Tensor], source: str = "text encoder") -> None:
    """Copy an all-MiniLM-L6-v2 `BertModel` state dict (keys with or without `bert.`) strictly."""
    cleaned = {
        "bert." + key.removeprefix("bert."): value
        for key, value in state.items()
        if not key.endswith("position_ids")
    }
    problems = misfit(model.text_encoder.state_dict(), cleaned)
    if problems:
        raise CheckpointError(f"{source}: not an all-MiniLM-L6-v2 BERT state dict ({problems})")
    model.text_encoder.load_state_dict(cleaned, strict=True)  # through TextEncoder: clears its cache
