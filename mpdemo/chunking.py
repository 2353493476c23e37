"""``chunked_map``: split the items into chunks, run each chunk as one task, gather the results.

How the data flows::

      caller process                                       worker processes
      ──────────────                                       ────────────────
      items ─► chunk 0: items[0:c]    ─ submit ─►   run_chunk(func, 0, chunk) ──┐
               chunk 1: items[c:2c]   ─ submit ─►   run_chunk(func, c, chunk)   │
               ...  (never more than 4 × processes chunks in flight)            │
      list  ◄─ results put back in input order ◄── (results, TaskRecord) ◄──────┘

Every task costs a fixed overhead on top of its work: pickling the function and the chunk,
passing them through a pipe, waking a worker, sending the results back. One item per task pays
that overhead per item, which for light rows costs more than the work itself. Chunks of ``c``
items pay it once per ``c`` items. Chunks that are too large leave workers idle at the end (the
last chunk finishes alone), so the right size keeps overhead small while every worker still gets
several chunks. :func:`default_chunksize` is Pool.map's rule; :func:`suggest_chunksize` measures.

The pool is a ``concurrent.futures.ProcessPoolExecutor`` from :func:`mpdemo.get_context`, or any
``Executor`` you pass in (threads, loky, dask). Unlike ``multiprocessing.Pool``, a process pool
executor notices a worker that dies (killed, out of memory) and raises ``BrokenProcessPool``
instead of waiting forever for its results.

Items are read lazily: a generator is consumed chunk by chunk as workers become free, so the
input never has to fit in memory at once. Lists, ranges and NumPy arrays are sliced instead,
so a chunk of an array travels as one compact array and the worker iterates over its rows.

What can go wrong between the caller and a worker is checked in the caller, before it happens
(:mod:`mpdemo.guard`): a function or item that cannot be pickled, or a function from a notebook
cell that spawn workers cannot import, raises :class:`~mpdemo.guard.NotSendable` naming it,
before any chunk is sent. Ctrl-C stops the workers at once instead of waiting for their chunks.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from mpdemo.context import cpu_count, get_context, start_method, start_workers
from mpdemo.guard import (DATA_CURE, NotSendable, check_items_sendable, check_sendable, dead_worker_hint,
                          describe_dead_workers, ignore_sigint, range_text, start_method_of, stop_workers)
from mpdemo.timing import Measurement, TaskRecord, Timeline, compare

#: Chunk size for inputs without a length (generators), where Pool.map's rule cannot apply.
UNSIZED_CHUNKSIZE = 256
#: Chunks submitted ahead of the results per process: enough to keep every worker busy.
CHUNKS_IN_FLIGHT_PER_PROCESS = 4


class WorkerError(Exception):
    """A row function raised inside a worker; ``index`` is the failing item's input position.

    The original exception is chained as ``__cause__``, and its own cause holds the worker's
    traceback, so the whole story prints in the caller.
    """

    def __init__(self, index: int, error: BaseException):
        super().__init__(index, error)
        self.index = index
        self.error = error

    def __str__(self) -> str:
        return f"item {self.index:,} raised {type(self.error).__name__}: {self.error}"


class WorkerDied(RuntimeError):
    """A worker process disappeared (killed by a signal or the out-of-memory killer).

    Its ``__cause__`` is the executor's ``BrokenProcessPool``.
    """


def default_chunksize(n_items: int, processes: int) -> int:
    """Pool.map's rule: about four chunks per process.

    CPython's ``multiprocessing.Pool.map`` computes ``chunksize, extra = divmod(n_items,
    processes * 4)`` and adds one when ``extra`` is not zero, so each worker gets about four
    chunks: few enough to keep the overhead low, enough to even out the load a little. We also
    return at least 1 (Pool returns 0 for no items).
    """
    _require_positive(processes=processes)
    chunksize, extra = divmod(n_items, processes * 4)
    return max(1, chunksize + 1 if extra else chunksize)


def run_chunk(func: Callable[[Any], Any], start: int, chunk: Iterable) -> tuple[list, TaskRecord]:
    """Runs in a worker: apply ``func`` to every item of one chunk and record the task.

    ``start`` is the input position of the chunk's first item, so a failure can name its item.
    """
    began = time.time()
    results = []
    for offset, item in enumerate(chunk):
        try:
            results.append(func(item))
        except Exception as exc:
            raise WorkerError(start + offset, _picklable(exc)) from exc
    return results, TaskRecord(os.getpid(), began, time.time(), len(results))


def _picklable(exc: Exception) -> Exception:
    """``exc`` if it survives the trip to the caller, else a RuntimeError that tells its story."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc} (the original exception cannot be pickled)")


