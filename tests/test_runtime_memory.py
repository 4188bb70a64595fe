"""`keep_freed_memory`: large freed tensors come back warm instead of being page-faulted afresh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_FRESH_FAULTS = """
import resource, sys, torch
from docsam_cli.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
size = 64 * 2**20 // 4  # 64 MiB of float32: above glibc's largest mmap threshold (32 MiB)
for _ in range(10):  # glibc settles on where the block goes after a few rounds
    torch.ones(size)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(size)  # allocated, touched, freed
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_ten_tensors(mode: str) -> tuple[bool, int]:
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_FAULTS, mode], capture_output=True, text=True, check=True
    )
    applied, faults = result.stdout.split()
    return applied == "1", int(faults)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="glibc's malloc only",
)
def test_a_freed_large_tensor_is_reused_without_page_faults():
    applied, kept = _faults_of_ten_tensors("keep")
    _, default = _faults_of_ten_tensors("default")
    assert applied
    pages = 10 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert default > pages // 2  # glibc's default maps each afresh (unless the kernel hands out huge pages)
    assert kept < pages // 5  # most come back warm
