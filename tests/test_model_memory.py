"""The memory a model's tensors take against the memory its devices have free, known before anything is
allocated (`model.memory`, `model.checkpoint.refuse_unheld`). Budgets are faked: nothing here allocates
more than the tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from cgroup_helpers import fake_cgroups

from model import CheckpointError, cgroups, load_model
from model.cgroups import cgroup_folders
from model.checkpoint import meta_model
from model.memory import available_cpu_memory, tensor_bytes

MEMINFO = """\
MemTotal:       24684000 kB
MemFree:         1393000 kB
MemAvailable:   13871000 kB
Buffers:          120000 kB
SwapTotal:       2097148 kB
SwapFree:        1048576 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def _fake_meminfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    path = tmp_path / "meminfo"
    path.write_text(text)
    monkeypatch.setattr("model.memory.MEMINFO", path)


def test_the_cpu_has_what_the_kernel_can_give_without_other_processes_memory(monkeypatch, tmp_path):
    """MemAvailable (free memory and reclaimable page cache) plus free swap; MemFree alone would leave out
    the page cache the kernel drops for a new allocation, and refuse models that would have run."""
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO)
    assert available_cpu_memory() == (13871000 + 1048576) * 1024
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.replace("SwapFree:        1048576 kB\n", ""))
    assert available_cpu_memory() == 13871000 * 1024


GIB = 2**30


V2, V1 = (
    {"cgroup.controllers": "memory", "memory.stat": f"anon {GIB}\n"},
    {"memory/memory.stat": f"total_rss {GIB}\n"},
)


@pytest.mark.parametrize(
    ("own", "files", "in_ram"),
    [
        # a container (cgroup v2, its own cgroup mounted as the root): docker run --memory 4g, 1 GiB held
        ("0::/\n", {**V2, "memory.max": f"{4 * GIB}\n"}, 3 * GIB),
        # a Slurm job's cgroup v2 tree: the least room on the way up counts, each cgroup's own anon held
        (
            "0::/job/step\n",
            {**V2, "job/memory.max": f"{2 * GIB}\n", "job/memory.stat": f"anon {GIB // 2}\nfile {GIB}\n"}
            | {"job/step/memory.max": "max\n", "job/step/memory.stat": "anon 1\n"},
            GIB + GIB // 2,
        ),
        # cgroup v1, Docker's cgroup mounted as the root: its path in /proc/self/cgroup is not there
        (
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
            {**V1, "memory/memory.limit_in_bytes": f"{3 * GIB}"},
            2 * GIB,
        ),
        # no limit: v1 writes the largest multiple of the page size below 2^63, v2 "max"
        ("12:memory:/\n", {**V1, "memory/memory.limit_in_bytes": "9223372036854771712\n"}, 13871000 * 1024),
        ("0::/\n", {**V2, "memory.max": "max\n"}, 13871000 * 1024),
        # a limit lowered below what the cgroup holds: no room in RAM, none less than none
        ("0::/\n", {**V2, "memory.max": f"{GIB // 2}\n"}, 0),
        # a limit above what the machine has free: MemAvailable counts
        ("0::/\n", {**V2, "memory.max": f"{64 * GIB}\n"}, 13871000 * 1024),
    ],
)
def test_a_cgroup_memory_limit_leaves_less_than_the_machine_has_free(
    monkeypatch, tmp_path, own: str, files: dict[str, str], in_ram: int
):
    """/proc/meminfo is the machine's, in a container or a Slurm job too: a model that its memory limit
    cannot hold passed the check and ended in the out-of-memory killer. Its page cache is reclaimed for new
    allocations, its anonymous memory is not; swap adds the same in either case."""
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO)
    fake_cgroups(tmp_path / "cgroup", monkeypatch, own, files)
    assert available_cpu_memory() == in_ram + 1048576 * 1024


