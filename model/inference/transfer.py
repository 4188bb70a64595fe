"""Moving data between host and device: the few places where post-processing synchronises.

Post-processing runs where the network ran. The host needs a handful of numbers per page to size what comes
next (how many candidates each patch has, how many instances a page keeps) and, at the end, the results
themselves. `fetch` brings several small tensors over in ONE transfer (one synchronisation); `to_device`
sends host arrays through pinned memory without blocking the host (no synchronisation at all). Nothing else
in `model.inference` reads device values on the host.
"""

from __future__ import annotations

import numpy as np
import torch


def fetch(*tensors: torch.Tensor, dtype: torch.dtype = torch.int64) -> list[np.ndarray]:
    """`tensors` as numpy arrays of `dtype` (their shapes kept), copied to the host together."""
    if not tensors:
        return []
    flat = torch.cat([tensor.reshape(-1).to(dtype) for tensor in tensors]).cpu().numpy()
    arrays, start = [], 0
    for tensor in tensors:
        arrays.append(flat[start : start + tensor.numel()].reshape(tensor.shape))
        start += tensor.numel()
    return arrays


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device`; on CUDA copied asynchronously from pinned memory (the caching host allocator
    keeps the pinned buffer alive until the copy has run)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
