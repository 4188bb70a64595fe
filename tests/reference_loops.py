"""Literal transcriptions of the reference's post-processing loops (test.py's `mask_bbox`,
`non_max_suppression`, `non_max_suppression_multiclass` and `post_process_instance_segmentation`), and
random inputs that exercise every branch of them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from model.inference.forward import PatchOutputs
from model.inference.geometry import Geometry, plan_page


def reference_mask_bbox(masks: np.ndarray) -> np.ndarray:
    """`mask_bbox` of test.py, with numpy: first/last set column and row, `[0, 0, W-1, H-1]` when empty."""
    _, height, width = masks.shape
    columns, rows = masks.any(axis=1), masks.any(axis=2)
    x1, y1 = columns.argmax(axis=1), rows.argmax(axis=1)
    x2 = width - 1 - columns[:, ::-1].argmax(axis=1)
    y2 = height - 1 - rows[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def reference_nms(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """`non_max_suppression_multiclass`: per label ascending, greedy by score, kept indices in that order."""
    kept_all: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        group = masks[members]
        boxes = torch.from_numpy(reference_mask_bbox(group))
        box_ious = box_iou(boxes, boxes).numpy()
        order = np.argsort(-scores[members], kind="stable")
        kept = []
        while order.size:
            kept.append(order[0])
            ious = box_ious[order[0], order[1:]].copy()
            flags = ious > 0.01
            if flags.any():
                current = group[order[0]].reshape(-1).astype(np.float32)
                others = group[order[1:][flags]].reshape(int(flags.sum()), -1).astype(np.float32)
                inter = others @ current
                ious[flags] = inter / np.maximum(current.sum() + others.sum(axis=1) - inter, 1)
            order = order[1:][ious < threshold]
        kept_all += members[kept].tolist()
    return kept_all


def random_masks(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Rectangles of all sizes, some one pixel thin (zero-area tight boxes), some empty."""
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        kind = rng.random()
        if kind < 0.1:
            continue
        y1, x1 = rng.integers(0, height), rng.integers(0, width)
        if kind < 0.3:
            mask[y1, x1 : x1 + rng.integers(1, width)] = True
        else:
            mask[y1 : y1 + rng.integers(1, height), x1 : x1 + rng.integers(1, width)] = True
    return masks


def reference_kept_rows(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> list[int]:
    """`post_process_instance_segmentation` filters of test.py, one patch: score ≥ 0.01 (else row 0), then a
    σ > 0.5 pixel at 1/4 resolution (else the first row left)."""
    rows = torch.arange(len(class_logits))
    scores = class_logits.softmax(dim=-1)[:, :-1].max(dim=-1).values
    keep = scores >= 0.01
    if keep.sum() == 0:
        keep[0] = True
    rows, mask_logits = rows[keep], mask_logits[keep]
    keep = (mask_logits.sigmoid() > 0.5).sum(dim=[1, 2]) > 0
    if keep.sum() == 0:
        keep[0] = True
    return rows[keep].tolist()


def reference_postprocess(outputs: PatchOutputs, layout) -> list[dict[str, np.ndarray]]:
    """`post_process_instance_segmentation` of test.py for every patch, transcribed: filters, bilinear
    upsampling straight to the target, σ > 0.5, class score × mean mask probability, scaled boxes, then the
    reference's 0.25 mask NMS loop."""
    patches = []
    for patch in range(outputs.mask_logits.shape[0]):
        rows = reference_kept_rows(outputs.mask_logits[patch], outputs.class_logits[patch])
        target = layout.resized if patch == 0 else layout.patch
        logits = outputs.mask_logits[patch, rows]
        probs = F.interpolate(logits[None], size=target, mode="bilinear", align_corners=False)[0].sigmoid()
        binary = probs > 0.5
        mask_scores = (probs * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1e-6)
        scores, labels = outputs.class_logits[patch, rows].softmax(-1)[:, :-1].max(-1)
        boxes = outputs.boxes[patch, rows].clone()
        boxes[:, 0::2] = boxes[:, 0::2] / layout.patch[1] * target[1]
        boxes[:, 1::2] = boxes[:, 1::2] / layout.patch[0] * target[0]
        boxes[:, 2:] -= boxes[:, :2]
        final = (scores * mask_scores).numpy()
        kept = reference_nms(binary.numpy(), labels.numpy(), final, 0.25)
        patches.append(
            {"masks": binary.numpy()[kept], "scores": final[kept], "labels": labels.numpy()[kept]}
            | {"boxes": boxes.numpy()[kept]}
        )
    return patches


LAYOUT = plan_page((32, 48), Geometry(short_range=(32, 32), patch=(32, 32)))  # thumbnail + 2 windows


def random_outputs(seed: int, queries: int = 12, classes: int = 4) -> PatchOutputs:
    generator = torch.Generator().manual_seed(seed)
    patches = LAYOUT.num_patches
    return PatchOutputs(
        mask_logits=torch.randn(patches, queries, 8, 8, generator=generator) * 3,
        boxes=torch.rand(patches, queries, 4, generator=generator) * 40 - 4,
        class_logits=torch.randn(patches, queries, classes, generator=generator) * 2,
        semantic_logits=torch.randn(patches, classes, 8, 8, generator=generator),
    )
