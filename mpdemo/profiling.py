"""Where the time goes: in a row function, in its lines, and between the processes of a parallel run.

Three tools, from the inside out::

      cProfile + pstats     which *function* takes the time        (one process: run it serially)
      line_profiler         which *line* of that function           (%lprun -f function statement)
      split_run             which *process* computes, pickles or waits   (a parallel run)

cProfile and line_profiler see only the process they run in. Profile a parallel run with
them and the caller shows up waiting on a lock, the work itself being in other processes. So
profile the row function serially first, where it is cheap to find and fix the hot spot, and
then look at the parallel run as a whole.

**Splitting a parallel run.** A worker's timeline (``chunked_map(..., timeline=Timeline())``)
records when each task ran; between two tasks lie the pickling of the results, the trip
through the pipes, the unpickling of the next chunk and any waiting, all in one gap.
:func:`split_run` takes the pickling out of the executor's hands so that it can be timed::

      caller                                     worker
      ──────                                     ──────
      pickle.dumps(chunk)  ⏱ caller pickling
            bytes ──────────────────────────►  pickle.loads(bytes)    ⏱ pickling
                                                run_chunk(func, ...)   ⏱ computing
            bytes ◄──────────────────────────  pickle.dumps(results)  ⏱ pickling
      pickle.loads(bytes)  ⏱ caller pickling

The executor then moves only bytes, which costs a copy, not a pickling. Whatever a worker's
time is not computing or pickling is waiting: :meth:`mpdemo.timing.Timeline.breakdown` adds it
up per process and ``mpdemo.plots.time_split`` draws it.
"""

from __future__ import annotations

import cProfile
import dataclasses
import functools
import linecache
import os
import pickle
import pstats
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from mpdemo.chunking import _chunks, chunked_map, default_chunksize, run_chunk
from mpdemo.context import cpu_count
from mpdemo.timing import TaskRecord, Timeline


def profile_calls(func: Callable[[Any], Any], items: Iterable) -> pstats.Stats:
    """Run ``[func(item) for item in items]`` under cProfile; the statistics, for ``print_stats``.

    ``stats.sort_stats("tottime").print_stats(8)`` lists the eight functions that spent the
    most time in their own code; ``"cumulative"`` counts the functions they call too.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    for item in items:
        func(item)
    profiler.disable()
    return pstats.Stats(profiler)


def hottest_function(stats: pstats.Stats) -> tuple[str, float]:
    """The function with the most time in its own code (``tottime``), and its share of the total.

    A nameless one (a generator expression, a comprehension) is named with its file and line.
    """
    rows = stats.stats.items()  # type: ignore[attr-defined]  (filename, line, name) -> (cc, nc, tt, ct, callers)
    (filename, line, name), (_, _, tottime, _, _) = max(rows, key=lambda row: row[1][2])
    if name.startswith("<") and filename != "~":  # "~": a built-in, whose name says what it is
        name = f"{name} ({os.path.basename(filename)} line {line})"
    return name, tottime / stats.total_tt  # type: ignore[attr-defined]


def hottest_line(profiler: Any, func: Callable) -> tuple[int, str, float]:
    """From a ``line_profiler.LineProfiler`` (``%lprun -r`` returns one): the line of ``func`` that
    took the most time, as (line number, source text, share of the function's time)."""
    code = func.__code__
    stats = profiler.get_stats()
    timings = next(lines for (filename, first, name), lines in stats.timings.items()
                   if name == code.co_name and first == code.co_firstlineno)
    total = sum(t for _, _, t in timings)
    number, _, most = max(timings, key=lambda line: line[2])
    return number, linecache.getline(code.co_filename, number).strip(), most / total if total else 0.0


def run_pickled_chunk(func: Callable[[Any], Any], task: tuple[int, bytes]) -> tuple[int, bytes, TaskRecord]:
    """Runs in a worker: unpickle one chunk, run it with :func:`~mpdemo.chunking.run_chunk`, pickle
    the results, and time the pickling. ``task`` is (input position of the chunk, its pickle)."""
    start, payload = task
    began, clock = time.time(), time.perf_counter()
    chunk = pickle.loads(payload)
    unpickling = time.perf_counter() - clock
    results, _ = run_chunk(func, start, chunk)
    clock = time.perf_counter()
    out = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
    pickling = unpickling + time.perf_counter() - clock
    return start, out, TaskRecord(os.getpid(), began, time.time(), len(results), pickling=pickling)


def split_run(func: Callable[[Any], Any], items: Sequence, *, processes: int | None = None,
              chunksize: int | str = "auto", executor: Executor | None = None) -> tuple[list, Timeline]:
    """``chunked_map(func, items)`` with its pickling timed: the results and a :class:`Timeline`
    whose records hold computing, pickling (worker) and caller pickling separately.

    The caller pickles each chunk itself as the run needs it and sends the bytes; each worker
    unpickles it, computes, and pickles its results, timing both (:func:`run_pickled_chunk`).
    Read ``timeline.breakdown()`` or draw ``mpdemo.plots.time_split(timeline)``.
    """
    processes = cpu_count() if processes is None else processes
    if chunksize == "auto":
        chunksize = default_chunksize(len(items), processes)
    caller: dict[int, float] = {}  # chunk start -> seconds the caller spent pickling it

    def pickled_chunks():
        for start, chunk in _chunks(items, chunksize):
            clock = time.perf_counter()
            payload = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
            caller[start] = time.perf_counter() - clock
            yield start, payload

    began = time.time()
    answers = chunked_map(functools.partial(run_pickled_chunk, func), pickled_chunks(), processes=processes,
                          chunksize=1, executor=executor)  # one task per pickled chunk
    results, records = [], []
    for start, out, record in answers:  # the caller unpickles the results after the run
        clock = time.perf_counter()
        results += pickle.loads(out)
        records.append(dataclasses.replace(record, caller_pickling=caller[start] + time.perf_counter() - clock))
    return results, Timeline(records, began)
