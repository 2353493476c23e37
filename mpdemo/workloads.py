"""Row functions for the lessons, defined here so that worker processes can import them.

A worker started with ``spawn`` is a fresh interpreter. It receives the *name* of the function
to run (``mpdemo.workloads.cpu_bound``), imports that module and looks the name up. A function
typed into a notebook lives in the notebook's ``__main__``, which a spawned worker cannot
import, so worker functions live in a module like this one.

The kinds of work:

* :func:`cpu_bound` — pure-Python arithmetic that holds the GIL the whole time. Its cost is a
  number of loop iterations; :func:`loops_for` converts microseconds to iterations on this
  machine.
* :func:`spin` — the same work, but the row *is* its loop count, so rows can differ in cost.
* :func:`numpy_heavy` — a NumPy kernel on a block of numbers. NumPy releases the GIL inside
  its loops, so threads can run these in parallel.
* :func:`io_bound` — sleeps, standing in for a network or disk wait (also GIL-free).
* :func:`sum_of_squares` — one row of a 2-D array to one number (anti-pattern 1).
* :func:`order_total` — one CSV row (``list[str]``) to a number, with errors a learner can read.
* :func:`fail_on`, :func:`fail_on_block`, :func:`crash_on` and :func:`crash_on_block` — row and
  block functions that fail on purpose, for lessons and tests about errors and dead workers.
* :func:`heavy_transform`, :func:`moments` — block functions for shared memory and memory maps
  (lessons 04, 05): a CPU-heavy kernel, and the partial results of a reduction;
  :func:`add_into_total` races on a shared total, to show when a lock is needed;
  :func:`score_rows` applies :func:`row_score` to every row of a block (CPU-bound, in Python).
* :func:`row_score` — a slow pure-Python row function with a hot spot, for profiling (lesson 06);
  :func:`row_score_fast` fixes the hot spot and :func:`row_scores` does every row at once.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import signal
import time

import numpy as np


def cpu_bound(x: int, loops: int = 1_000) -> int:
    """Pure-Python busy work on one row: ``loops`` iterations of integer arithmetic.

    The result depends on ``x``, so a parallel run can be checked against a serial one.
    """
    total = x
    for i in range(loops):
        total = (total * 31 + i) % 1_000_003
    return total


def spin(loops: int) -> int:
    """A row that *is* its cost: :func:`cpu_bound` with ``loops`` iterations.

    A list of different loop counts makes rows of uneven cost, for the load-balancing lessons.
    """
    return cpu_bound(loops, loops)


@functools.cache
def loops_for(cost_us: float) -> int:
    """How many :func:`cpu_bound` loops take about ``cost_us`` microseconds in this process.

    Measured once per process (the fastest of five 20 ms runs) and remembered. Measure in the
    parent and pass the loop count to workers, e.g. with ``functools.partial``, so every worker
    does the same amount of work.
    """
    probe = 20_000
    best = min(_time_loops(probe) for _ in range(5))
    return max(1, round(cost_us * 1e-6 * probe / best))


def _time_loops(loops: int) -> float:
    start = time.perf_counter()
    cpu_bound(0, loops)
    return time.perf_counter() - start


def numpy_heavy(block: np.ndarray) -> float:
    """A NumPy kernel over a block of numbers (:func:`heavy_transform`, summed); the GIL is released
    inside each ufunc loop."""
    return float(heavy_transform(block).sum())


def io_bound(x: int, seconds: float = 0.01) -> int:
    """Wait ``seconds`` as a network or disk request would, then return ``x``."""
    time.sleep(seconds)
    return x


def fail_on_block(block: np.ndarray, bad: float = 500.0) -> float:
    """The sum of a block of numbers, but raise ValueError if it holds ``bad``: one bad block."""
    if (block == bad).any():
        raise ValueError(f"cannot process {bad}")
    return float(block.sum())


def sum_of_squares(row: np.ndarray) -> float:
    """The sum of the squares of one row: tiny work per call."""
    return float(np.sum(row * row))


ORDER_FIELDS = ("order_id", "customer", "city", "quantity", "unit_price", "note")


def order_total(row: list[str]) -> float:
    """quantity × unit_price of one orders CSV row, as ``csv.reader`` yields it.

    Raises ValueError saying which field is wrong, so the caller can add the line number.
    """
    if len(row) != len(ORDER_FIELDS):
        raise ValueError(f"expected {len(ORDER_FIELDS)} fields, got {len(row)}")
    quantity, unit_price = row[3], row[4]
    try:
        return int(quantity) * float(unit_price)
    except ValueError:
        raise ValueError(f"quantity {quantity!r} or unit_price {unit_price!r} is not a number") from None


def csv_loop(path: str | os.PathLike, func=order_total) -> list:
    """The plain serial loop every parallel CSV run is measured against: ``func(row)`` for each
    row ``csv.reader`` gives, header skipped."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        next(reader, None)
        return [func(row) for row in reader]


