"""Choosing a strategy: one workload, every common way of running it, measured side by side, like for like.

Notebook 07 and ``python -m mpdemo bench`` run exactly these contenders on the rows of one
array, with :func:`mpdemo.workloads.row_score` as the row function. Every pool runs twice, so
that what the *library* costs and what the *data layout* costs show apart:

* **blocks** — the same work in the same form for all: the rows cut into the same 2-D blocks
  (Pool.map's rule: about four per worker), one block per task, and the block function
  :func:`mpdemo.workloads.score_rows` (``row_score`` of each row of its block). Every library
  pickles the same arrays, so the differences between these rows are the libraries' own.
* **per row** — each library's usual call on the 2-D array: ``Pool.map(row_score, rows,
  chunksize=c)`` and the like. Iterating over a 2-D array gives its rows, so Pool,
  ProcessPoolExecutor, joblib and mpire pickle one 1-D array per row; ``chunked_map`` slices
  the array and sends each chunk as one 2-D array (**slices**).

===================================  ==============================================================
serial                               ``[row_score(row) for row in rows]``: the baseline
vectorised                           ``row_scores(rows)``: whole-array NumPy, no Python loop at all
Pool, blocks                         ``Pool.map(score_rows, blocks, chunksize=1)``
ProcessPoolExecutor, blocks          ``ProcessPoolExecutor.map(score_rows, blocks)``
joblib, blocks                       ``joblib.Parallel`` (loky), one ``delayed(score_rows)(block)`` a block
mpire, blocks                        ``mpire.WorkerPool.map(score_rows, blocks, chunk_size=1)``
chunked_map, blocks                  ``chunked_map(score_rows, blocks, chunksize=1)`` on a warm ProcessPool
dask, blocks                         the same on a dask.distributed cluster: ``executor=client.get_executor()``
Pool, per row                        ``Pool.map(row_score, rows, chunksize=c)``
ProcessPoolExecutor, per row         ``ProcessPoolExecutor.map(row_score, rows, chunksize=c)``
joblib, per row                      one ``delayed(row_score)(row)`` a row, ``batch_size=c``
joblib, default batches              the same with joblib's own ``batch_size="auto"``
mpire, per row                       ``mpire.WorkerPool.map(row_score, list(rows), chunk_size=c)``
chunked_map, slices                  ``chunked_map(row_score, rows, chunksize=c)``: 2-D slices
dask, slices                         the same on the dask cluster
===================================  ==============================================================

joblib is given ``max_nbytes=None`` in every call, so that it pickles blocks as the others do (left
alone it memory-maps arrays above 1 MB into a temporary folder: notebook 05), and so that it
keeps its workers: joblib restarts them whenever a call's settings differ from the last one's. A second measurement runs
empty tasks one per task (chunk size 1): what one task costs in each library, the reason their
defaults differ (:data:`DEFAULT_CHUNKING`). A third times pickling the rows in each form.

:class:`Contenders` starts every pool once and warms it before anything is timed, and closes
each the way its library needs, leaving no process, port or /dev/shm entry behind:
multiprocessing's pools are stopped, joblib's reusable loky executor is shut down, mpire's
workers are terminated, a dask cluster it started is closed with its client. Timing uses
:mod:`mpdemo.bench` (contenders in alternating rounds, the fastest round kept).
"""

from __future__ import annotations

import argparse
import gc
import os
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
from mpdemo.timing import NOISE, Measurement, beyond_cores, describe_speedup, impossible, measure

#: Seconds any pool call may take before it gives up instead of hanging.
TIMEOUT = 600
#: The pools, each run on the same blocks and by its usual call (dask: chunked_map on a cluster).
POOLS = ("Pool", "ProcessPoolExecutor", "joblib", "mpire", "chunked_map", "dask")
#: The pools whose usual call pickles one 1-D array per row (chunked_map and dask send 2-D slices).
PER_ROW = ("Pool", "ProcessPoolExecutor", "joblib", "mpire")
#: Every contender, in the order of the table.
CONTENDERS = ("serial", "vectorised",
              *(f"{pool}, blocks" for pool in POOLS),
              *(f"{pool}, per row" for pool in PER_ROW[:3]), "joblib, default batches", "mpire, per row",
              "chunked_map, slices", "dask, slices")
