"""Interactive explorers for the notebooks, built from ipywidgets.

The work happens in plain functions (:func:`explore`, :func:`describe`), which the tests call
directly; the widget only reads its sliders, calls them and shows the answer. Nothing runs on a
slider tick: a run starts processes, so it waits for the Run button. Every explorer is an
:class:`Explorer`: sliders, a Run button, a readout and a picture.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from mpdemo import data, plots, shm, workloads
from mpdemo.chunking import chunked_map
from mpdemo.context import cpu_count, get_context, start_workers
from mpdemo.guard import stop_processes
from mpdemo.timing import MemoryWatch, Timeline, describe_speedup, memory_mb

CHUNKSIZES = [2**k for k in range(13)]  # 1 … 4096, a log scale
ROW_COSTS_US = [1, 3, 10, 30, 100, 300, 1000]
ROW_COUNTS = [250, 500, 1000, 2000, 4000, 8000, 16000]


@dataclass(frozen=True)
class ExplorerRun:
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


def explore(processes: int, chunksize: int, cost_us: float, rows: int) -> ExplorerRun:
    """Run ``rows`` CPU-bound rows of ``cost_us`` each serially, then with ``chunked_map``.

    The pool is started and warmed before the clock starts, so the parallel time shows the cost
    of chunking and communication, not of starting processes.
    """
    func = functools.partial(workloads.cpu_bound, loops=workloads.loops_for(cost_us))
    start = time.perf_counter()
    expected = [func(x) for x in range(rows)]
    serial_seconds = time.perf_counter() - start
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context()) as pool:
        start_workers(pool, processes)
        timeline = Timeline()
        start = time.perf_counter()
        results = chunked_map(func, range(rows), processes=processes, chunksize=chunksize,
                              executor=pool, timeline=timeline)
        parallel_seconds = time.perf_counter() - start
    return ExplorerRun(processes, chunksize, cost_us, rows, serial_seconds, parallel_seconds,
                       timeline, results == expected)


def describe(run: ExplorerRun) -> str:
    """The readout for one run, as HTML."""
    verdict = "faster" if run.speedup >= 1 else "slower"
    return (f"serial <b>{run.serial_seconds:.3f} s</b> · {run.processes} processes "
            f"<b>{run.parallel_seconds:.3f} s</b> · speedup <b>{run.speedup:.2f}×</b> ({verdict})<br>"
            f"{run.timeline.summary()} · results equal serial: {run.same_results}")


class Explorer(widgets.VBox):
    """What every explorer shares: its sliders, a Run button, a readout and a picture.

    A subclass makes its sliders, passes them to ``__init__`` and defines :meth:`compute`, which
    runs the experiment with the sliders' values and returns the readout (HTML) and a figure.
    The Run button calls :meth:`run`; tests call it too, or click the button.
    """

    def __init__(self, sliders: list[widgets.Widget]) -> None:
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.readout = widgets.HTML("Choose settings, then press <b>Run</b>.")
        # hidden until the first run, so the browser shows no broken-image icon
        self.picture = widgets.Image(format="png", layout=widgets.Layout(max_width="640px", display="none"))
        self.run_button.on_click(self.run)
        super().__init__([*sliders, self.run_button, self.readout, self.picture])

    def compute(self) -> tuple[str, Figure]:
        """Run the experiment with the current settings: the readout (HTML) and a figure."""
        raise NotImplementedError

    def run(self, _button: widgets.Button | None = None) -> None:
        """The Run button's callback: compute with the current settings and show the answer."""
        self.run_button.disabled = True
        self.readout.value = "running…"
        try:
            readout, figure = self.compute()
            self.readout.value = readout
            self.picture.value = plots.png(figure)
            self.picture.layout.display = ""
        except Exception as exc:  # show the failure where the learner is looking
            self.readout.value = f"<b>run failed</b>: {type(exc).__name__}: {exc}"
        finally:
            self.run_button.disabled = False


def slider(kind: type[widgets.Widget], description: str, **settings) -> widgets.Widget:
    """A slider of ``kind`` (``IntSlider``, ``SelectionSlider``…) in the explorers' common style."""
    return kind(description=description, style={"description_width": "120px"},
                layout=widgets.Layout(width="480px"), **settings)


