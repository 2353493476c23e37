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
from conftest import end_child_and_orphans, wait_until, worker_processes
from mpdemo import memmap, workloads
from mpdemo.sandbox import stop_process_group

PROGRAM = """
import functools, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np
import mpdemo
from mpdemo import workloads

slow = functools.partial(workloads.io_bound, seconds=10)  # takes 10 s for any item, row or block
pool = {{"own": None, "ProcessPoolExecutor": ProcessPoolExecutor(2, mp_context=mpdemo.get_context()),
         "ProcessPool": mpdemo.ProcessPool(2)}}["{pool}"]
{setup}
print("running", flush=True)
try:
    {call}
except KeyboardInterrupt:
    print("interrupted at", time.time(), flush=True)
if isinstance(pool, ProcessPoolExecutor):
    try:
        pool.submit(abs, 1)
    except RuntimeError as error:
        print("the passed pool is stopped:", error, flush=True)
elif pool is not None:
    print("the passed pool works again:", mpdemo.chunked_map(abs, [-1], executor=pool), flush=True)
    pool.close()
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
    "stream_csv": Call("list(mpdemo.stream_csv(path, slow, processes=2, chunksize=1, executor=pool))",
                       again="mpdemo.process_csv(path, len, processes=2).results", expected="[6, 6]",
                       setup="from mpdemo import data; path = data.write_orders_csv('orders.csv', 2)"),
    "parallel_apply": Call("mpdemo.parallel_apply(slow, np.zeros((8, 2)), processes=2, blocks=8, executor=pool)",
                           again="[float(x) for x in mpdemo.parallel_apply(np.sum, np.ones((4, 1)), processes=2)]",
                           expected="[2.0, 2.0]"),
    "file_apply": Call("memmap.file_apply(slow, path, processes=2, window_mb=None, executor=pool)",
                       again="[float(x) for x in memmap.file_apply(np.sum, path, processes=2).results]",
                       expected="[0.0, 0.0]", setup="from mpdemo import memmap; path = memmap.write_npy('rows.npy', (8, 2))"),
    "frame_apply": Call("mpdemo.frame_apply(slow, frame, processes=2, chunksize=1, executor=pool)",
                        again="mpdemo.frame_apply(abs, frame - 1, processes=2)['x'].tolist()",
                        expected="[1, 0, 1, 2, 3, 4, 5, 6]", setup="import pandas as pd; frame = pd.DataFrame({'x': range(8)})"),
    "process_parquet": Call("mpdemo.process_parquet('rows.parquet', slow, processes=2, executor=pool)",
                            again="mpdemo.process_parquet('rows.parquet', len, processes=2)", expected="[1, 1, 1, 1, 1, 1, 1, 1]",
                            setup="import pandas as pd; pd.DataFrame({'x': range(8)}).to_parquet('rows.parquet', row_group_size=1)"),
}
POOLS = ("own", "ProcessPoolExecutor", "ProcessPool")
CASES = [pytest.param(api, pool, id=f"{api}-{pool}") for api, call in CALLS.items()
         for pool in (POOLS if call.takes_pool else POOLS[:1])]


def with_ctrl_c(code: str) -> str:
    """``code`` with Ctrl-C acting as in a terminal. A test run started in the background (``cmd &``
    in a script, ``nohup``) begins with SIGINT ignored, a child inherits that, and Python then
    leaves it ignored: the SIGINT these tests send would do nothing."""
    return "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n" + code


def lines_of(child: subprocess.Popen) -> queue.Queue:
    """The child's stdout, line by line, read by a thread so that we can wait with a timeout."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize("api, pool", CASES)
