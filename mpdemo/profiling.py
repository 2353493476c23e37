"""Where the time goes: in a row function, in its lines, and between the processes of a parallel run.

Three tools, from the inside out::

      cProfile + pstats     which *function* takes the time        (one process: run it serially)
      line_profiler         which *line* of that function           (%lprun -f function statement)
      the timeline          which *process* computes, pickles or waits   (a parallel run)

cProfile and line_profiler see only the process they run in. Profile a parallel run with
them and the caller shows up waiting for replies, the work itself being in other processes. So
profile the row function serially first, where it is cheap to find and fix the hot spot, and
then look at the parallel run as a whole.

**Splitting a parallel run.** ``chunked_map`` pickles each chunk itself, and each worker pickles
its results itself, and both time it (:func:`mpdemo.chunking.run_pickled_chunk`)::

      caller                                     worker
      ──────                                     ──────
      pickle.dumps(chunk)  ⏱ caller pickling
            bytes ──────────────────────────►  pickle.loads(bytes)    ⏱ pickling
                                                run_chunk(func, ...)   ⏱ computing
            bytes ◄──────────────────────────  pickle.dumps(results)  ⏱ pickling
      pickle.loads(bytes)  ⏱ caller pickling

So every record of ``chunked_map(..., timeline=Timeline())`` holds them apart. Whatever a
worker's time is not computing or pickling is waiting: :meth:`mpdemo.timing.Timeline.breakdown`
adds it up per process and ``mpdemo.plots.time_split`` draws it.
"""

from __future__ import annotations

import cProfile
import linecache
import os
import pstats
from collections.abc import Callable, Iterable
from typing import Any


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