#: What each form sends a worker per task.
SENDS = {"blocks": "one 2-D block", "per row": "a 1-D array per row", "default batches": "a 1-D array per row",
         "slices": "one 2-D slice"}
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
OTHER_POOLS = ("Pool", "ProcessPoolExecutor", "joblib", "mpire")
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


def as_blocks(rows: np.ndarray, chunksize: int) -> list[np.ndarray]:
    """The rows cut into 2-D blocks of ``chunksize`` rows (the last may be shorter), in order."""
    return [rows[start:start + chunksize] for start in range(0, len(rows), chunksize)]


def library(label: str) -> str:
    """The library of a contender's label: ``"joblib, per row"`` → ``"joblib"``."""
    return label.split(",")[0]


def form(label: str) -> str:
    """The form of a contender's data: ``"blocks"``, ``"per row"``, ``"slices"``... (``""``: no pool)."""
    return label.split(", ")[1] if ", " in label else ""


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
        """Every pool running ``func`` over ``items`` by its usual call, ``chunksize`` items per task.

        Over a 2-D array, Pool, ProcessPoolExecutor, joblib and mpire pickle one 1-D array per row;
        chunked_map (and so dask, through it) sends each chunk as one 2-D slice.
        """
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

    def block_runs(self, func: Callable[[np.ndarray], Any], blocks: list[np.ndarray]) -> list[Run]:
        """Every pool running ``func`` on each of the same ``blocks``, one block per task: like for like."""
        p = self.processes
        runs = [
            Run("Pool", lambda: self.pool.map_async(func, blocks, chunksize=1).get(TIMEOUT)),
            Run("ProcessPoolExecutor", lambda: list(self.executor.map(func, blocks, timeout=TIMEOUT))),
            Run("joblib", lambda: self.joblib(batch_size=1)(joblib.delayed(func)(block) for block in blocks)),
            Run("mpire", lambda: self.mpire.map(func, blocks, chunk_size=1, task_timeout=TIMEOUT)),
            Run("chunked_map", lambda: chunked_map(func, blocks, processes=p, chunksize=1, executor=self.workers)),
        ]
        if self.client is not None:
            runs.append(Run("dask", lambda: chunked_map(func, blocks, processes=p, chunksize=1,
                                                        executor=self.client.get_executor())))
        return runs

    def joblib_default(self, func: Callable[[Any], Any], items: Any) -> Run:
        """joblib as most code calls it: one ``delayed`` per item, joblib choosing the batches."""
        return Run("joblib, default batches", lambda: self.joblib()(joblib.delayed(func)(item) for item in items))

    def joblib(self, **options: Any) -> joblib.Parallel:
        """A ``joblib.Parallel`` on loky workers, with its temporary files in our own folder.

        ``max_nbytes=None``: arrays are pickled, as the other pools do (joblib memory-maps those
        above 1 MB otherwise: notebook 05). Every call gets the same settings, because joblib
        restarts its workers whenever they change. With ``processes=1`` joblib starts no worker at
        all: it runs every call in this process.
        """
        if self.processes > 1:  # with one, joblib runs every call here, in this process, and has no timeout
            options.setdefault("timeout", TIMEOUT)
        return joblib.Parallel(n_jobs=self.processes, temp_folder=self.joblib_folder.name, max_nbytes=None, **options)


