"""Configuration of the DocSAM network: dataclasses, the named variants, and JSON in/out.

The JSON format is the one of the reference parity fixture `tiny-config.json` (sections
`swin_backbone_config`, `mask2former_config`, `docsam_config_attributes`, `hard_coded_in_reference`), so a
configuration dumped from the reference implementation loads unchanged. Unknown keys are ignored there,
because the reference's config carries many fields DocSAM never reads; fields it reads but fixes (`_FIXED`)
must have the values it builds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_args, get_origin, get_type_hints

GROUP_NORM_GROUPS = 32
"""The groups of every GroupNorm in the pixel decoder and the mask heads (the reference's fixed 32)."""

TOKENIZER_VOCAB_SIZE = 30522
"""Ids of the all-MiniLM-L6-v2 WordPiece tokenizer in `model/tokenizer` (a test reads it from the file)."""

PIXEL_DECODER_LEVELS = 3
"""Backbone levels the deformable encoder reads (strides 8 to 32); the mask-feature fusion adds stride 4."""


def _check_types(config: object) -> None:
    """Refuse a field whose value is not of its declared type.

    JSON gives any type (`"12"`, `null`, a list); without this a wrong one fails only deep inside torch or
    transformers, as an internal error. An int is a valid float; a bool is never a number.
    """
    for name, expected in _field_types(type(config)).items():
        value = getattr(config, name)
        if not _is_instance(value, expected):
            raise ValueError(f"{name} must be {_type_name(expected)}, got {value!r}")


@cache
def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_instance(value: object, expected: Any) -> bool:
    if get_origin(expected) is tuple:
        return isinstance(value, tuple) and all(_is_instance(item, get_args(expected)[0]) for item in value)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


_TYPE_NAMES: dict[Any, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
}


def _type_name(expected: Any) -> str:
    if get_origin(expected) is tuple:
        return f"a list of {_TYPE_NAMES[get_args(expected)[0]][1]}"
    return _TYPE_NAMES[expected][0] if expected in _TYPE_NAMES else expected.__name__


def _check(config: object, requirement: str, accepts: Callable[[Any], bool], *names: str) -> None:
    """Refuse a field (or any item of a tuple field) that `accepts` refuses, saying it must be
    `requirement`. Comparisons are written so that NaN, which JSON also gives, fails them."""
    for name in names:
        value = getattr(config, name)
        if not all(accepts(item) for item in (value if isinstance(value, tuple) else (value,))):
            raise ValueError(f"{name} must be {requirement}, got {_json(value)}")


def _at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda value: value >= minimum


def _above_zero(value: float) -> bool:
    return 0 < value < math.inf


def _zero_or_more(value: float) -> bool:
    return 0 <= value < math.inf


def _probability(value: float) -> bool:
    return 0 <= value <= 1


def _check_heads(width_name: str, width: int, heads_name: str, heads: int) -> None:
    """Attention splits a width evenly over its heads."""
    if width % heads:
        raise ValueError(f"{width_name} ({width}) must be a multiple of {heads_name} ({heads})")


def _json(value: object) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


@dataclass(frozen=True)
class SwinConfig:
    """The Swin backbone (transformers `SwinBackbone` semantics, four stages, all four returned)."""

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    patch_size: int = 4
    num_channels: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    drop_path_rate: float = 0.3  # stochastic depth, training only
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("depths and num_heads must list the Swin backbone's four stages")
        _check(self, "at least 1", _at_least(1), "embed_dim", "depths", "num_heads", "window_size")
        if self.patch_size != 4:  # the stride of the first of the fixed `feature_strides` [4, 8, 16, 32]
            raise ValueError(
                f"patch_size must be 4 (the only value DocSAM builds: its decoder reads the features at "
                f"strides 4 to 32), got {self.patch_size}"
            )
        if self.num_channels != 3:
            raise ValueError(f"num_channels must be 3 (pages enter in colour), got {self.num_channels}")
        _check(self, "a number above 0", _above_zero, "mlp_ratio", "layer_norm_eps")
        _check(
            self,
            "between 0 and 1",
            _probability,
            "drop_path_rate",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
        )
        for stage, (width, heads) in enumerate(zip(self.stage_channels, self.num_heads, strict=True)):
            _check_heads(f"Swin stage {stage + 1}'s width", width, f"num_heads[{stage}]", heads)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**stage for stage in range(len(self.depths)))


