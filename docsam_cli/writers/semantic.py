"""Semantic label maps: one PNG per page (`semantic/<page_id>.png`), a class number per pixel.

Pixel value 0 means no class; i + 1 means class i of the prompted classes — the ids of `coco.json`'s
categories, and of the run's class table `semantic/classes.json` (`{"background": 0, "categories":
[{"id": 1, "name": ...}, ...]}`). The PNG is 8-bit grey for up to 255 classes, 16-bit beyond.

The maps are the model's semantic masks (`PageInstances.semantic_masks`: one binary map per class,
majority-voted over the page's windows), not the instance masks. The model predicts each class's map on
its own, so a pixel can lie in several; it then gets the class listed first in the prompts (`--classes
table,text`: a pixel in both maps is a table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from docsam_cli.atomic import atomic_write_bytes, atomic_write_text
from docsam_cli.names import output_text
from model.instances import PageInstances

CLASS_TABLE = "classes.json"


def label_map(instances: PageInstances) -> np.ndarray:
    """(H, W) uint8 (uint16 for more than 255 classes) class numbers, 0 where no class map is set.

    Painted in the RLEs' column-major order, on the transposed map (a decoded mask's transpose is a view),
    which OpenCV transposes back once: NumPy's reordering of a 400-dpi newspaper page's map took longer
    than decoding all of its classes.
    """
    import cv2
    from pycocotools import mask as mask_utils

    dtype = np.uint8 if len(instances.class_names) <= np.iinfo(np.uint8).max else np.uint16
    columns = np.zeros((instances.width, instances.height), dtype=dtype)  # row x: the page's column x
    for index in reversed(range(len(instances.semantic_masks))):  # the first class is painted last: it wins
        columns[mask_utils.decode(instances.semantic_masks[index]).T.view(bool)] = index + 1
    return cv2.transpose(columns)


def write_label_map(path: str | os.PathLike[str], instances: PageInstances) -> None:
    """`label_map` as a grey PNG, written atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", label_map(instances))
    if not ok:
        raise OSError(f"cannot encode {os.fspath(path)!r} as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def write_class_table(path: str | os.PathLike[str], class_names: Sequence[str]) -> None:
    """The pixel value → class table of a run's label maps, as JSON."""
    categories = [{"id": index + 1, "name": output_text(name)} for index, name in enumerate(class_names)]
    atomic_write_text(
        path, json.dumps({"background": 0, "categories": categories}, ensure_ascii=False) + "\n"
    )