@pytest.mark.parametrize("to_group", [False, True], ids=["caller alone", "process group"])
@pytest.mark.timeout(120)
def test_ctrl_c_stops_everything_at_once(api: str, pool: str, to_group: bool, tmp_path) -> None:
    spec = CALLS[api]
    code = PROGRAM.format(pool=pool, setup=spec.setup, call=spec.call, again=spec.again)
    stderr = (tmp_path / "stderr.txt").open("w+")
    child = subprocess.Popen([sys.executable, "-c", with_ctrl_c(code)], stdout=subprocess.PIPE, stderr=stderr,
                             text=True, start_new_session=True, cwd=tmp_path, env={**os.environ, "PYTHON_COLORS": "0"})
    lines = lines_of(child)
    try:
        assert lines.get(timeout=60) == "running"
        assert wait_until(lambda: len(worker_processes(child.pid)) >= 2, 60), "the workers did not start"
        time.sleep(1.0)  # the workers are inside their 10 s items now

        sent = time.time()
        (os.killpg if to_group else os.kill)(child.pid, signal.SIGINT)
        heard = lines.get(timeout=10)
        assert heard.startswith("interrupted at"), heard
        assert float(heard.split()[-1]) - sent < 3, f"KeyboardInterrupt came {float(heard.split()[-1]) - sent:.1f} s late"
        assert wait_until(lambda: not worker_processes(child.pid), 5 - (time.time() - sent)), \
            f"workers still running 5 s after Ctrl-C: {worker_processes(child.pid)}"

        if pool == "ProcessPoolExecutor":
            assert lines.get(timeout=10).startswith("the passed pool is stopped:")
        elif pool == "ProcessPool":
            assert lines.get(timeout=60) == "the passed pool works again: [1]"
        assert lines.get(timeout=60) == f"next call: {spec.expected}"
        assert child.wait(timeout=30) == 0
        stderr.seek(0)
        errors = stderr.read()
        assert "leaked" not in errors, errors  # the resource tracker had to clean up after us
        if pool != "ProcessPoolExecutor":  # mpdemo's own workers ignore Ctrl-C: they print nothing
            assert "Traceback" not in errors, errors
    finally:
        if child.poll() is None:
            stop_process_group(child)
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


def exit_for(item):
    """A row or block function that calls sys.exit(5), as a script's helper might."""
    sys.exit(5)


def locks_in(frame):
    """A frame function whose result cannot be pickled: a column of locks."""
    return frame.assign(lock=[threading.Lock() for _ in range(len(frame))])


def fail_on_13(frame):
    """A frame function with one bad row: the one holding 13."""
    if (frame.to_numpy() == 13).any():
        raise ValueError("cannot process 13")
    return frame


def crash_on_13(frame):
    """A frame function that kills its worker (SIGKILL) on the row holding 13."""
    if (frame.to_numpy() == 13).any():
        workloads.crash_on(13)
    return frame


