"""The pipeline end to end with stand-in networks: batching, padding rows, pages smaller than a window,
and instances landing at the right place in the original page."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from model.inference import (
    Geometry,
    PatchBatch,
    forward_pages,
    make_patches,
    pipeline,
    plan_page,
    predict_pages,
    segment_pages,
)
from model.inference.forward import MASK_PAD_VALUE
from model.inference.nms import tight_boxes
from model.inference.preprocess import _pad_to_canvas, area_resize
from model.outputs import DocSAMOutput, StageOutput


def _output(masks, boxes, logits, semantic, padding) -> DocSAMOutput:
    count, queries = padding.shape
    last = StageOutput(
        instance_states=torch.zeros(count, queries, 1),
        semantic_states=torch.zeros(count, logits.shape[-1], 1),
        instance_mask_logits=masks,
        semantic_mask_logits=semantic,
        boxes=boxes,
        class_logits=logits,
        padding_mask=padding,
        kept_index=torch.zeros(count, queries, dtype=torch.int64),
    )
    empty = torch.zeros(0)
    return DocSAMOutput([], [], empty, [], empty, stages=[last])


class DarkRegionModel:
    """Deterministic per-image stand-in: one query whose mask is the dark page area, class 0, box = the
    dark pixels' extent. Its answer for an image never depends on the rest of the batch."""

    def __init__(self) -> None:
        self.chunks: list[int] = []

    def __call__(
        self, pixel_values, pixel_mask, image_bboxes, class_names, *, isolate_batch=False, all_stages=True
    ):
        self.chunks.append(len(pixel_values))
        dark = (pixel_values.mean(dim=1) < 128) & (pixel_mask[:, 0] > 0)
        logits = (F.avg_pool2d(dark[:, None].float(), 4) - 0.5) * 20
        boxes = tight_boxes(dark) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        classes = len(class_names[0])
        class_logits = torch.zeros(len(dark), 1, classes)
        class_logits[:, :, 0] = 4.0
        semantic = torch.full((len(dark), classes, *logits.shape[-2:]), -10.0)
        semantic[:, 0] = logits[:, 0]
        padding = torch.zeros(len(dark), 1, dtype=torch.bool)
        return _output(logits, boxes[:, None], class_logits, semantic, padding)


def _page(size: tuple[int, int], dark: tuple[int, int, int, int]) -> np.ndarray:
    page = np.full((*size, 3), 255, dtype=np.uint8)
    x1, y1, x2, y2 = dark
    page[y1:y2, x1:x2] = (10, 40, 70)
    return page


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    return (first & second).sum() / (first | second).sum()


def test_a_dark_rectangle_lands_where_it_is_on_the_original_page():
    """An elongated page whose resize hits the long-side cap, so x and y scale differently (60×300 →
    96×192); the rectangle fits one window away from its border band."""
    rectangle = (113, 25, 187, 55)
    page = _page((60, 300), rectangle)
    geometry = Geometry(short_range=(96, 96), patch=(64, 64))
    assert plan_page(page.shape[:2], geometry).resized == (96, 192)
    (instances,) = segment_pages(
        DarkRegionModel(), [page], ["text", "figure"], domain="Test", geometry=geometry
    )
    truth = np.zeros(page.shape[:2], dtype=bool)
    truth[rectangle[1] : rectangle[3], rectangle[0] : rectangle[2]] = True
    best = int(np.argmax(instances.scores))
    assert (instances.height, instances.width) == page.shape[:2]
    assert instances.class_name(best) == "text"
    assert _iou(instances.decode_mask(best), truth) > 0.95
    np.testing.assert_allclose(instances.boxes[best], rectangle, atol=300 / 192)
    semantic = [mask_utils.decode(rle).astype(bool) for rle in instances.semantic_masks]
    assert _iou(semantic[0], truth) > 0.9 and not semantic[1].any()


