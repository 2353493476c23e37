"""The shared-memory figures: a large array handed to workers shared or pickled, and parallel_apply.

Run it as ``python benchmarks/bench_shm.py`` (``--quick`` for a smoke run, ``--strict`` to exit 1
on any MISS) or with every other benchmark as ``python -m mpdemo bench``. It is a report, not a
test: without ``--strict`` it exits 0 whatever it measured.

The figures, on one warm pool of 2 workers (started before any timing):

1. **Hand-off, pickled time / shared time** (target ≥ 50): a 256 MB array, one row block per
   worker, each worker taking only its block's length (``len``), so the figure is the hand-off
   alone: pickling, pipes and unpickling against sending a handle (``experiments.handoff_experiment``).
   1b is the same with ``np.sum``, which reads every value (report only): the work then costs
   both ways the same, and the ratio shrinks.
2. **Peak memory with shared memory / the array's size** (target ≤ 1.3): the caller and its
   workers, sampled every 5 ms (``timing.MemoryWatch``, PSS on Linux: shared pages count once),
   from before the array is made until every worker has summed its block. 2b is the same with
   the blocks pickled (report only).
3. **parallel_apply vs serial on a CPU-heavy block function** (target ≥ 1.8×):
   ``workloads.score_rows``, the slow row function of lesson 06 on every row of a block (about
   0.1 ms a row, nearly no memory traffic), written into a shared ``out`` array, against the same
   function on the whole array in this process. 3b is the same with ``workloads.heavy_transform``
   (sines and cosines, whole-array NumPy) on the 256 MB array (report only): a NumPy kernel this
   light per value also pays for moving the data, since every worker maps its rows afresh (one
   page fault per 4 KB) and copies its result into ``out``, about 60 ms per 256 MB here.

Contenders of a figure are timed in alternating rounds after an untimed warm-up round and keep
their fastest round; every parallel result is compared with the serial one. Under ``spawn`` each
worker imports this file again, so the work starts only under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import functools
import math
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

import mpdemo
from mpdemo import data, experiments, shm, workloads
from mpdemo.blocks import row_blocks
from mpdemo.bench import Figure, Run, arguments, at_least, at_most, finish, in_turns
from mpdemo.context import start_workers
from mpdemo.timing import MemoryWatch, speedup_table

PROCESSES = 2
COLUMNS = 128  # rows of 1 KB


@dataclass(frozen=True)
class Sizes:
    """How much work a run does: ``--quick`` shrinks everything for a smoke test."""

    array_mb: int
    score_rows: int  # figure 3: rows of 100 numbers
    rounds: int


FULL = Sizes(array_mb=256, score_rows=12_000, rounds=3)
QUICK = Sizes(array_mb=16, score_rows=500, rounds=1)


def handoff_figures(sizes: Sizes, pool: Executor) -> list[Figure]:
    """Figures 1 and 1b: the hand-off alone (len), then with every value read (np.sum)."""
    figures = []
    for name, func, target in (("1  hand-off alone (len), pickled time / shared time", len, at_least(50)),
                               ("1b hand-off and a sum of every value, pickled / shared", np.sum, None)):
        experiments.handoff_experiment(sizes.array_mb, PROCESSES, func=func, executor=pool)  # warm-up, untimed
        runs = [experiments.handoff_experiment(sizes.array_mb, PROCESSES, func=func, executor=pool)
                for _ in range(sizes.rounds)]
        pickled, shared = min(r.pickled_seconds for r in runs), min(r.shared_seconds for r in runs)
        print(f"{func.__name__:>4}: {sizes.array_mb} MB to {PROCESSES} workers, best of {len(runs)}: pickled "
              f"{pickled:.4f} s, shared {shared:.4f} s; results equal serial: {all(r.same_results for r in runs)}")
        figures.append(Figure(name, pickled / shared, target, all(r.same_results for r in runs)))
    return figures


def fill(target: np.ndarray) -> None:
    """Write the benchmark's numbers into ``target`` a block at a time (no second full copy)."""
    for start in range(0, len(target), data.BLOCK_ROWS):
        stop = min(len(target), start + data.BLOCK_ROWS)
        target[start:stop] = data.measurements(start, stop, target.shape[1])