def numbers_frame():
    import pandas as pd

    return pd.DataFrame({"x": range(40)}, index=[f"r{i}" for i in range(40)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A CSV with a bad row at line 5, and a .npy of 0 … 999."""
    from mpdemo import data, memmap

    folder = tmp_path_factory.mktemp("failures")
    csv_path = data.write_orders_csv(folder / "orders.csv", 40, bad_every=4)
    npy_path = memmap.write_npy(folder / "numbers.npy", (1000,), fill=lambda start, stop: np.arange(start, stop))
    numbers_frame().reset_index(drop=True).to_parquet(folder / "numbers.parquet", row_group_size=10)  # 0 … 39
    return {"csv": csv_path, "npy": npy_path, "parquet": folder / "numbers.parquet"}


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
                   r"the result of item \d cannot be sent back"),
        "exits": (lambda i: mpdemo.chunked_map(exit_for, range(4), processes=2), mpdemo.WorkerError,
                  r"item \d raised SystemExit: 5"),
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
        "exits": (lambda i: mpdemo.process_csv(i["csv"], exit_for, processes=2), mpdemo.RowError,
                  r"line 2 of .*orders.csv: SystemExit: 5"),
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
                   r"the result of item \d cannot be sent back"),
        "exits": (lambda i: mpdemo.parallel_apply(exit_for, np.arange(10.0), processes=2), mpdemo.BlockError,
                  r"rows \d+–\d+ raised SystemExit: 5"),
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
                   "cannot be sent back"),
        "exits": (lambda i: memmap.file_apply(exit_for, i["npy"], processes=2), mpdemo.BlockError,
                  r"rows \d+–\d+ raised SystemExit: 5"),
    },
    "frame_apply": {
        "raises": (lambda i: mpdemo.frame_apply(fail_on_13, numbers_frame(), processes=2), mpdemo.FrameError,
                   r"row 'r13' \(position 13\): ValueError: cannot process 13"),
        "killed": (lambda i: mpdemo.frame_apply(crash_on_13, numbers_frame(), processes=2), mpdemo.WorkerDied,
                   "killed by SIGKILL"),
        "function": (lambda i: mpdemo.frame_apply(lambda frame: frame, numbers_frame(), processes=2),
                     mpdemo.NotSendable, "cannot be sent to worker processes"),
        "item": (lambda i: mpdemo.frame_apply(abs, numbers_frame().assign(lock=threading.Lock()), processes=2),
                 mpdemo.NotSendable, r"the value in column 'lock' of row 'r0' \(position 0\) cannot be sent"),
        "result": (lambda i: mpdemo.frame_apply(locks_in, numbers_frame(), processes=2), mpdemo.NotSendable,
                   r"the result of rows \d+–\d+ .* cannot be sent back"),
        "exits": (lambda i: mpdemo.frame_apply(exit_for, numbers_frame(), processes=2), mpdemo.FrameError,
                  r"row 'r\d+' \(position \d+\): SystemExit: 5"),
    },
    "process_parquet": {
        "raises": (lambda i: mpdemo.process_parquet(i["parquet"], fail_on_13, processes=2), mpdemo.FrameError,
                   r"row 13 of .*numbers.parquet \(row group 1\): ValueError: cannot process 13"),
        "killed": (lambda i: mpdemo.process_parquet(i["parquet"], crash_on_13, processes=2), mpdemo.WorkerDied,
                   "killed by SIGKILL"),
        "function": (lambda i: mpdemo.process_parquet(i["parquet"], lambda batch: batch, processes=2),
                     mpdemo.NotSendable, "cannot be sent to worker processes"),
        # "item": workers read the file themselves; only a path and row group numbers travel
        "result": (lambda i: mpdemo.process_parquet(i["parquet"], locks_in, processes=2), mpdemo.NotSendable,
                   r"the result of row group \d of .*numbers.parquet cannot be sent back"),
        "exits": (lambda i: mpdemo.process_parquet(i["parquet"], exit_for, processes=2), mpdemo.FrameError,
                  r"row \d+ of .*numbers.parquet \(row group \d\): SystemExit: 5"),
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


# ── A caller that is killed: its workers leave by themselves ────────────────────────────────

KILLED_CALLER = """
import functools, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np
import mpdemo
from mpdemo import context, data, memmap, workloads

slow = functools.partial(workloads.io_bound, seconds=60)
pools = {{"own": None, "ProcessPoolExecutor": context.process_executor(2), "ProcessPool": mpdemo.ProcessPool(2)}}
pool = pools["{pool}"]
{setup}
print("running", flush=True)
{call}
"""


@pytest.mark.parametrize("api, pool", CASES)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.timeout(120)
def test_workers_leave_within_seconds_when_their_caller_is_killed(api: str, pool: str, how: str, tmp_path) -> None:
    """No finally and no atexit run in a killed caller: each worker watches its parent itself."""
    spec = CALLS[api]
    code = KILLED_CALLER.format(pool=pool, setup=spec.setup, call=spec.call)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, cwd=tmp_path, env={**os.environ, "PYTHON_COLORS": "0"})
    workers: list[psutil.Process] = []
    try:
        assert child.stdout.readline().strip() == "running"
        assert wait_until(lambda: len(worker_processes(child.pid)) >= 2, 60), "the workers did not start"
        workers = worker_processes(child.pid)
        time.sleep(0.5)  # inside their 60 s items now
        child.send_signal(getattr(signal, how))
        child.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers still running 5 s after their caller was killed: {alive}"
    finally:
        end_child_and_orphans(child, workers)


STARTING = """
import mpdemo
print("starting", flush=True)
mpdemo.chunked_map(abs, range(100_000), processes=2, chunksize=10)
"""


@pytest.mark.timeout(60)
def test_ctrl_c_while_the_workers_are_still_starting_prints_no_worker_traceback():
    """SIGINT to the whole group while spawn workers still import: only the caller may speak."""
    for delay in (0.05, 0.15, 0.3):
        child = subprocess.Popen([sys.executable, "-c", with_ctrl_c(STARTING)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True,
                                 env={**os.environ, "PYTHON_COLORS": "0"})
        try:
            assert child.stdout.readline().strip() == "starting"
            time.sleep(delay)
            os.killpg(child.pid, signal.SIGINT)
            _, errors = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                stop_process_group(child)
            child.wait()
        assert errors.count("Traceback") <= 1, errors  # the caller's own KeyboardInterrupt, at most
        # A worker's traceback runs through spawn.py and process.py (BaseProcess._bootstrap).
        assert "multiprocessing/spawn.py" not in errors and "multiprocessing/process.py" not in errors, errors
