"""The DataFrame figures: frame_apply against df.apply, and process_parquet's memory as the file grows.

Run it as ``python benchmarks/bench_frames.py`` (``--quick`` for a smoke run, ``--strict`` to
exit 1 on any MISS) or with every other benchmark as ``python -m mpdemo bench``. It prints one
detail table per figure, then a summary: each figure's ratio, its target and PASS or MISS. It is
a report, not a test: without ``--strict`` it exits 0 whatever it measured.

The figures (the data is the orders of :mod:`mpdemo.data`, as Parquet, generated into ``data/``
on first use from the orders CSV):

1. **A CPU-heavy row function, frame_apply on 2 workers vs serial df.apply** (target ≥ 1.7×):
   ``busy_order_value`` at about 60 µs of Python a row (on top of what ``df.apply`` costs a
   row), ``df.apply(f, axis=1)`` on the whole frame against ``frame_apply`` of the same
   ``apply_rows`` on a warm ``mpdemo.ProcessPool`` of 2 workers (kept across calls, as a notebook
   keeps one). 1b is the same call without ``executor=``: it starts and stops its own workers,
   start-up included (report only).
2. **process_parquet's peak memory, caller and workers together, on a file 4× as large**
   (target ≤ 1.2): the same row groups, four times as many of them. Each file runs in a fresh
   Python process (this script with ``--measure``) that sums ``city_totals`` over the file with
   ``process_parquet`` on 2 workers, and reports the peak of the sum of the PSS of itself and
   its workers (``mpdemo.timing.MemoryWatch``, sampled every 5 ms: shared pages counted once).
   2b (report only) is the same ratio for ``pd.read_parquet`` of the whole file in that process
   (once the workers are gone), which holds all of it: what the workers avoid.

Contenders of a figure are timed in alternating rounds after one untimed warm-up round
(``mpdemo.bench.in_turns``) and keep their fastest round; every parallel result is compared with
the serial one. Under ``spawn`` each worker imports this file again, so the work starts only
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import mpdemo
from mpdemo import data, workloads
from mpdemo.bench import Figure, Run, arguments, at_least, at_most, finish, in_fresh_process, in_turns, measuring
from mpdemo.timing import MemoryWatch, speedup_table

#: Figure 1: microseconds of Python work per row, on top of df.apply's own cost per row.
HEAVY_COST_US = 60
#: Seconds a measuring process may take before we give up on it.
TIMEOUT = 600


@dataclass(frozen=True)
class Sizes:
    """How much work a run does: ``--quick`` shrinks everything for a smoke test."""

    heavy_rows: int  # figure 1
    memory_rows: tuple[int, int]  # figure 2: the file and the file four times as large
    row_group_rows: int
    rounds: int
    warmup: bool


FULL = Sizes(heavy_rows=20_000, memory_rows=(250_000, 1_000_000), row_group_rows=25_000, rounds=3, warmup=True)
QUICK = Sizes(heavy_rows=2_000, memory_rows=(20_000, 80_000), row_group_rows=2_000, rounds=1, warmup=False)


def heavy_figures(sizes: Sizes, pool: mpdemo.ProcessPool) -> list[Figure]:
    """Figure 1: the CPU-heavy row function, frame_apply on 2 workers (warm, and own pool) against df.apply."""
    frame = data.orders_frame(20_000).iloc[:sizes.heavy_rows]
    row = functools.partial(workloads.busy_order_value, loops=workloads.loops_for(HEAVY_COST_US))
    func = functools.partial(workloads.apply_rows, func=row)
    serial = Run("df.apply(f, axis=1)", lambda: func(frame))
    warm = Run("frame_apply, warm pool", lambda: mpdemo.frame_apply(func, frame, processes=2, executor=pool))
    cold = Run("frame_apply, own pool", lambda: mpdemo.frame_apply(func, frame, processes=2))
    times = in_turns([serial, warm, cold], sizes.rounds, warmup=sizes.warmup)
    print(f"{len(frame):,} rows of {1e6 * times[serial.label].best / len(frame):.0f} µs each in df.apply "
          f"(measured serially), 2 workers")
    print(speedup_table(times.values(), baseline=serial.label))
    base = times[serial.label].best
    return [Figure("1  CPU-heavy rows, frame_apply on 2 workers (warm pool) vs df.apply (speedup)",
                   base / times[warm.label].best, at_least(1.7), frames_equal([warm], serial.result)),
            Figure("1b the same, workers started in the call (speedup)", base / times[cold.label].best, None,
                   frames_equal([cold], serial.result))]


def frames_equal(runs: list[Run], reference: pd.Series) -> bool:
    """:func:`mpdemo.bench.all_equal` for frames and Series: values, dtypes and index."""
    for run in runs:
        print(f"{run.label}: results equal serial: {run.result.equals(reference) and run.result.index.equals(reference.index)}")
    return all(run.result.equals(reference) and run.result.index.equals(reference.index) for run in runs)


def measure_memory(path: Path) -> dict[str, dict[str, float]]:
    """Runs in a fresh process (``--measure``): the city totals of the file, twice, and the peak memory of each.

    First with process_parquet on 2 workers (``"workers"``, caller and workers counted); then, once
    those workers are gone, with pd.read_parquet of the whole file here (``"whole"``).
    """
    measured = {}
    for how in ("workers", "whole"):
        with MemoryWatch(interval=0.005) as watch:
            if how == "workers":
                totals = pd.concat(mpdemo.process_parquet(path, workloads.city_totals, processes=2))
            else:
                totals = workloads.city_totals(pd.read_parquet(path))
        measured[how] = {"peak": watch.peak_total_mb, "processes": len(watch.peaks_mb),
                         "total": float(totals.groupby(level=0).sum().sum())}
    return measured


def memory_figures(sizes: Sizes) -> list[Figure]:
    """Figure 2: peak memory on the file 4× as large over that on the file, with workers and whole."""
    measured: dict[int, dict[str, dict[str, float]]] = {}
    for rows in sizes.memory_rows:
        path = data.orders_parquet(rows, row_group_rows=sizes.row_group_rows)
        measured[rows] = in_fresh_process(__file__, path, TIMEOUT)
        in_memory = pd.read_parquet(path).memory_usage(deep=True).sum() / 2**20
        print(f"{rows:>10,} rows ({path.stat().st_size / 2**20:,.1f} MB file, {in_memory:,.0f} MB as a DataFrame, "
              f"{rows // sizes.row_group_rows} row groups): process_parquet peak {measured[rows]['workers']['peak']:.0f} "
              f"MB in {measured[rows]['workers']['processes']} processes; pd.read_parquet peak "
              f"{measured[rows]['whole']['peak']:.0f} MB in one")
    small, large = sizes.memory_rows
    agree = all(abs(measured[n]["workers"]["total"] / measured[n]["whole"]["total"] - 1) < 1e-9 for n in (small, large))
    print(f"the workers' totals equal the whole file's: {agree}")
    ratio = {how: measured[large][how]["peak"] / measured[small][how]["peak"] for how in ("workers", "whole")}
    return [Figure("2  process_parquet peak memory (caller + workers), 4× the file / 1×", ratio["workers"],
                   at_most(1.2), agree),
            Figure("2b pd.read_parquet of the whole file, peak memory, 4× the file / 1×", ratio["whole"], None, agree)]


def main(argv: list[str]) -> int:
    if measuring(argv, measure_memory):
        return 0
    args = arguments("The DataFrame figures: ratios, targets, PASS or MISS.", argv)
    sizes = QUICK if args.quick else FULL
    print("\n-- figure 1: a CPU-heavy row function, frame_apply on 2 workers vs df.apply")
    with mpdemo.ProcessPool(2) as pool:
        pool.warm()
        figures = heavy_figures(sizes, pool)
    print("\n-- figure 2: process_parquet's peak memory, a file 4× as large / the file")
    figures += memory_figures(sizes)
    return finish(figures, args)


if __name__ == "__main__":  # required: spawned workers import this file again, and must not run it
    sys.exit(main(sys.argv[1:]))
