"""Choosing a strategy: one workload, every common way of running it, measured side by side.

Notebook 07 and ``python -m mpdemo bench`` run exactly these contenders on the rows of one
array, with :func:`mpdemo.workloads.row_score` as the row function:

==========================  =======================================================================
serial                      ``[row_score(row) for row in rows]``: the baseline
vectorised                  ``row_scores(rows)``: whole-array NumPy, no Python loop at all
Pool                        ``multiprocessing.Pool.map``
ProcessPoolExecutor         ``concurrent.futures.ProcessPoolExecutor.map``
joblib                      ``joblib.Parallel`` (loky workers), one ``delayed`` call per row
joblib, default batches     the same with joblib's own ``batch_size="auto"``
mpire                       ``mpire.WorkerPool.map``
chunked_map                 ``mpdemo.chunked_map`` on a ProcessPoolExecutor
dask                        ``chunked_map`` on a dask.distributed cluster: ``executor=client.get_executor()``
==========================  =======================================================================

Every parallel contender gets the same chunk size (Pool.map's rule, about four chunks per
worker), except "joblib, default batches", which shows what joblib does when left alone. A
second measurement runs empty tasks one per task (chunk size 1): what one task costs in each
library, the reason their defaults differ (:data:`DEFAULT_CHUNKING`).

:class:`Contenders` starts every pool once and warms it before anything is timed, and closes
each the way its library needs, leaving no process, port or /dev/shm entry behind:
multiprocessing's pools are stopped, joblib's reusable loky executor is shut down, mpire's
workers are terminated, a dask cluster it started is closed with its client. Timing uses
:mod:`mpdemo.bench` (contenders in alternating rounds, the fastest round kept).
"""

from __future__ import annotations

import argparse
import gc
import pickle
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from joblib.externals.loky import get_reusable_executor
from mpire import WorkerPool

from mpdemo import plots, workloads
from mpdemo.bench import Figure, Run, at_most, finish, in_turns, print_setting
from mpdemo.chunking import chunked_map, default_chunksize
from mpdemo.context import get_context, process_count, process_executor, start_method, start_workers, worker_setup
from mpdemo.pool import ProcessPool
from mpdemo.data import make_array
from mpdemo.timing import Measurement, describe_speedup, measure

#: Seconds any pool call may take before it gives up instead of hanging.
TIMEOUT = 600
#: Every contender, in the order of the table.
CONTENDERS = ("serial", "vectorised", "Pool", "ProcessPoolExecutor", "joblib", "joblib, default batches", "mpire",
              "chunked_map", "dask")
#: The libraries' own chunking when you give them none: why one task costs what it costs.
DEFAULT_CHUNKING = {
    "Pool": "about 4 chunks per worker",
    "ProcessPoolExecutor": "1 item per task",
    "joblib": "grows batches to ~0.2 s each",
    "mpire": "about 64 chunks per worker",
    "chunked_map": "about 4 chunks per worker",
    "dask": "1 task per submit",
}
#: The pools chunked_map is held against (the benchmark's 1.10× target).
OTHER_POOLS = ("Pool", "ProcessPoolExecutor", "joblib", "joblib, default batches", "mpire")
#: Columns of the rows of :func:`comparison_rows`.
COLUMNS = 100


@dataclass(frozen=True)
class Sizes:
    """How much a comparison measures: rows, timed rounds, empty tasks for the per-task cost."""

    rows: int
    rounds: int
    empty_tasks: int


QUICK = Sizes(rows=1_000, rounds=2, empty_tasks=100)
FULL = Sizes(rows=20_000, rounds=3, empty_tasks=1_000)


def comparison_rows(n: int) -> np.ndarray:
    """The comparison's input: ``n`` rows of :data:`COLUMNS` numbers, the same on every machine."""
    return make_array(n, COLUMNS)


