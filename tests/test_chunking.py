"""mpdemo.chunking: chunked_map's results, errors, dead workers, laziness and chunk sizes."""

import functools
import gc
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
from conftest import wait_until

from mpdemo import (NotSendable, ProcessPool, WorkerDied, WorkerError, chunked_map, default_chunksize,
                    suggest_chunksize, workloads)
from mpdemo.chunking import chunksize_sweep, item_cost
from mpdemo.data import make_array
from mpdemo.sandbox import run_code
from mpdemo.timing import Timeline

square = functools.partial(workloads.cpu_bound, loops=3)


class Unpicklable(Exception):
    """An exception that cannot travel between processes (it holds a lock)."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = __import__("threading").Lock()


def cursed_six(x):
    if x == 6:
        raise Unpicklable(f"row {x} is cursed")
    return x


def lock_at_five(x):
    """A row function whose result for row 5 cannot be pickled."""
    return threading.Lock() if x == 5 else x


def exit_at_seven(x):
    """A row function that calls sys.exit(5) at row 7, as a script's helper might."""
    if x == 7:
        sys.exit(5)
    return x


def interrupt_at_seven(x):
    """A row function that raises KeyboardInterrupt itself at row 7 (no Ctrl-C was pressed)."""
    if x == 7:
        raise KeyboardInterrupt("raised by the row function")
    return x


def hard_exit_at_seven(x):
    """A row function that ends its process with os._exit(3) at row 7: no exception, no traceback."""
    if x == 7:
        os._exit(3)
    return x


@pytest.fixture(params=["ProcessPool", "ProcessPoolExecutor"])
def any_pool(request, pool, executor):
    """Each kind of process pool chunked_map runs on: mpdemo's own, and the standard library's."""
    return pool if request.param == "ProcessPool" else executor


@pytest.mark.parametrize("make_items", [
    lambda: list(range(1_000)), lambda: range(1_000), lambda: tuple(range(1_000)), lambda: (x for x in range(1_000)),
    lambda: iter(range(1_000)),
], ids=["list", "range", "tuple", "generator", "iterator"])
def test_results_equal_a_serial_loop_in_input_order(make_items, any_pool):
    assert chunked_map(square, make_items(), processes=2, chunksize=7, executor=any_pool) == \
        [square(x) for x in range(1_000)]


def test_numpy_2d_array_gives_rows():
    a = np.arange(300.0).reshape(100, 3)
    assert chunked_map(workloads.sum_of_squares, a, processes=2) == [workloads.sum_of_squares(row) for row in a]


@pytest.mark.parametrize("chunksize", [1, 3, 100, 999, 1_000, 5_000, "auto"])
def test_any_chunksize_gives_the_same_results(chunksize, pool):
    assert chunked_map(square, range(1_000), processes=2, chunksize=chunksize, executor=pool) == \
        [square(x) for x in range(1_000)]


def test_unordered_gives_every_result_once(pool):
    results = chunked_map(workloads.io_bound, range(40), processes=2, chunksize=3, ordered=False, executor=pool)
    assert sorted(results) == list(range(40))


def test_more_processes_than_items():
    assert chunked_map(square, [5, 6], processes=8) == [square(5), square(6)]


@pytest.mark.parametrize("items", [[], range(0), (x for x in [])], ids=["list", "range", "generator"])
def test_empty_input_gives_an_empty_list(items):
    assert chunked_map(square, items, processes=2) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"processes": 0}, "processes must be a whole number of at least 1, got 0"),
    ({"processes": 2.5}, "processes must be a whole number of at least 1, got 2.5"),
    ({"chunksize": 0}, 'chunksize must be "auto" or a whole number of at least 1, got 0'),
    ({"chunksize": "big"}, 'chunksize must be "auto" or a whole number of at least 1, got \'big\''),
    ({"chunksize": 2.5}, 'chunksize must be "auto" or a whole number of at least 1, got 2.5'),
])
def test_bad_settings_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chunked_map(square, range(10), **kwargs)


def test_a_0d_array_is_refused_clearly():
    with pytest.raises(ValueError, match="a 0-dimensional array holds one value and no rows"):
        chunked_map(abs, np.array(5.0), processes=2)


def test_a_failing_item_is_named_and_the_original_error_chained(any_pool):
    with pytest.raises(WorkerError, match="item 13 raised ValueError: cannot process 13") as caught:
        chunked_map(workloads.fail_on, range(100), processes=2, chunksize=7, executor=any_pool)
    assert caught.value.index == 13
    original = caught.value.__cause__
    assert isinstance(original, ValueError) and str(original) == "cannot process 13"
    assert "in fail_on" in str(original.__cause__)  # the worker's traceback, as text


