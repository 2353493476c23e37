"""``chunked_map``: split the items into chunks, run each chunk as one task, gather the results.

How the data flows::

      caller process                                          worker processes
      ──────────────                                          ────────────────
      items ─► chunk 0: items[0:c]    ─ pickle, send ─►   run_pickled_chunk(func, 0, bytes) ──┐
               chunk 1: items[c:2c]   ─ pickle, send ─►   run_pickled_chunk(func, c, bytes)   │
               ...  (never more than 4 × processes chunks in flight: in_flight)               │
      list  ◄─ results put back in input order ◄── ChunkReply(pickled results, TaskRecord) ◄──┘

Every task costs a fixed overhead on top of its work: pickling the chunk, passing it through a
pipe, waking a worker, sending the results back. One item per task pays that overhead per item,
which for light rows costs more than the work itself. Chunks of ``c`` items pay it once per
``c`` items. Chunks that are too large leave workers idle at the end (the last chunk finishes
alone), so the right size keeps overhead small while every worker still gets several chunks.
:func:`default_chunksize` is Pool.map's rule; :func:`suggest_chunksize` measures.

The workers are an :class:`mpdemo.ProcessPool` started for this call, or one you keep across
calls, or any ``concurrent.futures.Executor`` you pass in (threads, loky, dask). A worker that
dies (killed, out of memory) raises :class:`~mpdemo.errors.WorkerDied` instead of waiting
forever for its results, as ``multiprocessing.Pool`` would.

Items are read lazily: a generator is consumed chunk by chunk as workers become free, so the
input never has to fit in memory at once. Lists, ranges and NumPy arrays are sliced instead,
so a chunk of an array travels as one compact array and the worker iterates over its rows.

Each chunk is pickled once, here (:func:`mpdemo.guard.pack`): a failure names its item. The
worker pickles the results itself, so a result that cannot travel is named there. Both
picklings are timed, and every task's :class:`~mpdemo.timing.TaskRecord` says how long the
worker computed and how long the worker and the caller spent pickling (notebook 06).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import pickle
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Executor
from typing import Any, NamedTuple

import numpy as np

from mpdemo.context import process_count, require_whole
from mpdemo.errors import NotSendable, WorkerDied, WorkerError, WorkerTraceback, sendable
from mpdemo.guard import DATA_CURE, check_function, pack, pickling_method, range_text
from mpdemo.pool import Call, ProcessPool, workers_for
from mpdemo.timing import Measurement, TaskRecord, Timeline, compare

#: Chunk size for inputs without a length (generators), where Pool.map's rule cannot apply.
UNSIZED_CHUNKSIZE = 256
#: Chunks in flight per process: enough to keep every worker busy while results are collected.
CHUNKS_IN_FLIGHT_PER_PROCESS = 4


def default_chunksize(n_items: int, processes: int) -> int:
    """Pool.map's rule: about four chunks per process.

    CPython's ``multiprocessing.Pool.map`` computes ``chunksize, extra = divmod(n_items,
    processes * 4)`` and adds one when ``extra`` is not zero, so each worker gets about four
    chunks: few enough to keep the overhead low, enough to even out the load a little. We also
    return at least 1 (Pool returns 0 for no items).
    """
    require_whole("processes", processes)
    chunksize, extra = divmod(n_items, processes * 4)
    return max(1, chunksize + 1 if extra else chunksize)


# ── The worker side ──────────────────────────────────────────────────────────────────────────


class ItemFailure(NamedTuple):
    """The item a chunk stopped at: its input position, the exception, the worker's traceback."""

    index: int
    error: BaseException
    traceback: str


class ChunkReply(NamedTuple):
    """What a worker sends back for one chunk: the results of the items before any failure
    (pickled by the worker, or a list where nothing is pickled), the task's record, the failure.

    Between processes it travels as a plain tuple (:meth:`plain`): a named tuple pickles through
    a Python method call per object, several times slower, and a reply travels with every task.
    """

    results: bytes | list
    record: TaskRecord
    failure: ItemFailure | None = None

    def plain(self) -> tuple:
        return self.results, tuple(self.record), self.failure

    @classmethod
    def from_plain(cls, plain: tuple) -> ChunkReply:
        results, record, failure = plain
        return cls(results, TaskRecord(*record), failure)


