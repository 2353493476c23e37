"""What this machine lets the course use: cores, memory, shared memory and disk.

Four limits decide how far a parallel program can go, and a container (Docker, a JupyterHub on
Kubernetes, Binder) sets each of them lower than the machine it runs on shows::

      limit              where it comes from                         who sets it
      ─────              ───────────────────                         ───────────
      cores we may use   CPU affinity (sched_getaffinity)            taskset, a batch scheduler
                         a CPU quota (cgroup cpu.max, cpu.cfs_*)     docker --cpus, Kubernetes limits
      memory             the cgroup memory limit                     docker --memory, Binder (~2 GB)
      shared memory      the size of /dev/shm (a tmpfs)              docker --shm-size (64 MB default)
      disk for data/     the file system holding it

``os.cpu_count()`` counts the machine's cores and sees none of this: a container limited to two
CPUs by quota on a 64-core host still answers 64, and a pool of 64 CPU-bound workers then takes
turns on two cores' worth of time. :func:`cpu_limits` reads all three numbers, as loky's
``cpu_count`` does, and says which one limits. Every function here only reads; none starts a
process, so ``python -m mpdemo check`` can call them first.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import psutil

#: Where Linux keeps the process's cgroups and the file systems they are mounted on.
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")
SHM = Path("/dev/shm")
#: cgroup v1 reports "no limit" as a huge number near 2**63; anything above this is no limit.
NO_LIMIT = 2**60


class CpuLimits(NamedTuple):
    """The machine's cores, those this process may run on, and its CPU quota (None: no quota)."""

    machine: int
    affinity: int
    quota: float | None

    @property
    def usable(self) -> int:
        """The cores CPU-bound workers can keep busy: affinity, lowered by a quota (rounded up)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.ceil(self.quota)))

    def explain(self) -> str:
        """Where :attr:`usable` came from, in words."""
        text = f"{self.usable} usable of {self.machine} on this machine"
        if self.affinity < self.machine:
            text += f"; CPU affinity allows {self.affinity}"
        if self.quota is not None:
            limiting = "the limit" if self.usable < self.affinity else "no lower"
            text += f"; a CPU quota allows {self.quota:g} ({limiting})"
        return text


def cpu_limits() -> CpuLimits:
    """The three CPU figures of this process (see the module doc)."""
    machine = os.cpu_count() or 1
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        affinity = os.process_cpu_count() or machine
    elif hasattr(os, "sched_getaffinity"):  # Linux
        affinity = len(os.sched_getaffinity(0))
    else:
        affinity = machine
    return CpuLimits(machine, affinity, cpu_quota())


def cpu_quota() -> float | None:
    """CPUs' worth of time per second the cgroup quota allows this process (None: no quota).

    cgroup v2 writes ``"<quota> <period>"`` into ``cpu.max`` (``"max 100000"``: none); v1 splits
    it into ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``. Every cgroup from this
    process's own up to the root can set one; the smallest counts.
    """
    quotas = []
    for folder in cgroup_folders("cpu"):
        if (folder / "cpu.max").is_file():
            quota, _, period = _read(folder / "cpu.max").partition(" ")
            if quota != "max" and period:
                quotas.append(int(quota) / int(period))
        elif (folder / "cpu.cfs_quota_us").is_file():
            quota, period = int(_read(folder / "cpu.cfs_quota_us")), int(_read(folder / "cpu.cfs_period_us"))
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    return min(quotas, default=None)


def memory_limit() -> int | None:
    """Bytes the cgroup memory limit allows this process and its children (None: no limit)."""
    limits = []
    for folder in cgroup_folders("memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):  # cgroup v2, v1
            if (folder / name).is_file():
                value = _read(folder / name)
                if value != "max" and int(value) < NO_LIMIT:
                    limits.append(int(value))
    return min(limits, default=None)


def cgroup_folders(controller: str) -> list[Path]:
    """The cgroup folders of this process for ``controller``, from its own up to the mount's root.

    ``/proc/self/cgroup`` names the process's cgroup per hierarchy (``4:memory:/docker/ab12…``
    for v1, ``0::/user.slice/…`` for v2) and ``/proc/self/mountinfo`` where each hierarchy is
    mounted. Empty where there are no cgroups (macOS, Windows).
    """
    try:
        memberships = _read(PROC_CGROUP).splitlines()
        mounts = _read(PROC_MOUNTINFO).splitlines()
    except OSError:
        return []
    folders = []
    for membership in memberships:
        _, controllers, path = membership.split(":", 2)
        version2 = controllers == ""
        if not version2 and controller not in controllers.split(","):
            continue
        for mount in mounts:
            fields = mount.split()
            root, point, kind = fields[3], fields[4], fields[fields.index("-") + 1]
            if (kind == "cgroup2") != version2 or (not version2 and controller not in fields[-1].split(",")):
                continue
            inside = os.path.relpath(path, root) if path.startswith(root) else "."
            folder = Path(point) / inside
            while True:
                folders.append(folder)
                if folder == Path(point):
                    break
                folder = folder.parent
    return folders


def _read(path: Path) -> str:
    return path.read_text().strip()


class Space(NamedTuple):
    """A file system's size and what is free on it, in bytes."""

    total: int
    free: int


def shm_space() -> Space | None:
    """The size of ``/dev/shm`` and what it has free, or None where there is no ``/dev/shm``
    (macOS and Windows keep shared memory elsewhere, and have no such limit)."""
    if not SHM.is_dir():
        return None
    usage = shutil.disk_usage(SHM)
    return Space(usage.total, usage.free)


def disk_space(folder: str | os.PathLike) -> Space:
    """The size and free space of the file system that holds ``folder``."""
    usage = shutil.disk_usage(folder)
    return Space(usage.total, usage.free)


def free_memory() -> int:
    """Bytes of memory available to new work now: the machine's, or less under a cgroup limit."""
    available = psutil.virtual_memory().available
    limit = memory_limit()
    if limit is None:
        return available
    return max(0, min(available, limit - _cgroup_memory_used()))


def _cgroup_memory_used() -> int:
    for folder in cgroup_folders("memory"):
        for name in ("memory.current", "memory.usage_in_bytes"):  # cgroup v2, v1
            if (folder / name).is_file():
                return int(_read(folder / name))
    return 0


def megabytes(size: float) -> str:
    """Bytes in words a learner reads at a glance: ``"64 MB"``, ``"1.5 GB"`` (1 MB = 2**20 bytes)."""
    if size >= 2**30:
        return f"{size / 2**30:,.1f} GB"
    return f"{size / 2**20:,.0f} MB"