def csv_loop_total(path: str | os.PathLike, func=order_total) -> float:
    """The sum of :func:`csv_loop`'s results: the same loop, with one number to send back."""
    return sum(csv_loop(path, func))


def fail_on(x: int, bad: int = 13) -> int:
    """Return ``x``, but raise ValueError when ``x == bad``: a row function with one bad row."""
    if x == bad:
        raise ValueError(f"cannot process {x}")
    return x


def crash_on(x: int, bad: int = 13) -> int:
    """Return ``x``, but kill this worker process with SIGKILL at ``x == bad``.

    This is what the out-of-memory killer does: no exception, no cleanup, the process is gone.
    """
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
    return x


def fill_block(name: str) -> int:
    """Write into every byte of the shared-memory block ``name`` (made with plain ``SharedMemory``).

    A block is a sparse file in ``/dev/shm``: writing past what ``/dev/shm`` has free kills the
    writer with SIGBUS. This is how a too-small ``/dev/shm`` looks from a worker.
    """
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(name)
    try:
        np.frombuffer(block.buf, np.uint8)[:] = 1
        return block.size
    finally:
        block.close()


def crash_on_block(block: np.ndarray, bad: float = 500.0) -> float:
    """:func:`crash_on` for blocks: the sum of a block, but SIGKILL this worker if it holds ``bad``."""
    if (block == bad).any():
        crash_on(bad, bad)
    return float(block.sum())


# ── Lesson 03: queues ────────────────────────────────────────────────────────────────────────


def busy_order_total(row: list[str], loops: int = 1_000) -> float:
    """:func:`order_total` after ``loops`` iterations of :func:`cpu_bound`: a CSV row function of a
    chosen cost (:func:`loops_for` converts microseconds), for measuring CPU-bound pipelines."""
    cpu_bound(0, loops)
    return order_total(row)


def slow_on(row: list[str], order_id: str = "1", seconds: float = 0.5) -> str:
    """The order id of a CSV row; the row with ``order_id`` takes ``seconds`` first (one slow row)."""
    if row[0] == order_id:
        time.sleep(seconds)
    return row[0]


def chunk_worker(tasks, report, loops: int) -> None:
    """A worker process's whole life in the queue explorer: chunks in, progress reports out.

    It says ``"ready"``, then takes ``(rows, payload)`` chunks from ``tasks`` until the ``None``
    sentinel; for each it reports ``"start"``, spends ``loops`` :func:`cpu_bound` iterations on
    each of its ``rows`` (the payload stands for the rows' data and is not read), and reports
    ``"done"``. ``report`` is where it says so: a queue's ``put``, or a pipe's ``send``.
    """
    report("ready")
    for rows, _payload in iter(tasks.get, None):
        report("start")
        for _ in range(rows):
            cpu_bound(0, loops)
        report("done")


# --- Lessons 06 (profiling) and 07 (choosing): a row function with a hot spot, then vectorised ---------------

#: How many neighbouring values :func:`moving_average` averages.
WINDOW = 16
#: A smoothed value above this counts as a peak in :func:`peak_total`.
PEAK = 0.25


def row_score(row: np.ndarray) -> float:
    """Score one row of measurements: standardise it, smooth it, add up the peaks.

    Written the way a first version often is, in plain Python with three helpers. Notebook 06
    profiles it to find which helper, and then which line, takes the time.
    """
    values = standardise(row)
    smooth = moving_average(values, WINDOW)
    return peak_total(smooth)