class Contenders:
    """The pools of every contender, started once and warm; :meth:`close` stops them all.

    Use it as ``with Contenders(processes) as contenders: ...``, or call :meth:`start` and
    :meth:`close` (a notebook keeps it across cells). Pass ``client`` to use your own dask
    cluster (you close it), ``dask=False`` to leave dask out.
    """

    def __init__(self, processes: int | None = None, *, client: Any = None, dask: bool = True) -> None:
        self.processes = process_count(processes)
        self.client = client
        self.want_dask = dask or client is not None
        self.cluster: Any = None  # a LocalCluster we started, and so must close
        self.pool: Any = None
        self.executor: ProcessPoolExecutor | None = None
        self.workers: ProcessPool | None = None  # chunked_map's own pool, kept warm like the others
        self.mpire: Any = None
        self.joblib_folder: tempfile.TemporaryDirectory | None = None

    def start(self) -> Contenders:
        """Start every pool and wait until their workers are up; if one fails, stop the others."""
        try:
            self._start()
        except BaseException:  # Ctrl-C included: stop what did start, then let it go on
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.pool = get_context().Pool(self.processes, initializer=worker_setup)
        self.executor = process_executor(self.processes)
        start_workers(self.executor, self.processes)
        self.workers = ProcessPool(self.processes).warm()
        self.mpire = WorkerPool(n_jobs=self.processes, start_method=start_method(), keep_alive=True)
        # joblib makes a folder per call for arrays it could memory-map, in /dev/shm unless told otherwise
        self.joblib_folder = tempfile.TemporaryDirectory(prefix="mpdemo-joblib-")
        if self.want_dask and self.client is None:
            from dask.distributed import Client, LocalCluster

            self.cluster = LocalCluster(n_workers=self.processes, threads_per_worker=1, processes=True,
                                        dashboard_address=":0")
            self.client = Client(self.cluster)

    def close(self) -> None:
        """Stop every pool the way its library needs; free what multiprocessing keeps until collected."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
        if self.workers is not None:
            self.workers.close()
        if self.mpire is not None:
            self.mpire.stop_and_join()
        get_reusable_executor().shutdown(wait=True)  # joblib's loky workers live on between calls
        if self.joblib_folder is not None:
            self.joblib_folder.cleanup()
        if self.cluster is not None:
            if self.client is not None:
                self.client.close()
            self.cluster.close()
            self.client = self.cluster = None
        self.pool = self.executor = self.workers = self.mpire = self.joblib_folder = None
        gc.collect()  # a Pool's and mpire's semaphores (files in /dev/shm) go when they are collected

    def __enter__(self) -> Contenders:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def runs(self, func: Callable[[Any], Any], items: Any, chunksize: int) -> list[Run]:
        """Every parallel contender running ``func`` over ``items``, ``chunksize`` items per task."""
        p = self.processes
        runs = [
            Run("Pool", lambda: self.pool.map_async(func, items, chunksize=chunksize).get(TIMEOUT)),
            Run("ProcessPoolExecutor", lambda: list(self.executor.map(func, items, chunksize=chunksize,
                                                                      timeout=TIMEOUT))),
            Run("joblib", lambda: self.joblib(batch_size=chunksize)(joblib.delayed(func)(item) for item in items)),
            Run("mpire", lambda: self.mpire.map(func, list(items), chunk_size=chunksize, task_timeout=TIMEOUT)),
            Run("chunked_map", lambda: chunked_map(func, items, processes=p, chunksize=chunksize,
                                                   executor=self.workers)),
        ]
        if self.client is not None:
            runs.append(Run("dask", lambda: chunked_map(func, items, processes=p, chunksize=chunksize,
                                                        executor=self.client.get_executor())))
        return runs

    def joblib_default(self, func: Callable[[Any], Any], items: Any) -> Run:
        """joblib as most code calls it: one ``delayed`` per item, joblib choosing the batches."""
        return Run("joblib, default batches", lambda: self.joblib()(joblib.delayed(func)(item) for item in items))

    def joblib(self, **options: Any) -> joblib.Parallel:
        """A ``joblib.Parallel`` on loky workers, with its temporary files in our own folder."""
        return joblib.Parallel(n_jobs=self.processes, timeout=TIMEOUT, temp_folder=self.joblib_folder.name, **options)


@dataclass
class Comparison:
    """What :func:`measure_contenders` measured: the best times, the cost of one task, whether results agreed."""

    processes: int
    rows: int
    chunksize: int
    times: dict[str, Measurement]  # serial first
    per_task: dict[str, float]  # seconds per empty task at chunk size 1, by library
    equal: dict[str, bool]  # results equal serial (vectorised: equal up to float rounding)
    pickling: float  # seconds to pickle the rows one by one, as the pools send them

    def best(self, label: str) -> float:
        return self.times[label].best

    def speedup(self, label: str) -> float:
        """Serial time over this contender's time: 2.0 means twice as fast."""
        return self.best("serial") / self.best(label)

    def fastest(self, labels: tuple[str, ...] = OTHER_POOLS) -> str:
        """The fastest of ``labels`` that ran."""
        return min((label for label in labels if label in self.times), key=self.best)

    def table(self) -> str:
        """One line per contender: best time, speedup over serial, one task's cost, results, defaults."""
        width = max(len(label) for label in self.times)
        lines = [f"{'contender':<{width}}  {'best (s)':>8}  {'speedup':>8}  {'1 task (µs)':>11}  "
                 f"{'results':<7}  default chunking"]
        for label, m in self.times.items():
            library = label.split(",")[0]
            task = f"{self.per_task[library] * 1e6:,.0f}" if library in self.per_task else "—"
            result = "ref." if label == "serial" else ("equal" if self.equal[label] else "DIFFER")
            lines.append(f"{label:<{width}}  {m.best:>8.3f}  {self.speedup(label):>7.2f}×  {task:>11}  "
                         f"{result:<7}  {DEFAULT_CHUNKING.get(library, '—')}")
        return "\n".join(lines)

    def guide(self) -> str:
        """The decision guide, phrased from these measurements: vectorise, chunk, move less data, scale out."""
        t, us = self.best, 1e6
        fastest = self.fastest()
        row_us = us * t("serial") / self.rows
        lines = [f"1. Vectorise first. Whole-array NumPy was {describe_speedup(self.speedup('vectorised'))} "
                 f"and {describe_speedup(t(fastest) / t('vectorised'), f'the fastest pool ({fastest})')}."]
        tasks = {lib: s for lib, s in self.per_task.items() if lib != "dask"}
        cheapest, dearest = min(tasks, key=tasks.get), max(tasks, key=tasks.get)
        lines.append(f"2. Then chunk. One task cost from {tasks[cheapest] * us:,.0f} µs ({cheapest}) to "
                     f"{tasks[dearest] * us:,.0f} µs ({dearest}) beyond its work, against {row_us:,.0f} µs of "
                     f"work per row. In chunks of {self.chunksize:,} rows, {fastest} was "
                     f"{describe_speedup(self.speedup(fastest))} on {self.processes} processes.")
        chunked = [label for label in ("Pool", "ProcessPoolExecutor", "joblib", "mpire") if label in self.times]
        spread = max(t(label) for label in chunked) / min(t(label) for label in chunked)
        verdict = ("were close" if spread < 1.25 else "differed (per-task costs showing through, or a busy machine)")
        lines.append(f"3. Chunked, the pools {verdict}: the slowest of {', '.join(chunked)} took {spread:.2f} times "
                     f"as long as the fastest, and chunked_map was "
                     f"{describe_speedup(t(fastest) / t('chunked_map'), fastest)}. Choose a pool by what it does "
                     "when things go wrong: a dead worker hangs Pool, but ProcessPoolExecutor and chunked_map raise.")
        if "joblib, default batches" in self.times:
            ratio = t("joblib") / t("joblib, default batches")
            why = (": it makes one delayed call per row in the caller, and starts with small batches" if ratio < 0.95
                   else "")
            lines.append(f"   joblib left to batch by itself was {describe_speedup(ratio, 'with chunk-sized batches')}"
                         f"{why}.")
        share = self.pickling / t("chunked_map")
        advice = ("worth removing: shared memory (notebook 04) or a memory-mapped file (notebook 05) let workers "
                  "read the rows instead of receiving them." if share > 0.1 else
                  "small here; with wider rows or lighter work it grows, and shared memory (notebook 04) or "
                  "memmap (notebook 05) remove it.")
        lines.append(f"4. Move less data. Pickling the rows one by one took {self.pickling * 1e3:,.1f} ms, "
                     f"{share:.0%} of chunked_map's time: {advice}")
        if "dask" in self.times:
            lines.append(f"5. Scale out last. dask on this machine was "
                         f"{describe_speedup(t('chunked_map') / t('dask'), 'chunked_map on a local pool')}; one dask "
                         f"task cost {self.per_task['dask'] * us:,.0f} µs, "
                         f"{self.per_task['dask'] / tasks[cheapest]:,.0f} times a {cheapest} task. A cluster pays "
                         "when one machine's cores are not enough and every task holds far more work than that.")
        return "\n".join(lines)

    def figures(self) -> list[Figure]:
        """The benchmark's summary lines: chunked_map against the other pools (≤ 1.10×), speedups."""
        equal = all(self.equal.values())
        fastest = self.fastest()
        best_parallel = self.fastest(tuple(label for label in self.times if label not in ("serial", "vectorised")))
        return [
            Figure(f"C1 chunked_map time / fastest other pool ({fastest})",
                   self.best("chunked_map") / self.best(fastest), at_most(1.10), equal),
            Figure(f"C2 fastest parallel ({best_parallel}) vs serial (speedup)", self.speedup(best_parallel),
                   None, equal),
            Figure("C3 vectorised vs serial (speedup)", self.speedup("vectorised"), None, equal),
        ]

    def plot(self):
        """Times and one task's cost of every contender (``mpdemo.plots.contenders``)."""
        return plots.contenders(list(self.times.values()), self.per_task,
                                title=f"{self.rows:,} rows, {self.processes} processes, chunksize {self.chunksize:,}")