def test_a_failing_item_in_a_thread_pool_is_named_too():
    with ThreadPoolExecutor(2) as threads, pytest.raises(WorkerError, match="item 13") as caught:
        chunked_map(workloads.fail_on, range(20), processes=2, chunksize=4, executor=threads)
    assert isinstance(caught.value.__cause__, ValueError)


def test_an_unpicklable_exception_still_names_its_item(pool):
    with pytest.raises(WorkerError, match=r"item 2 raised RuntimeError: Unpicklable: row 6 is cursed"):
        chunked_map(cursed_six, range(4, 10), processes=2, chunksize=2, executor=pool)


@pytest.mark.parametrize("func, kind", [(exit_at_seven, "SystemExit"), (interrupt_at_seven, "KeyboardInterrupt")])
def test_a_function_that_exits_or_interrupts_fails_its_item_and_never_ends_the_caller(func, kind, any_pool):
    with pytest.raises(WorkerError, match=rf"^item 7 raised {kind}") as caught:
        chunked_map(func, range(100), processes=2, chunksize=3, executor=any_pool)
    assert type(caught.value.error).__name__ == kind
    assert chunked_map(abs, [-1], processes=2, executor=any_pool) == [1]  # and the pool goes on


def test_a_function_that_exits_fails_its_item_in_a_thread_pool_too():
    with ThreadPoolExecutor(2) as threads, pytest.raises(WorkerError, match=r"^item 7 raised SystemExit: 5"):
        chunked_map(exit_at_seven, range(20), processes=2, chunksize=4, executor=threads)


def test_os_exit_in_the_function_is_a_dead_worker_with_no_word_of_a_traceback():
    with pytest.raises(WorkerDied) as caught:
        chunked_map(hard_exit_at_seven, range(20), processes=2, chunksize=2)
    message = str(caught.value)
    assert re.search(r"pid \d+ exited with code 3 while running its task, without a Python exception", message)
    assert "(it was running items 6–7)" in message and "traceback" not in message


def test_the_pool_survives_a_failing_item(pool):
    with pytest.raises(WorkerError):
        chunked_map(workloads.fail_on, range(50), processes=2, chunksize=5, executor=pool)
    assert chunked_map(square, range(50), processes=2, executor=pool) == [square(x) for x in range(50)]


def test_a_killed_worker_raises_within_seconds_instead_of_hanging():
    start = time.monotonic()
    with pytest.raises(WorkerDied, match="a worker process died unexpectedly"):
        chunked_map(workloads.crash_on, range(200), processes=2, chunksize=5)
    assert time.monotonic() - start < 10


def test_a_killed_worker_is_named_with_its_signal_and_its_task():
    with pytest.raises(WorkerDied, match=r"pid \d+ was killed by SIGKILL .*\(it was running items 10–14\)$"):
        chunked_map(workloads.crash_on, range(200), processes=2, chunksize=5)


def test_a_killed_worker_is_a_broken_pool_for_standard_library_code():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        chunked_map(workloads.crash_on, range(200), processes=2, chunksize=5)


def test_a_kept_pool_starts_new_workers_after_one_was_killed():
    with ProcessPool(2) as pool:
        with pytest.raises(WorkerDied):
            chunked_map(workloads.crash_on, range(40), processes=2, chunksize=5, executor=pool)
        assert chunked_map(square, range(40), processes=2, executor=pool) == [square(x) for x in range(40)]


@pytest.mark.timeout(60)  # the old code hung in about half of these calls: a hang fails here
def test_a_lambda_raises_before_anything_is_sent_every_time():
    for _ in range(20):
        with pytest.raises(NotSendable, match=r"the function \S*<lambda> cannot be sent to worker processes: "
                                              r".*define it with def at the top level of a module"):
            chunked_map(lambda x: x, range(40), processes=2)


def test_a_lambda_is_fine_in_a_thread_pool():
    with ThreadPoolExecutor(2) as threads:
        assert chunked_map(lambda x: -x, range(5), processes=2, executor=threads) == [0, -1, -2, -3, -4]


MAIN_FUNCTION = """
import mpdemo
def square(x):
    return x * x
try:
    print(mpdemo.chunked_map(square, range(6), processes=2))
except mpdemo.NotSendable as error:
    print(error)
"""


def test_a_main_function_under_spawn_names_the_cause_and_the_cure(monkeypatch):
    monkeypatch.setenv("MPDEMO_START_METHOD", "spawn")
    outcome = run_code(MAIN_FUNCTION, timeout=60)
    assert outcome.returncode == 0 and not outcome.timed_out, outcome
    assert outcome.stdout.startswith(
        "the function square is defined in __main__ (a notebook cell or a python -c program), which spawn "
        "workers cannot import"), outcome.stdout
    assert "Move it into a module" in outcome.stdout and "WorkerDied" not in outcome.stderr


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_a_main_function_under_fork_just_works(monkeypatch):
    monkeypatch.setenv("MPDEMO_START_METHOD", "fork")
    outcome = run_code(MAIN_FUNCTION, timeout=60)
    assert outcome.stdout.strip() == "[0, 1, 4, 9, 16, 25]", outcome