def standardise(row: np.ndarray) -> list[float]:
    """The row as z-scores: each value minus the mean, divided by the standard deviation."""
    values = [float(v) for v in row]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
    return [(v - mean) / spread for v in values]


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of every run of ``window`` neighbouring values: ``window`` additions per value."""
    smooth = []
    for i in range(len(values) - window + 1):
        total = 0.0
        for j in range(window):
            total += values[i + j]
        smooth.append(total / window)
    return smooth


def peak_total(smooth: list[float]) -> float:
    """The sum of the smoothed values above :data:`PEAK`."""
    return sum(v for v in smooth if v > PEAK)


def row_score_fast(row: np.ndarray) -> float:
    """:func:`row_score` with its hot spot, the moving average, done by NumPy (the rest unchanged).

    ``np.convolve`` with ``window`` weights of ``1 / window`` is a moving average computed in C.
    """
    values = standardise(row)
    smooth = np.convolve(values, np.full(WINDOW, 1 / WINDOW), mode="valid")
    return peak_total(smooth.tolist())


def score_rows(block: np.ndarray) -> np.ndarray:
    """:func:`row_score` of every row of a block, one row at a time in Python: a CPU-heavy block
    function (about 0.1 ms a row of 100 numbers) whose memory traffic is negligible."""
    return np.array([row_score(row) for row in block])


def row_scores(array: np.ndarray) -> np.ndarray:
    """:func:`row_score` of every row of a 2-D array at once, as whole-array NumPy operations.

    No Python loop over rows or values: each line below runs in C over the whole array.
    """
    spread = array.std(axis=1, keepdims=True)
    z = (array - array.mean(axis=1, keepdims=True)) / np.where(spread == 0, 1.0, spread)  # as standardise does
    smooth = np.lib.stride_tricks.sliding_window_view(z, WINDOW, axis=1).mean(axis=2)
    return np.where(smooth > PEAK, smooth, 0.0).sum(axis=1)


# --- Lessons 04 (shared memory) and 05 (memmap): block functions ------------------------------------------------


def heavy_transform(block: np.ndarray) -> np.ndarray:
    """A CPU-heavy NumPy kernel on every value of a block, giving a block of the same shape.

    Transcendental functions cost tens of nanoseconds a value, several times what reading the
    value costs; yet the temporary arrays and the first touch of each page are a real share of
    the time on large blocks, so two workers gain less than twice (``benchmarks/bench_shm.py``,
    figure 3b). :func:`numpy_heavy` sums it.
    """
    return np.sqrt(np.abs(np.sin(block) * np.cos(block)) + 1.0)


def moments(block: np.ndarray) -> np.ndarray:
    """``[count, sum, sum of squares]`` of a block's values: partial results of a reduction.

    Partials of disjoint blocks add up to those of the whole, and :func:`mean_and_std` turns the
    total into the mean and the standard deviation, so no worker needs to see any other's data.
    """
    return np.array([block.size, block.sum(), np.square(block).sum()])


def mean_and_std(partials) -> tuple[float, float]:
    """The mean and standard deviation of all the values behind a list of :func:`moments`."""
    count, total, squares = np.sum(partials, axis=0)
    mean = total / count
    return float(mean), float(np.sqrt(max(0.0, squares / count - mean * mean)))


def add_into_total(total, values, rows: tuple[int, int], lock=None, ready=None) -> None:
    """Add ``values.array[start:stop]`` one by one into ``total.array[0]``, in a worker process.

    ``total`` and ``values`` are :class:`mpdemo.shm.SharedArray` s. ``t[0] += v`` reads the total,
    adds, and writes it back: two workers that read the same old total both write back their own
    sum, and one addition is lost. Holding ``lock`` around it makes it safe, and serial. ``ready``
    (a ``Barrier``) makes the workers start together, as in a real run.
    """
    from mpdemo.context import worker_setup  # the notebook starts these workers itself

    worker_setup()  # ignore Ctrl-C, leave with the parent
    if ready is not None:
        ready.wait(60)
    start, stop = rows
    t, v = total.array, values.array
    for i in range(start, stop):
        if lock is None:
            t[0] += v[i]
        else:
            with lock:
                t[0] += v[i]


def what_arrived(array: np.ndarray) -> str:
    """Runs in a worker: how an array argument arrived, a copy or a memory map of a file, in words."""
    if isinstance(array, np.memmap):
        return f"np.memmap of {os.path.basename(array.filename)} ({array.nbytes / 2**20:,.0f} MB, no copy)"
    return f"np.ndarray, a copy unpickled here ({array.nbytes / 2**20:,.0f} MB)"


# --- Lesson 08 (DataFrames and columnar files): row and frame functions -----------------------------------------
#
# The same order value three ways: a Python function of one row (`order_value`, for df.apply and
# polars' map_elements), column expressions over a whole frame (`order_values`), and SQL
# (`ORDER_VALUE_SQL`, for DuckDB). All three give the same numbers, to the last bit.

#: The discount on orders whose note mentions a gift.
GIFT_DISCOUNT = 0.9


def order_value(row) -> float:
    """quantity × unit_price of one order, less 10% when its note mentions a gift.

    ``row`` is anything with the order's fields by name: a pandas row (``df.apply(order_value,
    axis=1)``) or a dict (polars' ``map_elements`` on a struct). A quantity below 1 is an error.
    """
    quantity = row["quantity"]
    if quantity < 1:
        raise ValueError(f"quantity {quantity} is not a positive number of items")
    return quantity * row["unit_price"] * (GIFT_DISCOUNT if "gift" in row["note"] else 1.0)


def busy_order_value(row, loops: int = 1_000) -> float:
    """:func:`order_value` after ``loops`` iterations of :func:`cpu_bound`: a row function whose
    Python work per row is of a chosen cost (:func:`loops_for`), standing in for work that no column
    expression can do (a parser, a library call per row)."""
    cpu_bound(0, loops)
    return order_value(row)


def apply_rows(frame, func=order_value):
    """``frame.apply(func, axis=1)``: ``func`` on every row of a DataFrame, in Python, one row at a time.

    ``result_type="reduce"`` makes an empty frame give an empty Series too, as a longer one does.
    Use it with ``functools.partial(apply_rows, func=...)`` for ``frame_apply``, ``process_parquet``
    and dask's ``map_partitions``.
    """
    return frame.apply(func, axis=1, result_type="reduce")


def order_values(frame):
    """:func:`order_value` of every row at once, as column expressions: no Python per row."""
    if (frame["quantity"] < 1).any():
        raise ValueError("a quantity is not a positive number of items")
    gift = frame["note"].str.contains("gift", regex=False)
    return frame["quantity"] * frame["unit_price"] * np.where(gift, GIFT_DISCOUNT, 1.0)


#: :func:`order_value` in SQL, for DuckDB: ``SELECT {ORDER_VALUE_SQL} FROM read_parquet(...)``.
ORDER_VALUE_SQL = f"quantity * unit_price * CASE WHEN contains(note, 'gift') THEN {GIFT_DISCOUNT} ELSE 1.0 END"


def city_totals(batch):
    """The order value of a batch of orders, summed by city: a small result from any number of rows.

    Partial totals of disjoint batches add up: ``pd.concat(totals).groupby(level=0).sum()``.
    """
    return order_values(batch).groupby(batch["city"]).sum()


def matrix_products(seed: int, size: int = 400, repeats: int = 8) -> float:
    """``repeats`` products of two random ``size × size`` matrices (NumPy's ``@``, which is BLAS).

    BLAS runs each product on a thread pool of its own, one thread per core by default. Returns
    the trace of the last product, so that runs can be compared.
    """
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    for _ in range(repeats):
        product = a @ b
    return float(np.trace(product))


def with_thread_limit(item, func, threads: int = 1):
    """``func(item)`` with this process's native thread pools (BLAS, OpenMP) limited to ``threads``.

    threadpoolctl finds the thread pools of the libraries loaded in this process and sets their
    size for the ``with`` block: inside a worker, it limits that worker alone.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return func(item)


def native_threads(_item=None) -> dict[str, int]:
    """How many threads this process's native thread pools would use: BLAS (NumPy's ``@``) and
    Arrow (pyarrow's reading and compute). Run it in workers to see what each of them has."""
    import pyarrow
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {"blas": max(blas, default=1), "arrow": pyarrow.cpu_count()}
