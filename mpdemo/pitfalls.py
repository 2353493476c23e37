"""Small reproductions of the mistakes the course warns about, as programs to run in a sandbox.

Some of these mistakes hang forever or crash, so they never run in the notebook's own process:
each is the text of a program that :mod:`mpdemo.sandbox` runs as a separate Python process, with
a time limit, and reports on. A mistake's repairs are programs too, one per stage, so that a
notebook can show each stage and what changed (:func:`diff`).

* anti-pattern 1, one row per task: :func:`one_row_per_task` (lesson 02; safe to run here);
* a notebook function under spawn, and the ``__main__`` guard (lesson 00);
* anti-pattern 2, the CSV pipeline that hangs, loses rows and hides errors, and its repairs
  (lesson 03);
* anti-pattern 3, shared memory with five mistakes, and its repairs; a block removed by another
  program's resource tracker; unregistering in a worker (lesson 04).
"""

from __future__ import annotations

import difflib

import numpy as np

from mpdemo import workloads
from mpdemo.context import get_context

#: A function typed into a notebook lives in ``__main__``; spawn workers cannot import it.
#: Fill in ``{method}`` (a start method) and ``{pool_code}`` (:data:`WITH_POOL` or
#: :data:`WITH_EXECUTOR`) with ``str.format``.
NOTEBOOK_FUNCTION = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

def square(x):                      # defined in __main__, like a function in a notebook cell
    return x * x

ctx = multiprocessing.get_context("{method}")
{pool_code}
'''

WITH_POOL = '''\
with ctx.Pool(2) as pool:
    print(pool.map(square, range(8)))   # a worker dies unpickling `square`; Pool waits forever
'''

WITH_EXECUTOR = '''\
with ProcessPoolExecutor(2, mp_context=ctx) as pool:
    print(list(pool.map(square, range(8))))   # the executor notices the dead worker
'''

#: A script that starts workers at import time, with no ``if __name__ == "__main__":`` guard.
#: Each spawn worker imports the script again, and so tries to start workers of its own.
UNGUARDED_SCRIPT = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from mpdemo.workloads import cpu_bound

ctx = multiprocessing.get_context("spawn")
with ProcessPoolExecutor(2, mp_context=ctx) as pool:
    print(list(pool.map(cpu_bound, range(4))))
'''

#: The same script with the guard: workers import it without running the pool code.
GUARDED_SCRIPT = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from mpdemo.workloads import cpu_bound

def main():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        print(list(pool.map(cpu_bound, range(4))))

if __name__ == "__main__":
    main()
'''


def one_row_per_task(array: np.ndarray, processes: int, *, timeout: float = 120) -> list[float]:
    """Anti-pattern 1: a pool task for every row of an array, each doing a few microseconds of work.

    Every row is pickled, sent, unpickled, computed, and its result sent back on its own, so the
    overhead is paid once per row. (``map_async(...).get(timeout)``: a Pool call that cannot hang.)
    """
    with get_context().Pool(processes) as pool:
        return pool.map_async(workloads.sum_of_squares, array, chunksize=1).get(timeout)


# ── Anti-pattern 2: a CSV pipeline that hangs, loses rows and hides errors (lesson 03) ─────────

#: The broken pipeline: ``python script.py ROWS numbers|strings`` reads the orders CSV of ROWS rows
#: (``mpdemo.data.orders_csv``) and totals each row. Run it with :func:`mpdemo.sandbox.run_script`.
BROKEN_PIPELINE = '''\
import csv
import sys

import mpdemo
from mpdemo import data
from mpdemo.timing import memory_mb


def total(row):                                  # quantity × unit price
    return int(row[3]) * float(row[4])


def total_of_strings(row):                       # the same, forgetting that csv gives strings
    return row[3] * row[4]


def work(tasks, results, row_function):          # each worker process
    for chunk in iter(tasks.get, None):          # take chunks until the sentinel
        totals = []
        for row in chunk:
            try:
                totals.append(row_function(row))
            except Exception:
                pass                             # skip a bad row (and tell nobody)
        results.put(totals)                      # one result per chunk