def run_chunk(func: Callable[[Any], Any], start: int, chunk: Iterable) -> ChunkReply:
    """Runs in a worker: apply ``func`` to every item of one chunk, stopping at the first that fails.

    ``start`` is the input position of the chunk's first item, so a failure can name its item.
    Every exception counts, ``SystemExit`` and ``KeyboardInterrupt`` too: a row function that calls
    ``sys.exit()`` fails its item, and never ends the caller's program.
    """
    began = time.time()
    results, failure = [], None
    for offset, item in enumerate(chunk):
        try:
            results.append(func(item))
        except BaseException as error:
            failure = ItemFailure(start + offset, sendable(error), traceback.format_exc())
            break
    return ChunkReply(results, TaskRecord(os.getpid(), began, time.time(), len(results)), failure)


def run_pickled_chunk(func: Callable[[Any], Any], start: int, payload: bytes) -> tuple:
    """Runs in a worker: :func:`run_chunk` on a chunk the caller pickled, its results pickled here.

    The two picklings are timed into the record (``pickling``); a result that cannot be pickled
    ends the chunk there, as a failure naming its item. Returns the reply as a plain tuple.
    """
    began, clock = time.time(), time.perf_counter()
    chunk = pickle.loads(payload)
    unpickling = time.perf_counter() - clock
    reply = run_chunk(func, start, chunk)
    clock = time.perf_counter()
    results, failure = pack_results(reply.results, start, reply.failure)
    pickling = unpickling + time.perf_counter() - clock
    record = reply.record._replace(start=began, end=time.time(), pickling=pickling)
    return ChunkReply(results, record, failure).plain()


def pack_results(results: list, start: int, failure: ItemFailure | None) -> tuple[bytes, ItemFailure | None]:
    """The results pickled; if one cannot be, those before it, and a failure that names it."""
    try:
        return pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL), failure
    except Exception:
        pass
    for offset, result in enumerate(results):
        try:
            pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            cannot = NotSendable(f"the result of item {start + offset:,} cannot be sent back from the worker: "
                                 f"{type(error).__name__}: {error}. {DATA_CURE}")
            return pickle.dumps(results[:offset]), ItemFailure(start + offset, cannot, traceback.format_exc())
    raise RuntimeError("the results cannot be pickled together, though each can")


# ── The caller side ──────────────────────────────────────────────────────────────────────────


def chunked_map(func: Callable[[Any], Any], items: Iterable, *, processes: int | None = None,
                chunksize: int | str = "auto", ordered: bool = True, executor: Executor | ProcessPool | None = None,
                progress: bool = False, timeline: Timeline | None = None) -> list:
    """``[func(item) for item in items]``, computed in chunks by worker processes.

    processes: workers to start (default: :func:`mpdemo.cpu_count`); with ``executor`` it only
        sizes the chunks and the number of chunks in flight.
    chunksize: items per task; ``"auto"`` uses Pool.map's rule (:func:`default_chunksize`) when
        ``items`` has a length, else ``UNSIZED_CHUNKSIZE``.
    ordered: results in input order (default), or chunk by chunk as they finish.
    executor: an :class:`mpdemo.ProcessPool` you keep across calls (no start-up per call), or any
        ``concurrent.futures.Executor``; None starts a ``ProcessPool`` for this call.
    progress: show a tqdm progress bar (a widget in Jupyter, text in a terminal).
    timeline: a :class:`mpdemo.timing.Timeline` that receives one record per task; its ``began``
        is set to the moment this call starts (pool start-up included). Use a new one per call.

    The first failure to arrive raises :class:`~mpdemo.errors.WorkerError` naming its item's index
    (with several bad items, not necessarily the lowest); a worker that dies raises
    :class:`~mpdemo.errors.WorkerDied` within moments, never a hang. A function, item or result that
    cannot travel between processes raises :class:`~mpdemo.errors.NotSendable` naming it.

    Ctrl-C (KeyboardInterrupt) stops the workers at once and is re-raised: a ``ProcessPool`` you
    passed starts new workers on its next call; a ``ProcessPoolExecutor`` you passed is stopped
    for good (make a new one). Thread pools and other executors are left running; their chunks
    not yet started are cancelled.
    """
    processes = process_count(processes, executor)
    n_items = item_count(items)
    chunksize = chosen_chunksize(chunksize, n_items, processes)
    pickled = check_function(func, executor)
    from tqdm.auto import tqdm  # imported here: workers import this module and never need it

    if timeline is not None:
        timeline.began = time.time()
    call_for = functools.partial(chunk_call, func, pickled=pickled)
    finished: dict[int, list] = {}
    with workers_for(executor, processes) as workers, tqdm(total=n_items, disable=not progress, unit="item") as bar:
        tasks = chunks(items, chunksize)
        for (start, _), call, reply in in_flight(workers, tasks, call_for, CHUNKS_IN_FLIGHT_PER_PROCESS * processes,
                                                 ordered=False):
            results, record = open_chunk_reply(reply, call)
            finished[start] = results
            bar.update(record.items)
            if timeline is not None:
                timeline.append(record)
    order = sorted(finished) if ordered else finished  # dicts remember the order chunks finished in
    return list(itertools.chain.from_iterable(finished[start] for start in order))  # joined at C speed