@pytest.mark.parametrize(
    ("own", "files", "folders"),
    [
        # cgroup v1, Docker's cgroup mounted as the root: its path in /proc/self/cgroup is not there
        ("12:memory:/docker/abc\n", V1, ["memory"]),
        # a Slurm job's cgroup v2 tree: its own, then each above it up to the root
        ("0::/job/step\n", {**V2, "job/step/memory.stat": "anon 1\n"}, ["job/step", "job", "."]),
        # a cgroup name may hold a colon, the separator of /proc/self/cgroup's fields
        ("0::/job:7\n", {**V2, "job:7/memory.stat": "anon 1\n"}, ["job:7", "."]),
    ],
)
def test_the_cgroups_read_are_the_process_own_and_those_above_it_that_exist(
    monkeypatch, tmp_path, own: str, files: dict[str, str], folders: list[str]
):
    fake_cgroups(tmp_path, monkeypatch, own, files)
    assert cgroup_folders("memory") == [tmp_path / folder for folder in folders]


def test_without_proc_self_cgroup_only_the_machine_figures_count(monkeypatch, tmp_path):
    """macOS and Windows have no /proc/self/cgroup: no cgroup limits apply, the machine's figures stand."""
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO)
    monkeypatch.setattr(cgroups, "OWN_CGROUPS", tmp_path / "missing")
    assert cgroup_folders("memory") == []
    assert available_cpu_memory() == (13871000 + 1048576) * 1024


def test_no_figure_is_made_up_where_the_system_gives_none(monkeypatch, tmp_path):
    """A Linux before 3.14 has no MemAvailable; macOS and Windows no /proc/meminfo: nothing is checked."""
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.replace("MemAvailable:   13871000 kB\n", ""))
    assert available_cpu_memory() is None
    monkeypatch.setattr("model.memory.MEMINFO", tmp_path / "missing")
    assert available_cpu_memory() is None


def test_the_tensors_of_a_meta_model_are_those_the_built_model_allocates(tiny_config, tiny_model):
    assert tensor_bytes(meta_model(tiny_config, "tiny")) == tensor_bytes(tiny_model) > 0


def _cpu_budget(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr("model.memory.available_cpu_memory", lambda: free)


def _built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every DocSAM built off the meta device (the meta model is built before any check)."""
    from model.docsam import DocSAM

    built: list[object] = []
    original = DocSAM.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if next(self.parameters()).device.type != "meta":
            built.append(self)

    monkeypatch.setattr(DocSAM, "__init__", recording)
    return built


def test_a_model_the_cpu_has_no_room_for_is_refused_before_it_is_built(monkeypatch, tiny_weights, tiny_model):
    """The weights read, the model's own tensors need the same again: with less free than that, building
    it ended in the kernel's out-of-memory killer. It is now refused in one line
    naming the file, the bytes needed and the bytes free, and nothing is built; exactly enough loads."""
    needed = tensor_bytes(tiny_model)
    built = _built(monkeypatch)
    _cpu_budget(monkeypatch, needed - 1)
    with pytest.raises(CheckpointError) as caught:
        load_model(tiny_weights)
    message = str(caught.value)
    assert "\n" not in message and not built
    expected = (
        rf"{re.escape(str(tiny_weights))}: an architecture of [\d,]+ parameters, whose tensors alone take "
        rf"{needed / 1e6:.0f} MB, more than the {(needed - 1) / 1e6:.0f} MB of memory free on cpu"
    )
    assert re.fullmatch(expected, message), message
    _cpu_budget(monkeypatch, needed)
    assert load_model(tiny_weights) is built[0]


def test_a_model_its_cuda_device_has_no_room_for_is_refused_before_it_is_built(monkeypatch, tiny_weights):
    """What torch's caching allocator holds unused counts as free: this process reuses it."""
    needed = tensor_bytes(load_model(tiny_weights))
    built = _built(monkeypatch)
    _cpu_budget(monkeypatch, 10**12)
    free, reserved, allocated = needed // 2, needed // 2, 1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: allocated)
    with pytest.raises(CheckpointError, match=r"more than the \d+ MB of memory free on cuda:1$"):
        load_model(tiny_weights, device="cuda:1")
    assert not built


def test_the_message_of_a_model_of_terabytes_says_gigabytes(monkeypatch, tiny_config):
    """A width of 10^10, which torch can hold on the meta device but no machine in memory."""
    from dataclasses import replace

    from model.checkpoint import refuse_unheld

    huge = replace(tiny_config, encoder_feedforward_dim=10**10)
    _cpu_budget(monkeypatch, 8 * 10**9)
    with pytest.raises(CheckpointError, match=r"take [\d,]+\.\d GB, more than the 8000 MB of memory free"):
        refuse_unheld(meta_model(huge, "huge.json"), "huge.json")
