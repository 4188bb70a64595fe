"""How large the temporary tensors of post-processing may be on each device.

On a GPU large chunks mean few kernel launches, and the caching allocator hands the same memory out again.
On the CPU every allocation above glibc's mmap threshold (32 MiB at most) is fresh memory that the kernel
page-faults in and zeroes, costing as much as the arithmetic done in it; below it, freed memory is reused.
"""

from __future__ import annotations

import torch

from model import devices


def chunk_elements(device: torch.device) -> int:
    """Elements of one temporary (float32 or smaller) per chunk of work on `device`."""
    return 1 << 26 if devices.launch_bound(device) else 1 << 21
