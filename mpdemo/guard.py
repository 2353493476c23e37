"""Guards for the gap between the caller and its worker processes: check before sending, stop at once.

Every parallel call in mpdemo (``chunked_map``, the CSV pipeline, ``parallel_apply``) sends a
function and data to other processes, and each can fail in that gap in ways that hang a kernel
or blame the wrong thing. This module holds the checks they share::

      caller                                  │  worker process
      ──────                                  │  ──────────────
      check_sendable(func)  ── pickle ──► pipe ──► unpickle: import the function's module
      check_sendable(chunk) ── pickle ──► pipe ──► unpickle the items
                                              │
      Ctrl-C ─► stop_workers(pool): SIGTERM ──┼──► gone within moments, whatever they were doing

**Before sending.** A process pool pickles the work in a background *feeder thread*. When that
fails (a lambda, an item holding a lock), ``ProcessPoolExecutor`` reports it from that thread,
and its ``shutdown(wait=True)`` can then deadlock: the feeder thread waits for the executor's
shutdown lock, held by ``shutdown``, which waits for the feeder thread. So we pickle in the
caller first, where a failure is an ordinary exception that can name its item.

Pickling a function records only its module and name. A worker started with ``spawn`` or
``forkserver`` imports that module to find it. A function defined in ``__main__`` (a notebook
cell, a ``python -c`` program) is found only when ``__main__`` is a file the worker can run
again; otherwise the worker dies unpickling its task and the pool reports a *dead worker*,
which sends the learner the wrong way. :func:`check_sendable` names the real cause instead.
(``fork`` copies the parent, ``__main__`` included, so it has neither problem.)

**Stopping.** ``Executor.shutdown(wait=True)`` waits for the running tasks, so Ctrl-C would
take as long as the longest chunk. :func:`stop_workers` terminates a pool's worker processes
instead, and our own pools' workers ignore SIGINT (:func:`ignore_sigint`), so a Ctrl-C sent to
the whole process group (as a terminal and JupyterLab's interrupt do) reaches only the caller,
which then stops them.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

#: What to do about a function that cannot be sent.
FUNCTION_CURE = ("Lambdas and functions defined inside other functions cannot be pickled: define it with "
                 "def at the top level of a module (a .py file beside your notebook, as mpdemo.workloads "
                 "does) and import it from there.")
#: What to do about data that cannot be sent.
DATA_CURE = ("Send plain data instead (numbers, strings, tuples, lists, dicts, NumPy arrays), and open "
             "files, connections and locks inside the worker.")
#: Where code from __main__ has to go instead.
MAIN_CURE = "a module (a .py file beside your notebook, as mpdemo.workloads is), imported from there"


class NotSendable(TypeError):
    """A function, item or result cannot travel between the caller and a worker process."""


class _MainFinder(pickle.Pickler):
    """A pickler that notes every function and class from ``__main__`` it pickles."""

    def __init__(self, file: io.BytesIO):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.from_main: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        if getattr(obj, "__module__", None) == "__main__" and (callable(obj) or isinstance(obj, type)):
            self.from_main.append(getattr(obj, "__qualname__", repr(obj)))
        return NotImplemented  # pickle it as usual


def main_is_importable() -> bool:
    """Whether a spawned worker can import the caller's ``__main__`` again.

    It can when ``__main__`` came from a file (``python script.py``) or a module
    (``python -m package.module``). A notebook kernel, ``python -c`` and a script read from
    standard input leave nothing to import: their functions exist only in the caller.
    """
    main = sys.modules["__main__"]
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    return path is not None and os.path.isfile(path)


def _name(obj: Any) -> str:
    func = getattr(obj, "func", obj)  # functools.partial: name the function inside
    return getattr(func, "__qualname__", type(obj).__name__)


def from_main(obj: Any) -> list[str]:
    """The names of the functions and classes from ``__main__`` that pickling ``obj`` would send."""
    finder = _MainFinder(io.BytesIO())
    try:
        finder.dump(obj)
    except Exception:
        return []
    return list(dict.fromkeys(finder.from_main))


def dead_worker_hint(func: Any, start_method: str | None) -> str:
    """A hint for a worker that died outside the function: a ``fork`` worker started before a
    ``__main__`` function was defined has no copy of it, and dies unpickling its task."""
    names = from_main(func) if start_method == "fork" else []
    if not names:
        return ""
    return (f". {names[0]} is defined in __main__: fork workers started before it was defined do not have "
            f"it. Start the pool after defining it, or move it into {MAIN_CURE}")


def check_sendable(obj: Any, start_method: str, *, what: str | None = None, cure: str = FUNCTION_CURE) -> None:
    """Raise :class:`NotSendable` unless ``obj`` pickles and a ``start_method`` worker can unpickle it.

    ``what`` names ``obj`` in the message (default: "the function" and its name); ``cure`` says what to
    do when it does not pickle.
    """
    what = what or f"the function {_name(obj)}"
    finder = _MainFinder(io.BytesIO())
    try:
        finder.dump(obj)
    except Exception as exc:
        raise NotSendable(f"{what} cannot be sent to worker processes: {type(exc).__name__}: {exc}. "
                          f"{cure}") from exc
    if finder.from_main and start_method != "fork" and not main_is_importable():
        names = ", ".join(dict.fromkeys(finder.from_main))
        where = "is defined in" if what == f"the function {names}" else f"uses {names} from"
        raise NotSendable(f"{what} {where} __main__ (a notebook cell or a python -c program), "
                          f"which {start_method} workers cannot import: each would die unpickling it "
                          f"(AttributeError: Can't get attribute {finder.from_main[0]!r}). Move it into "
                          f"{MAIN_CURE}.")


def check_items_sendable(chunk: Any, start: int, start_method: str) -> None:
    """Check a chunk before it is sent; a failure names the first bad item by its input index.

    Ranges and arrays of numbers always pickle, so they are not checked (nor lists of such
    arrays: pickling a large array only to check it would double the cost of sending it).
    """
    if isinstance(chunk, range) or _numeric_array(chunk):
        return
    if isinstance(chunk, list) and all(_numeric_array(item) for item in chunk):
        return
    try:
        check_sendable(chunk, start_method, what=range_text(start, chunk), cure=DATA_CURE)
    except NotSendable:
        for offset, item in enumerate(chunk):  # find the first bad item, to name it
            check_sendable(item, start_method, what=f"item {start + offset:,}", cure=DATA_CURE)
        raise  # no item fails alone, only the chunk as a whole: name the chunk


def _numeric_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) and not obj.dtype.hasobject


def start_method_of(executor: Executor) -> str | None:
    """The start method of a standard-library process pool; None for any other executor.

    Thread pools share the caller's memory, and dask and loky pickle functions by value with
    cloudpickle, so only ``concurrent.futures.ProcessPoolExecutor`` needs the checks above.
    """
    if type(executor) is not ProcessPoolExecutor:
        return None
    context = getattr(executor, "_mp_context", None)  # set by every Python from 3.7 on
    return context.get_start_method() if context is not None else "spawn"


def ignore_sigint() -> None:
    """A pool initializer: the worker ignores Ctrl-C, which the caller handles by stopping it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _workers(executor: Executor) -> list:
    """The worker processes of a standard-library process pool (it keeps them privately)."""
    return list((getattr(executor, "_processes", None) or {}).values())


