"""The query decoder: instance and semantic queries refined over 4 layers with query selection in between
(ARCHITECTURE §3.5–3.10). Every stage predicts instance masks, boxes, class logits and semantic masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from model.config import DocSAMConfig
from model.heads import ClassPredictor, MaskPredictor
from model.layers import LearnablePositionEmbedding2d, conv1x1, mlp3, resize_bilinear
from model.outputs import StageOutput
from model.query_selection import gather_rows, pad_rows, select_rows


class PackedAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter layout (packed q/k/v projection).

    `blocked` is a boolean mask broadcastable to (N, heads, L_q, L_k), True = may not attend. Rows blocked
    everywhere produce zeros before the output projection, as PyTorch 2.14's MultiheadAttention does.
    """

    def __init__(self, width: int, heads: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, width, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, blocked: torch.Tensor | None
    ) -> torch.Tensor:
        weight_q, weight_k, weight_v = self.in_proj_weight.chunk(3)
        bias_q, bias_k, bias_v = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        batch, length, width = query.shape

        def heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return F.linear(x, weight, bias).view(batch, -1, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(query, weight_q, bias_q),
            heads(key, weight_k, bias_k),
            heads(value, weight_v, bias_v),
            attn_mask=None if blocked is None else ~blocked,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class QueryFusionLayer(nn.Module):
    """Joint self-attention over instance + semantic queries: a post-norm encoder layer, ReLU FFN.

    Bias-free throughout (attention projections, FFN, LayerNorms), because the reference's subclass of
    `nn.TransformerEncoderLayer` passes its arguments positionally and `bias` receives False (§2.3.6).
    """

    def __init__(self, width: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = PackedAttention(width, heads, bias=False, dropout=dropout)
        self.linear1 = nn.Linear(width, feedforward, bias=False)
        self.linear2 = nn.Linear(feedforward, width, bias=False)
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, position: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        query = x + position
        attended = self.self_attn(query, query, x, padding[:, None, None, :])
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class GatedCrossAttentionLayer(nn.Module):
    """The fork's `TransformerDecoderLayer`: self-attention, gated cross-attention, the same self-attention
    (and norm1) applied a second time, SiLU FFN; post-norm, with biases (quirk Q-3).
    """

    def __init__(self, width: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = PackedAttention(width, heads, bias=True, dropout=dropout)
        self.multihead_attn = PackedAttention(width, heads, bias=True, dropout=dropout)
        self.cross_atten_gate = nn.Sequential(nn.Linear(width, width, bias=False), nn.Sigmoid())
        self.linear1 = nn.Linear(width, feedforward)
        self.linear2 = nn.Linear(feedforward, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def _self_attention(self, x: torch.Tensor, position: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        query = x + position
        return self.norm1(x + self.dropout(self.self_attn(query, query, x, padding[:, None, None, :])))

    def forward(
        self,
        x: torch.Tensor,
        position: torch.Tensor,
        padding: torch.Tensor,
        memory: torch.Tensor,
        memory_position: torch.Tensor,
        blocked: torch.Tensor,
    ) -> torch.Tensor:
        """`blocked` (N, 1, L, S): attention mask merged with the memory's key padding."""
        x = self._self_attention(x, position, padding)
        context = self.dropout(self.multihead_attn(x + position, memory + memory_position, memory, blocked))
        x = self.norm2(x + self.cross_atten_gate(x + context) * context)
        x = self._self_attention(x, position, padding)
        return self.norm3(x + self.dropout(self.linear2(self.dropout(F.silu(self.linear1(x))))))


class DecoderLayer(nn.Module):
    """Fusion → instance branch over 4 levels → semantic branch over 4 levels → fusion (§3.9)."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        hidden, feature = config.hidden_dim, config.feature_size
        heads, feedforward, dropout = (
            config.num_attention_heads,
            config.dim_feedforward,
            config.decoder_dropout,
        )
        self.query_fusion_encoder_1 = QueryFusionLayer(hidden, heads, feedforward, dropout)
        for branch in ("instance", "semantic"):
            setattr(self, f"{branch}_fc1", nn.Linear(hidden, feature))
            setattr(self, f"{branch}_pos_fc1", nn.Linear(hidden, feature))
            setattr(
                self,
                f"{branch}_decoder",
                nn.ModuleList(
                    GatedCrossAttentionLayer(feature, heads, feedforward, dropout) for _ in range(4)
                ),
            )
            setattr(self, f"{branch}_fc2", nn.Linear(feature, hidden))
            setattr(self, f"{branch}_pos_fc2", nn.Linear(feature, hidden))
        self.query_fusion_encoder_2 = QueryFusionLayer(hidden, heads, feedforward, dropout)

    def _branch(
        self,
        name: str,
        states: torch.Tensor,
        position: torch.Tensor,
        padding: torch.Tensor,
        memories: Sequence[torch.Tensor],
        memory_positions: Sequence[torch.Tensor],
        blocked: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = getattr(self, f"{name}_fc1")(states)
        position = getattr(self, f"{name}_pos_fc1")(position)
        for layer, memory, memory_position, level_blocked in zip(
            getattr(self, f"{name}_decoder"), memories, memory_positions, blocked, strict=True
        ):
            states = layer(states, position, padding, memory, memory_position, level_blocked)
        return getattr(self, f"{name}_fc2")(states), getattr(self, f"{name}_pos_fc2")(position)

    def forward(
        self,
        instances: torch.Tensor,
        semantics: torch.Tensor,
        instance_position: torch.Tensor,
        semantic_position: torch.Tensor,
        instance_padding: torch.Tensor,
        semantic_padding: torch.Tensor,
        memories: Sequence[torch.Tensor],
        memory_positions: Sequence[torch.Tensor],
        instance_blocked: Sequence[torch.Tensor],
        semantic_blocked: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count = instances.shape[1]
        padding = torch.cat([instance_padding, semantic_padding], 1)
        joint = self.query_fusion_encoder_1(
            torch.cat([instances, semantics], 1),
            torch.cat([instance_position, semantic_position], 1),
            padding,
        )
        instances, semantics = joint[:, :count], joint[:, count:]
        instances, instance_position = self._branch(
            "instance",
            instances,
            instance_position,
            instance_padding,
            memories,
            memory_positions,
            instance_blocked,
        )
        semantics, semantic_position = self._branch(
            "semantic",
            semantics,
            semantic_position,
            semantic_padding,
            memories,
            memory_positions,
            semantic_blocked,
        )
        joint = self.query_fusion_encoder_2(
            torch.cat([instances, semantics], 1),
            torch.cat([instance_position, semantic_position], 1),
            padding,
        )
        return joint[:, :count], joint[:, count:]


def dilate(logits: torch.Tensor, radius: int) -> torch.Tensor:
    """A (2r+1)×(2r+1) max filter, 'same' size. Done as a row pass then a column pass: max is separable,
    so the result is identical to one square max-pool at a fraction of the cost.
    """
    size = 2 * radius + 1
    rows = F.max_pool2d(logits, kernel_size=(1, size), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, kernel_size=(size, 1), stride=1, padding=(radius, 0))


def window_max(x: torch.Tensor, first: int, step: int, count: int, radius: int) -> torch.Tensor:
    """Max of x over [c - radius, c + radius] along the last axis for c = first + step·j, j < count."""
    left = radius - first
    right = first + step * (count - 1) + radius - (x.shape[-1] - 1)
    padded = F.pad(x, (max(left, 0), max(right, 0)), value=float("-inf"))
    if left < 0:
        padded = padded[..., -left:]
    return F.max_pool2d(padded, kernel_size=(1, 2 * radius + 1), stride=(1, step))[..., :count]


def level_logits(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """resize_bilinear(dilate(logits, s), (height, width)) with s = round(h / height), as the reference.

    When the map is exactly s times the level in both directions with s even (every 640-px window), each
    output cell reads the dilated map at two rows and two columns only (bilinear, align_corners=False, scale
    s: rows s·i + s/2 − 1 and s·i + s/2, weights ½). The max filter is then evaluated there alone and the
    2×2 samples are blended by the same interpolation routine — the identical result, without filtering
    the full map. Other sizes take the direct route.
    """
    h, w = logits.shape[-2:]
    scale = round(h / height)
    if scale < 2 or scale % 2 or (h, w) != (scale * height, scale * width):
        return resize_bilinear(dilate(logits, scale), (height, width))
    half = scale // 2

    def interleaved(x: torch.Tensor, count: int) -> torch.Tensor:
        pair = (window_max(x, half - 1, scale, count, scale), window_max(x, half, scale, count, scale))
        return torch.stack(pair, dim=-1).flatten(-2)

    columns = interleaved(logits, width)  # (..., h, 2·width)
    rows = interleaved(columns.transpose(-1, -2), height).transpose(-1, -2)  # (..., 2·height, 2·width)
    return resize_bilinear(rows, (height, width))


def attention_blocks(
    mask_logits: torch.Tensor | None,
    level_sizes: Sequence[tuple[int, int]],
    key_padding: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Masked-attention masks per level (§3.8) merged with the memory key padding → (N, 1, K, S_l) bool.

    Logits are dilated by a (2s+1) max filter (s = stride ratio to the level), resized bilinearly and
    blocked where sigmoid < 0.5; a query blocked everywhere is unblocked. Without logits (decoder layer 1,
    instance side) only the key padding blocks.
    """
    blocks = []
    for (height, width), padding in zip(level_sizes, key_padding, strict=True):
        if mask_logits is None:
            blocks.append(padding[:, None, None, :])
            continue
        blocked = (level_logits(mask_logits, height, width).sigmoid() < 0.5).flatten(2)
        blocked &= ~blocked.all(-1, keepdim=True)
        blocks.append((blocked | padding[:, None, :])[:, None])
    return blocks


class QueryDecoder(nn.Module):
    """Everything after the pixel decoder (the reference's `transformer_module.decoder`)."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        self.config = config
        hidden, feature, roi = config.hidden_dim, config.feature_size, config.roi_size
        self.position_embed_2dim = LearnablePositionEmbedding2d(config.position_grid, hidden)
        self.image_position_conv = conv1x1(hidden, feature)
        self.mask_position_conv = conv1x1(hidden, hidden)
        self.bbox_feat_projection = nn.ModuleList(mlp3(feature * roi * roi, hidden, hidden) for _ in range(4))
        self.multiscale_feat_fusion = mlp3(4 * hidden, hidden, hidden)
        self.instance_posi_feat_projection = mlp3(hidden * roi * roi, hidden, hidden)
        self.semantic_posi_feat_projection = mlp3(hidden, hidden, hidden)
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.semantic_mask_predictor = MaskPredictor(hidden)
        self.instance_mask_predictor = MaskPredictor(hidden)
        self.instance_bbox_predictor = mlp3(hidden, hidden, 4)
        self.class_predictor = ClassPredictor(hidden)

    def _pool(self, feature: torch.Tensor, boxes: torch.Tensor, scale: float) -> torch.Tensor:
        """RoIAlign of (N, Q, 4) boxes on (N, C, H, W) → (N, Q, C·roi²) flattened in (c, y, x) order."""
        batch, count = boxes.shape[:2]
        index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype).repeat_interleave(count)
        rois = torch.cat([index[:, None], boxes.reshape(-1, 4)], 1)
        pooled = roi_align(
            feature, rois, self.config.roi_size, spatial_scale=scale, sampling_ratio=-1, aligned=False
        )
        return pooled.reshape(batch, count, -1)

    def forward(
        self,
        levels: list[torch.Tensor],
        mask_features: torch.Tensor,
        pixel_mask: torch.Tensor,
        image_boxes: torch.Tensor | None,
        instances: torch.Tensor,
        boxes: torch.Tensor,
        semantics: torch.Tensor,
        semantic_padding: torch.Tensor,
        num_classes: list[int],
        isolate_batch: bool = False,
        forced_kept_index: Sequence[torch.Tensor] | None = None,
        all_stages: bool = True,
    ) -> list[StageOutput]:
        config = self.config
        batch, _, height, width = mask_features.shape
        regions = None if image_boxes is None else (image_boxes * 0.25).long()
        position = self.position_embed_2dim(batch, height, width, regions)
        mask_position = self.mask_position_conv(position)
        image_position = self.image_position_conv(position)
        level_sizes = [tuple(level.shape[-2:]) for level in levels]
        memory_positions = [
            resize_bilinear(image_position, size).flatten(2).transpose(1, 2) for size in level_sizes
        ]
        memories_maps = [
            level + resize_bilinear(image_position, size)
            for level, size in zip(levels, level_sizes, strict=True)
        ]
        memories = [level.flatten(2).transpose(1, 2) for level in memories_maps]
        key_padding = [(resize_bilinear(pixel_mask, size) < 0.5).flatten(1) for size in level_sizes]
        pixels = mask_features + mask_position
        semantic_pixels = self.semantic_mask_predictor.encode_pixels(pixels)
        instance_pixels = self.instance_mask_predictor.encode_pixels(pixels + mask_position)  # Pm twice
        semantic_position_global = self.semantic_posi_feat_projection(mask_position.mean(dim=(2, 3)))
        semantic_position = semantic_position_global[:, None].expand(-1, semantics.shape[1], -1)

        padding = torch.zeros(instances.shape[:2], dtype=torch.bool, device=instances.device)
        instance_masks: torch.Tensor | None = None
        semantic_masks: torch.Tensor | None = None
        class_logits: torch.Tensor | None = None
        kept_index: torch.Tensor | None = None
        stages: list[StageOutput] = []
        for stage in range(config.decoder_layers + 1):
            if stage > 0:
                if forced_kept_index is not None:
                    kept_index = forced_kept_index[stage - 1].to(instances.device)
                else:
                    kept_index = self._select(class_logits, boxes, padding, num_classes, stage, isolate_batch)
                padding = kept_index < 0
                instances = gather_rows(instances, kept_index)
                boxes = gather_rows(boxes, kept_index)
                instance_masks = None if instance_masks is None else gather_rows(instance_masks, kept_index)

            scales = [1.0 / (4 * 2 ** (3 - level)) for level in range(4)]
            pooled = [
                projection(self._pool(feature, boxes, scale))
                for projection, feature, scale in zip(
                    self.bbox_feat_projection, memories_maps, scales, strict=True
                )
            ]
            instances = 0.5 * instances + 0.5 * self.multiscale_feat_fusion(torch.cat(pooled, -1))
            instance_position = self.instance_posi_feat_projection(self._pool(mask_position, boxes, 0.25))

            if stage > 0:
                instances, semantics = self.decoder_layers[stage - 1](
                    instances,
                    semantics,
                    instance_position,
                    semantic_position,
                    padding,
                    semantic_padding,
                    memories,
                    memory_positions,
                    attention_blocks(instance_masks, level_sizes, key_padding),
                    attention_blocks(semantic_masks, level_sizes, key_padding),
                )
            semantic_masks = self.semantic_mask_predictor(semantics, semantic_pixels)
            if stage > 0:
                instance_masks = self.instance_mask_predictor(instances + instance_position, instance_pixels)
            boxes = (
                boxes + self.instance_bbox_predictor(instances + instance_position) * config.box_delta_scale
            )
            class_logits = self.class_predictor(instances, semantics)
            if not all_stages and stage < config.decoder_layers:
                continue
            stages.append(
                StageOutput(
                    instance_states=instances,
                    semantic_states=semantics,
                    instance_mask_logits=instance_masks if stage > 0 else None,
                    semantic_mask_logits=semantic_masks,
                    boxes=boxes,
                    class_logits=class_logits,
                    padding_mask=padding,
                    kept_index=kept_index,
                )
            )
        return stages

    def _select(
        self,
        class_logits: torch.Tensor,
        boxes: torch.Tensor,
        padding: torch.Tensor,
        num_classes: list[int],
        stage: int,
        isolate_batch: bool,
    ) -> torch.Tensor:
        config = self.config
        rows = [
            select_rows(
                class_logits[image].detach(),
                boxes[image].detach(),
                num_classes[image],
                config.selection_threshold(stage),
                config.min_num_queries,
                config.max_num_queries,
                config.selection_nms_iou,
                candidates=~padding[image] if isolate_batch else None,
            )
            for image in range(class_logits.shape[0])
        ]
        return pad_rows(rows)[0]
