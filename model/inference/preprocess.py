"""Page → model inputs: the reference's test-time resize and its thumbnail + window patches.

Input pixels stay BGR in 0..255, never normalised (docs/design.md, "raw BGR pixels"). Both resizes use
`area` interpolation, which is adaptive average pooling also when enlarging ("test-time geometry").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.inference.geometry import PageLayout
from model.inference.transfer import to_device


@dataclass
class PatchBatch:
    """The model inputs of one page: the thumbnail first, then the windows in row-major order."""

    pixel_values: torch.Tensor  # (P, 3, ph, pw) float32, BGR 0..255
    pixel_mask: torch.Tensor  # (P, 1, ph, pw) float32, 1 = page pixel
    image_bboxes: torch.Tensor  # (P, 4) int64 [x1, y1, x2, y2] of the page pixels inside each patch

    def __len__(self) -> int:
        return self.pixel_values.shape[0]


def page_to_tensor(page: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A decoded BGR uint8 `(H, W, 3)` page as the reference's float `(3, H, W)` image.

    The uint8 array crosses to the device before the float conversion: a quarter of the transfer, and on
    CUDA an asynchronous one. The conversion lays the channels out one after the other, as the area resize
    reads them: kept interleaved, as the page's channels are, the resize copied the float page first (1.3
    GB more for a 400-dpi newspaper page).
    """
    if page.ndim != 3 or page.shape[2] != 3 or page.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 (H, W, 3) page, got {page.dtype} {page.shape}")
    channels = to_device(page, torch.device(device)).permute(2, 0, 1)
    return channels.to(torch.float32, memory_format=torch.contiguous_format)


def area_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(mode="area")` of a `(C, H, W)` image; skipped when the size stays (identity)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="area")[0]


def make_patches(page: np.ndarray, layout: PageLayout, device: torch.device | str = "cpu") -> PatchBatch:
    """Resize the page and cut it like the reference's `sliding_window_crop`.

    Patch 0 is the resized page area-resized to one patch (aspect distorted). With a canvas larger than the
    resized page (docs/design.md, "padded small pages") the windows see zero pixels there, with `pixel_mask`
    0 and `image_bboxes` shrunk to the page part, the padding convention of the reference's training
    collation.
    """
    if (page.shape[0], page.shape[1]) != layout.original:
        raise ValueError(f"page is {page.shape[:2]}, layout expects {layout.original}")
    resized = area_resize(page_to_tensor(page, device), layout.resized)
    canvas, canvas_mask = _pad_to_canvas(resized, layout)
    patch_h, patch_w = layout.patch
    values = [area_resize(resized, layout.patch)]
    masks = [torch.ones(1, patch_h, patch_w, device=resized.device)]
    bboxes = [(0, 0, patch_w, patch_h)]
    height, width = layout.resized
    for x1, y1, x2, y2 in layout.windows:
        values.append(canvas[:, y1:y2, x1:x2])
        masks.append(canvas_mask[:, y1:y2, x1:x2])
        bboxes.append((0, 0, min(x2, width) - x1, min(y2, height) - y1))
    return PatchBatch(
        pixel_values=torch.stack(values),
        pixel_mask=torch.stack(masks),
        image_bboxes=to_device(np.array(bboxes, dtype=np.int64), resized.device),
    )


def _pad_to_canvas(resized: torch.Tensor, layout: PageLayout) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = layout.resized
    pad = (0, layout.canvas[1] - width, 0, layout.canvas[0] - height)
    mask = torch.ones(1, height, width, device=resized.device)
    if pad == (0, 0, 0, 0):
        return resized, mask
    return F.pad(resized, pad), F.pad(mask, pad)
