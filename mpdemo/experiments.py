"""The explorers' experiments: plain functions that run one experiment and describe its outcome.

Each explorer of the notebooks (``mpdemo.widgets``) is sliders and a Run button around one of
these; a notebook can call them directly, and the tests check them without a browser:

===================  ===========================  =================================================
experiment           returns                      what it measures
===================  ===========================  =================================================
chunking_experiment  :class:`ChunkingRun`         rows of a chosen cost, serially and with
                                                  ``chunked_map`` at a chunk size (lesson 02)
queue_experiment     :class:`QueueRun`            a reader, a bounded queue and workers: queue
                                                  depth and memory over time (lesson 03);
                                                  :func:`queue_rounds` repeats it in turns
handoff_experiment   :class:`HandoffRun`          an array handed to workers pickled and shared:
                                                  time and memory (lesson 04)
===================  ===========================  =================================================

Every ``describe_*`` function turns a run into the explorer's readout (HTML), phrased from its
numbers.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import Any

import numpy as np

from mpdemo import data, workloads
from mpdemo.blocks import row_blocks
from mpdemo.chunking import chunked_map, workers_kept
from mpdemo.context import cpu_count, get_context, start_process
from mpdemo.errors import WorkerDied
from mpdemo.pool import ProcessPool, stop_processes
from mpdemo.shm import SharedArray, parallel_apply
from mpdemo.timing import Measurement, MemoryWatch, Timeline, describe_speedup, memory_mb

# ── Chunking (lesson 02) ─────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ChunkingRun:
    """One explorer run: the settings, both times, the timeline and whether results agreed."""

    processes: int
    chunksize: int
    cost_us: float
    rows: int
    serial_seconds: float
    parallel_seconds: float
    timeline: Timeline
    same_results: bool

    @property
    def speedup(self) -> float:
        return self.serial_seconds / self.parallel_seconds


def chunking_experiment(processes: int, chunksize: int, cost_us: float, rows: int) -> ChunkingRun:
    """Run ``rows`` CPU-bound rows of ``cost_us`` each serially, then with ``chunked_map``.

    The pool is started and warmed before the clock starts, so the parallel time shows the cost
    of chunking and communication, not of starting processes.
    """
    func = functools.partial(workloads.cpu_bound, loops=workloads.loops_for(cost_us))
    start = time.perf_counter()
    expected = [func(x) for x in range(rows)]
    serial_seconds = time.perf_counter() - start
    with ProcessPool(processes) as pool:
        pool.warm()
        timeline = Timeline()
        start = time.perf_counter()
        results = chunked_map(func, range(rows), processes=processes, chunksize=chunksize,
                              executor=pool, timeline=timeline)
        parallel_seconds = time.perf_counter() - start
    return ChunkingRun(processes, chunksize, cost_us, rows, serial_seconds, parallel_seconds,
                       timeline, results == expected)


def describe_chunking(run: ChunkingRun) -> str:
    """The readout for one run, as HTML: the two times and the speedup in words, flagged when it
    is more than the run's processes (or this machine's cores, if fewer) can give."""
    cores = min(run.processes, cpu_count())
    return (f"serial <b>{run.serial_seconds:.3f} s</b> · {run.processes} processes "
            f"<b>{run.parallel_seconds:.3f} s</b> · <b>{describe_speedup(run.speedup, cores=cores)}</b><br>"
            f"{run.timeline.summary()} · results equal serial: {run.same_results}")


# ── Queues and backpressure (lesson 03) ──────────────────────────────────────────────────────

#: Each simulated chunk: rows of work, and the bytes that stand for their data in memory.
CHUNK_ROWS = 50
CHUNK_BYTES = 2**20


@dataclass(frozen=True)
class QueueSample:
    """What the parent knew at one moment: chunks sent, started and finished by workers, its memory."""

    seconds: float
    sent: int
    started: int
    done: int
    memory_mb: float

    @property
    def waiting(self) -> int:
        """Chunks in the queue: sent, not yet taken by a worker."""
        return self.sent - self.started

    @property
    def working(self) -> int:
        """Chunks a worker has taken and not finished."""
        return self.started - self.done


@dataclass(frozen=True)
class QueueRun:
    """One queue explorer run: the settings, what was sampled, and how long the reader waited."""

    workers: int
    bound: int  # 0: unbounded
    cost_us: float
    reader_us: float
    rows: int
    seconds: float
    reader_waited: float
    samples: list[QueueSample]
    rows_done: int

    @property
    def throughput(self) -> float:
        return self.rows_done / self.seconds

    @property
    def bound_text(self) -> str:
        return f"{self.bound} chunks" if self.bound else "unbounded"

    def deepest(self) -> int:
        return max((s.waiting for s in self.samples), default=0)

    def memory_growth_mb(self) -> float:
        """The parent's memory at its highest during the run, above where it started."""
        return max(s.memory_mb for s in self.samples) - self.samples[0].memory_mb

    def idle_share(self) -> float:
        """The share of the workers' time without a chunk, while there was work for every one of them.

        A worker is without a chunk from its "done" report to its next "start": while it waits
        for a chunk to be put, and while the chunk's data comes through the pipe. Counted over the
        samples until the last ``workers`` chunks have started (from then on, workers run out of
        work whatever the queue does): 0 means a worker always had its next chunk at once; 0.5
        means half the workers' time went waiting for chunks.
        """
        n_chunks = -(-self.rows // CHUNK_ROWS)
        early = [s for s in self.samples if s.started <= n_chunks - self.workers]
        if not early:
            return 0.0
        return sum(max(0, self.workers - s.working) for s in early) / (self.workers * len(early))


def queue_experiment(workers: int, bound: int, cost_us: float, reader_us: float, rows: int = 2_000) -> QueueRun:
    """Run a reader, a task queue of ``bound`` chunks (0: unbounded) and ``workers`` worker processes.

    The reader (this process) makes a chunk of ``CHUNK_ROWS`` rows every ``CHUNK_ROWS × reader_us``
    µs, with ``CHUNK_BYTES`` of data, and puts it on the queue; ``put`` waits while the queue is
    full: that wait is backpressure. Workers (:func:`mpdemo.workloads.chunk_worker`) spend
    ``cost_us`` µs per row and report on a pipe of their own when they start and finish a chunk.
    A thread collects the reports and another samples, every 10 ms, the counts the parent knows
    (sent, started, done) and its memory. (``Queue.qsize()`` would not do: it raises
    NotImplementedError on macOS.)
    """
    ctx = get_context()
    tasks = ctx.Queue(maxsize=bound)
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]  # (reader, writer): reports, one pipe each
    loops = workloads.loops_for(cost_us) if cost_us else 0
    processes = [start_process(workloads.chunk_worker, tasks, writer.send, loops) for _, writer in pipes]
    reports = [reader for reader, _ in pipes]
    for _, writer in pipes:
        writer.close()  # the workers' ends: ours closed, so that a pipe ends with its worker
    counts = {"sent": 0, "start": 0, "done": 0}
    samples: list[QueueSample] = []
    stop = threading.Event()
    n_chunks = -(-rows // CHUNK_ROWS)
    collector = threading.Thread(target=_collect, args=(reports, processes, counts, n_chunks), daemon=True)
    sampler = threading.Thread(target=_sample, args=(counts, samples, stop), daemon=True)
    try:
        for reader in reports:  # start the clock once every worker is ready
            if next_report(reader, processes) != "ready":
                raise RuntimeError("a worker did not start")
        began = time.perf_counter()
        collector.start()
        sampler.start()
        waited = 0.0
        for chunk in range(n_chunks):
            chunk_rows = min(CHUNK_ROWS, rows - chunk * CHUNK_ROWS)
            time.sleep(chunk_rows * reader_us * 1e-6)  # reading the rows
            payload = b"x" * CHUNK_BYTES
            before = time.perf_counter()
            put_while_alive(tasks, (chunk_rows, payload), processes)
            waited += time.perf_counter() - before
            counts["sent"] += 1
            del payload
        collector.join(timeout=120)
        seconds = time.perf_counter() - began
        stop.set()
        sampler.join()
        for _ in processes:
            tasks.put(None)
        for process in processes:
            process.join(timeout=10)
    finally:
        stop.set()
        stop_processes(processes)
        tasks.close()
        tasks.cancel_join_thread()  # never wait at exit to write chunks that nobody will read
        for reader in reports:
            reader.close()
    return QueueRun(workers, bound, cost_us, reader_us, rows, seconds, waited, samples,
                    min(rows, counts["done"] * CHUNK_ROWS))


def queue_rounds(workers: int, bounds: Iterable[int], cost_us: float, reader_us: float, *, rounds: int = 3,
                 rows: int = 2_000) -> dict[int, list[QueueRun]]:
    """:func:`queue_experiment` for every bound, in turns, ``rounds`` times: ``{bound: [runs]}``.

    Taking turns (as :func:`mpdemo.timing.compare` does) spreads a busy moment of the machine over
    every bound alike. :func:`queue_times` turns each bound's runs into one measurement.
    """
    runs: dict[int, list[QueueRun]] = {bound: [] for bound in bounds}
    for _ in range(rounds):
        for bound, done in runs.items():
            done.append(queue_experiment(workers, bound, cost_us, reader_us, rows))
    return runs


def queue_times(runs: list[QueueRun]) -> Measurement:
    """The seconds of several runs of one setting as a :class:`~mpdemo.timing.Measurement` (its
    ``.best`` and ``.spread``), labelled by their queue bound."""
    bound = runs[0].bound
    return Measurement(f"bound {bound}" if bound else "unbounded", tuple(run.seconds for run in runs))


#: How long the reader waits at a full queue before it checks that the workers are still there.
PUT_PATIENCE = 0.5


def put_while_alive(tasks: Any, chunk: Any, processes: list) -> None:
    """``tasks.put(chunk)``, waiting as long as the queue is full, but never for workers that are gone."""
    while True:
        try:
            return tasks.put(chunk, timeout=PUT_PATIENCE)
        except queue.Full:
            if any(process.exitcode is not None for process in processes):
                raise WorkerDied("a worker of the queue explorer died: no one takes chunks from the queue") from None


def next_report(reader: Any, processes: list) -> str:
    """The next report on a worker's pipe. Waits for it, or for any worker's end, nothing else."""
    ready = wait_for([reader, *(process.sentinel for process in processes)])
    if reader not in ready:
        raise WorkerDied("a worker of the queue explorer died")
    return reader.recv()


def _collect(reports: list, processes: list, counts: dict[str, int], n_chunks: int) -> None:
    """Count the workers' "start" and "done" reports until every chunk is done (or a worker died)."""
    by_sentinel = {process.sentinel for process in processes}
    while counts["done"] < n_chunks:
        ready = wait_for([*reports, *by_sentinel])
        if any(ready_one in by_sentinel for ready_one in ready):
            return
        for reader in ready:
            counts[reader.recv()] += 1


def _sample(counts: dict[str, int], samples: list[QueueSample], stop: threading.Event) -> None:
    began = time.perf_counter()
    while not stop.is_set():
        samples.append(QueueSample(time.perf_counter() - began, counts["sent"], counts["start"], counts["done"],
                                   memory_mb()))
        stop.wait(0.01)


def describe_queue(run: QueueRun) -> str:
    """The readout for one queue explorer run, as HTML."""
    share = run.reader_waited / run.seconds if run.seconds else 0.0
    return (f"{run.rows_done:,} of {run.rows:,} rows done in <b>{run.seconds:.2f} s</b>: "
            f"<b>{run.throughput:,.0f} rows/s</b> · queue bound <b>{run.bound_text}</b><br>"
            f"deepest queue {run.deepest()} chunks · the reader waited at a full queue for "
            f"{run.reader_waited:.2f} s ({share:.0%} of the run) · the workers had no chunk "
            f"{run.idle_share():.0%} of the time · parent memory peak +{run.memory_growth_mb():.0f} MB")


# ── Handing an array over, pickled or shared (lesson 04) ─────────────────────────────────────

#: Columns of the explorer's array: rows of 1 KB.
COLUMNS = 128


@dataclass(frozen=True)
class HandoffRun:
    """One hand-off of an array to worker processes, pickled and shared: times and extra memory."""

    size_mb: float
    processes: int
    pickled_seconds: float
    shared_seconds: float
    pickled_extra_mb: float  # peak memory of the caller and its workers above where they started
    shared_extra_mb: float
    same_results: bool

    @property
    def ratio(self) -> float:
        """How many times longer the pickled hand-off took."""
        return self.pickled_seconds / self.shared_seconds


def handoff_experiment(size_mb: float, processes: int, *, func: Callable[[np.ndarray], Any] = np.sum,
                       executor: Executor | ProcessPool | None = None, repeats: int = 1) -> HandoffRun:
    """Give each of ``processes`` workers one row block of a ``size_mb`` MB array, two ways.

    **Pickled**: each block is an argument of ``chunked_map``, pickled by the caller, sent through
    a pipe and unpickled, a copy, in the worker. **Shared**: the array is in a
    :class:`~mpdemo.shm.SharedArray` (made before the clock starts, as if the data had been
    loaded there) and ``parallel_apply`` sends only its handle. Each worker applies ``func`` to
    its block (default ``np.sum``: every value is read) and sends back the result; both ways
    must equal ``func`` applied here. The pool is started and warmed first (or pass
    ``executor``), so the times hold the hand-off and the work, not starting processes; memory
    is sampled meanwhile (:class:`~mpdemo.timing.MemoryWatch`). With ``repeats``, each way runs
    that many times, in turns: the times are the best (noise only ever adds time), the memory
    the highest peak.
    """
    array = data.make_array(max(1, round(size_mb * 2**20 / (8 * COLUMNS))), COLUMNS)
    blocks = [array[start:stop] for start, stop in row_blocks(len(array), processes)]
    expected = [func(block) for block in blocks]
    seconds: dict[str, list[float]] = {"pickled": [], "shared": []}
    peaks: dict[str, list[float]] = {"pickled": [], "shared": []}
    same = True
    with workers_kept(executor, processes) as pool, SharedArray.from_array(array) as shared:
        ways = {"pickled": lambda: chunked_map(func, blocks, processes=processes, chunksize=1, executor=pool),
                "shared": lambda: parallel_apply(func, shared, processes=processes, executor=pool)}
        for _ in range(repeats):
            for way, hand_over in ways.items():
                with MemoryWatch() as memory:
                    start = time.perf_counter()
                    results = hand_over()
                    seconds[way].append(time.perf_counter() - start)
                peaks[way].append(memory.extra_mb())
                same = same and _equal(results, expected)
    return HandoffRun(array.nbytes / 2**20, processes, min(seconds["pickled"]), min(seconds["shared"]),
                      max(peaks["pickled"]), max(peaks["shared"]), same)


def _equal(results: list, expected: list) -> bool:
    return len(results) == len(expected) and all(np.array_equal(a, b) for a, b in zip(results, expected, strict=True))


def describe_handoff(run: HandoffRun) -> str:
    """The readout for one shared-memory explorer run, as HTML."""
    workers = f"{run.processes} worker{'s' if run.processes != 1 else ''}"
    return (f"{run.size_mb:,.0f} MB to {workers} · pickled <b>{run.pickled_seconds:.3f} s</b>, "
            f"peak +{run.pickled_extra_mb:,.0f} MB · shared <b>{run.shared_seconds:.4f} s</b>, peak "
            f"+{run.shared_extra_mb:,.0f} MB · shared memory was <b>{describe_speedup(run.ratio, 'pickling')}</b><br>"
            f"results equal serial: {run.same_results}")