def test_pages_smaller_than_a_window_are_padded_not_crashed():
    """Resized to 75×60 with 64×64 windows (the reference would crash); the padding is invalid input and cut
    from the result."""
    page = _page((50, 40), (10, 20, 30, 40))
    geometry = Geometry(short_range=(60, 60), patch=(64, 64))
    layout = plan_page(page.shape[:2], geometry)
    batch = make_patches(page, layout)
    assert (layout.resized, layout.canvas) == ((75, 60), (75, 64))
    assert batch.image_bboxes.tolist() == [[0, 0, 64, 64], [0, 0, 60, 64], [0, 0, 60, 64]]
    assert not batch.pixel_mask[1:, :, :, 60:].any() and batch.pixel_mask[1:, :, :, :60].all()
    (prediction,) = predict_pages(DarkRegionModel(), [page], ["text"], domain="Test", geometry=geometry)
    assert prediction.result.masks.shape[1:] == (75, 60) and prediction.result.semantic.shape[1:] == (75, 60)
    (instances,) = segment_pages(DarkRegionModel(), [page], ["text"], domain="Test", geometry=geometry)
    truth = np.zeros(page.shape[:2], dtype=bool)
    truth[20:40, 10:30] = True
    assert _iou(instances.decode_mask(int(np.argmax(instances.scores))), truth) > 0.9


@pytest.mark.parametrize(
    "page",
    [
        np.zeros((50, 40), dtype=np.uint8),
        np.zeros((50, 40, 4), dtype=np.uint8),
        np.zeros((50, 40, 3), dtype=np.uint16),
        np.zeros((50, 40, 3), dtype=np.float32),
    ],
    ids=["gray", "BGRA", "16-bit", "float"],
)
def test_pages_that_are_not_bgr_bytes_are_refused(page):
    """The model sees raw BGR bytes (docs/design.md, "raw BGR pixels"): a gray, four-channel, 16-bit or float
    page is refused by name, not fed to the network scaled or shaped otherwise."""
    layout = plan_page(page.shape[:2], Geometry(short_range=(60, 60), patch=(64, 64)))
    with pytest.raises(ValueError, match=r"expected a BGR uint8 \(H, W, 3\) page"):
        make_patches(page, layout)


def test_a_page_of_another_size_than_its_layout_is_refused():
    page = np.zeros((50, 40, 3), dtype=np.uint8)
    layout = plan_page((40, 50), Geometry(short_range=(60, 60), patch=(64, 64)))
    with pytest.raises(ValueError, match=r"page is \(50, 40\), layout expects \(40, 50\)"):
        make_patches(page, layout)


def test_the_model_inputs_are_the_float_page_area_resized_bit_for_bit():
    """The page is converted to float with its channels one after the other (`page_to_tensor`); its area
    resize and windows are those of the page converted with its channels interleaved, bit for bit."""
    page = np.random.default_rng(0).integers(0, 256, (1500, 1100, 3), dtype=np.uint8)
    layout = plan_page(page.shape[:2], Geometry())
    batch = make_patches(page, layout)
    interleaved = torch.from_numpy(page).permute(2, 0, 1).float()
    resized = F.interpolate(interleaved[None], size=layout.resized, mode="area")[0]
    assert torch.equal(batch.pixel_values[0], F.interpolate(resized[None], size=layout.patch, mode="area")[0])
    for values, (x1, y1, x2, y2) in zip(batch.pixel_values[1:], layout.windows, strict=True):
        assert torch.equal(values, resized[:, y1:y2, x1:x2])


def test_an_image_already_at_its_size_is_not_resized_again():
    """A page whose resized size is its own (short side already 800) and a thumbnail the size of a patch
    are used as they are, not copied by an identity area resize; a resized page that fills its canvas is
    cut into windows as it is, not copied by an empty padding."""
    image = torch.rand(3, 40, 30)
    assert area_resize(image, (40, 30)) is image
    resized = torch.rand(3, 73, 64)
    layout = plan_page((80, 70), Geometry(short_range=(64, 64), patch=(32, 32)))
    assert layout.canvas == layout.resized == (73, 64)
    assert _pad_to_canvas(resized, layout)[0] is resized
    assert torch.equal(
        area_resize(image, (20, 15)), F.interpolate(image[None], size=(20, 15), mode="area")[0]
    )


def test_the_page_is_held_as_float_once():
    """The area resize copied the float page before reading it (its channels interleaved): 1.3 GB more for a
    400-dpi newspaper page (12000 x 9000)."""
    page = np.random.default_rng(0).integers(0, 256, (1500, 1100, 3), dtype=np.uint8)
    layout = plan_page(page.shape[:2], Geometry())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as run:
        make_patches(page, layout)
    allocations = [event for event in run.events() if not event.cpu_children and event.cpu_memory_usage > 0]
    assert sum(event.cpu_memory_usage >= 4 * page.size for event in allocations) == 1