class ChunkingExplorer(Explorer):
    """Sliders for processes, chunksize, row cost and rows; Run shows times and the timeline."""

    def __init__(self) -> None:
        self.processes = slider(widgets.IntSlider, "processes", value=cpu_count(), min=1, max=cpu_count())
        self.chunksize = slider(widgets.SelectionSlider, "chunksize", options=CHUNKSIZES, value=16)
        self.cost_us = slider(widgets.SelectionSlider, "row cost (µs)", options=ROW_COSTS_US, value=100)
        self.rows = slider(widgets.SelectionSlider, "rows", options=ROW_COUNTS, value=2000)
        super().__init__([self.processes, self.chunksize, self.cost_us, self.rows])

    def compute(self) -> tuple[str, Figure]:
        run = explore(self.processes.value, self.chunksize.value, self.cost_us.value, self.rows.value)
        return describe(run), plots.timeline(run.timeline)


def chunking_explorer() -> ChunkingExplorer:
    """The chunking explorer of notebook 02."""
    return ChunkingExplorer()


# ── The queue explorer (lesson 03) ───────────────────────────────────────────────────────────

QUEUE_BOUNDS = [("1", 1), ("2", 2), ("4", 4), ("8", 8), ("16", 16), ("64", 64), ("unbounded", 0)]
READER_COSTS_US = [1, 3, 10, 30, 100, 300, 1000]
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


def queue_explore(workers: int, bound: int, cost_us: float, reader_us: float, rows: int = 2_000) -> QueueRun:
    """Run a reader, a task queue of ``bound`` chunks (0: unbounded) and ``workers`` worker processes.

    The reader (this process) makes a chunk of ``CHUNK_ROWS`` rows every ``CHUNK_ROWS × reader_us``
    µs, with ``CHUNK_BYTES`` of data, and puts it on the queue; ``put`` waits while the queue is
    full: that wait is backpressure. Workers (:func:`mpdemo.workloads.chunk_worker`) spend
    ``cost_us`` µs per row and report when they start and finish a chunk. A thread collects the
    reports and another samples, every 10 ms, the counts the parent knows (sent, started, done)
    and its memory. (``Queue.qsize()`` would not do: it raises NotImplementedError on macOS.)
    """
    ctx = get_context()
    # Reports go through a SimpleQueue, whose put writes at once: a Queue's feeder thread would
    # wait for the GIL while the worker computes, and the counts would lag behind the truth.
    tasks, results = ctx.Queue(maxsize=bound), ctx.SimpleQueue()
    loops = workloads.loops_for(cost_us) if cost_us else 0
    processes = [ctx.Process(target=workloads.chunk_worker, args=(tasks, results, loops), daemon=True)
                 for _ in range(workers)]
    counts = {"sent": 0, "start": 0, "done": 0}
    samples: list[QueueSample] = []
    stop = threading.Event()
    n_chunks = -(-rows // CHUNK_ROWS)
    collector = threading.Thread(target=_collect, args=(results, counts, n_chunks, processes), daemon=True)
    sampler = threading.Thread(target=_sample, args=(counts, samples, stop), daemon=True)
    try:
        for process in processes:
            process.start()
        for _ in processes:  # start the clock once every worker is ready
            if _report(results, processes, timeout=60) != "ready":
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
            _put(tasks, (chunk_rows, payload), processes)
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
    return QueueRun(workers, bound, cost_us, reader_us, rows, seconds, waited, samples,
                    min(rows, counts["done"] * CHUNK_ROWS))


def _put(tasks, chunk, processes: list) -> None:
    """``tasks.put(chunk)``, waiting as long as the queue is full, but never on dead workers."""
    while True:
        try:
            return tasks.put(chunk, timeout=0.5)
        except queue.Full:
            if any(p.exitcode is not None for p in processes):
                raise RuntimeError("a worker died") from None


def _report(results, processes: list, timeout: float) -> str | None:
    """The next report from a worker; None after ``timeout`` seconds or when a worker has died."""
    deadline = time.monotonic() + timeout
    while results.empty():  # SimpleQueue.get has no timeout: look before taking
        if time.monotonic() > deadline or any(p.exitcode is not None for p in processes):
            return None
        time.sleep(0.001)
    return results.get()


def _collect(results, counts: dict[str, int], n_chunks: int, processes: list) -> None:
    """Count the workers' "start" and "done" reports until every chunk is done (or a worker died)."""
    while counts["done"] < n_chunks:
        report = _report(results, processes, timeout=60)
        if report is None:
            return
        counts[report] += 1


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
            f"{run.reader_waited:.2f} s ({share:.0%} of the run) · parent memory peak "
            f"+{run.memory_growth_mb():.0f} MB")


