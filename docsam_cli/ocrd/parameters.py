"""The processor's parameters (`ocrd-tool.json`) as docsam's own settings.

Each parameter is a `docsam segment` option, read by the same code (`presets.resolve_prompts`,
`runtime.GeometryOptions`, `page_map.parse_page_map`, `runtime.check_device_name`), and a parameter left
out means what leaving the option out means. Sizes are numbers, not `docsam segment`'s `N` or `A,B`
strings: OCR-D reads `-P short_side 800` as the number 800. `short_side` and `short_side_max` are
`--short-side LOW,HIGH`; `window` and `stride` are square.

OCR-D has already checked each value against its schema (types, enums, minimums) when this runs; what is
left is what the schema cannot say, reported as ValueError naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from docsam_cli.presets import checkpoint_preset, resolve_prompts
from docsam_cli.runtime import GeometryOptions, ModelSpec, check_device_name, leaves_gaps
from docsam_cli.user_paths import expand_user
from docsam_cli.writers.class_map import ClassMap
from docsam_cli.writers.page_map import parse_page_map

ExistingRegions = Literal["replace", "keep"]


@dataclass(frozen=True)
class SegmentSettings:
    """What one processor instance runs: the model, the prompts, the geometry and how regions are added."""

    model: ModelSpec
    geometry: GeometryOptions  # as given; completed from what is known of the weights
    class_names: tuple[str, ...]
    domain: str
    page_map: ClassMap | None
    batch_size: int
    existing_regions: ExistingRegions
    max_image_pixels: int | None  # the decompression-bomb limit of page images; None: no limit

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SegmentSettings:
        """Settings from validated parameters (defaults filled in). Raises ValueError naming the parameter."""
        classes, preset = parameters.get("classes"), parameters.get("preset")
        stored = checkpoint_preset(parameters["weights"]) if classes is None and preset is None else None
        class_names, domain = resolve_prompts(classes, parameters.get("domain"), preset, default=stored)
        model_config = parameters.get("model_config")
        model = ModelSpec(
            weights=parameters["weights"],
            variant=parameters.get("variant"),
            model_config=Path(expand_user(model_config)) if model_config else None,
            device=_device(parameters["device"]),
            precision=parameters["precision"],
        )
        return cls(
            model=model,
            geometry=_geometry(parameters),
            class_names=tuple(class_names),
            domain=domain,
            page_map=_page_map(parameters["page_map"]),
            batch_size=int(parameters["batch_size"]),
            existing_regions=parameters["existing_regions"],
            max_image_pixels=int(parameters["max_image_pixels"]) or None,
        )


def _device(name: str) -> str:
    try:
        return check_device_name(name)
    except ValueError as error:
        raise ValueError(f"device: {error}") from None


def _geometry(parameters: Mapping[str, Any]) -> GeometryOptions:
    low, high = _size(parameters, "short_side"), _size(parameters, "short_side_max")
    if high is not None and low is None:
        raise ValueError("short_side_max needs short_side (the two are the range LOW, HIGH)")
    if low is not None and high is not None and high < low:
        raise ValueError(f"short_side_max ({high}) is below short_side ({low})")
    window, stride = _size(parameters, "window"), _size(parameters, "stride")
    if window is not None and stride is None and window < 2:
        raise ValueError(f"window must be at least 2 (the stride is half of it), got {window}")
    if window is not None and stride is not None and leaves_gaps((window, window), (stride, stride)):
        raise ValueError(
            f"stride {stride} is longer than window {window}: the page between the windows would be seen "
            "by none (give a stride of at most the window; by default half of it)"
        )
    return GeometryOptions(
        short_side=None if low is None else (low, high if high is not None else low),
        window=None if window is None else (window, window),
        stride=None if stride is None else (stride, stride),
        keep_size=parameters.get("keep_size"),
    )


def _size(parameters: Mapping[str, Any], name: str) -> int | None:
    value = parameters.get(name)
    return None if value is None else int(value)


def _page_map(entries: Mapping[str, Any]) -> ClassMap | None:
    """The `page_map` object read as `--page-map` reads inline JSON (the same entry forms and checks)."""
    if not entries:
        return None
    try:
        return parse_page_map(json.dumps(dict(entries)))
    except ValueError as error:
        raise ValueError(f"page_map: {error}") from None
