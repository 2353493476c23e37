"""The setup check: can this machine run the course, and which notebooks fit in what it allows?

``python -m mpdemo check`` (or ``mpdemo.check()`` in a notebook) prints one line per check and
a verdict, and exits 0 when the course can run. It really starts a worker process, so a broken
setup shows up before the workshop, not during it. Then it reports the four limits of
:mod:`mpdemo.machine` and, for each notebook at the chosen size (``MPDEMO_SIZE``), whether it
fits: a notebook that needs more shared memory or memory than there is runs with less (it says
so), and the report says what to set.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from multiprocessing import shared_memory
from typing import NamedTuple

from mpdemo import workloads
from mpdemo.chunking import chunked_map
from mpdemo.context import size, start_method
from mpdemo.data import data_dir, missing_data
from mpdemo.machine import cpu_limits, disk_space, free_memory, megabytes, memory_limit, shm_space
from mpdemo.pool import ProcessPool

MB = 2**20


class Needs(NamedTuple):
    """What one notebook needs at its largest, in MB: shared memory, memory, disk for its data."""

    shm: int
    memory: int
    disk: int


#: What each notebook needs, measured on the course's machine (2026-12), small and full size.
NEEDS = {
    "small": {
        "00_start_here": Needs(1, 300, 0), "01_gil": Needs(1, 400, 0), "02_chunking": Needs(1, 400, 0),
        "03_queues": Needs(1, 600, 10), "04_shared_memory": Needs(130, 800, 0), "05_memmap": Needs(70, 800, 330),
        "06_profiling": Needs(1, 400, 0), "07_choosing_and_scaling_out": Needs(1, 900, 0),
        "08_dataframes_and_columnar_files": Needs(1, 1000, 5),  # 08: estimated from 07's (a cluster and a pool)
    },
    "full": {
        "00_start_here": Needs(1, 300, 0), "01_gil": Needs(1, 700, 0), "02_chunking": Needs(1, 500, 0),
        "03_queues": Needs(1, 900, 250), "04_shared_memory": Needs(1050, 2600, 0),
        "05_memmap": Needs(260, 1500, 1300), "06_profiling": Needs(1, 500, 0),
        "07_choosing_and_scaling_out": Needs(1, 1200, 0), "08_dataframes_and_columnar_files": Needs(1, 1500, 150),
    },
}
#: What to do when a notebook does not fit, by the limit it does not fit in.
ADVICE = {
    "shm": "give /dev/shm more room (docker run --shm-size=2g; on a JupyterHub, a memory-backed emptyDir at /dev/shm)",
    "memory": "give the container more memory, or run with MPDEMO_SIZE=small",
    "disk": "free disk space for data/, or run with MPDEMO_SIZE=small",
}


def _check_pool(method: str) -> str:
    """Run an ``mpdemo.workloads`` function in a real worker; raises if the pool cannot."""
    with ProcessPool(1, method=method) as pool:
        result = chunked_map(workloads.cpu_bound, [3], executor=pool)
    if result != [workloads.cpu_bound(3)]:
        raise RuntimeError(f"the worker returned {result!r}")
    return f"a {method} worker ran mpdemo.workloads.cpu_bound"


def _check_shared_memory() -> str:
    """Create, write, read and remove one shared-memory block."""
    block = shared_memory.SharedMemory(create=True, size=16)
    try:
        block.buf[0] = 42
        if block.buf[0] != 42:
            raise RuntimeError("the block did not keep what was written")
    finally:
        block.close()
        block.unlink()
    return "shared memory can be created and removed"


def _versions() -> str:
    names = ["mpdemo", "numpy", "matplotlib", "ipywidgets", "tqdm", "psutil"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return f"Python {platform.python_version()} ({sys.platform}); " + ", ".join(found)


def limits() -> dict[str, str]:
    """The machine's limits, in words: cores, memory, /dev/shm, disk for data/ and the data there."""
    memory = memory_limit()
    shm = shm_space()
    disk = disk_space(data_dir())
    missing = missing_data()
    return {
        "cores": cpu_limits().explain(),
        "memory": (f"{megabytes(free_memory())} free now" +
                   (f"; a limit of {megabytes(memory)} (cgroup)" if memory is not None else "; no cgroup limit")),
        "/dev/shm": (f"{megabytes(shm.free)} free of {megabytes(shm.total)}" if shm is not None
                     else "none here (shared memory lives elsewhere on this system, with no such limit)"),
        "disk for data/": f"{megabytes(disk.free)} free in {data_dir()}",
        "data": ("every data file of this size is there" if not missing else
                 f"{len(missing)} file(s) still to write: python -m mpdemo data (or the notebooks write them)"),
    }


def verdicts(kind: str | None = None) -> dict[str, str]:
    """For each notebook at ``kind`` (default ``MPDEMO_SIZE``): fits, or what it lacks and what to do."""
    shm = shm_space()
    memory = memory_limit() or free_memory()
    disk = disk_space(data_dir()).free
    found = {}
    for notebook, needs in NEEDS[kind or size()].items():
        short = []
        if shm is not None and needs.shm * MB > shm.total:
            short.append(("shm", f"{needs.shm} MB of /dev/shm, which has {megabytes(shm.total)}"))
        if needs.memory * MB > memory:
            short.append(("memory", f"{megabytes(needs.memory * MB)} of memory, with {megabytes(memory)} allowed"))
        if needs.disk * MB > disk:
            short.append(("disk", f"{needs.disk} MB of disk for its data, with {megabytes(disk)} free"))
        if not short:
            found[notebook] = "fits"
        else:
            what = "; ".join(text for _, text in short)
            advice = "; ".join(ADVICE[limit] for limit, _ in short)
            found[notebook] = (f"runs smaller than planned: it wants {what} (it says what it leaves out). "
                               f"To fit: {advice}")
    return found


def check() -> bool:
    """Print a setup report, one line per check and a verdict; return True when all pass.

    Run it first on a new machine: ``python -m mpdemo check`` exits 0 when the course can run.
    The limits and the notebooks' verdicts follow; they are information, not failures.
    """
    checks: dict[str, Callable[[], str]] = {
        "versions": _versions,
        "start method": lambda: f"{start_method()} (of {', '.join(multiprocessing.get_all_start_methods())})",
        "data size": size,
        "spawn pool": lambda: _check_pool("spawn"),
        "shared memory": _check_shared_memory,
    }
    configured = os.environ.get("MPDEMO_START_METHOD", "").strip().lower()
    if configured and configured != "spawn":  # a bad value fails the "start method" line instead
        checks[f"{configured} pool"] = lambda: _check_pool(start_method())
    failures = []
    for name, run in checks.items():
        try:
            print(f"  ok    {name}: {run()}")
        except Exception as exc:  # a check reports every failure instead of stopping at one
            failures.append(name)
            print(f"  FAIL  {name}: {type(exc).__name__}: {exc}")
    print("limits of this machine:")
    for name, text in limits().items():
        print(f"  {name}: {text}")
    print(f"the notebooks at size {size()}:")
    for notebook, verdict in verdicts().items():
        print(f"  {notebook}: {verdict}")
    if failures:
        print(f"mpdemo check: FAILED ({', '.join(failures)}); see the FAIL lines above")
        if "spawn pool" in failures and getattr(sys.modules["__main__"], "__file__", "") == "<stdin>":
            print("  hint: spawn workers cannot re-run a script read from stdin; run it from a file")
        return False
    print(f"mpdemo check: all {len(checks)} checks passed")
    return True
