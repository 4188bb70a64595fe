"""JSON lines: one compact, parseable record per page with instances, outputs and timing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from instances_factory import empty_instances, make_instances, rect_mask

from docsam_cli.writers.jsonl import dumps_record, error_record, page_record
from docsam_cli.writers.shapes import PageShapes


def test_page_record_describes_each_instance():
    masks = [
        rect_mask(60, 50, 5, 5, 45, 20),
        rect_mask(60, 50, 0, 30, 10, 40) | rect_mask(60, 50, 30, 30, 50, 55),
    ]
    instances = make_instances(
        masks,
        [1, 0],
        ["Überschrift", "table"],
        scores=[0.912345, 0.5],
        boxes=[[5.26, 5, 44.94, 20], [60, 70, -2, 29.96]],
    )
    record = page_record(
        input_path="scans/a.pdf",
        page=3,
        page_id="a_p0003",
        shapes=PageShapes(instances),
        outputs={"page": "out/a_p0003.xml"},
        timing={"decode_s": 0.123456},
    )
    assert {key: record[key] for key in ("input", "page", "page_id", "width", "height")} == {
        "input": "scans/a.pdf",
        "page": 3,
        "page_id": "a_p0003",
        "width": 50,
        "height": 60,
    }
    assert record["outputs"] == {"page": "out/a_p0003.xml"} and record["timing"] == {"decode_s": 0.1235}
    first, second = record["instances"]
    assert (first["class"], first["label"], first["score"], first["area"]) == ("table", 1, 0.9123, 600)
    assert sorted(map(tuple, first["polygons"][0])) == [(5, 5), (5, 19), (44, 5), (44, 19)]
    assert first["box"] == [5.3, 5.0, 44.9, 20.0]  # the model's box to a tenth of a pixel, not whole pixels
    assert second["class"] == "Überschrift" and second["box"] == [0.0, 30.0, 50.0, 60.0]  # sorted, clipped
    assert len(second["polygons"]) == 2 and second["polygons"][0][0][0] >= 30  # larger component first
    assert all(len(polygon) >= 3 for polygon in second["polygons"])


def test_line_is_compact_json_with_one_trailing_newline():
    record = page_record(
        input_path="x.png", page=None, page_id="x", shapes=PageShapes(empty_instances(10, 20, ["text"]))
    )
    line = dumps_record(record)
    assert line.endswith("\n") and line.count("\n") == 1 and ": " not in line and ", " not in line
    assert json.loads(line) == record and record["instances"] == [] and record["page"] is None
    assert "Ü" in dumps_record({"class": "Ü"})


def test_error_record_and_non_finite_numbers():
    record = error_record(input_path="bad.pdf", page=None, error="damaged or not a PDF")
    assert json.loads(dumps_record(record)) == {
        "input": "bad.pdf",
        "page": None,
        "page_id": None,
        "error": "damaged or not a PDF",
    }
    with pytest.raises(ValueError):
        dumps_record({"score": float(np.nan)})
