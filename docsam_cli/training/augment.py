"""The reference's training augmentation and GT rasterisation.

Per sample: a random size — by default a random short side in `short_range` (each side capped at twice it),
with `keep_size` the page's own size jittered and brought into `short_range` — (Python rounding, `area`
interpolation), then with probability 0.2 a resize to exactly the patch size (aspect distorted; every
instance stays), otherwise a random patch-sized crop (smaller when the image is), from which instances whose
box does not reach 4 px into it on both axes are dropped; the others are clipped to it. Polygons are
truncated to int32 and filled with `cv2.fillPoly`; the semantic map of a class is the union of its
instances, the background channel (last) the complement of all of them. No flips, colour jitter or
normalisation (pixels stay BGR 0..255).

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
from docsam_cli.training.settings import AugmentSettings, Size
from model.inference.geometry import _keep_size_resize
from model.inference.preprocess import area_resize

KEEP_SIZE_JITTER = 0.2  # keep-size training scales each side by 2**U(-0.2, 0.2)


@dataclass
class Targets:
    """Rasterised ground truth of one sample (sizes of the sample, not yet padded to a batch)."""

    instance_masks: torch.Tensor  # (G, h, w) bool
    instance_boxes: torch.Tensor  # (G, 4) float32 xyxy
    instance_labels: torch.Tensor  # (G,) int64
    semantic_masks: torch.Tensor  # (C, h, w) bool, background last


def training_size(height: int, width: int, short_side: int) -> Size:
    """The default rule: scale the short side to `short_side`, then cap each side at twice it."""
    scale = short_side / min(height, width)
    return min(round(height * scale), 2 * short_side), min(round(width * scale), 2 * short_side)


def keep_size_training_size(height: int, width: int, short_range: Size, rng: SampleRandom) -> Size:
    """The keep-size rule in training: each side of the page's own size multiplied by its own random
    factor 2**U(-0.2, 0.2) (height drawn first) and rounded; then, as at test time, the short side scaled
    up to `short_range[0]` or down to `short_range[1]` when outside the range, both sides rounded, and each
    side capped at twice the new short side."""
    jittered = (
        round(height * 2 ** rng.uniform(-KEEP_SIZE_JITTER, KEEP_SIZE_JITTER)),
        round(width * 2 ** rng.uniform(-KEEP_SIZE_JITTER, KEEP_SIZE_JITTER)),
    )
    return _keep_size_resize(jittered, short_range)


def random_size(height: int, width: int, rng: SampleRandom, settings: AugmentSettings) -> Size:
    """The size a page is resized to before the crop, by the settings' rule."""
    if settings.keep_size:
        return keep_size_training_size(height, width, settings.short_range, rng)
    return training_size(height, width, rng.randint(*settings.short_range))


def augment(
    pixels: torch.Tensor,
    instances: Sequence[Instance],
    rng: SampleRandom,
    settings: AugmentSettings,
) -> tuple[torch.Tensor, list[Instance]]:
    """Random resize + (patch resize | random crop) of a (3, H, W) image and its instances."""
    height, width = pixels.shape[-2:]
    resized = random_size(height, width, rng, settings)
    pixels = area_resize(pixels, resized)
    instances = [instance.transformed((resized[1] / width, resized[0] / height)) for instance in instances]

    patch_h, patch_w = settings.patch
    if rng.uniform(0, 1) < settings.resize_probability:  # the whole page: every instance stays
        pixels = area_resize(pixels, settings.patch)
        scale = (patch_w / resized[1], patch_h / resized[0])
        return pixels, [instance.transformed(scale) for instance in instances]
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
    instances has G = 0 (the reference's dummy instance for such an image is not reproduced: the criterion
    supervises it as all background).
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