def chunked_map(func: Callable[[Any], Any], items: Iterable, *, processes: int | None = None,
                chunksize: int | str = "auto", ordered: bool = True, executor: Executor | None = None,
                progress: bool = False, timeline: Timeline | None = None) -> list:
    """``[func(item) for item in items]``, computed in chunks by worker processes.

    processes: workers to start (default: :func:`mpdemo.cpu_count`); with ``executor`` it only
        sizes the chunks and the number of chunks in flight.
    chunksize: items per task; ``"auto"`` uses Pool.map's rule (:func:`default_chunksize`) when
        ``items`` has a length, else ``UNSIZED_CHUNKSIZE``.
    ordered: results in input order (default), or chunk by chunk as they finish.
    executor: any ``concurrent.futures.Executor``; None starts a process pool for this call.
    progress: show a tqdm progress bar (a widget in Jupyter, text in a terminal).
    timeline: a :class:`mpdemo.timing.Timeline` that receives one record per task; its ``began``
        is set to the moment this call starts (pool start-up included). Use a new one per call.

    The first failure to arrive raises :class:`WorkerError` naming its item's index (with several
    bad items, not necessarily the lowest index); a worker that dies raises
    :class:`WorkerDied` within moments, never a hang. A function, item or result that cannot
    travel between processes raises :class:`~mpdemo.guard.NotSendable` naming it.

    Ctrl-C (KeyboardInterrupt) stops the workers at once and is re-raised. A process pool you
    passed as ``executor`` is stopped too: its workers are terminated and it accepts no more
    work, so make a new one. Thread pools and other executors are left running; their chunks
    not yet started are cancelled.
    """
    processes = cpu_count() if processes is None else processes
    _require_positive(processes=processes)
    n_items = len(items) if isinstance(items, Sized) else None
    if chunksize == "auto":
        chunksize = UNSIZED_CHUNKSIZE if n_items is None else default_chunksize(n_items, processes)
    _require_positive(chunksize=chunksize)
    method = start_method() if executor is None else start_method_of(executor)  # None: no pickling
    if method is not None:
        check_sendable(func, method)  # before any process starts: a lambda fails here, clearly
    from tqdm.auto import tqdm  # imported here: workers import this module and never need it

    if timeline is not None:
        timeline.began = time.time()
    own_executor = executor is None
    if own_executor:
        executor = ProcessPoolExecutor(max_workers=processes, mp_context=get_context(), initializer=ignore_sigint)
    bar = tqdm(total=n_items, disable=not progress, unit="item")
    finished: dict[int, list] = {}
    interrupted = False
    try:
        chunks = _chunks(items, chunksize)
        for start, results, record in _completed(executor, func, chunks, processes, method):
            finished[start] = results
            bar.update(record.items)
            if timeline is not None:
                timeline.append(record)
    except KeyboardInterrupt:
        interrupted = True
        if method is not None:  # a process pool: do not wait for the chunks that are running
            stop_workers(executor)
        raise
    finally:
        bar.close()
        if own_executor:
            executor.shutdown(wait=not interrupted, cancel_futures=True)
    order = sorted(finished) if ordered else finished  # dicts remember completion order
    return [result for start in order for result in finished[start]]