def measure_contenders(contenders: Contenders, rows: np.ndarray, *, rounds: int = 3, empty_tasks: int = 200,
            progress: bool = False) -> Comparison:
    """Time every contender on ``rows`` in alternating rounds (after a warm-up round), then one
    empty task per task in each library; check every result against the serial loop."""
    from tqdm.auto import tqdm

    func, p = workloads.row_score, contenders.processes
    chunksize = default_chunksize(len(rows), p)
    runs = [Run("serial", lambda: [func(row) for row in rows]), Run("vectorised", lambda: workloads.row_scores(rows)),
            *contenders.runs(func, rows, chunksize), contenders.joblib_default(func, rows)]
    runs.sort(key=lambda run: CONTENDERS.index(run.label))
    # empty tasks, one per task: a few for dask, whose tasks cost milliseconds
    empty = [run for run in contenders.runs(abs, range(empty_tasks), chunksize=1) if run.label != "dask"]
    few = max(10, empty_tasks // 10)
    empty_dask = [run for run in contenders.runs(abs, range(few), chunksize=1) if run.label == "dask"]
    with tqdm(total=rounds + 1, disable=not progress, desc="comparison", unit="round") as bar:
        times: dict[str, list[float]] = {run.label: [] for run in runs}
        for round_ in range(rounds):
            for label, m in in_turns(runs, rounds=1, warmup=round_ == 0).items():
                times[label] += m.times
            bar.update()
        per_task = {label: m.best / empty_tasks for label, m in in_turns(empty, rounds=2).items()}
        per_task |= {label: m.best / few for label, m in in_turns(empty_dask, rounds=2).items()}
        bar.update()
    reference = runs[0].result
    equal = {run.label: bool(np.allclose(run.result, reference)) if run.label == "vectorised"
             else run.result == reference for run in runs[1:]}
    pickling = measure(lambda: pickle.dumps(list(rows), protocol=pickle.HIGHEST_PROTOCOL), repeats=3).best
    return Comparison(p, len(rows), chunksize, {label: Measurement(label, tuple(t)) for label, t in times.items()},
                      per_task, equal, pickling)


def report(args: argparse.Namespace) -> int:
    """``python -m mpdemo bench``'s comparison: the table, the guide, the figures; ``args.png`` gets the plot."""
    sizes = QUICK if args.quick else FULL
    print_setting(args.quick)
    print(f"\n-- the contenders of notebook 07: {sizes.rows:,} rows of {COLUMNS} numbers, row_score per row")
    with Contenders() as contenders:
        comparison = measure_contenders(contenders, comparison_rows(sizes.rows), rounds=sizes.rounds, empty_tasks=sizes.empty_tasks,
                             progress=True)
    print(comparison.table())
    print()
    print(comparison.guide())
    if args.png is not None:
        comparison.plot().savefig(Path(args.png), dpi=100)
        print(f"\nplot written to {args.png}")
    return finish(comparison.figures(), args)