def in_flight(workers: Any, tasks: Iterator, call_for: Callable[[Any], Call], window: int, *,
              ordered: bool = True) -> Iterator[tuple[Any, Call, Any]]:
    """Keep at most ``window`` tasks in flight on ``workers``; yield ``(task, call, reply)`` as each
    is handed back (``call``: what was run for it, ``call_for(task)``).

    A task is *in flight* from the moment it is sent until its reply has been handed back, so a
    reply that waits for an earlier one (``ordered``) still counts. Tasks are read from ``tasks``
    only as room frees up: when one task is slow, or when you stop asking for replies (a
    generator runs only while you iterate it), nothing more is read or sent. That is
    backpressure, and it keeps memory to ``window`` tasks whatever the input's size.

    ``workers`` is an :class:`mpdemo.ProcessPool` or an :class:`~mpdemo.pool.OnExecutor`:
    ``send(call)`` returns a ticket, ``receive()`` the next ``(ticket, reply)``, ``forget()``
    drops what is in flight. ``call_for(task)`` says what to run for a task.
    """
    sent: dict[int, tuple[Any, Call]] = {}  # ticket -> (task, call), for every task in flight
    order: deque[int] = deque()  # the tickets in flight, in the order they were sent
    arrived: dict[int, Any] = {}  # ticket -> reply: replies waiting for an earlier one (ordered)

    def send_more() -> None:
        while len(sent) < window and (task := next(tasks, None)) is not None:
            call = call_for(task)
            ticket = workers.send(call)
            sent[ticket] = task, call
            order.append(ticket)

    try:
        send_more()
        while sent:
            try:
                ticket, reply = workers.receive()
            except WorkerDied as died:
                raise dead_worker(died, sent) from died.__cause__
            arrived[ticket] = reply
            if not ordered:
                order.remove(ticket)
                ready = [ticket]
            else:
                ready = []
                while order and order[0] in arrived:
                    ready.append(order.popleft())
            for ticket in ready:
                (task, call), reply = sent.pop(ticket), arrived.pop(ticket)
                send_more()  # before handing this one back: the workers stay busy meanwhile
                yield task, call, reply
    finally:
        workers.forget()  # after an error or an early stop, nobody waits for what is in flight


def dead_worker(died: WorkerDied, sent: dict[int, tuple[Any, Call]]) -> WorkerDied:
    """``died`` with the task the dead worker held named, when the pool knows which it was."""
    ticket = died.args[1] if len(died.args) > 1 else None
    if ticket not in sent:
        return WorkerDied(died.args[0])
    return WorkerDied(f"{died.args[0]} (it was running {sent[ticket][1].what})")


def chunk_call(func: Callable[[Any], Any], task: tuple[int, Any], *, pickled: bool) -> Call:
    """What to run for one chunk: pickled here (timed) for process pools, as it is for others."""
    start, chunk = task
    what = range_text(start, chunk)
    if not pickled:
        return Call(run_chunk, (func, start, chunk), what)
    clock = time.perf_counter()
    payload = pack(chunk, start)
    return Call(run_pickled_chunk, (func, start, payload), what, caller_seconds=time.perf_counter() - clock)


def open_chunk_reply(reply: ChunkReply | tuple, call: Call) -> tuple[list, TaskRecord]:
    """A chunk's results and record (with the caller's pickling: ``call``'s and the unpickling
    of the results); the chunk's failure raised as a clear error."""
    if not isinstance(reply, ChunkReply):
        reply = ChunkReply.from_plain(reply)
    if isinstance(reply.results, bytes):
        clock = time.perf_counter()
        results = pickle.loads(reply.results)
        record = reply.record._replace(caller_pickling=call.caller_seconds + time.perf_counter() - clock)
    else:
        results, record = reply.results, reply.record
    if reply.failure is not None:
        raise item_error(reply.failure)
    return results, record