class QueueExplorer(Explorer):
    """Sliders for workers, queue bound, row cost and reader speed; Run plots queue depth and memory."""

    def __init__(self) -> None:
        self.workers = slider(widgets.IntSlider, "workers", value=cpu_count(), min=1, max=cpu_count())
        self.bound = slider(widgets.SelectionSlider, "queue bound", options=QUEUE_BOUNDS, value=4)
        self.cost_us = slider(widgets.SelectionSlider, "row cost (µs)", options=ROW_COSTS_US, value=300)
        self.reader_us = slider(widgets.SelectionSlider, "reader (µs/row)", options=READER_COSTS_US, value=10)
        super().__init__([self.workers, self.bound, self.cost_us, self.reader_us])

    def compute(self) -> tuple[str, Figure]:
        run = queue_explore(self.workers.value, self.bound.value, self.cost_us.value, self.reader_us.value)
        return describe_queue(run), plots.queue_depth(run)


def queue_explorer() -> QueueExplorer:
    """The queue explorer of notebook 03."""
    return QueueExplorer()


# ── The shared-memory explorer (lesson 04) ───────────────────────────────────────────────────

ARRAY_SIZES_MB = [1, 4, 16, 64, 256]
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


def shm_explore(size_mb: float, processes: int, *, func: Callable[[np.ndarray], Any] = np.sum,
                executor: Executor | None = None) -> HandoffRun:
    """Give each of ``processes`` workers one row block of a ``size_mb`` MB array, two ways.

    **Pickled**: each block is an argument of ``chunked_map``, pickled by the caller, sent through
    a pipe and unpickled, a copy, in the worker. **Shared**: the array is in a
    :class:`~mpdemo.shm.SharedArray` (made before the clock starts, as if the data had been
    loaded there) and ``parallel_apply`` sends only its handle. Each worker applies ``func`` to
    its block (default ``np.sum``: every value is read) and sends back the result; both ways
    must equal ``func`` applied here. The pool is started and warmed first (or pass
    ``executor``), so the times hold the hand-off and the work, not starting processes; memory
    is sampled meanwhile (:class:`~mpdemo.timing.MemoryWatch`).
    """
    if executor is None:
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context()) as pool:
            return shm_explore(size_mb, processes, func=func, executor=pool)
    array = data.make_array(max(1, round(size_mb * 2**20 / (8 * COLUMNS))), COLUMNS)
    blocks = [array[start:stop] for start, stop in shm.row_blocks(len(array), processes)]
    expected = [func(block) for block in blocks]
    start_workers(executor, processes)
    with shm.SharedArray.from_array(array) as shared:
        with MemoryWatch() as pickled_memory:
            start = time.perf_counter()
            pickled = chunked_map(func, blocks, processes=processes, chunksize=1, executor=executor)
            pickled_seconds = time.perf_counter() - start
        with MemoryWatch() as shared_memory:
            start = time.perf_counter()
            from_shared = shm.parallel_apply(func, shared, processes=processes, executor=executor)
            shared_seconds = time.perf_counter() - start
    same = _equal(pickled, expected) and _equal(from_shared, expected)
    return HandoffRun(array.nbytes / 2**20, processes, pickled_seconds, shared_seconds, pickled_memory.extra_mb(),
                      shared_memory.extra_mb(), same)


def _equal(results: list, expected: list) -> bool:
    return len(results) == len(expected) and all(np.array_equal(a, b) for a, b in zip(results, expected, strict=True))


def describe_handoff(run: HandoffRun) -> str:
    """The readout for one shared-memory explorer run, as HTML."""
    workers = f"{run.processes} worker{'s' if run.processes != 1 else ''}"
    return (f"{run.size_mb:,.0f} MB to {workers} · pickled <b>{run.pickled_seconds:.3f} s</b>, "
            f"peak +{run.pickled_extra_mb:,.0f} MB · shared <b>{run.shared_seconds:.4f} s</b>, peak "
            f"+{run.shared_extra_mb:,.0f} MB · shared memory was <b>{describe_speedup(run.ratio, 'pickling')}</b><br>"
            f"results equal serial: {run.same_results}")


class ShmExplorer(Explorer):
    """Sliders for the array's size and the processes; Run hands it over pickled and shared."""

    def __init__(self) -> None:
        self.size_mb = slider(widgets.SelectionSlider, "array size (MB)", options=ARRAY_SIZES_MB, value=16)
        self.processes = slider(widgets.IntSlider, "processes", value=cpu_count(), min=1, max=cpu_count())
        super().__init__([self.size_mb, self.processes])

    def compute(self) -> tuple[str, Figure]:
        run = shm_explore(self.size_mb.value, self.processes.value)
        return describe_handoff(run), plots.handoff(run)


def shm_explorer() -> ShmExplorer:
    """The shared-memory explorer of notebook 04."""
    return ShmExplorer()
