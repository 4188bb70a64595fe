"""The reference's training augmentation and GT rasterisation (ARCHITECTURE.md §6.4, §6.5).

Per sample: a random short side in `short_range` (each side capped at twice it, Python rounding, `area`
interpolation), then with probability 0.2 a resize to exactly the patch size (aspect distorted), otherwise a
random patch-sized crop (smaller when the image is). Instances whose box does not reach 4 px into the patch
on both axes are dropped; the others are clipped to it. Polygons are truncated to int32 and filled with
`cv2.fillPoly`; the semantic map of a class is the union of its instances, the background channel (last) the
complement of all of them. No flips, colour jitter or normalisation (pixels stay BGR 0..255).

Random draws go through a `SampleRandom` in the reference's call order, so that a scripted source can replay
the reference's answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from docsam_cli.training.annotations import Instance
from docsam_cli.training.sample_random import SampleRandom
from model.inference.preprocess import area_resize

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class AugmentSettings:
    """Defaults are the reference scripts' (`--short-range 704,896 --patch-size 640,640`)."""

    short_range: Size = (704, 896)
    patch: Size = (640, 640)
    resize_probability: float = 0.2
    min_overlap: float = 4.0  # px a kept box must reach into the patch on both axes

    def __post_init__(self) -> None:
        low, high = self.short_range
        if not 0 < low <= high:
            raise ValueError(f"short range must satisfy 0 < low <= high, got {self.short_range}")
        if min(self.patch) <= 0:
            raise ValueError(f"patch sides must be positive, got {self.patch}")


@dataclass
class Targets:
    """Rasterised ground truth of one sample (sizes of the sample, not yet padded to a batch)."""

    instance_masks: torch.Tensor  # (G, h, w) bool
    instance_boxes: torch.Tensor  # (G, 4) float32 xyxy
    instance_labels: torch.Tensor  # (G,) int64
    semantic_masks: torch.Tensor  # (C, h, w) bool, background last


def training_size(height: int, width: int, short_side: int) -> Size:
    """§6.4 default rule: scale the short side to `short_side`, then cap each side at twice it."""
    scale = short_side / min(height, width)
    return min(round(height * scale), 2 * short_side), min(round(width * scale), 2 * short_side)


def augment(
    pixels: torch.Tensor,
    instances: Sequence[Instance],
    rng: SampleRandom,
    settings: AugmentSettings,
) -> tuple[torch.Tensor, list[Instance]]:
    """Random resize + (patch resize | random crop) of a (3, H, W) image and its instances."""
    height, width = pixels.shape[-2:]
    resized = training_size(height, width, rng.randint(*settings.short_range))
    pixels = area_resize(pixels, resized)
    instances = [instance.transformed((resized[1] / width, resized[0] / height)) for instance in instances]

    patch_h, patch_w = settings.patch
    if rng.uniform(0, 1) < settings.resize_probability:
        pixels = area_resize(pixels, settings.patch)
        scale = (patch_w / resized[1], patch_h / resized[0])
        instances = [instance.transformed(scale) for instance in instances]
        window = (0, 0, patch_w, patch_h)
    else:
        top = rng.randint(0, max(resized[0] - patch_h, 0))
        left = rng.randint(0, max(resized[1] - patch_w, 0))
        pixels = pixels[:, top : top + patch_h, left : left + patch_w]
        window = (left, top, left + pixels.shape[2], top + pixels.shape[1])
    return pixels, crop_instances(instances, window, settings.min_overlap)


def crop_instances(
    instances: Sequence[Instance], window: tuple[int, int, int, int], min_overlap: float
) -> list[Instance]:
    """Keep instances reaching `min_overlap` px into the window (x1, y1, x2, y2) on both axes; clip boxes
    and polygon points to it and express them in window coordinates."""
    left, top, right, bottom = window
    kept = []
    for instance in instances:
        x1, y1, x2, y2 = instance.box
        if x1 > right - min_overlap or x2 < left + min_overlap:
            continue
        if y1 > bottom - min_overlap or y2 < top + min_overlap:
            continue
        low, high = np.array([left, top], dtype=np.float64), np.array([right, bottom], dtype=np.float64)
        clipped = Instance(
            instance.label,
            np.concatenate([np.maximum(instance.box[:2], low), np.minimum(instance.box[2:], high)]),
            tuple(points.clip(low, high) for points in instance.polygons),
            0.0,
        )
        kept.append(clipped.transformed((1.0, 1.0), (left, top)))
    return kept


def rasterise(instances: Sequence[Instance], num_classes: int, size: Size) -> Targets:
    """Instance masks (int32-truncated polygons, `cv2.fillPoly`), boxes, labels and semantic maps.

    `num_classes` counts the background prompt, which gets the last semantic channel. An image without
    instances has G = 0 (the reference's dummy instance, bug B-11, is not reproduced: the criterion
    supervises such an image as all background).
    """
    height, width = size
    masks = np.zeros((len(instances), height, width), dtype=np.uint8)
    for index, instance in enumerate(instances):
        polygons = [points.astype(np.int32) for points in instance.polygons if len(points) >= 3]
        if polygons:
            cv2.fillPoly(masks[index], polygons, 1)
    instance_masks = torch.from_numpy(masks).bool()
    labels = torch.tensor([instance.label for instance in instances], dtype=torch.int64)
    semantic = torch.zeros(num_classes, height, width, dtype=torch.bool)
    for label in labels.unique().tolist():
        semantic[label] = instance_masks[labels == label].any(0)
    semantic[-1] = ~instance_masks.any(0)
    boxes = np.array([instance.box for instance in instances], dtype=np.float32).reshape(-1, 4)
    return Targets(instance_masks, torch.from_numpy(boxes), labels, semantic)
