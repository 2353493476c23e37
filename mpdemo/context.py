"""Where worker processes come from: the start method, how many, and how every one is started.

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

**Every worker the package starts** comes from :func:`start_process` or
:func:`process_executor`, and runs :func:`worker_setup` before anything else:

* it ignores Ctrl-C. A terminal and JupyterLab's interrupt send SIGINT to the whole process
  group; the caller hears it and stops its workers at once, so a worker has nothing to do with
  it (and prints no traceback). While a worker starts, SIGINT is held back (blocked), so even an
  interpreter still importing cannot be interrupted half-way;
* it leaves by itself when its parent dies. A worker blocked waiting for its next task would
  otherwise wait forever once the caller is killed (SIGKILL, the out-of-memory killer, a
  kernel restart), holding memory and shared-memory blocks. A thread watches
  ``multiprocessing.parent_process().sentinel``, which becomes ready when the parent ends.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from mpdemo.machine import cpu_limits

START_METHODS = ("spawn", "fork", "forkserver")
SIZES = ("small", "full")


def setting(name: str, default: str, allowed: tuple[str, ...]) -> str:
    """Read an environment switch and refuse values we do not know."""
    value = os.environ.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def start_method() -> str:
    """The start method the course uses: ``spawn`` unless ``MPDEMO_START_METHOD`` says otherwise."""
    method = setting("MPDEMO_START_METHOD", "spawn", START_METHODS)
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"MPDEMO_START_METHOD={method!r} is not available on {sys.platform}")
    return method


def size() -> str:
    """How much data to generate: ``full`` for learners, ``small`` for CI (``MPDEMO_SIZE``)."""
    return setting("MPDEMO_SIZE", "full", SIZES)


def get_context(method: str | None = None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for ``method`` (default :func:`start_method`).

    Use it instead of the ``multiprocessing`` module's global functions, so that the start
    method is a visible choice and not the platform's silent default::

        ctx = get_context()
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool: ...
    """
    return multiprocessing.get_context(method or start_method())


def cpu_count() -> int:
    """The number of cores this process may keep busy: affinity, lowered by a CPU quota.

    ``os.cpu_count()`` counts the machine's cores, but ``taskset``, a batch scheduler or a
    container (``docker --cpus``, a Kubernetes limit, Binder) allows fewer. Starting more
    CPU-bound workers than that only adds switching. ``mpdemo.machine.cpu_limits().explain()``
    says where the number came from.
    """
    return cpu_limits().usable


def require_whole(name: str, value: Any, *, also: str = "") -> None:
    """Refuse anything but a whole number of at least 1 (``also``: another value it may take)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        allowed = f"{also} or a whole number of at least 1" if also else "a whole number of at least 1"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def process_count(processes: int | None, executor: object = None) -> int:
    """``processes`` checked; when it is None, the size of a kept ``mpdemo.ProcessPool`` passed as
    ``executor``, else :func:`cpu_count`: how many workers a call uses."""
    if processes is None:
        kept = getattr(executor, "processes", None)  # an mpdemo.ProcessPool knows its size
        return kept if isinstance(kept, int) else cpu_count()
    require_whole("processes", processes)
    return int(processes)


# ── Starting workers, and what every worker does first ──────────────────────────────────────


def worker_setup() -> None:
    """The first thing every worker of the package does: ignore Ctrl-C, leave with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held back while starting
    leave_with_parent()


def leave_with_parent() -> None:
    """Start a thread that ends this process as soon as the process that started it has ended."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)  # nobody is left to send results to, or to clean up after

    threading.Thread(target=watch, name="mpdemo-parent-watch", daemon=True).start()


def _worker_main(target: Callable[..., Any], args: tuple) -> None:
    worker_setup()
    target(*args)


def start_process(target: Callable[..., Any], *args: Any, name: str = "mpdemo-worker",
                  method: str | None = None) -> BaseProcess:
    """Start ``target(*args)`` in a new worker process (a daemon) that runs :func:`worker_setup` first.

    A Ctrl-C must not reach a worker that is still starting (under spawn it imports for a while
    before :func:`worker_setup` runs, and would print a KeyboardInterrupt traceback of its own).
    So while it starts, SIGINT is *ignored* in this process (in the main thread, where Python
    allows it), which the child inherits: a new Python keeps an inherited SIG_IGN for SIGINT.
    SIGINT is also *blocked* meanwhile, so that a Ctrl-C in that moment waits, and reaches this
    process once its handler is back, instead of being lost.
    """
    process = get_context(method).Process(target=_worker_main, args=(target, args), name=name, daemon=True)
    blocking = hasattr(signal, "pthread_sigmask")
    if blocking:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return process


def process_executor(processes: int | None = None, method: str | None = None) -> ProcessPoolExecutor:
    """A standard-library ``ProcessPoolExecutor`` whose workers run :func:`worker_setup` first."""
    return ProcessPoolExecutor(max_workers=process_count(processes), mp_context=get_context(method),
                               initializer=worker_setup)


def _pid_after(seconds: float) -> int:
    """Sleep briefly and say which process we are: a probe task for :func:`start_workers`."""
    time.sleep(seconds)
    return os.getpid()


def start_workers(executor: Executor, processes: int) -> None:
    """Send short tasks until ``processes`` different workers have answered (or 50 rounds).

    ``ProcessPoolExecutor`` starts workers lazily, on the first tasks; call this before timing
    anything so that the start-up is not counted as work. (An ``mpdemo.ProcessPool`` has
    ``warm()`` for the same.)
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
    with process_executor(processes, method) as pool:
        start_workers(pool, processes)


def describe_exit(exitcode: int | None) -> str:
    """How a process ended, in words: ``"was killed by SIGKILL"``, ``"exited with code 3"``."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        return f"was killed by {signal_name(-exitcode)}"
    return "exited normally" if exitcode == 0 else f"exited with code {exitcode}"


def signal_name(number: int) -> str:
    """``"SIGKILL"`` for 9, and so on."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
