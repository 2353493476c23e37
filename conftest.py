"""Checks that apply to every test and notebook: nothing may be left behind.

* After each test: no new block in /dev/shm, no child process still alive (5 s grace).
* After the whole session (which includes the notebooks, whose cells are not test
  functions): the same, so a notebook that leaks a shared-memory block fails the run.
* A notebook cell that ran into nbval's cell timeout fails even if it caught the
  KeyboardInterrupt nbval sends (nbval alone would count such a cell as passed).
"""

from __future__ import annotations

import copyreg
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from mpdemo.context import process_executor, start_workers
from mpdemo.pool import ProcessPool

SHM = Path("/dev/shm")
#: Long-lived helpers that multiprocessing starts once per process, not leaks.
INFRASTRUCTURE = ("resource_tracker", "forkserver", "semaphore_tracker")
#: Where the session keeps what /dev/shm held when it started.
shm_key = pytest.StashKey[set]()


def shm_blocks(semaphores: bool = False) -> set[str]:
    """Names in /dev/shm, minus Chromium's own files (the browser test runs Chromium).

    Semaphores (``sem.*``) count only when asked: a live pool owns some (a test may share a
    pool with the next one), but none may outlive the session. The check sees the whole
    machine, so run the suite alone.
    """
    if not SHM.is_dir():  # macOS and Windows keep shared memory elsewhere
        return set()
    skip = (".org.chromium",) if semaphores else (".org.chromium", "sem.")
    return {p.name for p in SHM.iterdir() if not p.name.startswith(skip)}


def worker_processes(parent: int | None = None, known: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """The running descendants of ``parent`` (default: this process) that are workers, not in ``known``.

    multiprocessing's own long-lived helpers (the resource tracker, the fork server) are not
    workers; the workers a fork server forks (its children) are.
    """
    parent = os.getpid() if parent is None else parent
    found = []
    for child in psutil.Process(parent).children(recursive=True):
        try:
            helper = child.ppid() == parent and any(name in " ".join(child.cmdline()) for name in INFRASTRUCTURE)
            if child.pid not in known and child.status() != psutil.STATUS_ZOMBIE and not helper:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (checked every 50 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def end_child_and_orphans(child, workers: list[psutil.Process]) -> None:
    """Kill a child program and any of its workers it left behind (orphans are nobody's children,
    so the leftover check after the test would not see them)."""
    child.kill()
    child.wait()
    if child.stdout is not None:
        child.stdout.close()
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass


def live_children(grace: float = 5.0, known: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Worker processes of this one not in ``known``, still running after up to ``grace`` seconds."""
    wait_until(lambda: not worker_processes(known=known), grace)
    return worker_processes(known=known)


def leftovers(shm_before: set[str], children_before: frozenset[int], semaphores: bool = False) -> list[str]:
    """What a test left behind, as readable lines; kills leftover processes so others can run."""
    gc.collect()  # a multiprocessing.Pool's semaphores go only when the garbage collector frees it
    problems = [f"left in /dev/shm: {name}" for name in sorted(shm_blocks(semaphores) - shm_before)]
    for child in live_children(known=children_before):
        problems.append(f"child process still running: pid {child.pid} {' '.join(child.cmdline())[:120]}")
        child.kill()
    return problems


@pytest.fixture(scope="module")
def pool():
    """One warm mpdemo.ProcessPool of 2 workers for a test module's tests that do not need their own
    (started before them, so the leftover check does not count its workers)."""
    with ProcessPool(2) as workers:
        yield workers.warm()


@pytest.fixture(scope="module")
def executor():
    """One warm standard-library ProcessPoolExecutor of 2 workers, for the tests of that path."""
    with process_executor(2) as pool:
        start_workers(pool, 2)
        yield pool


@pytest.fixture(autouse=True)
def pickling_as_it_was():
    """Undo what a test changed in how exceptions pickle.

    Importing ``distributed`` (the dask tests) installs tblib's reducers for every exception
    class in ``copyreg``, for the whole process; they lose the message of some exceptions
    (a UnicodeDecodeError comes back empty), which would break later tests that send errors
    between processes, depending on the order the tests ran in.
    """
    before = dict(copyreg.dispatch_table)
    yield
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(before)


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Fail a test that leaves a block in /dev/shm or a new child process running."""
    shm_before, children_before = shm_blocks(), frozenset(c.pid for c in live_children(grace=0))
    yield
    problems = leftovers(shm_before, children_before)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" and report.passed and getattr(item.parent, "timed_out", False):
        report.outcome = "failed"
        report.longrepr = ("this notebook ran into the nbval cell timeout, yet the cell passed: "
                           "it must have caught the KeyboardInterrupt nbval sends")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[shm_key] = shm_blocks(semaphores=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = leftovers(session.config.stash[shm_key], children_before=frozenset(), semaphores=True)
    if problems:
        print("\n".join(["", "left behind by this run:", *problems]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
