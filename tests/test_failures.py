"""Failures of every parallel API: each is named clearly, within moments, and leaves nothing behind.

**Ctrl-C** during a parallel call: the caller hears it within 3 s, every worker is gone within 5 s,
and the next call works. Whatever the chunks are doing, and whoever owns the pool.

Each case runs a small program in a child Python process (started in a session of its own, so
it and its workers form one process group), waits until its workers are busy with chunks of
10 s, then sends SIGINT to the child alone (``kill``) or to its whole group (what a terminal's
Ctrl-C and JupyterLab's interrupt do). The program reports when the KeyboardInterrupt reached
it, then makes one more call.

:data:`CALLS` lists each API's calls; a lesson that adds a parallel API adds a line there.

**Everything else** (:data:`FAILURES`): a row function that raises, a worker killed with SIGKILL,
a function, an item or a result that cannot be pickled: the same kind of error from every API,
naming the item, line or rows, and no process or /dev/shm entry left (the root conftest).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import functools

import numpy as np
import psutil
import pytest

import mpdemo
from mpdemo import memmap, pitfalls, workloads

PROGRAM = """
import functools, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np
import mpdemo
from mpdemo import workloads

slow = functools.partial(workloads.io_bound, seconds=10)  # takes 10 s for any item, row or block
pool = ProcessPoolExecutor(2, mp_context=mpdemo.get_context()) if {passed} else None
{setup}
print("running", flush=True)
try:
    {call}
except KeyboardInterrupt:
    print("interrupted at", time.time(), flush=True)
if pool is not None:
    try:
        pool.submit(abs, 1)
    except RuntimeError as error:
        print("the passed pool is stopped:", error, flush=True)
print("next call:", {again}, flush=True)
"""


@dataclass(frozen=True)
class Call:
    """One parallel API in :data:`PROGRAM`: a slow call, and a quick one that must work afterwards.

    ``setup`` runs first (it may write a file or make an array); ``call`` may use ``slow`` and,
    when ``takes_pool``, ``executor=pool`` (a pool passed in, or None for the API's own);
    ``again`` is an expression whose value must print as ``expected``.
    """

    call: str
    again: str
    expected: str
    setup: str = ""
    takes_pool: bool = True


#: Every parallel API of mpdemo; a lesson that adds one adds a line here.
CALLS = {
    "chunked_map": Call("mpdemo.chunked_map(slow, range(8), processes=2, chunksize=1, executor=pool)",
                        again="mpdemo.chunked_map(abs, [-1, -2], processes=2)", expected="[1, 2]"),
    "stream_csv": Call("list(mpdemo.stream_csv(path, slow, processes=2, chunksize=1))",
                       again="mpdemo.process_csv(path, len, processes=2).results", expected="[6, 6]",
                       setup="from mpdemo import data; path = data.write_orders_csv('orders.csv', 2)",
                       takes_pool=False),
    "parallel_apply": Call("mpdemo.parallel_apply(slow, np.zeros((8, 2)), processes=2, blocks=8, executor=pool)",
                           again="[float(x) for x in mpdemo.parallel_apply(np.sum, np.ones((4, 1)), processes=2)]",
                           expected="[2.0, 2.0]"),
    "file_apply": Call("memmap.file_apply(slow, path, processes=2, window_mb=None, executor=pool)",
                       again="[float(x) for x in memmap.file_apply(np.sum, path, processes=2).results]",
                       expected="[0.0, 0.0]", setup="from mpdemo import memmap; path = memmap.write_npy('rows.npy', (8, 2))"),
    "split_run": Call("profiling.split_run(slow, list(range(8)), processes=2, chunksize=1, executor=pool)",
                      again="profiling.split_run(abs, [-1, -2], processes=2)[0]", expected="[1, 2]",
                      setup="from mpdemo import profiling"),
}
CASES = [pytest.param(api, passed, id=f"{api}-{'passed pool' if passed else 'own pool'}")
         for api, call in CALLS.items() for passed in ([False, True] if call.takes_pool else [False])]
HELPERS = ("resource_tracker", "forkserver")  # multiprocessing's own long-lived helper processes


def lines_of(child: subprocess.Popen) -> queue.Queue:
    """The child's stdout, line by line, read by a thread so that we can wait with a timeout."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


def workers_of(pid: int) -> list[psutil.Process]:
    """The child's worker processes that are still running (under forkserver, the server's children)."""
    found = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            helper = process.ppid() == pid and any(h in " ".join(process.cmdline()) for h in HELPERS)
            if process.status() != psutil.STATUS_ZOMBIE and not helper:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("api, passed", CASES)
@pytest.mark.parametrize("to_group", [False, True], ids=["caller alone", "process group"])
@pytest.mark.timeout(120)
def test_ctrl_c_stops_everything_at_once(api: str, passed: bool, to_group: bool, tmp_path) -> None:
    spec = CALLS[api]
    code = PROGRAM.format(passed=passed, setup=spec.setup, call=spec.call, again=spec.again)
    stderr = (tmp_path / "stderr.txt").open("w+")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True,
                             start_new_session=True, cwd=tmp_path, env={**os.environ, "PYTHON_COLORS": "0"})
    lines = lines_of(child)
    try:
        assert lines.get(timeout=60) == "running"
        assert wait_for(lambda: len(workers_of(child.pid)) >= 2, 60), "the workers did not start"
        time.sleep(1.0)  # the workers are inside their 10 s items now

        sent = time.time()
        (os.killpg if to_group else os.kill)(child.pid, signal.SIGINT)
        heard = lines.get(timeout=10)
        assert heard.startswith("interrupted at"), heard
        assert float(heard.split()[-1]) - sent < 3, f"KeyboardInterrupt came {float(heard.split()[-1]) - sent:.1f} s late"
        assert wait_for(lambda: not workers_of(child.pid), 5 - (time.time() - sent)), \
            f"workers still running 5 s after Ctrl-C: {workers_of(child.pid)}"

        if passed:
            assert lines.get(timeout=10).startswith("the passed pool is stopped:")
        assert lines.get(timeout=60) == f"next call: {spec.expected}"
        assert child.wait(timeout=30) == 0
        stderr.seek(0)
        errors = stderr.read()
        assert "leaked" not in errors, errors  # the resource tracker had to clean up after us
    finally:
        if child.poll() is None:
            pitfalls.stop_process_group(child)
        child.wait()
        child.stdout.close()
        stderr.close()


