"""The memory a model's tensors take, and the memory a device has for them, known before anything is
allocated: a model built on the meta device (`model.checkpoint.meta_model`) has every size and allocates
nothing.

Importing this module does not import torch (the functions that need it import it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from model.cgroups import cgroup_folders

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
    Linux's `MemAvailable` (free memory and the page cache it can reclaim), or less where a cgroup of this
    process has a memory limit (`cgroup_memory_room`: a container's, a Slurm job's, which `/proc/meminfo`
    does not show), plus free swap. None where `/proc/meminfo` does not say (not Linux; Linux before
    3.14): macOS and Windows grow their swap as they need, so no plain figure bounds what a process may have
    there."""
    kilobytes = _meminfo_kilobytes()
    if "MemAvailable" not in kilobytes:
        return None
    in_ram = min([kilobytes["MemAvailable"] * 1024, *cgroup_memory_room()])
    return max(0, in_ram) + kilobytes.get("SwapFree", 0) * 1024


def _meminfo_kilobytes() -> dict[str, int]:
    """The figures of `/proc/meminfo` given in kB, by name (empty where it cannot be read)."""
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return {}
    kilobytes = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields = value.split()
        if len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            kilobytes[name] = int(fields[0])
    return kilobytes


def cgroup_memory_room() -> list[int]:
    """For each cgroup of this process, and each above it, that has a memory limit: the limit less the
    anonymous memory its processes hold (cgroup v2's `memory.max` less `anon` in `memory.stat`, v1's
    `memory.limit_in_bytes` less `total_rss`). Its page cache is left out, as the kernel reclaims it for
    new allocations; so is its kernel memory, which makes the room larger than it is, never smaller."""
    rooms = []
    for folder in cgroup_folders("memory"):
        limit_and_held = _memory_limit_and_held(folder)
        if limit_and_held is not None:
            rooms.append(limit_and_held[0] - limit_and_held[1])
    return rooms


_V1_NO_LIMIT = 2**62  # v1 writes "no limit" as the largest multiple of the page size below 2^63


def _memory_limit_and_held(folder: Path) -> tuple[int, int] | None:
    """The memory limit of the cgroup `folder` and the anonymous memory held in it (None: no limit)."""
    try:
        if (folder / "memory.max").exists():
            limit_text, held_name = (folder / "memory.max").read_text().strip(), "anon"
        else:
            limit_text, held_name = (folder / "memory.limit_in_bytes").read_text().strip(), "total_rss"
        stat = dict(line.split(maxsplit=1) for line in (folder / "memory.stat").read_text().splitlines())
        limit, held = int(limit_text), int(stat.get(held_name, "0"))
    except (OSError, ValueError):  # no such file, "max": no limit
        return None
    return (limit, held) if limit < _V1_NO_LIMIT else None


def amount(size: int) -> str:
    """`size` bytes for a message: MB below 10 GB, GB above."""
    return f"{size / 1e6:.0f} MB" if size < 10**10 else f"{size / 1e9:,.1f} GB"
