"""DocSAM assembled: Swin → pixel decoder → mask features; class names → semantic queries; query decoder.

Input conventions, as the reference's: `pixel_values` are BGR, float, 0..255, never normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from model.backbone import SwinBackbone
from model.config import GROUP_NORM_GROUPS, DocSAMConfig
from model.decoder import QueryDecoder
from model.outputs import DocSAMOutput
from model.pixel_decoder import MaskFeatureFusion, PixelDecoder, UnusedFeaturePyramid
from model.text_encoder import TextEncoder


class DocSAM(nn.Module):
    def __init__(self, config: DocSAMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = SwinBackbone(config.backbone)
        self.pixel_decoder = PixelDecoder(config)
        self.unused_fpn = UnusedFeaturePyramid(config)
        self.mask_feature_fusion = MaskFeatureFusion(config)
        self.text_encoder = TextEncoder(config.text)
        self.semantic_query_projection = nn.Linear(config.text.hidden_size, config.hidden_dim)
        self.proposal_bboxes = nn.Embedding(config.num_queries, 4)
        self.instance_queries = nn.Embedding(config.num_queries, config.hidden_dim)
        self.instance_posembs = nn.Embedding(config.num_queries, config.hidden_dim)
        self.decoder = QueryDecoder(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        image_bboxes: torch.Tensor | None = None,
        class_names: Sequence[Sequence[str]] = (),
        isolate_batch: bool = False,
        all_stages: bool = True,
    ) -> DocSAMOutput:
        """Run the network on a batch.

        Args:
            pixel_values: (N, 3, H, W) BGR 0..255.
            pixel_mask: (N, 1, H, W), 1 = valid pixel; None = all valid.
            image_bboxes: (N, 4) int64 [l, t, r, b] valid rectangle in input pixels; None = whole input.
            class_names: one list per image, background prompt ("<domain> _background_") last.
            isolate_batch: False reproduces the reference exactly, including its coupling of images in a
                batch (rows padded by query selection stay live and can be selected again, so an image's
                result depends on its batch companions). True excludes those rows from selection, so every
                image gives the result it gives alone.
            all_stages: False keeps only the last stage in the output (inference), so earlier stages'
                mask logits are freed as soon as the next stage no longer needs them.
        """
        self.check_inputs(pixel_values, class_names, pixel_mask, image_bboxes)
        batch, _, height, width = pixel_values.shape
        if pixel_mask is None:
            pixel_mask = pixel_values.new_ones(batch, 1, height, width)
        pixel_mask = pixel_mask.to(pixel_values.dtype)

        features = self.backbone(pixel_values)
        levels = self.pixel_decoder(features, image_bboxes)
        mask_features = self.mask_feature_fusion(levels)

        text = self.embed_class_names(class_names)
        projection_dtype = self.semantic_query_projection.weight.dtype
        semantics = self.semantic_query_projection(pad_sequence(text, batch_first=True).to(projection_dtype))
        semantic_padding = pad_sequence(
            [embedding.new_zeros(len(embedding), dtype=torch.bool) for embedding in text],
            batch_first=True,
            padding_value=True,
        )

        instances = (self.instance_queries.weight + self.instance_posembs.weight)[None].expand(batch, -1, -1)
        boxes = self.initial_boxes(batch, pixel_mask.shape[-2:], image_bboxes)
        stages = self.decoder(
            levels,
            mask_features,
            pixel_mask,
            image_bboxes,
            instances,
            boxes,
            semantics,
            semantic_padding,
            isolate_batch=isolate_batch,
            all_stages=all_stages,
        )
        return DocSAMOutput(
            backbone_features=features,
            multi_scale_features=levels,
            mask_features=mask_features,
            text_embeddings=text,
            semantic_queries=semantics,
            stages=stages,
        )

    def check_inputs(
        self,
        pixel_values: torch.Tensor,
        class_names: Sequence[Sequence[str]],
        pixel_mask: torch.Tensor | None = None,
        image_bboxes: torch.Tensor | None = None,
    ) -> None:
        """Refuse misuse in words, before it meets a shape or dtype error deep inside the backbone (or, for
        a flat list of names, is read one letter per class; for a mask of another size or one rectangle for
        a batch, silently scales the proposals to the mask or gives every image the first's rectangle)."""
        if not isinstance(pixel_values, torch.Tensor):
            got = type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a tensor (N, 3, H, W) BGR, got {got}")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (N, 3, H, W) BGR, got shape {tuple(pixel_values.shape)}")
        weights = self.semantic_query_projection.weight.dtype
        autocast = torch.is_autocast_enabled(pixel_values.device.type)
        if not pixel_values.is_floating_point() or (pixel_values.dtype != weights and not autocast):
            raise ValueError(
                f"pixel_values must be BGR 0..255 in the weights' dtype ({weights}) or under torch.autocast, "
                f"got {pixel_values.dtype}"
            )
        if isinstance(class_names, str) or not all(
            not isinstance(names, str) and all(isinstance(name, str) for name in names)
            for names in class_names
        ):
            raise ValueError(
                "class_names must hold one list of names per image, e.g. [['table', 'X _background_']]"
            )
        self._check_size(pixel_values)
        if len(class_names) != pixel_values.shape[0]:
            raise ValueError(f"got {len(class_names)} class-name lists for {pixel_values.shape[0]} images")
        if any(len(names) < 2 for names in class_names):
            raise ValueError("every image needs at least one class name plus the background prompt")
        batch, _, height, width = pixel_values.shape
        _check_shape("pixel_mask", pixel_mask, (batch, 1, height, width), "1 = valid pixel")
        _check_shape("image_bboxes", image_bboxes, (batch, 4), "[l, t, r, b] per image")

    def _check_size(self, pixel_values: torch.Tensor) -> None:
        """Refuse a single image whose coarsest backbone level would be 1 x 1 pixel where a GroupNorm at that
        level has one channel per group (the pixel decoder's with `feature_size` 32, the mask-feature fusion
        branch's with `mask_feature_size` 64): that group would hold one value, which GroupNorm refuses deep
        inside the network. Wider ones (base, large) take any size."""
        backbone = self.config.backbone
        coarsest = backbone.patch_size * 2 ** (len(backbone.depths) - 1)  # the stride of the last level
        height, width = pixel_values.shape[-2:]
        narrowest = min(self.config.feature_size, self.config.mask_feature_size // 2)
        one_value = narrowest == GROUP_NORM_GROUPS and pixel_values.shape[0] == 1
        if one_value and max(height, width) <= coarsest:
            raise ValueError(
                f"a single image needs a side of more than {coarsest} px with this config (its stride-"
                f"{coarsest} level would be 1 x 1 pixel, too little for its GroupNorms of one channel "
                f"per group), got {height}x{width}"
            )

    def embed_class_names(self, class_names: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Mean-pooled MiniLM embeddings per image, one BERT call for all distinct names of the batch."""
        flat = [name for names in class_names for name in names]
        embeddings = self.text_encoder(flat)
        return list(embeddings.split([len(names) for names in class_names]))

    def initial_boxes(
        self, batch: int, size: tuple[int, int], image_bboxes: torch.Tensor | None
    ) -> torch.Tensor:
        """Learned proposals (cx, cy, w/4, h/4) as xyxy in input pixels of each valid rectangle."""
        proposals = self.proposal_bboxes.weight
        center, extent = proposals[:, :2], proposals[:, 2:] / self.config.proposal_wh_divisor
        unit = torch.cat([center - extent / 2, center + extent / 2], dim=1)  # (Q, 4) in [0, 1]-ish
        if image_bboxes is None:
            rect = unit.new_zeros(batch, 4)  # filled on the device: no host-to-device copy
            rect[:, 2], rect[:, 3] = size[1], size[0]
        else:
            rect = image_bboxes.to(unit.dtype)
        origin, span = rect[:, :2], rect[:, 2:] - rect[:, :2]
        return unit[None] * span.repeat(1, 2)[:, None] + origin.repeat(1, 2)[:, None]


def _check_shape(name: str, value: object, shape: tuple[int, ...], meaning: str) -> None:
    """Refuse an optional input (None: not given) that is not a tensor of `shape`."""
    if value is None:
        return
    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
    if got != shape:
        raise ValueError(f"{name} must be a tensor of shape {shape} ({meaning}), got {got}")
