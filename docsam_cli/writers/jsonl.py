"""JSON lines on stdout: one compact object per page, so `docsam segment ... | jq` works.

A page's record:

    {"input": "scans/a.pdf", "page": 3, "page_id": "a_p0003", "width": 1654, "height": 2339,
     "instances": [{"class": "table", "label": 1, "score": 0.9731, "box": [x1, y1, x2, y2],
                    "area": 51234, "polygons": [[[x, y], ...], ...]}, ...],
     "outputs": {"page": "out/page/a_p0003.xml", ...}, "timing": {"model_s": 1.9, "write_s": 0.12}}

`page` is null for a single image. Boxes are the model's boxes with sorted corners clipped to the page
(see `boxes`; a non-finite score or coordinate is written as 0); `area` is the mask's pixel count;
`polygons` are the mask's parts, largest first, as valid integer pixel polygons (see
`docsam_cli.polygons`). Instances keep the pipeline's order (mask area, largest first). A page that failed
has `"error"` instead of the size, instances and outputs. Text from file names (paths, page ids, messages)
goes through `names.output_text`: the line is valid UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from docsam_cli.names import output_text
from docsam_cli.writers.shapes import PageShapes


def page_record(
    *,
    input_path: str,
    page: int | None,
    page_id: str,
    shapes: PageShapes,
    outputs: Mapping[str, str] | None = None,
    timing: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The record of a segmented page (a plain dict, ready for `dumps_record`)."""
    records = [
        {
            "class": shapes.class_name(index),
            "label": shapes.label(index),
            "score": round(shapes.score(index), 4),
            "box": [round(value, 1) for value in shapes.boxes[index]],
            "area": int(shapes.areas[index]),
            "polygons": [polygon.tolist() for polygon in shapes.polygons(index)],
        }
        for index in range(len(shapes))
    ]
    return {
        "input": output_text(input_path),
        "page": page,
        "page_id": output_text(page_id),
        "width": shapes.width,
        "height": shapes.height,
        "instances": records,
        "outputs": {name: output_text(path) for name, path in (outputs or {}).items()},
        "timing": {name: round(seconds, 4) for name, seconds in (timing or {}).items()},
    }


def error_record(
    *, input_path: str, page: int | None, error: str, page_id: str | None = None
) -> dict[str, Any]:
    """The record of a page or file that failed: `error` is the one-line reason."""
    return {
        "input": output_text(input_path),
        "page": page,
        "page_id": None if page_id is None else output_text(page_id),
        "error": output_text(error),
    }


def dumps_record(record: Mapping[str, Any]) -> str:
    """One line: compact JSON, non-ASCII kept, a trailing newline. Raises ValueError on NaN/inf."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
