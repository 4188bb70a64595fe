"""Candidate masks packed eight pixels to a byte (`model.inference.packed`): the packing itself, the exact
intersection counts over unpacked chunks, and post-processing of the tiny model's outputs compared with a
straightforward path that holds every candidate mask at full resolution at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_loops import random_masks, reference_mask_bbox, reference_nms

from model.inference import nms, postprocess
from model.inference.forward import forward_pages
from model.inference.geometry import Geometry, plan_page
from model.inference.merge import merge_patches
from model.inference.nms import packed_intersections, pairwise_intersections
from model.inference.packed import PackedMasks, _in_eights
from model.inference.pipeline import prompt_names
from model.inference.postprocess import (
    PATCH_NMS_IOU,
    PatchDetections,
    class_scores,
    postprocess_patches,
    scale_boxes,
    select_queries,
)
from model.inference.preprocess import make_patches


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8), (33, 31), (64, 64)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_packing_keeps_every_pixel(size, density):
    """The bytes are NumPy's `packbits` of each flattened mask (padding bits 0), and unpacking gives the
    masks back, all of them or any of them."""
    masks = torch.rand(6, *size, generator=torch.Generator().manual_seed(0)) < density
    packed = PackedMasks.of(masks)
    np.testing.assert_array_equal(packed.bits.numpy(), np.packbits(masks.flatten(1).numpy(), axis=1))
    assert torch.equal(packed.unpack(slice(0, 6)), masks)
    assert torch.equal(packed.unpack(torch.tensor([4, 1])), masks[[4, 1]])


def test_packing_takes_masks_that_do_not_start_on_a_word():
    """Masks whose bytes cannot be viewed as int64 words (their storage starts off a multiple of 8 bytes)
    are packed from a copy, to the same bytes; masks that start later on a word are viewed in place."""
    masks = torch.rand(9, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.5
    part = masks[1:4]  # starts 24 bytes into its storage
    assert torch.equal(PackedMasks.of(part).unpack(slice(0, 3)), part)
    assert PackedMasks.of(masks[:0]).unpack(slice(0, 0)).shape == (0, 4, 6)
    storage = torch.rand(1 + 3 * 64, generator=torch.Generator().manual_seed(3)) < 0.5
    off_word = storage[1:].view(3, 8, 8)  # 64 bytes a mask, whole words, but starting at byte 1
    packed = PackedMasks.of(off_word)
    np.testing.assert_array_equal(packed.bits.numpy(), np.packbits(off_word.flatten(1).numpy(), axis=1))
    assert torch.equal(packed.unpack(slice(0, 3)), off_word)


def test_whole_word_masks_are_packed_from_their_own_bytes():
    """Masks of a multiple of 8 pixels starting on a word are read in place as int64 words, with no padded
    copy of the chunk of upsampled masks (a second chunk-sized buffer per upsampling chunk)."""
    masks = torch.rand(4, 4, 6, generator=torch.Generator().manual_seed(4)) < 0.5
    flat = masks[1:].reshape(3, 24).view(torch.uint8)  # 24 bytes into its storage: on a word
    words = _in_eights(flat, 3)
    assert words.shape == (3, 3) and words.data_ptr() == flat.data_ptr()


@pytest.mark.parametrize("budget", [1, 100, 1 << 21])
def test_packed_intersections_are_the_exact_counts_whatever_the_chunks(monkeypatch, budget):
    monkeypatch.setattr(nms, "chunk_elements", lambda device: budget)
    masks = torch.from_numpy(random_masks(np.random.default_rng(2), 30, 37, 29))
    packed = PackedMasks.of(masks)
    flat = masks.flatten(1)
    rows, columns = torch.tensor([3, 0, 17]), slice(5, 30)
    assert torch.equal(
        packed_intersections(packed, rows, columns), pairwise_intersections(flat[rows], flat[5:])
    )
    everything = slice(0, 30)
    assert torch.equal(
        packed_intersections(packed, everything, everything), pairwise_intersections(flat, flat)
    )


def _straightforward(outputs, layout) -> list[PatchDetections]:
    """Post-processing with every selected candidate's mask upsampled to full resolution in one go and the
    reference's NMS loop (`reference_nms`) over them: what `postprocess_patches` computes, without packing or
    chunking anything."""
    selected = select_queries(outputs)
    scores, labels = class_scores(outputs.class_logits)
    found = []
    for patch in range(outputs.mask_logits.shape[0]):
        rows = selected[patch].nonzero()[:, 0]
        target = layout.resized if patch == 0 else layout.patch
        logits = outputs.mask_logits[patch, rows]
        probs = F.interpolate(logits[None], size=target, mode="bilinear", align_corners=False)[0].sigmoid()
        masks = probs > 0.5
        areas = masks.flatten(1).sum(dim=1)
        final = scores[patch, rows] * (F.threshold(probs, 0.5, 0.0).sum(dim=(1, 2)) / areas.clamp(min=1))
        kept = reference_nms(masks.numpy(), labels[patch, rows].numpy(), final.numpy(), PATCH_NMS_IOU)
        found.append(
            PatchDetections(
                masks=masks[kept],
                boxes_xywh=scale_boxes(outputs.boxes[patch, rows], layout.patch, target)[kept],
                scores=final[kept],
                labels=labels[patch, rows][kept],
                semantic=F.interpolate(
                    outputs.semantic_logits[patch][None], size=target, mode="bilinear", align_corners=False
                )[0]
                .sigmoid()
                .gt(0.5),
                areas=areas[kept],
                tight_boxes=torch.from_numpy(reference_mask_bbox(masks[kept].numpy())),
            )
        )
    return found


def _assert_same_detections(found: list[PatchDetections], expected: list[PatchDetections]) -> None:
    assert len(found) == len(expected)
    for patch, reference in zip(found, expected, strict=True):
        for field in ("masks", "boxes_xywh", "scores", "labels", "semantic", "areas", "tight_boxes"):
            assert torch.equal(getattr(patch, field), getattr(reference, field)), field


@pytest.fixture(scope="module")
def tiny_outputs(tiny_model):
    """The tiny parity model's outputs for a page of text lines, thumbnail + 8 windows of 40 queries: more
    than half of the queries survive selection (all of them do for DocSAM-Base with random weights)."""
    page = np.full((300, 200, 3), 240, dtype=np.uint8)
    page[20:280:24, 15:185] = 30
    layout = plan_page(page.shape[:2], Geometry(short_range=(192, 192), patch=(128, 128)))
    batch = make_patches(page, layout, torch.device("cpu"))
    with torch.inference_mode():
        (outputs,) = forward_pages(tiny_model, [batch], prompt_names(["text", "figure"], "Test"))
    return outputs, layout


@pytest.mark.parametrize(
    ("leaders", "budget"),
    [(postprocess.NMS_LEADERS, None), (2, None), (2, 4096)],
    ids=["default", "nms in two parts", "small chunks"],
)
def test_packed_post_processing_is_the_straightforward_one(monkeypatch, tiny_outputs, leaders, budget):
    """Same candidates, masks, scores, boxes and order as holding every candidate mask unpacked, and the same
    merged page; with few NMS leaders (most pairs counted in the NMS's second part) and with chunks of a few
    thousand elements (many pixel chunks per count, many query chunks per upsampling)."""
    outputs, layout = tiny_outputs
    monkeypatch.setattr(postprocess, "NMS_LEADERS", leaders)
    if budget:
        monkeypatch.setattr(nms, "chunk_elements", lambda device: budget)
        monkeypatch.setattr(postprocess, "chunk_elements", lambda device: budget)
    assert int(select_queries(outputs).sum()) > 40 * layout.num_patches / 2
    with torch.inference_mode():
        found = postprocess_patches(outputs, layout)
        expected = _straightforward(outputs, layout)
        _assert_same_detections(found, expected)
        merged, reference = merge_patches(found, layout), merge_patches(expected, layout)
    assert len(merged) > 0
    for field in ("masks", "boxes_xywh", "scores", "labels", "semantic"):
        assert torch.equal(getattr(merged, field), getattr(reference, field)), field


def test_the_candidates_wait_for_their_nms_packed(monkeypatch, tiny_outputs):
    """Until the patch NMS has decided, the candidate masks of a page take an eighth of a byte per pixel
    (about 3 GB less for an A4 page with random DocSAM-Base weights), not one byte."""
    outputs, layout = tiny_outputs
    held = []
    real_nms = postprocess._patch_nms

    def measured_nms(candidates, *args):
        held.append([(len(found), found.masks.bits.nbytes) for found in candidates])
        return real_nms(candidates, *args)

    monkeypatch.setattr(postprocess, "_patch_nms", measured_nms)
    with torch.inference_mode():
        postprocess_patches(outputs, layout)
    (sizes,) = held
    pixels = [layout.resized[0] * layout.resized[1]] + [layout.patch[0] * layout.patch[1]] * len(
        layout.windows
    )
    assert [size for size, _ in sizes] == select_queries(outputs).sum(dim=1).tolist()
    assert [nbytes for _, nbytes in sizes] == [
        size * -(-area // 8) for (size, _), area in zip(sizes, pixels, strict=True)
    ]