@dataclass(frozen=True)
class TextEncoderConfig:
    """all-MiniLM-L6-v2 run as a plain BERT (mean pooling, no normalisation)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    def __post_init__(self) -> None:
        _check_types(self)
        _check(
            self,
            "at least 1",
            _at_least(1),
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        )
        if self.vocab_size < TOKENIZER_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be at least {TOKENIZER_VOCAB_SIZE} (the ids of the WordPiece tokenizer "
                f"shipped in model/tokenizer), got {self.vocab_size}"
            )
        _check(self, "a number above 0", _above_zero, "layer_norm_eps")
        _check(self, "between 0 and 1", _probability, "hidden_dropout_prob", "attention_probs_dropout_prob")
        _check_heads("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)


@dataclass(frozen=True)
class DocSAMConfig:
    """Every size and constant of the network. Defaults are DocSAM-Base."""

    backbone: SwinConfig = field(default_factory=SwinConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    feature_size: int = 256  # pixel decoder width (and of the decoder's cross-attention)
    mask_feature_size: int = 256  # width of the stride-4 mask features; must equal hidden_dim
    hidden_dim: int = 256  # query width
    encoder_layers: int = 6  # deformable pixel-decoder layers
    encoder_feedforward_dim: int = 1024
    decoder_layers: int = 4  # query decoder layers; prediction stages = decoder_layers + 1
    num_attention_heads: int = 8
    dim_feedforward: int = 2048  # FFN of the query decoder and fusion layers
    dropout: float = 0.0  # pixel-decoder dropout
    decoder_dropout: float = 0.1  # nn.Transformer*Layer default of the reference (training only)
    num_queries: int = 900
    # Query selection keeps the best min(min_num_queries, queries) when too few pass its threshold, before
    # its NMS, and at most max_num_queries after it: as in the reference, neither bound need be below
    # num_queries, and min_num_queries may exceed max_num_queries.
    min_num_queries: int = 100
    max_num_queries: int = 900
    # Constants the reference hard-codes.
    pixel_decoder_levels: int = PIXEL_DECODER_LEVELS
    deformable_points: int = 4
    position_grid: int = 256
    roi_size: int = 7
    selection_nms_iou: float = 0.9
    selection_base_threshold: float = 0.01  # stage s keeps scores > base / 2**(decoder_layers - s)
    box_delta_scale: float = 100.0
    proposal_wh_divisor: float = 4.0
    # Standard deviation of the normal draws of a fresh initialisation (the reference's `_init_weights`).
    init_std: float = 0.02
    # Loss weights (substring-matched on loss names, as in the reference).
    class_weight: float = 1.0
    sml1_weight: float = 1.0
    diou_weight: float = 1.0
    dice_weight: float = 5.0
    focal_weight: float = 5.0
    no_object_weight: float = 0.1
    # Hungarian matcher: weights of the class cost, the mask cost (mean of dice and focal) and the box cost
    # (mean of smooth-L1 and DIoU), each part min-max normalised first.
    class_cost: float = 1.0
    mask_cost: float = 2.0
    box_cost: float = 2.0

    def __post_init__(self) -> None:
        _check_types(self)
        _check(
            self,
            "at least 1",
            _at_least(1),
            "feature_size",
            "hidden_dim",
            "encoder_feedforward_dim",
            "decoder_layers",
            "num_attention_heads",
            "dim_feedforward",
            "num_queries",
            "min_num_queries",
            "max_num_queries",
            "deformable_points",
            "position_grid",
            "roi_size",
        )
        if self.pixel_decoder_levels != PIXEL_DECODER_LEVELS:
            raise ValueError(
                f"pixel_decoder_levels must be {PIXEL_DECODER_LEVELS}, as in the reference, "
                f"got {self.pixel_decoder_levels}"
            )
        _check(self, "at least 0", _at_least(0), "encoder_layers")
        _check(self, "between 0 and 1", _probability, "dropout", "decoder_dropout", "selection_nms_iou")
        _check(self, "a number above 0", _above_zero, "proposal_wh_divisor", "box_delta_scale")
        _check(
            self,
            "a number of at least 0",
            _zero_or_more,
            "selection_base_threshold",
            "init_std",
            "class_weight",
            "sml1_weight",
            "diou_weight",
            "dice_weight",
            "focal_weight",
            "no_object_weight",
            "class_cost",
            "mask_cost",
            "box_cost",
        )
        for name in ("hidden_dim", "feature_size"):
            _check_heads(name, getattr(self, name), "num_attention_heads", self.num_attention_heads)
        if self.mask_feature_size != self.hidden_dim:
            raise ValueError(
                "mask_feature_size must equal hidden_dim (the mask heads take queries and pixels)"
            )
        # GroupNorms normalise the feature_size-wide pixel-decoder maps and, in the mask-feature fusion,
        # branches mask_feature_size // 2 wide.
        for name, multiple in (
            ("feature_size", GROUP_NORM_GROUPS),
            ("mask_feature_size", 2 * GROUP_NORM_GROUPS),
        ):
            if getattr(self, name) % multiple:
                raise ValueError(
                    f"{name} must be a multiple of {multiple} (GroupNorm with {GROUP_NORM_GROUPS} groups), "
                    f"got {getattr(self, name)}"
                )

    def selection_threshold(self, stage: int) -> float:
        """Score threshold of the query selection that opens prediction stage `stage` (1-based)."""
        return self.selection_base_threshold / 2 ** (self.decoder_layers - stage)

    # --- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The reference fixture layout (see module docstring)."""
        flat = asdict(self)
        backbone = flat.pop("backbone")
        text = flat.pop("text")
        hard_coded = {name: flat.pop(name) for name in _HARD_CODED}
        query_selection = {name: flat.pop(name) for name in ("min_num_queries", "max_num_queries")}
        return {
            "swin_backbone_config": {
                **backbone,
                "depths": list(backbone["depths"]),
                "num_heads": list(backbone["num_heads"]),
            },
            "mask2former_config": flat,
            "docsam_config_attributes": {"query_selection": True, **query_selection},
            "hard_coded_in_reference": hard_coded,
            "text_encoder_config": text,
        }

    @classmethod
    def from_dict(cls, data: object) -> DocSAMConfig:
        """Build from the JSON layout; raises ValueError or TypeError for anything not a usable config."""
        if not isinstance(data, dict) or not {"swin_backbone_config", "mask2former_config"} <= data.keys():
            raise ValueError("a DocSAM config needs 'swin_backbone_config' and 'mask2former_config' sections")
        _check_fixed(data)
        backbone = _pick(SwinConfig, _section(data, "swin_backbone_config"))
        for name in ("depths", "num_heads"):
            if name in backbone:
                if not isinstance(backbone[name], list):
                    raise ValueError(f"{name} must be a list of integers, got {_json(backbone[name])}")
                backbone[name] = tuple(backbone[name])
        values: dict[str, Any] = {}
        values.update(_pick(cls, _section(data, "mask2former_config")))
        values.update(_pick(cls, _section(data, "docsam_config_attributes")))
        values.update(_hard_coded_from_reference(_section(data, "hard_coded_in_reference")))
        for name in ("backbone", "text"):
            values.pop(name, None)
        config = cls(
            backbone=SwinConfig(**backbone),
            text=TextEncoderConfig(**_pick(TextEncoderConfig, _section(data, "text_encoder_config"))),
            **values,
        )
        _check_agreement(data, config)
        return config

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> DocSAMConfig:
        """The config in a JSON file, read as bytes so that json finds its encoding (UTF-8 with the byte
        order mark Windows editors write, UTF-16)."""
        path = Path(path)
        try:
            content = path.read_bytes()
        except OSError as error:  # its strerror alone: str() repeats the path, with Python's errno
            raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
        try:
            return cls.from_dict(json.loads(content))
        except RecursionError:  # valid JSON, but deeper than Python's reader goes
            raise ValueError(f"{path}: not a usable DocSAM config (JSON nested too deeply to read)") from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a usable DocSAM config ({error})") from error

    def to_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")