@dataclass
class Comparison:
    """What :func:`measure_contenders` measured: the best times, the cost of one task, pickling in
    each form, whether results agreed, and how busy the machine was."""

    processes: int
    rows: int
    chunksize: int
    times: dict[str, Measurement]  # serial first; the parallel ones know their cores
    per_task: dict[str, float]  # seconds per empty task at chunk size 1, by library
    equal: dict[str, bool]  # results equal serial (vectorised: equal up to float rounding)
    pickling: dict[str, float]  # seconds to pickle and unpickle the rows, by form: "per row", "blocks"
    tasks: int  # blocks (= chunks) per run
    load: float | None = None  # the 1-minute load average before the runs (None: not reported here)

    def best(self, label: str) -> float:
        return self.times[label].best

    def speedup(self, label: str) -> float:
        """Serial time over this contender's time: 2.0 means twice as fast."""
        return self.best("serial") / self.best(label)

    def fastest(self, labels: tuple[str, ...] | None = None) -> str:
        """The fastest of ``labels`` that ran; by default of every parallel contender."""
        labels = labels or tuple(label for label in self.times if form(label))
        return min((label for label in labels if label in self.times), key=self.best)

    def noise(self, *labels: str) -> float:
        """How much the rounds of the serial loop (and of ``labels``) varied in this run: the largest
        median over best, less one (0.05: a median 5% above its best)."""
        return max(self.times[label].spread - 1 for label in ("serial", *labels))

    def busy(self) -> bool:
        """Whether other programs kept at least half of this machine's cores busy before the runs."""
        return self.load is not None and self.load >= 0.5 * (os.cpu_count() or 1)

    def table(self) -> str:
        """One line per contender: best time, speedup over serial, one task's cost, what it sends, results."""
        width = max(len(label) for label in self.times)
        lines = [f"{'contender':<{width}}  {'best (s)':>8}  {'speedup':>9}  {'1 task (µs)':>11}  "
                 f"{'sends a worker per task':<23}  {'results':<7}  default chunking"]
        notes = []
        for label, m in self.times.items():
            lib = library(label)
            task = f"{self.per_task[lib] * 1e6:,.0f}" if lib in self.per_task else "—"
            result = "ref." if label == "serial" else ("equal" if self.equal[label] else "DIFFER")
            mark = "*" if impossible(self.speedup(label), m.cores) else " "
            if mark == "*":
                notes.append(f"* {label}: {beyond_cores(m.cores)}")
            lines.append(f"{label:<{width}}  {m.best:>8.3f}  {self.speedup(label):>7.2f}× {mark}  {task:>11}  "
                         f"{SENDS.get(form(label), '—'):<23}  {result:<7}  {DEFAULT_CHUNKING.get(lib, '—')}")
        return "\n".join(lines + notes)

    def batching(self) -> str:
        """joblib left to choose its batches, against batches of the others' chunk size: one ratio."""
        ratio = self.best("joblib, per row") / self.best("joblib, default batches")
        why = (": it grows its batches from small ones, each a task of its own" if ratio < 1 - NOISE else "")
        return (f"joblib left to batch by itself was {describe_speedup(ratio, 'with batches of the chunk size')}"
                f"{why}.")

    def guide(self) -> str:
        """The decision guide, phrased from these measurements: vectorise, chunk, move less data, scale out."""
        t, us, ms = self.best, 1e6, 1e3
        fastest = self.fastest()
        row_us = us * t("serial") / self.rows
        lines = [f"1. Vectorise first. Whole-array NumPy was {describe_speedup(self.speedup('vectorised'))} "
                 f"and {describe_speedup(t(fastest) / t('vectorised'), f'the fastest pool ({fastest})')}."]
        # dask's tasks are compared in step 5; with one process joblib has no pool (it runs calls in the caller)
        tasks = {lib: s for lib, s in self.per_task.items() if lib != "dask" and (lib != "joblib" or self.processes > 1)}
        cheapest, dearest = min(tasks, key=tasks.get), max(tasks, key=tasks.get)
        lines.append(f"2. Then chunk. One task cost from {tasks[cheapest] * us:,.0f} µs ({cheapest}) to "
                     f"{tasks[dearest] * us:,.0f} µs ({dearest}) beyond its work, against {row_us:,.0f} µs of "
                     f"work per row. In {self.tasks} tasks of up to {self.chunksize:,} rows, the fastest pool "
                     f"({fastest}) was {describe_speedup(self.speedup(fastest), cores=self.processes)} on "
                     f"{self.processes} process{'es' if self.processes > 1 else ''}.")
        lines.append("3. Chunked, on the same blocks, " + self._libraries() + " Choose a pool by what it does when "
                     "things go wrong: a dead worker hangs Pool, but ProcessPoolExecutor and chunked_map raise.")
        lines.append("   " + self._layout())
        if self.processes == 1:
            lines.append("   With one process joblib starts no worker (n_jobs=1): it runs every call in the caller, "
                         "so its rows here are serial runs, not a pool's.")
        if "joblib, default batches" in self.times:
            lines.append("   " + self.batching())
        share = self.pickling["blocks"] / t("chunked_map, blocks")
        advice = ("worth removing: shared memory (notebook 04) or a memory-mapped file (notebook 05) let workers "
                  "read the rows instead of receiving them." if share > 0.1 else
                  "small here; with wider rows or lighter work it grows, and shared memory (notebook 04) or "
                  "memmap (notebook 05) remove it.")
        lines.append(f"4. Move less data. Pickling and unpickling the rows as blocks took "
                     f"{self.pickling['blocks'] * ms:,.1f} ms, {share:.1%} of chunked_map's time on them: {advice}")
        if "dask, blocks" in self.times:
            lines.append(f"5. Scale out last. dask on this machine was "
                         f"{describe_speedup(t('chunked_map, blocks') / t('dask, blocks'), 'chunked_map on a local pool')}"
                         f" on the same blocks; one dask task cost {self.per_task['dask'] * us:,.0f} µs, "
                         f"{self.per_task['dask'] / tasks[cheapest]:,.0f} times a {cheapest} task. A cluster pays "
                         "when one machine's cores are not enough and every task holds far more work than that.")
        lines.append("6. Rows in a DataFrame or a Parquet file? Notebook 08: vectorise in pandas first; then "
                     "frame_apply for DataFrame chunks, process_parquet for Parquet row groups; polars and DuckDB "
                     "are already parallel.")
        lines.append("   " + self.conditions())
        return "\n".join(lines)

    def _libraries(self) -> str:
        """Step 3 of the guide: the pools on the same blocks, and what their gap is made of."""
        t, ms = self.best, 1e3
        labels = [f"{lib}, blocks" for lib in (*OTHER_POOLS, "chunked_map") if f"{lib}, blocks" in self.times]
        fast, slow = min(labels, key=t), max(labels, key=t)
        ratio, gap = t(slow) / t(fast), t(slow) - t(fast)
        names = ", ".join(library(label) for label in labels)
        noise = self.noise(fast, slow)
        if ratio - 1 <= max(NOISE, noise):
            return (f"the pools were close: the slowest of {names} took {ratio:.2f} times as long as the fastest, "
                    f"within this run's noise (the rounds of these contenders varied by up to {noise:.0%}).")
        text = (f"the pools differed: the slowest of {names} ({library(slow)}) took {ratio:.2f} times as long as "
                f"the fastest ({library(fast)}), {gap * ms:,.0f} ms more.")
        per_task = self.per_task[library(slow)] - self.per_task[library(fast)]
        explained = self.tasks * per_task
        busy = ", and other programs were busy (below)" if self.busy() else ""
        if explained >= gap / 2:
            return text + (f" One task costs {per_task * 1e6:,.0f} µs more in {library(slow)}: over {self.tasks} "
                           f"tasks that is {explained * ms:,.0f} ms, most of the gap.")
        if explained > 0:
            return text + (f" Its dearer tasks account for {explained * ms:,.1f} ms of it ({self.tasks} tasks × "
                           f"{per_task * 1e6:,.0f} µs); the rest was not measured apart here{busy}.")
        return text + (f" Its tasks cost no more than {library(fast)}'s, so per-task cost does not explain it; "
                       f"what does was not measured apart here{busy}.")

    def conditions(self) -> str:
        """How noisy this run was, measured: the serial rounds' spread and the load before the runs."""
        rounds = len(self.times["serial"].times)
        text = (f"the serial loop's {rounds} rounds varied by {self.noise():.0%}" if rounds > 1 else
                "one round of each, so no spread was measured")
        if self.load is not None:
            text += f"; the load average before the runs was {self.load:.1f} on {os.cpu_count()} cores"
            if self.busy():
                text += ": other programs were busy, and gaps of that order may be theirs"
        return f"(This run: {text}.)"

    def _layout(self) -> str:
        """Step 3b: each library's usual call per row against the same library on blocks: the data layout's cost."""
        t, ms = self.best, 1e3
        libs = [lib for lib in PER_ROW if f"{lib}, per row" in self.times and f"{lib}, blocks" in self.times]
        ratios = {lib: t(f"{lib}, per row") / t(f"{lib}, blocks") for lib in libs}
        worst = max(libs, key=lambda lib: t(f"{lib}, per row") - t(f"{lib}, blocks"))
        gap = t(f"{worst}, per row") - t(f"{worst}, blocks")
        extra = self.pickling["per row"] - self.pickling["blocks"]
        text = ("Given the rows one by one, each library's usual call took " +
                ", ".join(f"{ratios[lib]:.2f}× ({lib})" for lib in libs) + " the time of the same library on "
                f"blocks. Pickling and unpickling the rows one by one took {self.pickling['per row'] * ms:,.1f} ms, "
                f"as blocks {self.pickling['blocks'] * ms:,.1f} ms: {extra * ms:,.1f} ms more")
        noise = max(NOISE, self.noise())  # what the runs' own spread can explain
        if gap <= noise * t(f"{worst}, blocks"):
            text += (", yet no library was slower per row than on blocks here, beyond the runs' noise "
                     f"({noise:.0%}).")
        elif extra >= gap / 2:
            text += f", most of {worst}'s {gap * ms:,.0f} ms gap."
        elif extra > 0:
            text += (f", part of {worst}'s {gap * ms:,.0f} ms gap (the rest is what it does per row besides "
                     "pickling, not measured apart here).")
        else:
            text += f"; pickling does not explain {worst}'s {gap * ms:,.0f} ms gap."
        if "chunked_map, slices" in self.times:
            same_form = t("chunked_map, slices") / t("chunked_map, blocks")
            text += (f" chunked_map's usual call sends 2-D slices, the blocks' form: {same_form:.2f}× its time on "
                     "blocks.")
            if abs(same_form - 1) > noise:
                text += (" The same data in the same form: a difference that large is the runs' noise (runs this "
                         "short, a busy machine), not the form's, and a gap above of that size may be noise too.")
        return text

    def figures(self) -> list[Figure]:
        """The benchmark's summary lines: chunked_map against the other pools (≤ 1.10×), speedups."""
        equal = all(self.equal.values())
        same = self.fastest(tuple(f"{lib}, blocks" for lib in OTHER_POOLS))
        usual = self.fastest(tuple(f"{lib}, per row" for lib in OTHER_POOLS))
        best_parallel = self.fastest()
        return [
            Figure(f"C1 chunked_map time / fastest other pool, same blocks ({library(same)})",
                   self.best("chunked_map, blocks") / self.best(same), at_most(1.10), equal),
            Figure(f"C1b chunked_map's usual call / fastest other pool's usual call ({library(usual)})",
                   self.best("chunked_map, slices") / self.best(usual), None, equal),
            Figure(f"C2 fastest parallel ({best_parallel}) vs serial (speedup)", self.speedup(best_parallel),
                   None, equal),
            Figure("C3 vectorised vs serial (speedup)", self.speedup("vectorised"), None, equal),
        ]

    def plot(self):
        """Times and one task's cost of every contender (``mpdemo.plots.contenders``)."""
        return plots.contenders(list(self.times.values()), self.per_task,
                                title=f"{self.rows:,} rows, {self.processes} processes, {self.tasks} blocks")


