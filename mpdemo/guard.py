"""Checks before sending: will the function and the data reach the worker, and come back?

Every parallel call in mpdemo sends a function and data to other processes, and each can fail
in that gap in ways that hang a kernel or blame the wrong thing::

      caller                                     │  worker process
      ──────                                     │  ──────────────
      check_sendable(func): pickles? from        │
        __main__, which spawn cannot import?     │
      pack(chunk): pickle it, once ── bytes ──► pipe ──► unpickle the items, run the function
        (a failure names the first bad item)     │       pickle the results, once (a failure
                                                 │       names the first bad result)

**Before sending.** Pickling a function records only its module and name. A worker started
with ``spawn`` or ``forkserver`` imports that module to find it. A function defined in
``__main__`` (a notebook cell, a ``python -c`` program) is found only when ``__main__`` is a
file the worker can run again; otherwise the worker dies unpickling its task and the pool
reports a *dead worker*, which sends the learner the wrong way. :func:`check_sendable` names the
real cause instead, before any process starts. (``fork`` copies the parent, ``__main__``
included, so it has neither problem.)

**Pickled once.** The pickling that sends a chunk is the check that it can travel
(:func:`pack`): done here, in the caller, a failure is an ordinary exception that can name
its item. A process pool that pickled in a background *feeder thread* would report it from that
thread, or drop the item with a printed traceback (``multiprocessing.Queue``, CPython gh-84376);
``ProcessPoolExecutor``'s ``shutdown(wait=True)`` can even deadlock after such failures.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from mpdemo.context import start_method
from mpdemo.errors import NotSendable
from mpdemo.pool import ProcessPool

#: What to do about a function that cannot be sent.
FUNCTION_CURE = ("Lambdas and functions defined inside other functions cannot be pickled: define it with "
                 "def at the top level of a module (a .py file beside your notebook, as mpdemo.workloads "
                 "does) and import it from there.")
#: What to do about data that cannot be sent.
DATA_CURE = ("Send plain data instead (numbers, strings, tuples, lists, dicts, NumPy arrays), and open "
             "files, connections and locks inside the worker.")
#: Where code from __main__ has to go instead.
MAIN_CURE = "a module (a .py file beside your notebook, as mpdemo.workloads is), imported from there"


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


def pack(chunk: Any, start: int) -> bytes:
    """``chunk`` pickled: the bytes that travel. A failure names the first item that cannot travel
    (``start`` is the input position of the chunk's first item)."""
    try:
        return pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        for offset, item in enumerate(chunk):  # find the first bad item, to name it
            try:
                pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as item_error:
                raise NotSendable(f"item {start + offset:,} cannot be sent to worker processes: "
                                  f"{type(item_error).__name__}: {item_error}. {DATA_CURE}") from item_error
        raise NotSendable(f"{range_text(start, chunk)} cannot be sent to worker processes together, though each "
                          f"item can: {type(error).__name__}: {error}. {DATA_CURE}") from error


def check_function(func: Any, executor: Executor | None) -> bool:
    """Refuse, before any process starts, a function the executor's workers could not receive (a
    lambda, or a ``__main__`` function under spawn). Returns whether its tasks are pickled here."""
    method = pickling_method(executor)
    if method is not None:
        check_sendable(func, method)
    return method is not None


def pickling_method(executor: Executor | None) -> str | None:
    """The start method of the workers ``executor`` pickles tasks for; None when nothing is pickled here.

    mpdemo's own pools and the standard library's ``ProcessPoolExecutor`` get every task pickled
    here, once (and their functions checked). Threads share the caller's memory; dask and loky
    pickle functions by value with cloudpickle, in their own way: their tasks go as they are.
    """
    if executor is None:
        return start_method()
    if isinstance(executor, ProcessPool):
        return executor.method or start_method()
    if type(executor) is ProcessPoolExecutor:
        context = getattr(executor, "_mp_context", None)  # set by every Python from 3.7 on
        return context.get_start_method() if context is not None else "spawn"
    return None  # threads, dask, loky, ...


def range_text(start: int, items: Sequence | int) -> str:
    """``"items 40–79"`` for a chunk of 40 items starting at 40 (``"item 40"`` for one)."""
    count = items if isinstance(items, int) else len(items)
    return f"item {start:,}" if count == 1 else f"items {start:,}–{start + count - 1:,}"
