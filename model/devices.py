"""The one difference between devices that shapes how the model's code is written."""

from __future__ import annotations

import torch


def launch_bound(device: torch.device) -> bool:
    """Whether many small operators cost more on `device` than the memory they touch: on an accelerator each
    operator costs the host microseconds to launch, so work goes in few large operators; on the CPU memory
    traffic is the cost, so large temporaries are avoided. Code that chooses between the two asks here
    (looked up at call time, so that `benchmarks/` can count a GPU's operators on a CPU)."""
    return device.type != "cpu"
