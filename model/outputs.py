"""What a DocSAM forward pass returns: every stage's predictions plus the pixel-level features."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StageOutput:
    """Predictions of one decoder stage (stage 0 = the initial queries, stages 1..L after each layer).

    Shapes use N = batch, Q = query rows of this stage (the batch maximum of kept queries; shorter images are
    zero-padded, see `padding_mask`), C = class names of the longest class list (shorter lists are padded),
    h, w = ceil(H/4), ceil(W/4).
    """

    instance_states: torch.Tensor  # (N, Q, D)
    semantic_states: torch.Tensor  # (N, C, D)
    instance_mask_logits: torch.Tensor | None  # (N, Q, h, w); None at stage 0
    semantic_mask_logits: torch.Tensor  # (N, C, h, w)
    boxes: torch.Tensor  # (N, Q, 4) xyxy in input pixels, not clamped
    class_logits: torch.Tensor  # (N, Q, C); column c = class_names[n][c], padded columns must be ignored
    padding_mask: torch.Tensor  # (N, Q) bool, True = batch-padding row
    kept_index: torch.Tensor | None  # (N, Q) int64: source row in the previous stage, -1 = padding; None at 0


@dataclass
class DocSAMOutput:
    backbone_features: list[torch.Tensor]  # Swin stages 1..4, strides 4, 8, 16, 32
    multi_scale_features: list[torch.Tensor]  # pixel decoder, strides 32, 16, 8, 4
    mask_features: torch.Tensor  # (N, D, h, w)
    text_embeddings: list[torch.Tensor]  # per image (C_n, text_hidden): mean-pooled, before projection
    semantic_queries: torch.Tensor  # (N, C, D) projected text embeddings (padded rows = projection bias)
    stages: list[StageOutput] = field(default_factory=list)

    @property
    def last(self) -> StageOutput:
        return self.stages[-1]
