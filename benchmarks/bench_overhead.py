"""What ``chunked_map`` costs beyond ``multiprocessing.Pool.map``: per kind of row, per task, per call.

Run it as ``python benchmarks/bench_overhead.py`` (``--quick`` for a smoke run, ``--strict`` to
exit 1 on any MISS) or with every other benchmark as ``python -m mpdemo bench``. It is a report,
not a test: without ``--strict`` it exits 0 whatever it measured.

``chunked_map`` is the course's tool, the one learners copy into their own work, so it must cost
no more than the standard library's pool it replaces. The figures (targets for 2 cores):

1. **chunked_map time / Pool.map time, one figure per kind of row** (target ≤ 1.10× each): rows
   that are tuples of 11 short strings (what ``csv.reader`` gives), dicts of 6 fields, rows of a
   NumPy array, and Python ints, each with a light row function (``len``, ``abs``, a sum), the
   same chunk size (Pool.map's rule) and a warm pool each: a ``multiprocessing.Pool`` and an
   ``mpdemo.ProcessPool``. Light work per row makes what the pools themselves cost (pickling,
   pipes, bookkeeping) the largest part of the time.
2. **One empty task at chunk size 1**, chunked_map's time per task / Pool.map's (target ≤ 2×);
   ``ProcessPoolExecutor``, mpire, joblib and dask are reported beside it.
3. **A cold call and a warm one**: ``chunked_map`` without ``executor=`` starts and stops a pool
   on every call (3b, report only: start-up included); on a ``ProcessPool`` kept across calls the
   second call's speedup over serial, on CPU-bound rows of about 25 µs (target ≥ 1.8×).

How it measures: contenders of a figure are timed in alternating rounds after one untimed
warm-up round (``mpdemo.bench.in_turns``) and keep their fastest round; every parallel result is
compared with the serial one. Under ``spawn`` each worker imports this file again, so the work
starts only under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import mpdemo
from mpdemo import context, workloads
from mpdemo.bench import Figure, Run, all_equal, arguments, at_least, at_most, finish, in_turns
from mpdemo.timing import speedup_table

#: Seconds any pool call may take before we give up instead of hanging.
TIMEOUT = 600
#: Figure 3: microseconds of work per CPU-bound row.
HEAVY_COST_US = 25


@dataclass(frozen=True)
class Sizes:
    rows: int  # figure 1, per kind of row
    empty_tasks: int  # figure 2
    heavy_rows: int  # figure 3
    rounds: int


FULL = Sizes(rows=600_000, empty_tasks=5_000, heavy_rows=100_000, rounds=5)
QUICK = Sizes(rows=20_000, empty_tasks=300, heavy_rows=4_000, rounds=1)


def row_kinds(n: int) -> dict[str, tuple[list | np.ndarray, Callable]]:
    """The inputs of figure 1: ``{kind: (rows, row function)}``, the same on every machine."""
    strings = [tuple(f"{i % 97}.{j}" for j in range(11)) for i in range(n)]
    dicts = [{"id": i, "city": "Lagos", "quantity": i % 20, "price": 1.5, "note": "", "ok": True} for i in range(n)]
    return {
        "tuples of 11 strings": (strings, len),
        "dicts of 6 fields": (dicts, len),
        "NumPy rows (10 floats)": (mpdemo.data.make_array(n, 10), workloads.sum_of_squares),
        "Python ints": (list(range(n)), abs),
    }


def per_kind(sizes: Sizes, mp_pool, pool: mpdemo.ProcessPool, processes: int) -> list[Figure]:
    """Figure 1: chunked_map and Pool.map on each kind of row, the same chunk size."""
    return [one_kind(kind, rows, func, sizes.rounds, mp_pool, pool, processes)
            for kind, (rows, func) in row_kinds(sizes.rows).items()]


def one_kind(kind: str, rows, func: Callable, rounds: int, mp_pool, pool: mpdemo.ProcessPool,
             processes: int) -> Figure:
    chunksize = mpdemo.default_chunksize(len(rows), processes)
    runs = [Run("Pool.map", lambda: mp_pool.map_async(func, rows, chunksize=chunksize).get(TIMEOUT)),
            Run("chunked_map", lambda: mpdemo.chunked_map(func, rows, processes=processes, executor=pool))]
    times = in_turns(runs, rounds)
    print(f"{kind}: {len(rows):,} rows, chunksize {chunksize:,}")
    print(speedup_table(times.values()))
    return Figure(f"1  {kind}: chunked_map time / Pool.map time", times["chunked_map"].best / times["Pool.map"].best,
                  at_most(1.10), all_equal(runs, [func(row) for row in rows]))


def per_task(sizes: Sizes, mp_pool, pool: mpdemo.ProcessPool, processes: int) -> Figure:
    """Figure 2: empty tasks, one item each, in every library."""
    import joblib  # here, not at the top: spawned workers re-import this file and never need it
    from dask.distributed import Client, LocalCluster
    from joblib.externals.loky import get_reusable_executor
    from mpire import WorkerPool

    n = sizes.empty_tasks
    few = max(20, n // 20)  # dask's tasks cost milliseconds: fewer of them
    items = list(range(n))
    executor = context.process_executor(processes)
    mpire_pool = WorkerPool(n_jobs=processes, start_method=mpdemo.start_method(), keep_alive=True)
    cluster = LocalCluster(n_workers=processes, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    try:
        context.start_workers(executor, processes)
        runs = [
            Run("Pool.map", lambda: mp_pool.map_async(abs, items, chunksize=1).get(TIMEOUT)),
            Run("chunked_map", lambda: mpdemo.chunked_map(abs, items, processes=processes, chunksize=1,
                                                          executor=pool)),
            Run("ProcessPoolExecutor.map", lambda: list(executor.map(abs, items, chunksize=1, timeout=TIMEOUT))),
            Run("mpire", lambda: mpire_pool.map(abs, items, chunk_size=1, task_timeout=TIMEOUT)),
            Run("joblib (loky)", lambda: joblib.Parallel(n_jobs=processes, batch_size=1)(
                joblib.delayed(abs)(x) for x in items)),
        ]
        times = in_turns(runs, sizes.rounds)
        dask = Run("dask (chunked_map on a LocalCluster)", lambda: mpdemo.chunked_map(
            abs, items[:few], processes=processes, chunksize=1, executor=client.get_executor()))
        dask_time = in_turns([dask], 1)[dask.label]
    finally:
        executor.shutdown()
        mpire_pool.stop_and_join()
        get_reusable_executor().shutdown(wait=True)
        client.close()
        cluster.close()
    per = {label: m.best / n for label, m in times.items()} | {dask.label: dask_time.best / few}
    print(f"{n:,} empty tasks ({few} on dask), one item each, {processes} processes:")
    for label, seconds in sorted(per.items(), key=lambda item: item[1]):
        print(f"  {label:>38}: {seconds * 1e6:8,.1f} µs a task, {seconds / per['Pool.map']:5.2f}× Pool.map's")
    return Figure("2  one empty task: chunked_map time / Pool.map time", per["chunked_map"] / per["Pool.map"],
                  at_most(2.0), all_equal(runs, items) and dask.result == items[:few])


def cold_and_warm(sizes: Sizes, processes: int) -> list[Figure]:
    """Figure 3: CPU-bound rows: a call that starts its own pool, and the second call on a kept pool."""
    func = functools.partial(workloads.cpu_bound, loops=workloads.loops_for(HEAVY_COST_US))
    rows = list(range(sizes.heavy_rows))
    with mpdemo.ProcessPool(processes) as pool:
        mpdemo.chunked_map(func, rows[:processes * 4], processes=processes, executor=pool)  # the first call
        runs = [Run("serial", lambda: [func(x) for x in rows]),
                Run("kept ProcessPool (not the first call)", lambda: mpdemo.chunked_map(
                    func, rows, processes=processes, executor=pool)),
                Run("cold: a pool per call", lambda: mpdemo.chunked_map(func, rows, processes=processes))]
        times = in_turns(runs, sizes.rounds)
    print(f"{len(rows):,} rows of about {HEAVY_COST_US} µs, {processes} processes")
    print(speedup_table(times.values()))
    base = times["serial"].best
    return [Figure("3  kept pool, a later call vs serial (speedup)", base / times[runs[1].label].best,
                   at_least(0.9 * processes, f" (0.9 × {processes} cores)"), all_equal(runs[1:2], runs[0].result)),
            Figure("3b cold call, start-up included, vs serial (speedup)", base / times[runs[2].label].best, None,
                   all_equal(runs[2:], runs[0].result))]


def main(argv: list[str]) -> int:
    args = arguments("What chunked_map costs beyond Pool.map: ratios, targets, PASS or MISS.", argv)
    sizes = QUICK if args.quick else FULL
    processes = mpdemo.cpu_count()
    with mpdemo.get_context().Pool(processes) as mp_pool, mpdemo.ProcessPool(processes) as pool:
        mp_pool.map(abs, range(processes * 4))
        pool.warm()
        print("\n-- figure 1: per kind of row, chunked_map vs Pool.map")
        figures = per_kind(sizes, mp_pool, pool, processes)
        print("\n-- figure 2: one empty task at chunk size 1, in every library")
        figures.append(per_task(sizes, mp_pool, pool, processes))
    print("\n-- figure 3: a kept pool and a cold call")
    figures += cold_and_warm(sizes, processes)
    return finish(figures, args)


if __name__ == "__main__":  # required: spawned workers import this file again, and must not run it
    sys.exit(main(sys.argv[1:]))