def main(rows, row_function, workers=2, chunk_rows=1_000):
    ctx = mpdemo.get_context()
    tasks, results = ctx.Queue(), ctx.Queue()    # no bound
    with open(data.orders_csv(rows), newline="") as f:
        reader = csv.reader(f)
        next(reader)                             # the header
        chunk = []
        for row in reader:                       # the whole file goes into the queue
            chunk.append(row)
            if len(chunk) == chunk_rows:
                tasks.put(chunk)
                chunk = []
        if chunk:
            tasks.put(chunk)
    print(f"memory with every chunk queued: {memory_mb():.1f} MB", flush=True)
    processes = [ctx.Process(target=work, args=(tasks, results, row_function)) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        tasks.put(None)                          # one sentinel per worker
    totals = []
    for _ in processes:
        totals += results.get()                  # one result per worker...
    print("joining the workers", flush=True)
    for process in processes:
        process.join()                           # ...then wait for the workers to end
    print(f"{len(totals):,} results from {rows:,} rows")


if __name__ == "__main__":
    main(int(sys.argv[1]), {"numbers": total, "strings": total_of_strings}[sys.argv[2]])
'''

def edit(script: str, *changes: tuple[str, str]) -> str:
    """``script`` with each ``(old, new)`` change made; each ``old`` must occur exactly once."""
    for old, new in changes:
        if script.count(old) != 1:
            raise ValueError(f"expected exactly one {old!r} in the script")
        script = script.replace(old, new)
    return script


#: Repair 1: read every chunk's result before joining: the workers can end, and no result is lost.
DRAINED_PIPELINE = edit(BROKEN_PIPELINE, ("""\
        chunk = []
        for row in reader:                       # the whole file goes into the queue
            chunk.append(row)
            if len(chunk) == chunk_rows:
                tasks.put(chunk)
                chunk = []
        if chunk:
            tasks.put(chunk)
""", """\
        chunk, chunks = [], 0
        for row in reader:                       # the whole file goes into the queue
            chunk.append(row)
            if len(chunk) == chunk_rows:
                tasks.put(chunk)
                chunk, chunks = [], chunks + 1
        if chunk:
            tasks.put(chunk)
            chunks += 1
"""), ("""\
    for _ in processes:
        totals += results.get()                  # one result per worker...
""", """\
    for _ in range(chunks):
        totals += results.get(timeout=60)        # every chunk's result, before joining
"""))

#: Repair 2: a failing row travels back as an error naming the row, and stops the run.
CHECKED_PIPELINE = '''\
import csv
import sys

import mpdemo
from mpdemo import data
from mpdemo.timing import memory_mb


def total(row):                                  # quantity × unit price
    return int(row[3]) * float(row[4])


def total_of_strings(row):                       # the same, forgetting that csv gives strings
    return row[3] * row[4]


def work(tasks, results, row_function):          # each worker process
    for first, chunk in iter(tasks.get, None):   # take numbered chunks until the sentinel
        totals, error = [], None
        for number, row in enumerate(chunk, first):
            try:
                totals.append(row_function(row))
            except Exception as exc:             # say which row failed, and why
                error = f"row {number:,}: {type(exc).__name__}: {exc}"
                break
        results.put((first, totals, error))      # one result per chunk, with its number


def main(rows, row_function, workers=2, chunk_rows=1_000):
    ctx = mpdemo.get_context()
    tasks, results = ctx.Queue(), ctx.Queue()    # no bound
    with open(data.orders_csv(rows), newline="") as f:
        reader = csv.reader(f)
        next(reader)                             # the header
        chunk, chunks = [], 0
        for row in reader:                       # the whole file goes into the queue
            chunk.append(row)
            if len(chunk) == chunk_rows:
                tasks.put((chunks * chunk_rows + 1, chunk))
                chunk, chunks = [], chunks + 1
        if chunk:
            tasks.put((chunks * chunk_rows + 1, chunk))
            chunks += 1
    print(f"memory with every chunk queued: {memory_mb():.1f} MB", flush=True)
    processes = [ctx.Process(target=work, args=(tasks, results, row_function)) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        tasks.put(None)                          # one sentinel per worker
    totals = []
    for _ in range(chunks):
        first, chunk_totals, error = results.get(timeout=60)
        if error:
            for process in processes:
                process.terminate()
            tasks.cancel_join_thread()           # at exit, do not wait to send chunks nobody reads
            raise RuntimeError(error)
        totals += chunk_totals                   # (in the order the chunks finished)
    print("joining the workers", flush=True)
    for process in processes:
        process.join()                           # ...then wait for the workers to end
    print(f"{len(totals):,} results from {rows:,} rows")


if __name__ == "__main__":
    main(int(sys.argv[1]), {"numbers": total, "strings": total_of_strings}[sys.argv[2]])
'''

#: Repair 3: a bounded queue, read as the workers go (backpressure), results put back in order.
BOUNDED_PIPELINE = '''\
import csv
import itertools
import sys

import mpdemo
from mpdemo import data
from mpdemo.timing import memory_mb


def total(row):                                  # quantity × unit price
    return int(row[3]) * float(row[4])


def total_of_strings(row):                       # the same, forgetting that csv gives strings
    return row[3] * row[4]


def work(tasks, results, row_function):          # each worker process
    for first, chunk in iter(tasks.get, None):   # take numbered chunks until the sentinel
        totals, error = [], None
        for number, row in enumerate(chunk, first):
            try:
                totals.append(row_function(row))
            except Exception as exc:             # say which row failed, and why
                error = f"row {number:,}: {type(exc).__name__}: {exc}"
                break
        results.put((first, totals, error))      # one result per chunk, with its number


def main(rows, row_function, workers=2, chunk_rows=1_000):
    ctx = mpdemo.get_context()
    tasks, results = ctx.Queue(maxsize=2 * workers), ctx.Queue()   # bounded
    processes = [ctx.Process(target=work, args=(tasks, results, row_function)) for _ in range(workers)]
    for process in processes:
        process.start()                          # first: they take chunks while we read
    finished = {}                                # each chunk's totals, by its first row's number

    def collect_one():
        first, chunk_totals, error = results.get(timeout=60)
        if error:
            for process in processes:
                process.terminate()
            tasks.cancel_join_thread()           # at exit, do not wait to send chunks nobody reads
            raise RuntimeError(error)
        finished[first] = chunk_totals

    with open(data.orders_csv(rows), newline="") as f:
        reader = csv.reader(f)
        next(reader)                             # the header
        in_flight = 0
        for first in itertools.count(1, chunk_rows):
            chunk = list(itertools.islice(reader, chunk_rows))   # read one chunk at a time
            if not chunk:
                break
            if in_flight == 2 * workers:         # backpressure: read on only as results come back
                collect_one()
                in_flight -= 1
            tasks.put((first, chunk))
            in_flight += 1
        print(f"memory with the last chunks in flight: {memory_mb():.1f} MB", flush=True)
        for _ in range(in_flight):
            collect_one()
    for _ in processes:
        tasks.put(None)                          # one sentinel per worker
    for process in processes:
        process.join()                           # nothing is left to send: they end at once
    totals = [total for first in sorted(finished) for total in finished[first]]   # back in order
    print(f"{len(totals):,} results from {rows:,} rows")


if __name__ == "__main__":
    main(int(sys.argv[1]), {"numbers": total, "strings": total_of_strings}[sys.argv[2]])
'''


def diff(before: str, after: str) -> str:
    """The lines that changed from one script to the next, as a unified diff."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        "before", "after", n=1))


# ── Anti-pattern 3: shared memory with five mistakes (lesson 04) ─────────────────────────────

#: The broken program: ``python script.py ROWS WORKERS METHOD`` squares ROWS numbers in WORKERS
#: processes started with METHOD, through shared memory, and checks them. Run it with
#: :func:`mpdemo.sandbox.run_script`; each repair below fixes one mistake. (It must not import mpdemo, which
#: imports ``multiprocessing.shared_memory`` and would hide the first mistake.)
BROKEN_SHARED_MEMORY = '''\
import multiprocessing
import sys
import time

import numpy as np


def slow_square(x):                              # a few microseconds of work per number
    for _ in range(80):
        x = x * 1.0
    return x * x


def square_rows(numbers_name, squares_name, rows, start, stop, lock):      # each worker
    numbers_block = multiprocessing.shared_memory.SharedMemory(name=numbers_name)
    numbers = np.ndarray((rows,), dtype=np.float64, buffer=numbers_block.buf)
    squares_block = multiprocessing.shared_memory.SharedMemory(   # every worker creates the block
        name=squares_name, create=True, size=rows * 8)
    squares = np.ndarray((rows,), dtype=np.float64, buffer=squares_block.buf)
    with lock:                                   # one worker at a time, to be safe
        for i in range(start, stop):
            squares[i] = slow_square(numbers[i])
    del numbers, squares
    numbers_block.close()
    squares_block.close()


def main(rows, workers, method):
    ctx = multiprocessing.get_context(method)
    numbers_block = multiprocessing.shared_memory.SharedMemory(create=True, size=rows * 8)
    numbers = np.ndarray((rows,), dtype=np.float64, buffer=numbers_block.buf)
    numbers[:] = np.arange(rows)
    start = time.perf_counter()
    expected = np.array([slow_square(x) for x in numbers])
    serial = time.perf_counter() - start

    squares_name = f"mpdemo-squares-{numbers_block.name}"
    lock = ctx.Lock()
    step = rows // workers                       # rows per worker
    processes = [ctx.Process(target=square_rows, args=(
        numbers_block.name, squares_name, rows, k * step, (k + 1) * step, lock)) for k in range(workers)]
    start = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    print(f"{workers} workers: {time.perf_counter() - start:.2f} s (one process: {serial:.2f} s); "
          f"exit codes {[p.exitcode for p in processes]}", flush=True)

    squares_block = multiprocessing.shared_memory.SharedMemory(name=squares_name)
    squares = np.ndarray((rows,), dtype=np.float64, buffer=squares_block.buf)
    squares_block.close()                        # done with the block
    squares_block.unlink()
    right = np.flatnonzero(squares == expected)
    print(f"{len(right):,} of {rows:,} squares right", flush=True)
    numbers_block.close()
    numbers_block.unlink()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
'''

#: Repair 1: ``shared_memory`` is a submodule, which ``import multiprocessing`` does not load.
IMPORTED_SHARED_MEMORY = edit(
    BROKEN_SHARED_MEMORY,
    ("import multiprocessing\nimport sys", "import multiprocessing\nimport multiprocessing.shared_memory\nimport sys"))

#: Repair 2: close the block only after the last view of it is gone (``del`` the view first).
VIEWS_FIRST_SHARED_MEMORY = edit(IMPORTED_SHARED_MEMORY, ("""\
    squares_block.close()                        # done with the block
    squares_block.unlink()
    right = np.flatnonzero(squares == expected)
    print(f"{len(right):,} of {rows:,} squares right", flush=True)
""", """\
    right = np.flatnonzero(squares == expected)
    print(f"{len(right):,} of {rows:,} squares right", flush=True)
    del squares                                  # the last view of the block goes first,
    squares_block.close()                        # then the block
    squares_block.unlink()
"""), ("""\
    numbers_block.close()
    numbers_block.unlink()


if __name__""", """\
    del numbers
    numbers_block.close()
    numbers_block.unlink()


if __name__"""))

#: Repair 3: the parent creates the output block once; the workers attach to it.
ONE_OWNER_SHARED_MEMORY = edit(VIEWS_FIRST_SHARED_MEMORY, ("""\
    squares_block = multiprocessing.shared_memory.SharedMemory(   # every worker creates the block
        name=squares_name, create=True, size=rows * 8)
""", """\
    squares_block = multiprocessing.shared_memory.SharedMemory(name=squares_name)   # attach to it
"""), ("""\
    squares_name = f"mpdemo-squares-{numbers_block.name}"
""", """\
    squares_name = f"mpdemo-squares-{numbers_block.name}"
    squares_block = multiprocessing.shared_memory.SharedMemory(name=squares_name, create=True, size=rows * 8)
"""), ("""\
    squares_block = multiprocessing.shared_memory.SharedMemory(name=squares_name)
    squares = np.ndarray((rows,), dtype=np.float64, buffer=squares_block.buf)
    right""", """\
    squares = np.ndarray((rows,), dtype=np.float64, buffer=squares_block.buf)
    right"""))

#: Repair 4: bounds that cover every row; ``rows // workers`` each left the remainder out.
ALL_ROWS_SHARED_MEMORY = edit(ONE_OWNER_SHARED_MEMORY, ("""\
    step = rows // workers                       # rows per worker
    processes = [ctx.Process(target=square_rows, args=(
        numbers_block.name, squares_name, rows, k * step, (k + 1) * step, lock)) for k in range(workers)]
""", """\
    bounds = [rows * k // workers for k in range(workers + 1)]      # 0, ..., rows: nothing left over
    processes = [ctx.Process(target=square_rows, args=(
        numbers_block.name, squares_name, rows, bounds[k], bounds[k + 1], lock)) for k in range(workers)]
"""))

#: Repair 5: no lock: every worker writes only its own rows, so they cannot get in each other's way.
REPAIRED_SHARED_MEMORY = edit(ALL_ROWS_SHARED_MEMORY, ("""\
    with lock:                                   # one worker at a time, to be safe
        for i in range(start, stop):
            squares[i] = slow_square(numbers[i])
""", """\
    for i in range(start, stop):                 # only this worker's rows: no lock needed
        squares[i] = slow_square(numbers[i])
"""), ("    lock = ctx.Lock()\n", ""), (", lock)) for k in range(workers)]", ")) for k in range(workers)]"),
    ("def square_rows(numbers_name, squares_name, rows, start, stop, lock):",
     "def square_rows(numbers_name, squares_name, rows, start, stop):"))

#: The five stages of lesson 04, in order: each is the one before with one mistake repaired.
SHARED_MEMORY_STAGES = {
    "broken": BROKEN_SHARED_MEMORY,
    "1 import the submodule": IMPORTED_SHARED_MEMORY,
    "2 views before the block": VIEWS_FIRST_SHARED_MEMORY,
    "3 one owner creates it": ONE_OWNER_SHARED_MEMORY,
    "4 every row": ALL_ROWS_SHARED_MEMORY,
    "5 no lock": REPAIRED_SHARED_MEMORY,
}

#: Another program attaching to a block, as the Python documentation shows, and exiting:
#: ``python script.py plain|handle NAME`` (the block holds 10 float64). Started by hand (or from a
#: second notebook), it has a resource tracker of its own. ``plain`` attaches with
#: ``SharedMemory(name)``, which registers the block with that tracker, and the tracker removes
#: the block when the program exits (CPython gh-82300); ``handle`` attaches with
#: ``SharedArray.attach``, which does not register it.
ATTACH_ELSEWHERE = '''\
import sys
from multiprocessing import shared_memory

from mpdemo.shm import SharedArray

how, name = sys.argv[1], sys.argv[2]
if how == "plain":
    block = shared_memory.SharedMemory(name=name)
    print(f"attached to {name} with SharedMemory: {block.size} bytes")
    block.close()
else:
    shared = SharedArray.attach(name, (10,), "float64")
    print(f"attached to {name} with SharedArray.attach: {shared.array.sum()}")
    shared.close()
'''

#: The usual "fix" for the resource tracker's warnings, and what it breaks: ``python script.py
#: METHOD``. A worker attaches to its parent's block and unregisters it, as many projects do to
#: silence the tracker. Workers share their parent's tracker, which holds each name once, so this
#: removes the parent's own entry, and the parent's ``unlink()`` then makes the tracker print a
#: ``KeyError`` traceback.
UNREGISTER_IN_WORKER = '''\
import sys
from multiprocessing import get_context, resource_tracker, shared_memory


def worker(name):
    block = shared_memory.SharedMemory(name=name)                # registers the name (again)
    resource_tracker.unregister(block._name, "shared_memory")   # "so that the tracker leaves it alone"
    block.close()


if __name__ == "__main__":
    ctx = get_context(sys.argv[1])
    block = shared_memory.SharedMemory(create=True, size=16)
    process = ctx.Process(target=worker, args=(block.name,))
    process.start()
    process.join()
    block.close()
    block.unlink()                                               # unregisters it: the tracker has no such name
    print(f"created, attached in a worker, unlinked: {block.name}")
'''
