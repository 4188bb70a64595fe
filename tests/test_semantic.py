"""Semantic label maps: one PNG per page whose pixel values are the classes of the model's semantic masks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from instances_factory import empty_instances, make_instances, rect_mask
from pycocotools import mask as mask_utils

from docsam_cli.writers.semantic import label_map, write_class_table, write_label_map

CLASSES = ["table", "text", "figure"]


def semantic_instances():
    """Instances whose semantic maps overlap (table and text) and differ from the instance masks."""
    instances = make_instances(
        [rect_mask(60, 80, 0, 0, 40, 30), rect_mask(60, 80, 20, 10, 70, 50)], [0, 1], CLASSES
    )
    figure = rect_mask(60, 80, 70, 50, 80, 60)  # only in the semantic map of "figure"
    instances.semantic_masks[2] = mask_utils.encode(np.asfortranarray(figure.astype(np.uint8)))
    return instances


def test_label_png_agrees_with_the_semantic_masks_and_the_coco_ids(tmp_path):
    instances = semantic_instances()
    write_label_map(tmp_path / "p.png", instances)
    write_class_table(tmp_path / "classes.json", CLASSES)
    labels = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == (60, 80)
    table = json.loads((tmp_path / "classes.json").read_text())
    assert table["background"] == 0
    ids = {category["name"]: category["id"] for category in table["categories"]}
    assert ids == {name: index + 1 for index, name in enumerate(CLASSES)}  # coco.json's category ids
    semantic = zip(CLASSES, instances.semantic_masks, strict=True)
    maps = {name: mask_utils.decode(rle).astype(bool) for name, rle in semantic}
    claimed = np.zeros((60, 80), bool)
    for name in CLASSES:  # in prompt order: a pixel in several maps belongs to the first class
        mine = maps[name] & ~claimed
        assert (labels[mine] == ids[name]).all() and mine.any()
        claimed |= maps[name]
    assert (labels[~claimed] == 0).all()
    assert (labels[15:30, 20:40] == ids["table"]).all()  # in the table and text maps: the table wins


def test_many_classes_give_a_16_bit_png_and_no_maps_give_zeros(tmp_path):
    classes = [f"c{i}" for i in range(300)]
    instances = make_instances([rect_mask(20, 30, 5, 5, 10, 10)], [299], classes)
    labels = label_map(instances)
    assert labels.dtype == np.uint16 and labels[7, 7] == 300 and labels.sum() == 300 * 25
    write_label_map(tmp_path / "wide.png", instances)
    assert (cv2.imread(str(tmp_path / "wide.png"), cv2.IMREAD_UNCHANGED) == labels).all()
    assert not label_map(empty_instances(20, 30, ["a"])).any()


def test_255_classes_still_fit_an_8_bit_png_and_256_need_16_bits():
    """README: 8-bit, 16-bit beyond 255 classes. Class 255 is pixel value 255, the largest 8 bits hold."""
    for count, dtype in ((255, np.uint8), (256, np.uint16)):
        classes = [f"c{i}" for i in range(count)]
        labels = label_map(make_instances([rect_mask(20, 30, 5, 5, 10, 10)], [count - 1], classes))
        assert (labels.dtype, int(labels[7, 7])) == (np.dtype(dtype), count)


def test_a_map_that_cannot_be_encoded_is_an_error_naming_the_file_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "imencode", lambda extension, image: (False, None))
    target = tmp_path / "p.png"
    with pytest.raises(OSError, match=r"p\.png"):
        write_label_map(target, semantic_instances())
    assert list(tmp_path.iterdir()) == []