def memory_figures(sizes: Sizes, pool: Executor) -> list[Figure]:
    """Figures 2 and 2b: peak memory from before the array exists until every block is summed."""
    rows = sizes.array_mb * 2**20 // (8 * COLUMNS)
    expected = [np.sum(data.measurements(start, stop, COLUMNS)) for start, stop in row_blocks(rows, PROCESSES)]
    with MemoryWatch(interval=0.005) as shared_watch:
        with shm.SharedArray.create((rows, COLUMNS)) as shared:
            fill(shared.array)
            shared_sums = shm.parallel_apply(np.sum, shared, processes=PROCESSES, executor=pool)
    with MemoryWatch(interval=0.005) as pickled_watch:
        array = np.empty((rows, COLUMNS))
        fill(array)
        blocks = [array[start:stop] for start, stop in row_blocks(rows, PROCESSES)]
        pickled_sums = mpdemo.chunked_map(np.sum, blocks, processes=PROCESSES, chunksize=1, executor=pool)
        del array, blocks
    for label, watch in (("shared", shared_watch), ("pickled", pickled_watch)):
        print(f"{label:>7}: peak memory of the caller and its workers +{watch.extra_mb():,.0f} MB for a "
              f"{sizes.array_mb} MB array")
    return [Figure("2  peak memory with shared memory / the array", shared_watch.extra_mb() / sizes.array_mb,
                   at_most(1.3), shared_sums == expected),
            Figure("2b peak memory with pickled blocks / the array", pickled_watch.extra_mb() / sizes.array_mb,
                   None, pickled_sums == expected)]


def heavy_figures(sizes: Sizes, pool: Executor) -> list[Figure]:
    """Figures 3 and 3b: CPU-heavy block functions, parallel_apply on 2 workers against serial."""
    score_rows = sizes.score_rows
    rows = sizes.array_mb * 2**20 // (8 * COLUMNS)
    cases = [("3  score_rows (Python, per row), parallel_apply on 2 workers vs serial", workloads.score_rows,
              (score_rows, 100), (score_rows,), at_least(1.8)),
             ("3b heavy_transform (NumPy), parallel_apply on 2 workers vs serial", workloads.heavy_transform,
              (rows, COLUMNS), (rows, COLUMNS), None)]
    figures = []
    for name, func, shape, out_shape, target in cases:
        with shm.SharedArray.create(shape) as source, shm.SharedArray.create(out_shape) as out:
            fill(source.array)
            serial = Run(f"serial {func.__name__}", functools.partial(func, source.array))
            parallel = Run("parallel_apply, 2 workers", functools.partial(
                shm.parallel_apply, func, source, processes=PROCESSES, out=out, executor=pool))
            times = in_turns([serial, parallel], sizes.rounds)
            equal = np.array_equal(out.array, serial.result)  # out holds the last round's output
            serial.result = parallel.result = None  # let the large arrays go before the blocks close
        print(f"{func.__name__}: {shape[0]:,} rows of {shape[1]} numbers ({math.prod(shape) * 8 / 2**20:,.0f} MB)")
        print(speedup_table(times.values(), baseline=serial.label))
        print(f"parallel_apply's output equals serial: {equal}")
        figures.append(Figure(name, times[serial.label].best / times[parallel.label].best, target, equal))
    return figures


def main(argv: list[str]) -> int:
    args = arguments("The shared-memory figures: ratios, targets, PASS or MISS.", argv)
    sizes = QUICK if args.quick else FULL
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=mpdemo.get_context()) as pool:
        start_workers(pool, PROCESSES)
        print(f"\n-- figure 1: {sizes.array_mb} MB handed to {PROCESSES} workers, pickled and shared")
        figures = handoff_figures(sizes, pool)
        print("\n-- figure 2: peak memory, shared and pickled")
        figures += memory_figures(sizes, pool)
        print("\n-- figure 3: a CPU-heavy block function, parallel_apply vs serial")
        figures += heavy_figures(sizes, pool)
    return finish(figures, args)


if __name__ == "__main__":  # required: spawned workers import this file again, and must not run it
    sys.exit(main(sys.argv[1:]))
