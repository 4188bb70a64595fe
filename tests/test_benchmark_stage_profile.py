"""`benchmarks/stage_profile.py` puts each profiled operator in the innermost stage around it and gives
each stage its own wall time, the stages inside it excluded (checked on the CPU, where its tables rank
operators by their own CPU time)."""

from __future__ import annotations

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.stage_profile import _Marks, _report
from benchmarks.stages import NETWORK_REST


class Network(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(64, 64)
        self.pixel_decoder = nn.Identity()
        self.mask_feature_fusion = nn.Identity()
        self.text_encoder = nn.Identity()
        self.decoder = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(x)  # outside every part: the rest of the network
        return self.decoder(self.text_encoder(self.mask_feature_fusion(self.pixel_decoder(self.backbone(x)))))


def test_operators_land_in_their_innermost_stage():
    model, marks = Network(), _Marks()
    x = torch.randn(256, 64)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        with marks.stage("pre-processing"):
            x = x * 2
        with marks.network(model):
            y = model(x)
        with marks.stage("post-processing"):
            torch.cumsum(y, 0)
    report = _report(profiler.events(), on_device=False)
    operators = {stage: set(ops) for stage, ops in report.operators.items()}
    assert "aten::mul" in operators["pre-processing"]
    assert "aten::addmm" in operators["backbone"] and "aten::addmm" not in operators[NETWORK_REST]
    assert "aten::sigmoid" in operators[NETWORK_REST]
    assert "aten::cumsum" in operators["post-processing"]
    assert all(
        calls >= 1 and seconds >= 0 for ops in report.operators.values() for calls, seconds in ops.values()
    )
    assert report.kernel_seconds["backbone"] == 0  # no kernels on the CPU
    assert report.host_seconds["backbone"] > 0 and report.host_seconds[NETWORK_REST] >= 0
    assert "backbone" in report.table() and "operators by self CPU s" in report.table()
