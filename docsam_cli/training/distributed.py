"""torch.distributed as `torchrun` sets it up: one process per device, DDP over gloo (CPU) or NCCL (CUDA).

Launch (the reference uses the same engine):

    torchrun --nproc_per_node 8 -m docsam_cli train ...                    # one machine, 8 GPUs
    torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT --nproc_per_node 8 -m docsam_cli train ...

Without torchrun's environment (`WORLD_SIZE` unset) training runs in the current process only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the processes (every process gets the result)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP with `find_unused_parameters`: the text encoder runs under no_grad, the FPN and a few decoder
        parameters never take part in the loss (the reference needs the flag for the same reason)."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def setup(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes, or run alone; pick this process's device.

    `auto` means CUDA when available, else CPU; `cuda` without an index is GPU `LOCAL_RANK` under torchrun.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size == 1:
        return Distributed(device=chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(hours=1))
    return Distributed(dist.get_rank(), dist.get_world_size(), chosen)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
