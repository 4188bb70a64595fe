"""The memory a model's tensors take, and the memory a device has for them, known before anything is
allocated: a model built on the meta device (`model.checkpoint.meta_model`) has every size and allocates
nothing.

Importing this module does not import torch (the functions that need it import it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

MEMINFO = Path("/proc/meminfo")


def tensor_bytes(module: nn.Module) -> int:
    """The bytes of `module`'s parameters and buffers at their own dtypes (a tensor shared by two names
    counted once), on whatever device they are: what building the module allocates for them."""
    return sum(tensor.numel() * tensor.element_size() for tensor in (*module.parameters(), *module.buffers()))


def free_memory(device: torch.device) -> int | None:
    """The bytes `device` can still give this process: on the CPU `available_cpu_memory`; on a CUDA device
    what is free there, plus what torch's caching allocator holds there unused (this process's own to
    reuse); None where it is not known (another kind of device, a system without `/proc/meminfo`)."""
    import torch

    if device.type == "cpu":
        return available_cpu_memory()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def available_cpu_memory() -> int | None:
    """The memory the kernel can give this process without taking any from other processes' pages in RAM:
    Linux's `MemAvailable` (free memory and the page cache it can reclaim) plus free swap. None where
    `/proc/meminfo` does not say (not Linux; Linux before 3.14): macOS and Windows grow their swap as they
    need, so no plain figure bounds what a process may have there."""
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return None
    kilobytes = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields = value.split()
        if len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            kilobytes[name] = int(fields[0])
    if "MemAvailable" not in kilobytes:
        return None
    return (kilobytes["MemAvailable"] + kilobytes.get("SwapFree", 0)) * 1024


def amount(size: int) -> str:
    """`size` bytes for a message: MB below 10 GB, GB above."""
    return f"{size / 1e6:.0f} MB" if size < 10**10 else f"{size / 1e9:,.1f} GB"