_HARD_CODED = (
    "pixel_decoder_levels",
    "deformable_points",
    "position_grid",
    "roi_size",
    "selection_nms_iou",
    "selection_base_threshold",
    "box_delta_scale",
    "proposal_wh_divisor",
)


# Fields the reference reads whose other values docsam does not build (its network is DocSAM's only): a
# config that sets one otherwise is refused rather than run as something it does not describe.
_FIXED: tuple[tuple[str, str, object], ...] = (
    ("swin_backbone_config", "hidden_act", "gelu"),
    ("swin_backbone_config", "use_absolute_embeddings", False),
    ("swin_backbone_config", "patch_norm", True),
    ("swin_backbone_config", "path_norm", True),
    ("swin_backbone_config", "out_features", ["stage1", "stage2", "stage3", "stage4"]),
    ("swin_backbone_config", "out_indices", [1, 2, 3, 4]),
    ("mask2former_config", "common_stride", 4),
    ("mask2former_config", "feature_strides", [4, 8, 16, 32]),
    ("docsam_config_attributes", "query_selection", True),
    ("docsam_config_attributes", "num_levels", 4),
    ("docsam_config_attributes", "is_multi_scale", True),
    ("docsam_config_attributes", "feature_strides", [4, 8, 16, 32]),
)