# ── Every other failure, across every parallel API ───────────────────────────────────────────
#
# The same table for each API: what a failing call raises, and (conftest) that nothing is left
# running or in /dev/shm afterwards. Each module's own tests check the details (indices, chained
# causes, timing); this one shows that the APIs agree.


def lock_for(item):
    """A row or block function whose result cannot be pickled (a lock)."""
    return threading.Lock()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A CSV with a bad row at line 5, and a .npy of 0 … 999."""
    from mpdemo import data, memmap

    folder = tmp_path_factory.mktemp("failures")
    csv_path = data.write_orders_csv(folder / "orders.csv", 40, bad_every=4)
    npy_path = memmap.write_npy(folder / "numbers.npy", (1000,), fill=lambda start, stop: np.arange(start, stop))
    return {"csv": csv_path, "npy": npy_path}


def fourth_row(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.reader(f))[4]


FAILURES = {
    # api: {failure: (call taking the inputs, exception, message pattern)}
    "chunked_map": {
        "raises": (lambda i: mpdemo.chunked_map(workloads.fail_on, range(40), processes=2), mpdemo.WorkerError,
                   r"item 13 raised ValueError: cannot process 13"),
        "killed": (lambda i: mpdemo.chunked_map(functools.partial(workloads.crash_on, bad=13), range(40), processes=2),
                   mpdemo.WorkerDied, "killed by SIGKILL"),
        "function": (lambda i: mpdemo.chunked_map(lambda x: x, range(40), processes=2), mpdemo.NotSendable,
                     "cannot be sent to worker processes"),
        "item": (lambda i: mpdemo.chunked_map(abs, [1, threading.Lock()], processes=2), mpdemo.NotSendable,
                 "item 1 cannot be sent"),
        "result": (lambda i: mpdemo.chunked_map(lock_for, range(4), processes=2), mpdemo.NotSendable,
                   "could not be sent back"),
    },
    "process_csv": {
        "raises": (lambda i: mpdemo.process_csv(i["csv"], workloads.order_total, processes=2), mpdemo.RowError,
                   r"line 5 of .*orders.csv: ValueError"),
        "killed": (lambda i: mpdemo.process_csv(i["csv"], functools.partial(workloads.crash_on, bad=fourth_row(i["csv"])),
                                                processes=2), mpdemo.WorkerDied, "killed by SIGKILL"),
        "function": (lambda i: mpdemo.process_csv(i["csv"], lambda row: row, processes=2), mpdemo.NotSendable,
                     "cannot be sent to worker processes"),
        # "item": the rows are strings from the file, which always travel
        "result": (lambda i: mpdemo.process_csv(i["csv"], lock_for, processes=2), mpdemo.NotSendable,
                   r"line 2 of .*: the row function's result cannot be sent back"),
    },
    "parallel_apply": {
        "raises": (lambda i: mpdemo.parallel_apply(workloads.fail_on_block, np.arange(1000.0), processes=2),
                   mpdemo.BlockError, r"rows 500–999 raised ValueError: cannot process 500"),
        "killed": (lambda i: mpdemo.parallel_apply(workloads.crash_on_block, np.arange(1000.0), processes=2),
                   mpdemo.WorkerDied, "killed by SIGKILL"),
        "function": (lambda i: mpdemo.parallel_apply(lambda block: block, np.arange(10.0), processes=2),
                     mpdemo.NotSendable, "cannot be sent to worker processes"),
        "item": (lambda i: mpdemo.parallel_apply(len, np.array([threading.Lock()]), processes=2), TypeError,
                 "cannot be shared"),
        "result": (lambda i: mpdemo.parallel_apply(lock_for, np.arange(10.0), processes=2), mpdemo.NotSendable,
                   "could not be sent back"),
    },
    "file_apply": {
        "raises": (lambda i: memmap.file_apply(workloads.fail_on_block, i["npy"], processes=2), mpdemo.BlockError,
                   r"rows 500–999 raised ValueError: cannot process 500"),
        "killed": (lambda i: memmap.file_apply(workloads.crash_on_block, i["npy"], processes=2), mpdemo.WorkerDied,
                   "killed by SIGKILL"),
        "function": (lambda i: memmap.file_apply(lambda block: block, i["npy"], processes=2), mpdemo.NotSendable,
                     "cannot be sent to worker processes"),
        # "item": workers read the file themselves; only a path and row numbers travel
        "result": (lambda i: memmap.file_apply(lock_for, i["npy"], processes=2), mpdemo.NotSendable,
                   "could not be sent back"),
    },
}


@pytest.mark.parametrize("api, failure", [(api, failure) for api, cases in FAILURES.items() for failure in cases],
                         ids=lambda value: value)
@pytest.mark.timeout(60)
def test_every_api_fails_clearly_and_leaves_nothing(api, failure, inputs):
    call, error, message = FAILURES[api][failure]
    start = time.monotonic()
    with pytest.raises(error, match=message):
        call(inputs)
    assert time.monotonic() - start < 15, "a failure must be reported within moments, not after a timeout"
