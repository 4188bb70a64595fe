"""The cgroups a process's limits come from (a container's, a Slurm job's, a Kubernetes pod's): its own and
those above it, which `/proc/self/cgroup` names, under cgroup v2 or v1. Read by the CPU quota
(`docsam_cli.runtime.cpu_quota`) and the memory limit (`model.memory.cgroup_memory_room`)."""

from __future__ import annotations

from pathlib import Path

CGROUPS, OWN_CGROUPS = Path("/sys/fs/cgroup"), Path("/proc/self/cgroup")


def cgroup_folders(controller: str) -> list[Path]:
    """The folders of this process's cgroup and of those above it, under the unified (v2) hierarchy and
    `controller`'s v1 one (`cpu`, `memory`); in a container, whose cgroup is mounted as the root, the
    root."""
    try:
        lines = OWN_CGROUPS.read_text().splitlines()
    except OSError:  # not Linux
        return []
    folders: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root = CGROUPS if (CGROUPS / "cgroup.controllers").exists() else CGROUPS / "unified"
        elif controller in controllers.split(","):
            root = CGROUPS / controller
        else:
            continue
        own = root / path.lstrip("/")
        own = own if own.is_dir() else root
        folders += [own, *(folder for folder in own.parents if folder.is_relative_to(root))]
    return folders