def _check_fixed(data: dict[str, Any]) -> None:
    """Refuse a field of `_FIXED` set otherwise."""
    for section, key, expected in _FIXED:
        value = _section(data, section).get(key, expected)
        if value != expected or isinstance(value, bool) != isinstance(expected, bool):  # 1 is no true
            raise ValueError(
                f"{section}.{key} must be {_json(expected)} (the only value DocSAM builds), "
                f"got {_json(value)}"
            )


def _check_agreement(data: dict[str, Any], config: DocSAMConfig) -> None:
    """Refuse, once each value is known to be usable, a Swin `num_layers` other than its stage count. (A
    field that `mask2former_config` and `docsam_config_attributes` both give may differ: the reference's
    configuration is the Mask2Former checkpoint's, then DocSAM's overrides, and so is this one.)"""
    layers = _section(data, "swin_backbone_config").get("num_layers", len(config.backbone.depths))
    if layers != len(config.backbone.depths):
        raise ValueError(f"swin_backbone_config.num_layers must be the number of depths, got {_json(layers)}")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of the JSON layout; an absent one is empty."""
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ValueError(f"'{name}' must be a section ({{...}}), got {json.dumps(section)}")
    return section


def _pick(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in section.items() if key in names}


def _hard_coded_from_reference(section: dict[str, Any]) -> dict[str, Any]:
    """Accept both our own names and the reference fixture's descriptive keys."""
    values = _pick(DocSAMConfig, section)
    aliases = {
        "nms_iou_in_query_selection": "selection_nms_iou",
        "bbox_delta_scale": "box_delta_scale",
    }
    for alias, name in aliases.items():
        if alias in section:
            values[name] = section[alias]
    for key, name in (("learnable_pos_embed_grid", "position_grid"), ("roi_align_output", "roi_size")):
        if key in section:
            values[name] = _square_side(key, section[key])
    return values


def _square_side(key: str, value: object) -> int:
    """The side of a square size the reference writes as `[n, n]` (or `n`)."""
    side = value[0] if isinstance(value, list) and len(value) == 2 and value[0] == value[1] else value
    if not isinstance(side, int) or isinstance(side, bool):
        raise ValueError(f"{key} must be a square size [n, n] of integers, got {_json(value)}")
    return side


# The one table of named variants (DocSAM-Base and -Large, the model zoo's Swin-B / Swin-L checkpoints):
# checkpoint variant detection and the weights installer take the names and Swin widths from here.
VARIANTS: Mapping[str, DocSAMConfig] = MappingProxyType(
    {
        "base": DocSAMConfig(),
        "large": DocSAMConfig(backbone=SwinConfig(embed_dim=192, num_heads=(6, 12, 24, 48))),
    }
)


def variant_with_width(embed_dim: int) -> str:
    """The variant whose Swin backbone is `embed_dim` wide: how a checkpoint's variant is told (files store no
    name, and the model zoo's own table misnames one). Raises ValueError when none is."""
    for name, config in VARIANTS.items():
        if config.backbone.embed_dim == embed_dim:
            return name
    known = ", ".join(f"{name} {config.backbone.embed_dim}" for name, config in VARIANTS.items())
    raise ValueError(f"Swin width {embed_dim} is none of the variants' ({known})")


def variant_config(name: str) -> DocSAMConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None
