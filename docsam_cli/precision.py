"""Numeric precision of the network: the names the commands accept and the autocast they mean.

float32 is the reference behaviour. bf16 / fp16 autocast applies to the network only; post-processing and
losses stay float32. Names are plain strings here so that option parsing never imports torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of `precision` on `device`. Raises ValueError for an unknown name, or fp16 off
    CUDA (CPU autocast has no float16 kernels worth using)."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return dtypes[precision]


@contextlib.contextmanager
def network_autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for the network; float32 runs without autocast (the reference's arithmetic)."""
    import torch

    if dtype != torch.float32:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    elif device.type == "cuda":
        with ieee_float32():
            yield
    else:
        yield


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 convolutions and matrix products on CUDA in IEEE float32. PyTorch lets cuDNN convolutions
    use TensorFloat-32 by default: 10-bit mantissas, about 1e-3 relative error per product, where parity
    with the reference allows 1e-4. Set through the `allow_tf32` flags, not the newer `fp32_precision`
    ones: once those are set, reading `allow_tf32` raises, and libraries still read it."""
    import torch

    flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
    saved = [backend.allow_tf32 for backend in flags]
    try:
        for backend in flags:
            backend.allow_tf32 = False
        yield
    finally:
        for backend, allowed in zip(flags, saved, strict=True):
            backend.allow_tf32 = allowed