def _chunks(items: Iterable, chunksize: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(start_index, chunk)``: slices of sequences and arrays, lists from anything else."""
    if isinstance(items, (Sequence, np.ndarray)):
        for start in range(0, len(items), chunksize):
            yield start, items[start:start + chunksize]
        return
    iterator = iter(items)
    for start in itertools.count(0, chunksize):
        chunk = list(itertools.islice(iterator, chunksize))
        if not chunk:
            return
        yield start, chunk


def _completed(executor: Executor, func: Callable, chunks: Iterator, processes: int,
               method: str | None = None) -> Iterator:
    """Keep a bounded number of chunks in flight; yield ``(start, results, record)`` as each ends.

    ``method`` is the pool's start method, or None when nothing is pickled (threads) or the
    executor pickles in its own way (dask, loky): then chunks are sent unchecked.
    """
    pending: dict[Future, tuple[int, int]] = {}

    def submit(how_many: int) -> None:
        for start, chunk in itertools.islice(chunks, how_many):
            if method is not None:
                check_items_sendable(chunk, start, method)
            pending[executor.submit(run_chunk, func, start, chunk)] = start, len(chunk)

    try:
        submit(CHUNKS_IN_FLIGHT_PER_PROCESS * processes)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            submit(len(done))  # refill first, so workers are not idle while we collect
            for future in done:
                start, count = pending.pop(future)
                yield (start, *_outcome(future, start, count, method))
    except BrokenProcessPool as broken:
        how = describe_dead_workers(executor) or "killed by a signal or the out-of-memory killer?"
        raise WorkerDied(f"a worker process died unexpectedly ({how}); the pool is broken and the "
                         f"results in flight are lost{dead_worker_hint(func, method)}") from broken
    finally:
        for future in pending:  # after an error, do not leave queued chunks to run
            future.cancel()


def _outcome(future: Future, start: int, count: int, method: str | None) -> tuple[list, TaskRecord]:
    """A finished chunk's results, with worker failures turned into clear errors."""
    try:
        return future.result()
    except WorkerError as failed:
        if failed.__cause__ is not failed.error:  # a process pool sends the worker's traceback as text
            failed.error.__cause__ = failed.__cause__
        raise WorkerError(failed.index, failed.error) from failed.error
    except BrokenProcessPool:
        raise
    except Exception as exc:
        if method is None:
            raise
        # The function and items were checked before sending, so what failed is the way back.
        raise NotSendable(f"the results of {range_text(start, count)} could not be sent back from the "
                          f"worker: {type(exc).__name__}: {exc}. {DATA_CURE}") from exc


def _require_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


def item_cost(func: Callable[[Any], Any], items: Sequence, *, passes: int = 5, budget: float = 0.2) -> float:
    """Seconds per item, from running ``func`` here on up to 64 items spread over the input.

    The items are evenly spaced so that uneven rows are represented. The sample runs up to
    ``passes`` times within ``budget`` seconds and the fastest pass counts: one preemption by
    another program would otherwise inflate a sample of microsecond rows many times over.
    """
    if not isinstance(items, (Sequence, np.ndarray)) or len(items) == 0:
        raise ValueError("item_cost needs a non-empty list, range or array to sample from")
    sample = [items[i] for i in np.linspace(0, len(items) - 1, num=min(64, len(items))).astype(int)]
    deadline = time.perf_counter() + budget
    best = math.inf
    for _ in range(passes):
        start, done = time.perf_counter(), 0
        for item in sample:
            func(item)
            done += 1
            if time.perf_counter() > deadline:
                break
        best = min(best, (time.perf_counter() - start) / done)
        if time.perf_counter() > deadline:
            break
    return best


def task_overhead(executor: Executor, processes: int, *, tasks: int = 100, passes: int = 3) -> float:
    """Seconds each task costs beyond its work: empty one-item chunks through a warm pool.

    ``passes`` rounds of ``tasks`` tasks; the fastest round counts.
    """
    start_workers(executor, processes)
    best = math.inf
    for _ in range(passes):
        start = time.perf_counter()
        list(_completed(executor, _identity, ((i, [i]) for i in range(tasks)), processes))
        best = min(best, (time.perf_counter() - start) / tasks)
    return best


def _identity(x: Any) -> Any:
    return x


def suggest_chunksize(func: Callable[[Any], Any], items: Sequence, processes: int | None = None, *,
                      executor: Executor | None = None, overhead_share: float = 0.05) -> int:
    """A chunk size from two measurements: the cost of one item and the overhead of one task.

    With ``p`` workers, ``n`` items of cost ``t`` and a per-task overhead ``o``, the work takes
    about ``n·t/p`` and the overhead ``(n/c)·o``. Keeping the overhead below ``overhead_share``
    of the work needs ``c ≥ o·p / (t·overhead_share)``. Chunks larger than Pool.map's rule would
    give each worker fewer than four chunks and invite load imbalance, so that rule is the cap.
    """
    processes = cpu_count() if processes is None else processes
    per_item = item_cost(func, items)
    if executor is None:
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context()) as pool:
            per_task = task_overhead(pool, processes)
    else:
        per_task = task_overhead(executor, processes)
    enough = int(per_task * processes / (max(per_item, 1e-9) * overhead_share)) + 1
    return max(1, min(enough, default_chunksize(len(items), processes)))


def sweep(func: Callable[[Any], Any], items: Sequence, chunksizes: Iterable[int], *,
          processes: int | None = None, repeats: int = 3, executor: Executor | None = None
          ) -> dict[int, Measurement]:
    """Time ``chunked_map`` at each chunk size on one warm pool; keep every repeat.

    The pool is started (and every worker warmed) before the first measurement, so the times
    compare chunking alone. Each round times every size once, so a burst of load from another
    program slows one repeat of several sizes rather than every repeat of one size. Read
    ``.best`` of each measurement: the minimum avoids jitter.
    """
    processes = cpu_count() if processes is None else processes
    if executor is None:
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context()) as pool:
            return sweep(func, items, chunksizes, processes=processes, repeats=repeats, executor=pool)
    start_workers(executor, processes)
    calls = {f"chunksize {c}": functools.partial(chunked_map, func, items, processes=processes, chunksize=c,
                                                 executor=executor) for c in chunksizes}
    measured = compare(calls, rounds=repeats)
    return {c: measured[f"chunksize {c}"] for c in chunksizes}
