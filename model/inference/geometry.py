"""Page geometry of the reference test pipeline: the page resize and the sliding windows (docs/design.md,
"test-time geometry").

Everything here is plain integer arithmetic on sizes; no tensors. Sizes are `(height, width)`, boxes are
`(x1, y1, x2, y2)` with exclusive ends, as the reference's `patch_bboxes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Size = tuple[int, int]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Geometry:
    """How a page is resized and cut into windows.

    The defaults are the reference's test settings: short side `(704 + 896) // 2 = 800` with each side capped
    at twice that (aspect ratio may change), 640×640 windows at stride 320. `keep_size=True` is the
    "keepsize" variant: keep the page size when its short side lies in `short_range`, otherwise scale
    it into the range; use `Geometry.keep_size_default()` for the released keepsize checkpoint's (640, 1280).
    A fixed short side `s` is `short_range=(s, s)`.
    """

    short_range: Size = (704, 896)
    patch: Size = (640, 640)  # (height, width) of the model input windows
    stride: Size | None = None  # (vertical, horizontal); None = half the patch, as in the reference
    keep_size: bool = False

    def __post_init__(self) -> None:
        low, high = self.short_range
        if not 0 < low <= high:
            raise ValueError(f"short_range must be 0 < low <= high, got {self.short_range}")
        if min(self.patch) <= 0:
            raise ValueError(f"patch sides must be positive, got {self.patch}")
        if self.stride is not None and min(self.stride) <= 0:
            raise ValueError(f"stride must be positive, got {self.stride}")
        if self.stride is None and min(self.patch) < 2:
            raise ValueError(f"patch sides must be at least 2 (the stride is half of them), got {self.patch}")

    @classmethod
    def keep_size_default(cls) -> Geometry:
        """The settings of the reference's keepsize scripts (`SHORT_RANGE 640,1280`)."""
        return cls(short_range=(640, 1280), keep_size=True)

    @property
    def window_stride(self) -> Size:
        return self.stride if self.stride is not None else (self.patch[0] // 2, self.patch[1] // 2)


@dataclass(frozen=True)
class PageLayout:
    """Where everything of one page lives.

    `resized` is the page after the reference resize: all reference outputs are in these coordinates.
    `canvas` is `resized` padded at the bottom/right to at least one patch (docs/design.md, "padded small
    pages": the reference crashes when a resized side is shorter than the patch; we zero-pad instead and
    mark the padding invalid in `pixel_mask`/`image_bboxes`). With the reference rules `canvas == resized`.
    `windows` are the sliding windows on the canvas; the thumbnail (the whole resized page squeezed to one
    patch) comes first in the model batch and is not listed here.
    """

    original: Size
    resized: Size
    canvas: Size
    patch: Size
    windows: tuple[Box, ...]

    @property
    def patch_boxes(self) -> tuple[Box, ...]:
        """The reference's `patch_bboxes`: the thumbnail covers the page `[0, 0, W, H]`, then the windows."""
        height, width = self.resized
        return ((0, 0, width, height), *self.windows)

    @property
    def num_patches(self) -> int:
        return 1 + len(self.windows)


def resized_size(original: Size, geometry: Geometry) -> Size:
    """The reference's test-time `_data_resize` with Python's `round` (half to even)."""
    if min(original) <= 0:
        raise ValueError(f"page has an empty side: {original}")
    if geometry.keep_size:
        return _keep_size_resize(original, geometry.short_range)
    low, high = geometry.short_range
    short_side = (low + high) // 2
    scale = short_side / min(original)
    height, width = original
    return min(round(height * scale), 2 * short_side), min(round(width * scale), 2 * short_side)


def _keep_size_resize(original: Size, short_range: Size) -> Size:
    """Keepsize rule: scale only when the short side leaves `short_range`, then cap each side at twice
    the new short side."""
    height, width = original
    low, high = short_range
    short = min(height, width)
    scale = low / short if short < low else high / short if short > high else 1.0
    height, width = round(height * scale), round(width * scale)
    short = min(height, width)
    return min(height, 2 * short), min(width, 2 * short)


def window_boxes(size: Size, patch: Size, stride: Size) -> tuple[Box, ...]:
    """The reference's `sliding_window_crop`: row-major windows at `stride`, the last row/column snapped to
    the border.

    Assumes `size >= patch` on both axes (the caller pads, see `PageLayout`).
    """
    height, width = size
    rows = _window_starts(height, patch[0], stride[0])
    cols = _window_starts(width, patch[1], stride[1])
    return tuple((x1, y1, x1 + patch[1], y1 + patch[0]) for y1 in rows for x1 in cols)


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    count = math.ceil((length - window) / stride) + 1
    return [max(min(index * stride + window, length) - window, 0) for index in range(count)]


def plan_page(original: Size, geometry: Geometry) -> PageLayout:
    """Resize and window plan of one page of `original = (height, width)` pixels."""
    resized = resized_size(original, geometry)
    canvas = (max(resized[0], geometry.patch[0]), max(resized[1], geometry.patch[1]))
    windows = window_boxes(canvas, geometry.patch, geometry.window_stride)
    return PageLayout(
        original=original, resized=resized, canvas=canvas, patch=geometry.patch, windows=windows
    )