def measure_contenders(contenders: Contenders, rows: np.ndarray, *, rounds: int = 3, empty_tasks: int = 200,
                       progress: bool = False) -> Comparison:
    """Time every contender on ``rows`` in alternating rounds (after a warm-up round), then one
    empty task per task in each library, then pickling in each form; check every result against
    the serial loop."""
    from tqdm.auto import tqdm

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # before our own work adds to it
    func, p = workloads.row_score, contenders.processes
    chunksize = default_chunksize(len(rows), p)
    blocks = as_blocks(rows, chunksize)
    runs = [Run("serial", lambda: [func(row) for row in rows]), Run("vectorised", lambda: workloads.row_scores(rows))]
    runs += [Run(f"{run.label}, blocks", run.call) for run in contenders.block_runs(workloads.score_rows, blocks)]
    runs += [Run(f"{run.label}, {'slices' if run.label in ('chunked_map', 'dask') else 'per row'}", run.call)
             for run in contenders.runs(func, rows, chunksize)]
    runs.append(contenders.joblib_default(func, rows))
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
    equal = {run.label: same_results(run, reference) for run in runs[1:]}
    pickling = {name: measure(lambda data=data: pickle.loads(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)),
                              repeats=3).best
                for name, data in (("per row", list(rows)), ("blocks", blocks))}
    measured = {label: Measurement(label, tuple(t), p if form(label) else None) for label, t in times.items()}
    return Comparison(p, len(rows), chunksize, measured, per_task, equal, pickling, len(blocks), load)


def same_results(run: Run, reference: list) -> bool:
    """Whether a contender's results equal the serial loop's (blocks: once their arrays are joined)."""
    if run.label == "vectorised":
        return bool(np.allclose(run.result, reference))
    if form(run.label) == "blocks":
        return np.hstack(run.result).tolist() == reference  # mpire joins NumPy results itself
    return run.result == reference


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