def _assert_same(first, second) -> None:
    assert len(first) == len(second)
    assert [m["counts"] for m in first.masks] == [m["counts"] for m in second.masks]
    np.testing.assert_array_equal(first.boxes, second.boxes)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert [m["counts"] for m in first.semantic_masks] == [m["counts"] for m in second.semantic_masks]


@pytest.fixture(scope="module")
def pages():
    return [
        _page((90, 70), (5, 10, 40, 60)),
        _page((70, 130), (60, 5, 120, 30)),
        _page((40, 40), (0, 0, 9, 9)),
    ]


def test_parity_mode_runs_each_page_alone_in_chunks(pages):
    geometry = Geometry(short_range=(64, 64), patch=(32, 32))
    model = DarkRegionModel()
    together = segment_pages(model, pages, ["text"], domain="Test", geometry=geometry, batch_size=4)
    windows = [plan_page(page.shape[:2], geometry).num_patches for page in pages]
    expected_chunks = [size for count in windows for size in [4] * (count // 4) + [count % 4] if size]
    assert model.chunks == expected_chunks
    for page, result in zip(pages, together, strict=True):
        _assert_same(result, segment_pages(model, [page], ["text"], domain="Test", geometry=geometry)[0])


def test_isolated_mode_mixes_pages_without_changing_results(pages):
    geometry = Geometry(short_range=(64, 64), patch=(32, 32))
    reference = segment_pages(DarkRegionModel(), pages, ["text"], domain="Test", geometry=geometry)
    for batch_size in (1, 5, 64):
        model = DarkRegionModel()
        mixed = segment_pages(
            model,
            pages,
            ["text"],
            domain="Test",
            geometry=geometry,
            batch_size=batch_size,
            isolate_batch=True,
        )
        total = sum(plan_page(page.shape[:2], geometry).num_patches for page in pages)
        assert sum(model.chunks) == total and max(model.chunks) == min(batch_size, total)
        for first, second in zip(mixed, reference, strict=True):
            _assert_same(first, second)


class RowsModel:
    """Answers chunk k with 2 + k query rows numbered by value; row `padded_row` of each image is flagged as
    batch padding. Raises CUDA OOM for chunks larger than `fits`."""

    def __init__(self, fits: int = 64, padded_row: int = -1) -> None:
        self.fits = fits
        self.padded_row = padded_row
        self.chunks: list[int] = []

    def __call__(
        self, pixel_values, pixel_mask, image_bboxes, class_names, *, isolate_batch=False, all_stages=True
    ):
        if len(pixel_values) > self.fits:
            raise torch.cuda.OutOfMemoryError("stand-in")
        queries = 2 + len(self.chunks)
        self.chunks.append(len(pixel_values))
        count, height, width = len(pixel_values), pixel_values.shape[-2] // 4, pixel_values.shape[-1] // 4
        rows = torch.arange(1, queries + 1, dtype=torch.float32).repeat(count, 1)
        padding = torch.zeros(count, queries, dtype=torch.bool)
        padding[:, self.padded_row] = True
        return _output(
            rows[..., None, None].expand(count, queries, height, width),
            rows[..., None].expand(count, queries, 4),
            rows[..., None].expand(count, queries, len(class_names[0])),
            torch.zeros(count, len(class_names[0]), height, width),
            padding,
        )


def _patches(count: int) -> PatchBatch:
    return PatchBatch(
        pixel_values=torch.zeros(count, 3, 32, 32),
        pixel_mask=torch.ones(count, 1, 32, 32),
        image_bboxes=torch.tensor([[0, 0, 32, 32]] * count),
    )


@pytest.mark.parametrize("isolate", [False, True])
def test_a_page_s_outputs_are_released_before_the_next_page_is_worked_on(monkeypatch, pages, isolate):
    """Memory holds one page's network outputs and resized masks at a time, not every page's: with random
    DocSAM-Base weights an A4 page's mask logits take 0.65 GB, its merged masks up to as much again. When
    the model runs, or a page's outputs are post-processed, no earlier page's are still held."""
    made: list[weakref.ref] = []  # each page's network outputs and merged result

    def held() -> int:
        return sum(made_one() is not None for made_one in made)

    held_while_working: list[int] = []

    def post_process(outputs, layout):
        held_while_working.append(held())
        made.append(weakref.ref(outputs))
        return postprocess_patches(outputs, layout)

    def merge(detections, layout):
        result = merge_patches(detections, layout)
        made.append(weakref.ref(result))
        return result

    class WatchedModel(DarkRegionModel):
        def __call__(self, *args, **kwargs):
            held_while_working.append(held())
            return super().__call__(*args, **kwargs)

    postprocess_patches, merge_patches = pipeline.postprocess_patches, pipeline.merge_patches
    monkeypatch.setattr(pipeline, "postprocess_patches", post_process)
    monkeypatch.setattr(pipeline, "merge_patches", merge)
    geometry = Geometry(short_range=(64, 64), patch=(32, 32))
    found = segment_pages(
        WatchedModel(), pages, ["text"], domain="Test", geometry=geometry, isolate_batch=isolate
    )
    assert all(len(instances) for instances in found)
    assert len(held_while_working) > len(pages)
    assert held_while_working == [0] * len(held_while_working)


def test_chunks_are_repadded_with_the_reference_fill_values():
    """Parity mode keeps every row (padded rows are live) and pads chunks to the page maximum with
    −1e10 mask logits and zero boxes and class logits, as the reference's `pad_sequence` does."""
    (outputs,) = forward_pages(RowsModel(), [_patches(5)], ["a", "bg"], batch_size=2)
    assert outputs.mask_logits.shape[:2] == (5, 4)
    for patch, chunk in enumerate([0, 0, 1, 1, 2]):
        rows = 2 + chunk
        assert outputs.class_logits[patch, :rows, 0].tolist() == list(range(1, rows + 1))
        assert (outputs.mask_logits[patch, rows:] == MASK_PAD_VALUE).all()
        assert (outputs.boxes[patch, rows:] == 0).all() and (outputs.class_logits[patch, rows:] == 0).all()


@pytest.mark.parametrize("padded_row", [-1, 0])
def test_isolated_mode_blanks_padding_rows(padded_row):
    """Batch-padding rows become fill rows behind the real ones, which keep their order: what each image
    alone would give, re-padded (here to the widest chunk, 4 rows)."""
    model = RowsModel(padded_row=padded_row)
    (outputs,) = forward_pages(model, [_patches(3)], ["a", "bg"], batch_size=1, isolate_batch=True)
    real = [
        [row for row in range(1, 3 + chunk) if row != (padded_row % (2 + chunk)) + 1] for chunk in range(3)
    ]
    assert outputs.class_logits[:, :, 0].tolist() == [rows + [0] * (4 - len(rows)) for rows in real]
    for patch, rows in enumerate(real):
        assert (outputs.mask_logits[patch, len(rows) :] == MASK_PAD_VALUE).all()
        assert (outputs.boxes[patch, len(rows) :] == 0).all()
        assert (outputs.mask_logits[patch, : len(rows), 0, 0] == torch.tensor(rows)).all()


def test_out_of_memory_halves_the_chunks():
    model = RowsModel(fits=2)
    (outputs,) = forward_pages(model, [_patches(5)], ["a", "bg"], batch_size=16)
    assert model.chunks == [2, 2, 1] and outputs.mask_logits.shape[0] == 5
    with pytest.raises(torch.cuda.OutOfMemoryError):
        forward_pages(RowsModel(fits=0), [_patches(2)], ["a", "bg"])


def test_a_model_in_training_mode_is_refused():
    """Its dropout would make every call's instances differ, silently."""
    model = DarkRegionModel()
    model.training = True
    with pytest.raises(ValueError, match=r"training mode .* model.eval\(\)"):
        segment_pages(model, [_page((50, 40), (10, 20, 30, 40))], ["text"], domain="Test")


def test_class_names_given_as_one_string_are_refused():
    """`"text"` would otherwise prompt the model with the classes t, e, x, t."""
    with pytest.raises(ValueError, match="a list of names, got the string 'text'"):
        segment_pages(DarkRegionModel(), [_page((50, 40), (10, 20, 30, 40))], "text", domain="Test")