def test_an_unpicklable_item_is_named_by_its_index(any_pool):
    items = [1, 2, 3, threading.Lock(), 5]
    with pytest.raises(NotSendable, match=r"^item 3 cannot be sent to worker processes: TypeError: "
                                          r"cannot pickle '_thread.lock' object\. Send plain data") as caught:
        chunked_map(abs, items, processes=2, chunksize=2, executor=any_pool)
    assert isinstance(caught.value.__cause__, TypeError)
    assert chunked_map(abs, [-1, -2], processes=2, executor=any_pool) == [1, 2]  # the pool is unharmed


def test_an_unpicklable_result_names_its_item(any_pool):
    with pytest.raises(NotSendable, match=r"^the result of item 5 cannot be sent back from the worker: "
                                          r".*cannot pickle '_thread.lock' object"):
        chunked_map(lock_at_five, range(12), processes=2, chunksize=4, executor=any_pool)
    assert chunked_map(abs, [-3], processes=2, executor=any_pool) == [3]


def test_each_chunk_is_pickled_once_in_the_caller(monkeypatch, pool):
    """The pickling that sends a chunk is the check that it can travel: one pickling per chunk."""
    import pickle

    from mpdemo import guard

    pickled = []
    real_dumps = pickle.dumps
    monkeypatch.setattr(guard.pickle, "dumps", lambda obj, *a, **k: pickled.append(obj) or real_dumps(obj, *a, **k))
    items = [("a", "b")] * 100
    assert chunked_map(len, items, processes=2, chunksize=10, executor=pool) == [2] * 100
    chunks = [obj for obj in pickled if isinstance(obj, list)]  # the rest carry those pickles, as bytes
    assert len(chunks) == 10 and all(len(chunk) == 10 for chunk in chunks)
    assert all(isinstance(obj[1][2], bytes) for obj in pickled if isinstance(obj, tuple))


def test_every_record_says_what_pickling_cost_the_worker_and_the_caller(any_pool):
    tl = Timeline()
    chunked_map(len, [("a" * 10,) * 11] * 2_000, processes=2, chunksize=100, executor=any_pool, timeline=tl)
    assert len(tl.records) == 20
    assert all(r.pickling > 0 and r.caller_pickling > 0 and r.computing > 0 for r in tl.records)


def test_generators_are_read_lazily(pool):
    """A failure at the first item stops the reading: only a few windows of chunks were pulled."""
    pulled = []

    def rows():
        for x in range(100_000):
            pulled.append(x)
            yield x

    with pytest.raises(WorkerError):
        chunked_map(functools.partial(workloads.fail_on, bad=0), rows(), processes=2, chunksize=10, executor=pool)
    assert len(pulled) < 1_000  # not 100,000: the window is 4 chunks per process


def test_a_passed_executor_is_left_running(pool):
    with ThreadPoolExecutor(2) as threads:
        assert chunked_map(square, range(30), executor=threads) == [square(x) for x in range(30)]
        assert threads.submit(square, 3).result() == square(3)


def test_timeline_gets_one_record_per_chunk(pool):
    tl = Timeline()
    chunked_map(square, range(1_000), processes=2, chunksize=64, executor=pool, timeline=tl)
    assert len(tl.records) == 16
    assert sorted(r.items for r in tl.records) == [40] + [64] * 15
    assert 1 <= len(tl.workers()) <= 2


def test_progress_bar_counts_every_item(capsys):
    chunked_map(square, range(500), processes=2, chunksize=50, progress=True)
    err = capsys.readouterr().err
    assert "500/500" in err and "100%" in err


@pytest.mark.parametrize("n, processes, expected", [
    (100, 4, 7), (16, 4, 1), (17, 4, 2), (0, 4, 1), (3, 8, 1), (200_000, 2, 25_000),
])
def test_default_chunksize_is_pool_maps_rule(n, processes, expected):
    assert default_chunksize(n, processes) == expected


def test_default_chunksize_refuses_zero_processes():
    with pytest.raises(ValueError, match="processes must be"):
        default_chunksize(10, 0)


def test_suggest_chunksize_grows_as_items_get_lighter(pool):
    light = suggest_chunksize(functools.partial(workloads.cpu_bound, loops=1), range(200_000), 2, executor=pool)
    heavy = suggest_chunksize(functools.partial(workloads.cpu_bound, loops=workloads.loops_for(2_000)),
                              range(200_000), 2, executor=pool)
    assert 1 <= heavy < light <= default_chunksize(200_000, 2)


