"""Where processes come from: the start method, the cores we may use, and a setup check.

Python can start a worker process in three ways:

* ``spawn`` starts a fresh interpreter that imports your module again. It is the default on
  macOS and Windows, and the only method on Windows. Slowest to start, most portable.
* ``fork`` copies the running parent (Linux and macOS only). Fast, but copies threads' locks
  in whatever state they were in, so it can deadlock in programs that use threads.
* ``forkserver`` forks each worker from a small, clean server process (Linux; the default
  there from Python 3.14).

The course uses ``spawn`` unless ``MPDEMO_START_METHOD`` says otherwise, so code that passes
here also passes on a learner's Mac or Windows laptop. ``MPDEMO_SIZE`` (``small`` or ``full``)
chooses how much data the notebooks generate.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import platform
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from importlib import metadata
from multiprocessing import shared_memory

START_METHODS = ("spawn", "fork", "forkserver")
SIZES = ("small", "full")


def _setting(name: str, default: str, allowed: tuple[str, ...]) -> str:
    """Read an environment switch and refuse values we do not know."""
    value = os.environ.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def start_method() -> str:
    """The start method the course uses: ``spawn`` unless ``MPDEMO_START_METHOD`` says otherwise."""
    method = _setting("MPDEMO_START_METHOD", "spawn", START_METHODS)
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"MPDEMO_START_METHOD={method!r} is not available on {sys.platform}")
    return method


def size() -> str:
    """How much data to generate: ``full`` for learners, ``small`` for CI (``MPDEMO_SIZE``)."""
    return _setting("MPDEMO_SIZE", "full", SIZES)


def get_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for :func:`start_method`.

    Use it instead of the ``multiprocessing`` module's global functions, so that the start
    method is a visible choice and not the platform's silent default::

        ctx = get_context()
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool: ...
    """
    return multiprocessing.get_context(start_method())


def cpu_count() -> int:
    """The number of cores this process may run on.

    ``os.cpu_count()`` counts the machine's cores, but a container, a batch scheduler or
    ``taskset`` can restrict a process to fewer. Starting more CPU-bound workers than the
    cores we may use only adds switching.
    """
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pid_after(seconds: float) -> int:
    """Sleep briefly and say which process we are: a probe task for :func:`start_workers`."""
    time.sleep(seconds)
    return os.getpid()


def start_workers(executor: Executor, processes: int) -> None:
    """Send short tasks until ``processes`` different workers have answered (or 50 rounds).

    ``ProcessPoolExecutor`` starts workers lazily, on the first tasks; call this before timing
    anything so that the start-up is not counted as work.
    """
    seen: set[int] = set()
    for _ in range(50):
        seen.update(executor.map(_pid_after, [0.01] * processes, timeout=120))
        if len(seen) >= processes:
            return


def start_pool(method: str, processes: int) -> None:
    """Start a pool of ``processes`` workers with ``method``, wait until each answered, stop it.

    Timing this call measures what a pool costs before it does any work: starting the
    interpreters (or forking), importing what the task needs, one 10 ms probe per worker.
    """
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context(method)) as pool:
        start_workers(pool, processes)


def _check_pool(method: str) -> str:
    """Run an ``mpdemo.workloads`` function in a real worker; raises if the pool cannot."""
    from mpdemo import workloads

    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        result = pool.submit(workloads.cpu_bound, 3, 10).result(timeout=120)
    if result != workloads.cpu_bound(3, 10):
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
    names = ["mpdemo", "numpy", "matplotlib", "ipywidgets", "tqdm"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return f"Python {platform.python_version()} ({sys.platform}); " + ", ".join(found)


def check() -> bool:
    """Print a setup report, one line per check and a verdict; return True when all pass.

    Run it first on a new machine: ``python -m mpdemo check`` exits 0 when the course can run.
    """
    checks = {
        "versions": _versions,
        "cores": lambda: f"{cpu_count()} usable of {os.cpu_count()} on this machine",
        "start method": lambda: f"{start_method()} (of {', '.join(multiprocessing.get_all_start_methods())})",
        "data size": lambda: size(),
        "spawn pool": lambda: _check_pool("spawn"),
        "shared memory": _check_shared_memory,
    }
    configured = os.environ.get("MPDEMO_START_METHOD", "").strip().lower()
    if configured and configured != "spawn":
        checks[f"{configured} pool"] = lambda: _check_pool(start_method())
    failures = []
    for name, run in checks.items():
        try:
            print(f"  ok    {name}: {run()}")
        except Exception as exc:  # a check reports every failure instead of stopping at one
            failures.append(name)
            print(f"  FAIL  {name}: {type(exc).__name__}: {exc}")
    if failures:
        print(f"mpdemo check: FAILED ({', '.join(failures)}); see the FAIL lines above")
        if "spawn pool" in failures and getattr(sys.modules["__main__"], "__file__", "") == "<stdin>":
            print("  hint: spawn workers cannot re-run a script read from stdin; run it from a file")
        return False
    print(f"mpdemo check: all {len(checks)} checks passed")
    return True
