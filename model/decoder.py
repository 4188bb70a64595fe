"""The query decoder: instance and semantic queries refined over 4 layers, with query selection in between.
Every stage predicts instance masks, boxes, class logits and semantic masks.

A forward pass reads as its stages: `prepare` (memories, pixel encodings and position features, computed
once), then per stage `select_queries`, `attention_masks` and `pool_box_features`, a `DecoderLayer`, and
`predict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import MemoryLevel, PackedAttention
from model.attention_masks import attention_allowed
from model.config import DocSAMConfig
from model.heads import ClassPredictor, MaskPredictor, PixelEncoding
from model.layers import LearnablePositionEmbedding2d, conv1x1, mlp3, resize_bilinear
from model.outputs import StageOutput
from model.query_selection import gather_rows, select_queries
from model.roi_align import TokenMap, roi_align_tokens


def memory_levels(config: DocSAMConfig) -> int:
    """Feature levels the decoder attends to: the pixel decoder's deformable levels and its stride-4 level."""
    return config.pixel_decoder_levels + 1


class Queries(NamedTuple):
    """One query set entering a decoder layer."""

    states: torch.Tensor  # (N, K, D)
    position: torch.Tensor  # (N, K, D)
    padding: torch.Tensor  # (N, K) bool, True = batch-padding row (never attended to as a key)


class QueryFusionLayer(nn.Module):
    """Joint self-attention over instance + semantic queries: a post-norm encoder layer, ReLU FFN.

    Bias-free throughout (attention projections, FFN, LayerNorms), because the reference's subclass of
    `nn.TransformerEncoderLayer` passes its arguments positionally and `bias` receives False.
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
        attended = self.self_attn(query, query, x, ~padding[:, None, None, :])
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class GatedCrossAttentionLayer(nn.Module):
    """The fork's `TransformerDecoderLayer`: self-attention, gated cross-attention, the same self-attention
    (and norm1) applied a second time, SiLU FFN; post-norm, with biases.
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

    def _self_attention(
        self, x: torch.Tensor, position: torch.Tensor, keys_allowed: torch.Tensor
    ) -> torch.Tensor:
        query = x + position
        return self.norm1(x + self.dropout(self.self_attn(query, query, x, keys_allowed)))

    def forward(
        self,
        x: torch.Tensor,
        position: torch.Tensor,
        keys_allowed: torch.Tensor,
        memory: MemoryLevel,
        memory_allowed: torch.Tensor,
    ) -> torch.Tensor:
        """`keys_allowed` (N, 1, 1, K): the query padding as self-attention keys; `memory_allowed`
        (N, 1, K or 1, S): the attention mask merged with the memory's padding."""
        x = self._self_attention(x, position, keys_allowed)
        context = self.dropout(self.multihead_attn.attend_to_memory(x + position, memory, memory_allowed))
        x = self.norm2(x + self.cross_atten_gate(x + context) * context)
        x = self._self_attention(x, position, keys_allowed)
        return self.norm3(x + self.dropout(self.linear2(self.dropout(F.silu(self.linear1(x))))))