def test_suggest_chunksize_needs_a_sequence():
    with pytest.raises(ValueError, match="needs a non-empty list, range or array"):
        item_cost(square, (x for x in range(10)))


def test_sweep_times_each_chunksize(pool):
    results = chunksize_sweep(square, range(2_000), [1, 50, 500], processes=2, repeats=2, executor=pool)
    assert list(results) == [1, 50, 500]
    assert all(len(m.times) == 2 and m.best > 0 for m in results.values())
    assert results[1].label == "chunksize 1"


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dask closes its sockets after the test ends
def test_runs_unchanged_on_a_dask_cluster():
    distributed = pytest.importorskip("distributed")
    rows = make_array(200, 20)  # row_score smooths 16 neighbours: rows need more columns than that
    # dashboard_address=":0": any free port, so a cluster already on dask's default port 8787 does not matter
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        tl = Timeline()
        results = chunked_map(square, range(500), processes=2, chunksize=50,
                              executor=client.get_executor(), timeline=tl)
        assert results == [square(x) for x in range(500)]
        assert len(tl.records) == 10
        for items in [list(range(500)), (x for x in range(500))]:
            assert chunked_map(square, items, processes=2, chunksize=64, executor=client.get_executor()) == \
                [square(x) for x in range(500)]
        assert chunked_map(workloads.row_score, rows, processes=2, executor=client.get_executor()) == \
            [workloads.row_score(row) for row in rows]
        unordered = chunked_map(square, range(100), processes=2, chunksize=7, ordered=False,
                                executor=client.get_executor())
        assert sorted(unordered) == sorted(square(x) for x in range(100))
        with pytest.raises(WorkerError, match="item 13"):
            chunked_map(workloads.fail_on, range(30), processes=2, chunksize=4, executor=client.get_executor())


def test_numpy_rows_on_a_process_pool_executor_equal_serial(pool):
    rows = make_array(200, 20)  # row_score smooths 16 neighbours: rows need more columns than that
    assert chunked_map(workloads.row_score, rows, processes=2, chunksize=9, executor=pool) == \
        [workloads.row_score(row) for row in rows]


FORK_POOL_TOO_OLD = """
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import mpdemo
pool = {pool}
{warm}  # the workers are forked now, before `late` exists
def late(x):
    return x
try:
    mpdemo.chunked_map(late, range(4), processes=2, executor=pool)
except mpdemo.NotSendable as error:
    print(error)
pool.shutdown() if hasattr(pool, "shutdown") else pool.close()
"""


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("pool, warm", [
    ('ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))', "mpdemo.context.start_workers(pool, 2)"),
    ('mpdemo.ProcessPool(2, method="fork")', "pool.warm()"),
], ids=["ProcessPoolExecutor", "ProcessPool"])
def test_a_fork_pool_older_than_the_main_function_names_the_cause(pool, warm):
    outcome = run_code(FORK_POOL_TOO_OLD.format(pool=pool, warm=warm), timeout=60)
    assert "the worker could not unpickle its task: AttributeError: Can't get attribute 'late'" in outcome.stdout
    assert "a fork worker started before it was defined has no copy of it" in outcome.stdout, outcome


def test_a_kept_pool_is_reused_across_calls_by_the_same_workers():
    with ProcessPool(2) as pool:
        pool.warm()
        before = sorted(pool.pids())
        first, second = Timeline(), Timeline()
        chunked_map(square, range(100), processes=2, chunksize=10, executor=pool, timeline=first)
        chunked_map(square, range(100), processes=2, chunksize=10, executor=pool, timeline=second)
        assert set(first.workers()) | set(second.workers()) <= set(before) == set(pool.pids())
    assert pool.closed and pool.pids() == []
    with pytest.raises(RuntimeError, match="this ProcessPool is closed"):
        chunked_map(square, range(10), executor=pool)


def test_a_kept_pool_dropped_without_closing_stops_its_workers():
    pool = ProcessPool(2).warm()
    pids = pool.pids()
    del pool
    gc.collect()
    assert wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                                      for pid in pids), 5)


def test_large_chunks_go_through_the_sender_threads_in_order(pool):
    """Chunks far larger than a pipe holds, results as large: never a deadlock, never mixed up."""
    blocks = [np.full((300_000,), float(i)) for i in range(12)]  # 2.4 MB each
    results = chunked_map(np.negative, blocks, processes=2, chunksize=1, executor=pool)
    assert all(np.array_equal(r, -b) for r, b in zip(results, blocks, strict=True))
