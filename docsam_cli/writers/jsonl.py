"""JSON lines on stdout: one compact object per page, so `docsam segment ... | jq` works.

A page's record:

    {"input": "scans/a.pdf", "page": 3, "page_id": "a_p0003", "width": 1654, "height": 2339,
     "instances": [{"class": "table", "label": 1, "score": 0.9731, "box": [x1, y1, x2, y2],
                    "area": 51234, "polygons": [[[x, y], ...], ...]}, ...],
     "outputs": {"page": "out/a_p0003.xml", ...}, "timing": {"decode_s": 0.12, "model_s": 1.9}}

`page` is null for a single image. Boxes are the model's boxes with sorted corners clipped to the page
(see `boxes`); `area` is the mask's pixel count; `polygons` are the mask's connected components,
largest first, as integer pixel points (see `polygons`). Instances keep the pipeline's order (mask area,
largest first). A page that failed has `"error"` instead of the size, instances and outputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from docsam_cli.writers.boxes import clip_box
from docsam_cli.writers.polygons import DEFAULT_EPSILON, mask_polygons
from model.instances import PageInstances


def page_record(
    *,
    input_path: str,
    page: int | None,
    page_id: str,
    instances: PageInstances,
    outputs: Mapping[str, str] | None = None,
    timing: Mapping[str, float] | None = None,
    polygon_epsilon: float = DEFAULT_EPSILON,
) -> dict[str, Any]:
    """The record of a segmented page (a plain dict, ready for `dumps_record`)."""
    areas = instances.areas()
    records = []
    for index in range(len(instances)):
        polygons = mask_polygons(instances.decode_mask(index), polygon_epsilon)
        box = clip_box(instances.boxes[index], instances.width, instances.height)
        records.append(
            {
                "class": instances.class_name(index),
                "label": int(instances.labels[index]),
                "score": round(float(instances.scores[index]), 4),
                "box": [round(value, 1) for value in box],
                "area": int(areas[index]),
                "polygons": [polygon.tolist() for polygon in polygons],
            }
        )
    return {
        "input": input_path,
        "page": page,
        "page_id": page_id,
        "width": instances.width,
        "height": instances.height,
        "instances": records,
        "outputs": dict(outputs or {}),
        "timing": {name: round(seconds, 4) for name, seconds in (timing or {}).items()},
    }


def error_record(
    *, input_path: str, page: int | None, error: str, page_id: str | None = None
) -> dict[str, Any]:
    """The record of a page or file that failed: `error` is the one-line reason."""
    return {"input": input_path, "page": page, "page_id": page_id, "error": error}


def dumps_record(record: Mapping[str, Any]) -> str:
    """One line: compact JSON, non-ASCII kept, a trailing newline. Raises ValueError on NaN/inf."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
