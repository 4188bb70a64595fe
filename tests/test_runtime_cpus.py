"""`usable_cpus` and `fit_threads_to_cpus`: torch computes with the CPUs a container's quota gives the
process, not with every CPU of the machine it may run on (Docker's --cpus, a Kubernetes CPU limit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from cgroup_helpers import fake_cgroups

from docsam_cli import runtime


def _cpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)), raising=False)
    monkeypatch.setattr(os, "process_cpu_count", lambda: count, raising=False)


@pytest.mark.parametrize(
    ("own", "files", "quota"),
    [
        # a container (cgroup v2, its own cgroup mounted as the root): docker run --cpus 0.5
        ("0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "50000 100000\n"}, 0.5),
        # a host's cgroup v2 tree: the lowest quota on the way up counts
        (
            "0::/jobs/job1\n",
            {"cgroup.controllers": "cpu", "cpu.max": "max 100000\n", "jobs/cpu.max": "300000 100000\n"}
            | {"jobs/job1/cpu.max": "max 100000\n"},
            3.0,
        ),
        # cgroup v1, Docker's cgroup mounted as the root: its path in /proc/self/cgroup is not there
        (
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
            {"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            1.5,
        ),
        ("4:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ("0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "max 100000\n"}, None),
        ("0::/\n", {}, None),
    ],
)
def test_the_cpu_quota_is_read_from_the_process_cgroup_and_those_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: str, files: dict[str, str], quota: float | None
) -> None:
    fake_cgroups(tmp_path, monkeypatch, own, files)
    assert runtime.cpu_quota() == quota


@pytest.mark.parametrize(("quota", "cpus"), [("50000 100000", 1), ("150000 100000", 2), ("max 100000", 8)])
def test_usable_cpus_are_those_of_the_affinity_the_quota_gives_time_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: str, cpus: int
) -> None:
    fake_cgroups(tmp_path, monkeypatch, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": quota})
    _cpus(monkeypatch, 8)
    assert runtime.usable_cpus() == cpus
    _cpus(monkeypatch, 1)
    assert runtime.usable_cpus() == 1


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("torch_threads")
def test_torch_computes_with_the_cpus_of_a_container_quota_not_every_cpu_of_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`docker run --cpus 1` on a 4-core machine: torch started 4 threads, which the quota held back in turn
    (under a 0.5-CPU quota on 2 cores, 2 threads took 1.4-1.8 times one thread's time for a convolution)."""
    fake_cgroups(tmp_path, monkeypatch, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "100000 100000"})
    _cpus(monkeypatch, 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    torch.set_num_threads(4)
    with caplog.at_level("INFO", logger=runtime.__name__):
        runtime.fit_threads_to_cpus()
    assert torch.get_num_threads() == 1
    assert caplog.messages == ["computing with 1 thread, the CPU quota of this process's cgroup"]


@pytest.mark.usefixtures("torch_threads")
@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_a_thread_count_the_user_chose_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    fake_cgroups(tmp_path, monkeypatch, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "100000 100000"})
    _cpus(monkeypatch, 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv(variable, "3")
    torch.set_num_threads(3)
    runtime.fit_threads_to_cpus()
    assert torch.get_num_threads() == 3


def test_training_starts_no_more_data_loading_processes_than_a_container_quota_gives_cpus_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docker run --cpus 2` on a 16-core machine: `train --workers 4` started 4 data-loading processes."""
    from docsam_cli.training.trainer import loader_workers

    fake_cgroups(tmp_path, monkeypatch, "0::/\n", {"cgroup.controllers": "cpu", "cpu.max": "200000 100000"})
    _cpus(monkeypatch, 16)
    assert loader_workers(4) == 2
    assert loader_workers(1) == 1