def stop_workers(executor: Executor, grace: float = 2.0) -> None:
    """Stop a process pool now: terminate its workers, cancel what is queued, do not wait.

    Workers get SIGTERM, which ends a Python process at once, and SIGKILL if one is still there
    after ``grace`` seconds. The pool is unusable afterwards. Other executors are only shut
    down without waiting.
    """
    workers = _workers(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    stop_processes(workers, grace)


def stop_processes(processes: Iterable[BaseProcess], grace: float = 2.0) -> None:
    """Terminate processes now (SIGTERM), and SIGKILL any still there after ``grace`` seconds.

    For worker processes started directly (``ctx.Process``), as :mod:`mpdemo.pipeline` does;
    :func:`stop_workers` does the same for a pool's workers.
    """
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(grace)


def describe_dead_workers(executor: Executor, wait: float = 1.0) -> str:
    """How a broken pool's workers ended, in words: which signal, or which exit code.

    A broken pool terminates its remaining workers itself (SIGTERM), so those are named only
    when no worker ended another way. Waits up to ``wait`` seconds for the pool to reap them.
    """
    return describe_dead_processes(_workers(executor), wait)


def describe_dead_processes(processes: Iterable[BaseProcess], wait: float = 0.0) -> str:
    """How processes that should still be running ended, in words (see :func:`describe_dead_workers`).

    Waits up to ``wait`` seconds for all of them to have ended; those still running are not named.
    """
    processes = list(processes)
    deadline = time.monotonic() + wait
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    codes = {p.pid: p.exitcode for p in processes if p.exitcode}
    first = {pid: code for pid, code in codes.items() if code != -signal.SIGTERM} or codes
    return "; ".join(f"pid {pid} was killed by {signal_name(-code)}" if code < 0 else
                     f"pid {pid} exited with code {code}, from an error outside your function (its "
                     "traceback went to the terminal running Python)" for pid, code in first.items())


def signal_name(number: int) -> str:
    """``"SIGKILL"`` for 9, and so on."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def range_text(start: int, items: Sequence | int) -> str:
    """``"items 40–79"`` for a chunk of 40 items starting at 40 (``"item 40"`` for one)."""
    count = items if isinstance(items, int) else len(items)
    return f"item {start:,}" if count == 1 else f"items {start:,}–{start + count - 1:,}"