class DecoderBranch(nn.Module):
    """One query set's pass over the memories: to the feature width, one gated cross-attention layer per
    level (coarsest first), back to the hidden width. Positions go through their own linear maps.

    The reference names these parameters `{instance,semantic}_fc1`, `_pos_fc1`, `_decoder.<level>`, `_fc2`,
    `_pos_fc2`; `model.checkpoint` maps them.
    """

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        hidden, feature = config.hidden_dim, config.feature_size
        heads, feedforward, dropout = (
            config.num_attention_heads,
            config.dim_feedforward,
            config.decoder_dropout,
        )
        self.fc1 = nn.Linear(hidden, feature)
        self.pos_fc1 = nn.Linear(hidden, feature)
        self.layers = nn.ModuleList(
            GatedCrossAttentionLayer(feature, heads, feedforward, dropout)
            for _ in range(memory_levels(config))
        )
        self.fc2 = nn.Linear(feature, hidden)
        self.pos_fc2 = nn.Linear(feature, hidden)

    def forward(
        self, queries: Queries, memories: Sequence[MemoryLevel], allowed: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (states, position), both (N, K, hidden)."""
        states, position = self.fc1(queries.states), self.pos_fc1(queries.position)
        keys_allowed = ~queries.padding[:, None, None, :]
        for layer, memory, level_allowed in zip(self.layers, memories, allowed, strict=True):
            states = layer(states, position, keys_allowed, memory, level_allowed)
        return self.fc2(states), self.pos_fc2(position)


class DecoderLayer(nn.Module):
    """Fusion → instance branch over the levels → semantic branch over the levels → fusion ."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        hidden, heads = config.hidden_dim, config.num_attention_heads
        feedforward, dropout = config.dim_feedforward, config.decoder_dropout
        self.query_fusion_encoder_1 = QueryFusionLayer(hidden, heads, feedforward, dropout)
        self.instance = DecoderBranch(config)
        self.semantic = DecoderBranch(config)
        self.query_fusion_encoder_2 = QueryFusionLayer(hidden, heads, feedforward, dropout)

    def forward(
        self,
        instances: Queries,
        semantics: Queries,
        memories: Sequence[MemoryLevel],
        instance_allowed: Sequence[torch.Tensor],
        semantic_allowed: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (instance states, semantic states). The branches' transformed positions feed the second fusion
        only; the next stage recomputes positions from the boxes."""
        count = instances.states.shape[1]
        padding = torch.cat([instances.padding, semantics.padding], 1)
        joint = self.query_fusion_encoder_1(
            torch.cat([instances.states, semantics.states], 1),
            torch.cat([instances.position, semantics.position], 1),
            padding,
        )
        instance_states, instance_position = self.instance(
            instances._replace(states=joint[:, :count]), memories, instance_allowed
        )
        semantic_states, semantic_position = self.semantic(
            semantics._replace(states=joint[:, count:]), memories, semantic_allowed
        )
        joint = self.query_fusion_encoder_2(
            torch.cat([instance_states, semantic_states], 1),
            torch.cat([instance_position, semantic_position], 1),
            padding,
        )
        return joint[:, :count], joint[:, count:]


class DecoderContext(NamedTuple):
    """What every stage reads: computed once per forward pass from the pixel-level features."""

    memories: list[MemoryLevel]  # coarsest level first
    # What RoIAlign pools: the memory values of every level (strides 32, 16, 8, 4), then the position
    # features of the stride-4 map ("Pm").
    box_maps: list[TokenMap]
    semantic_pixels: PixelEncoding  # pixel side of the semantic mask head
    instance_pixels: PixelEncoding  # pixel side of the instance mask head
    semantic_position: torch.Tensor  # (N, 1, D): shared by every semantic query


class QueryDecoder(nn.Module):
    """Everything after the pixel decoder (the reference's `transformer_module.decoder`)."""

    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        self.config = config
        hidden, feature, roi = config.hidden_dim, config.feature_size, config.roi_size
        self.position_embed_2dim = LearnablePositionEmbedding2d(config.position_grid, hidden)
        self.image_position_conv = conv1x1(hidden, feature)
        self.mask_position_conv = conv1x1(hidden, hidden)
        self.bbox_feat_projection = nn.ModuleList(
            mlp3(feature * roi * roi, hidden, hidden) for _ in range(memory_levels(config))
        )
        self.multiscale_feat_fusion = mlp3(memory_levels(config) * hidden, hidden, hidden)
        self.instance_posi_feat_projection = mlp3(hidden * roi * roi, hidden, hidden)
        self.semantic_posi_feat_projection = mlp3(hidden, hidden, hidden)
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.semantic_mask_predictor = MaskPredictor(hidden)
        self.instance_mask_predictor = MaskPredictor(hidden)
        self.instance_bbox_predictor = mlp3(hidden, hidden, 4)
        self.class_predictor = ClassPredictor(hidden)

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
        isolate_batch: bool = False,
        all_stages: bool = True,
    ) -> list[StageOutput]:
        """Stage 0 predicts from the initial queries; stage s ≥ 1 selects queries, runs decoder layer s and
        predicts. `all_stages=False` returns the last stage only (earlier mask logits are freed as soon as the
        next stage has read them)."""
        context = self.prepare(
            levels, mask_features, pixel_mask, image_boxes, instances.shape[1], semantics.shape[1]
        )
        semantic_position = context.semantic_position.expand_as(semantics)
        padding = torch.zeros(instances.shape[:2], dtype=torch.bool, device=instances.device)
        instances, instance_position = self.pool_box_features(context, instances, boxes)
        latest = self.predict(context, instances, instance_position, semantics, boxes, padding, None)
        stages = [latest] if all_stages else []
        for stage, layer in enumerate(self.decoder_layers, start=1):
            kept_index = self.select_queries(
                latest.class_logits, latest.boxes, padding, semantic_padding, stage, isolate_batch
            )
            padding = kept_index < 0
            instance_allowed = self.attention_masks(context, latest.instance_mask_logits, kept_index)
            semantic_allowed = self.attention_masks(context, latest.semantic_mask_logits)
            instances = gather_rows(latest.instance_states, kept_index)
            boxes = gather_rows(latest.boxes, kept_index)
            del latest  # unless returned, the previous stage's mask logits are freed here
            instances, instance_position = self.pool_box_features(context, instances, boxes)
            instances, semantics = layer(
                Queries(instances, instance_position, padding),
                Queries(semantics, semantic_position, semantic_padding),
                context.memories,
                instance_allowed,
                semantic_allowed,
            )
            del instance_allowed, semantic_allowed  # not held beside the next stage's logits and masks
            latest = self.predict(
                context, instances, instance_position, semantics, boxes, padding, kept_index
            )
            if all_stages:
                stages.append(latest)
        return stages if all_stages else [latest]

    def prepare(
        self,
        levels: list[torch.Tensor],
        mask_features: torch.Tensor,
        pixel_mask: torch.Tensor,
        image_boxes: torch.Tensor | None,
        instance_queries: int,
        semantic_queries: int,
    ) -> DecoderContext:
        """Memories, mask-head pixel encodings and position features, shared by every stage. The query
        counts decide each mask head's order of work (`MaskPredictor.encode_pixels`)."""
        batch, _, height, width = mask_features.shape
        regions = None if image_boxes is None else (image_boxes * 0.25).long()
        mask_position = self.position_embed_2dim(batch, height, width, regions, self.mask_position_conv[0])
        image_position = self.position_embed_2dim(batch, height, width, regions, self.image_position_conv[0])
        memories = []
        for level in levels:
            size = tuple(level.shape[-2:])
            level_position = resize_bilinear(image_position, size)
            values = level + level_position
            memories.append(
                MemoryLevel(
                    keys=_tokens(values + level_position),
                    values=_tokens(values),
                    padding=(resize_bilinear(pixel_mask, size) < 0.5).flatten(1),
                    size=size,
                )
            )
        pixels = mask_features + mask_position
        predictions = len(self.decoder_layers) + 1  # the mask heads predict at every stage
        finest = len(memories) - 1
        box_maps = [
            TokenMap(memory.values, memory.size, 1 / (4 * 2 ** (finest - level)))  # strides 32, 16, 8, 4
            for level, memory in enumerate(memories)
        ]
        box_maps.append(TokenMap(_tokens(mask_position), (height, width), 0.25))
        return DecoderContext(
            memories=memories,
            box_maps=box_maps,
            semantic_pixels=self.semantic_mask_predictor.encode_pixels(pixels, semantic_queries, predictions),
            # The reference adds the mask position a second time on the instance side.
            instance_pixels=self.instance_mask_predictor.encode_pixels(
                pixels + mask_position, instance_queries, predictions
            ),
            semantic_position=self.semantic_posi_feat_projection(mask_position.mean(dim=(2, 3)))[:, None],
        )

    def select_queries(
        self,
        class_logits: torch.Tensor,
        boxes: torch.Tensor,
        padding: torch.Tensor,
        class_padding: torch.Tensor,
        stage: int,
        isolate_batch: bool,
    ) -> torch.Tensor:
        """Rows of the previous stage that enter stage `stage`: (N, K), -1 = batch padding. Tests replace this
        method to force the reference's choice at near-ties."""
        config = self.config
        return select_queries(
            class_logits,
            boxes,
            class_padding,
            config.selection_threshold(stage),
            config.min_num_queries,
            config.max_num_queries,
            config.selection_nms_iou,
            candidates=~padding if isolate_batch else None,
        )

    def pool_box_features(
        self, context: DecoderContext, instances: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the instance states half and half with RoIAlign features of their boxes on every level, and
        pool their position features from the mask position map → (states, position), (N, K, D) each."""
        batch, count = boxes.shape[:2]
        image = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)[:, None, None]
        rois = torch.cat([image.expand(-1, count, 1), boxes], -1).flatten(0, 1)
        *levels, position = roi_align_tokens(context.box_maps, rois, self.config.roi_size)
        projected = [
            _project_pooled(projection, level)
            for projection, level in zip(self.bbox_feat_projection, levels, strict=True)
        ]
        fused = self.multiscale_feat_fusion(torch.cat(projected, -1)).view(batch, count, -1)
        position = _project_pooled(self.instance_posi_feat_projection, position)
        return 0.5 * instances + 0.5 * fused, position.view(batch, count, -1)

    def attention_masks(
        self,
        context: DecoderContext,
        mask_logits: torch.Tensor | None,
        kept_index: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per memory level, where each query may attend in the next layer, from its previous mask logits
        (rows following `kept_index` when the queries were just selected)."""
        return attention_allowed(
            mask_logits,
            [memory.padding for memory in context.memories],
            [memory.size for memory in context.memories],
            rows=kept_index,
        )

    def predict(
        self,
        context: DecoderContext,
        instances: torch.Tensor,
        instance_position: torch.Tensor,
        semantics: torch.Tensor,
        boxes: torch.Tensor,
        padding: torch.Tensor,
        kept_index: torch.Tensor | None,
    ) -> StageOutput:
        """The heads. Boxes move by the box head's deltas; instance masks exist from stage 1 on."""
        located = instances + instance_position
        instance_masks = None
        if kept_index is not None:
            instance_masks = self.instance_mask_predictor(located, context.instance_pixels)
        return StageOutput(
            instance_states=instances,
            semantic_states=semantics,
            instance_mask_logits=instance_masks,
            semantic_mask_logits=self.semantic_mask_predictor(semantics, context.semantic_pixels),
            boxes=boxes + self.instance_bbox_predictor(located) * self.config.box_delta_scale,
            class_logits=self.class_predictor(instances, semantics),
            padding_mask=padding,
            kept_index=kept_index,
        )


def _project_pooled(projection: nn.Sequential, pooled: torch.Tensor) -> torch.Tensor:
    """A box-feature MLP (`mlp3`) on pooled features (R, bins, C), whose first layer reads them in the
    reference's (channel, y, x) order: its weight's columns are reordered to the pooled (y, x, channel) order
    instead, a far smaller copy than transposing the features."""
    first = projection[0][0]
    channels = pooled.shape[-1]
    weight = first.weight.unflatten(1, (channels, -1)).transpose(1, 2).flatten(1)
    hidden = projection[0][1:](F.linear(pooled.flatten(1), weight, first.bias))
    return projection[1:](hidden)


def _tokens(level: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) → (N, H·W, D), contiguous: row-major pixel tokens."""
    return level.flatten(2).transpose(1, 2).contiguous()
