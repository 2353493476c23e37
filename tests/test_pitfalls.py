"""mpdemo.pitfalls: each reproduction fails the way the lesson says, inside its time limit."""

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from mpdemo import pitfalls, workloads


def process_group_is_gone(pid: int) -> bool:
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def semaphores() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir() if p.name.startswith("sem.")} if shm.is_dir() else set()


def test_pool_with_a_notebook_function_hangs_and_is_stopped_with_its_workers():
    before = semaphores()
    code = pitfalls.NOTEBOOK_FUNCTION.format(method="spawn", pool_code=pitfalls.WITH_POOL)
    outcome = pitfalls.run_code(code, timeout=4)
    assert outcome.timed_out and outcome.returncode is None
    assert "AttributeError: Can't get attribute 'square' on <module '__main__'" in "\n".join(outcome.errors())
    assert str(outcome).startswith("no answer after 4.0 s")
    assert process_group_is_gone(outcome.pid)
    assert semaphores() <= before  # the Pool's semaphores were removed by its resource tracker


def test_executor_with_a_notebook_function_raises_broken_process_pool(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # as in a Jupyter kernel: Python 3.13 would colour tracebacks
    code = pitfalls.NOTEBOOK_FUNCTION.format(method="spawn", pool_code=pitfalls.WITH_EXECUTOR)
    outcome = pitfalls.run_code(code, timeout=30)
    assert not outcome.timed_out and outcome.returncode == 1
    assert any(e.startswith("concurrent.futures.process.BrokenProcessPool") for e in outcome.errors())


def test_a_script_without_main_guard_fails_and_with_it_works():
    unguarded = pitfalls.run_script(pitfalls.UNGUARDED_SCRIPT, timeout=30)
    assert unguarded.returncode == 1
    assert any("An attempt has been made to start a new process before" in e for e in unguarded.errors())
    guarded = pitfalls.run_script(pitfalls.GUARDED_SCRIPT, timeout=30)
    expected = [workloads.cpu_bound(x) for x in range(4)]
    assert guarded.returncode == 0 and guarded.stdout.strip() == str(expected)


def test_a_script_on_stdin_cannot_start_spawn_workers():
    outcome = pitfalls.run_python(["-"], stdin=pitfalls.GUARDED_SCRIPT, timeout=30)
    assert outcome.returncode == 1
    assert any("<stdin>" in e for e in outcome.errors())


def test_one_row_per_task_is_correct_only_slow():
    a = np.arange(60.0).reshape(20, 3)
    assert pitfalls.one_row_per_task(a, 2) == [workloads.sum_of_squares(row) for row in a]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="fork exists on Linux and macOS only")
def test_a_notebook_function_works_under_fork():
    outcome = pitfalls.run_code(pitfalls.NOTEBOOK_FUNCTION.format(method="fork", pool_code=pitfalls.WITH_EXECUTOR),
                                timeout=30)
    assert outcome.returncode == 0 and outcome.stdout.strip() == str([x * x for x in range(8)])