def item_error(failure: ItemFailure) -> Exception:
    """The error that a failed item raises in the caller: :class:`WorkerError` with the original
    exception chained, and the worker's traceback chained to that (``NotSendable`` as it is)."""
    if isinstance(failure.error, NotSendable):
        return failure.error
    failure.error.__cause__ = WorkerTraceback(failure.traceback)
    error = WorkerError(failure.index, failure.error)
    error.__cause__ = failure.error
    return error


def item_count(items: Iterable) -> int | None:
    """How many items, if ``items`` says (None for a generator); a 0-d array is refused."""
    if isinstance(items, np.ndarray) and items.ndim == 0:
        raise ValueError("a 0-dimensional array holds one value and no rows: pass a list or a 1-D array")
    return len(items) if isinstance(items, Sized) else None


def chosen_chunksize(chunksize: int | str, n_items: int | None, processes: int) -> int:
    """``chunksize`` checked; ``"auto"``: Pool.map's rule, or ``UNSIZED_CHUNKSIZE`` for a generator."""
    if chunksize == "auto":
        return UNSIZED_CHUNKSIZE if n_items is None else default_chunksize(n_items, processes)
    require_whole("chunksize", chunksize, also='"auto"')
    return int(chunksize)


def chunks(items: Iterable, chunksize: int) -> Iterator[tuple[int, Any]]:
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


# ── Measuring: the cost of an item and of a task; a chunk size from both; a sweep ────────────


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


def task_overhead(executor: Executor | ProcessPool, processes: int, *, tasks: int = 100, passes: int = 3) -> float:
    """Seconds each task costs beyond its work: empty one-item chunks through a warm pool.

    ``passes`` rounds of ``tasks`` tasks, after one untimed round; the fastest round counts.
    """
    call_for = functools.partial(chunk_call, abs, pickled=pickling_method(executor) is not None)
    best = math.inf
    with workers_for(executor, processes) as workers:
        for round_ in range(passes + 1):
            start = time.perf_counter()
            list(in_flight(workers, ((i, [i]) for i in range(tasks)), call_for,
                           CHUNKS_IN_FLIGHT_PER_PROCESS * processes))
            if round_:
                best = min(best, (time.perf_counter() - start) / tasks)
    return best


def suggest_chunksize(func: Callable[[Any], Any], items: Sequence, processes: int | None = None, *,
                      executor: Executor | ProcessPool | None = None, overhead_share: float = 0.05) -> int:
    """A chunk size from two measurements: the cost of one item and the overhead of one task.

    With ``p`` workers, ``n`` items of cost ``t`` and a per-task overhead ``o``, the work takes
    about ``n·t/p`` and the overhead ``(n/c)·o``. Keeping the overhead below ``overhead_share``
    of the work needs ``c ≥ o·p / (t·overhead_share)``. Chunks larger than Pool.map's rule would
    give each worker fewer than four chunks and invite load imbalance, so that rule is the cap.
    """
    processes = process_count(processes, executor)
    per_item = item_cost(func, items)
    with workers_kept(executor, processes) as pool:
        per_task = task_overhead(pool, processes)
    enough = int(per_task * processes / (max(per_item, 1e-9) * overhead_share)) + 1
    return max(1, min(enough, default_chunksize(len(items), processes)))


def chunksize_sweep(func: Callable[[Any], Any], items: Sequence, chunksizes: Iterable[int], *,
                    processes: int | None = None, repeats: int = 3, executor: Executor | ProcessPool | None = None
                    ) -> dict[int, Measurement]:
    """Time ``chunked_map`` at each chunk size on one warm pool; keep every repeat.

    The pool is started (and every worker warmed) before the first measurement, so the times
    compare chunking alone. Each round times every size once, so a burst of load from another
    program slows one repeat of several sizes rather than every repeat of one size. Read
    ``.best`` of each measurement: the minimum avoids jitter.
    """
    processes = process_count(processes, executor)
    chunksizes = list(chunksizes)
    with workers_kept(executor, processes) as pool:
        calls = {f"chunksize {c}": functools.partial(chunked_map, func, items, processes=processes, chunksize=c,
                                                     executor=pool) for c in chunksizes}
        measured = compare(calls, rounds=repeats, warmup=1)
    return {c: measured[f"chunksize {c}"] for c in chunksizes}


@contextlib.contextmanager
def workers_kept(executor: Executor | ProcessPool | None, processes: int) -> Iterator[Executor | ProcessPool]:
    """``executor`` itself, or, when it is None, a warm :class:`ProcessPool` for the block."""
    if executor is not None:
        yield executor
        return
    with ProcessPool(processes) as pool:
        yield pool.warm()
