"""mpdemo.pitfalls: each reproduction fails the way the lesson says, inside its time limit."""

import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import mpdemo
from mpdemo import pitfalls, sandbox, workloads


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
    outcome = sandbox.run_code(code, timeout=4)
    assert outcome.timed_out and outcome.returncode is None
    assert "AttributeError: Can't get attribute 'square' on <module '__main__'" in "\n".join(outcome.errors())
    assert str(outcome).startswith("no answer after 4.0 s")
    assert process_group_is_gone(outcome.pid)
    assert semaphores() <= before  # the Pool's semaphores were removed by its resource tracker


def test_executor_with_a_notebook_function_raises_broken_process_pool(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # as in a Jupyter kernel: Python 3.13 would colour tracebacks
    code = pitfalls.NOTEBOOK_FUNCTION.format(method="spawn", pool_code=pitfalls.WITH_EXECUTOR)
    outcome = sandbox.run_code(code, timeout=30)
    assert not outcome.timed_out and outcome.returncode == 1
    assert any(e.startswith("concurrent.futures.process.BrokenProcessPool") for e in outcome.errors())


def test_a_script_without_main_guard_fails_and_with_it_works():
    unguarded = sandbox.run_script(pitfalls.UNGUARDED_SCRIPT, timeout=30)
    assert unguarded.returncode == 1
    assert any("An attempt has been made to start a new process before" in e for e in unguarded.errors())
    guarded = sandbox.run_script(pitfalls.GUARDED_SCRIPT, timeout=30)
    expected = [workloads.cpu_bound(x) for x in range(4)]
    assert guarded.returncode == 0 and guarded.stdout.strip() == str(expected)


def test_a_script_on_stdin_cannot_start_spawn_workers():
    outcome = sandbox.run_python(["-"], stdin=pitfalls.GUARDED_SCRIPT, timeout=30)
    assert outcome.returncode == 1
    assert any("<stdin>" in e for e in outcome.errors())


def test_one_row_per_task_is_correct_only_slow():
    a = np.arange(60.0).reshape(20, 3)
    assert pitfalls.one_row_per_task(a, 2) == [workloads.sum_of_squares(row) for row in a]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="fork exists on Linux and macOS only")
def test_a_notebook_function_works_under_fork():
    outcome = sandbox.run_code(pitfalls.NOTEBOOK_FUNCTION.format(method="fork", pool_code=pitfalls.WITH_EXECUTOR),
                                timeout=30)
    assert outcome.returncode == 0 and outcome.stdout.strip() == str([x * x for x in range(8)])


# ── Anti-pattern 2 and its repairs (lesson 03) ───────────────────────────────────────────────


def test_the_broken_pipeline_loses_rows_hangs_and_hides_errors():
    lost = sandbox.run_script(pitfalls.BROKEN_PIPELINE, "5000", "numbers", timeout=60)
    assert lost.returncode == 0 and lost.stdout.strip().endswith("2,000 results from 5,000 rows"), lost
    hung = sandbox.run_script(pitfalls.BROKEN_PIPELINE, "20000", "numbers", timeout=8)
    assert hung.timed_out and hung.stdout.strip().endswith("joining the workers"), hung  # read all it expected
    assert process_group_is_gone(hung.pid)
    hidden = sandbox.run_script(pitfalls.BROKEN_PIPELINE, "5000", "strings", timeout=60)
    assert hidden.returncode == 0 and hidden.stdout.strip().endswith("0 results from 5,000 rows"), hidden
    assert not hidden.errors()


def test_each_repair_fixes_its_failure():
    drained = sandbox.run_script(pitfalls.DRAINED_PIPELINE, "20000", "numbers", timeout=60)
    assert drained.returncode == 0 and drained.stdout.strip().endswith("20,000 results from 20,000 rows"), drained
    checked = sandbox.run_script(pitfalls.CHECKED_PIPELINE, "5000", "strings", timeout=60)
    [error] = checked.errors()  # the first row of whichever chunk came back first: 1, 1,001, …
    named = re.fullmatch(r"RuntimeError: row ([\d,]+): TypeError: can't multiply sequence by non-int of type 'str'",
                         error)
    assert checked.returncode == 1 and named and int(named.group(1).replace(",", "")) % 1_000 == 1, checked
    bounded = sandbox.run_script(pitfalls.BOUNDED_PIPELINE, "20000", "numbers", timeout=60)
    assert bounded.returncode == 0 and bounded.stdout.strip().endswith("20,000 results from 20,000 rows"), bounded


def test_edit_refuses_a_change_it_cannot_place():
    with pytest.raises(ValueError, match="expected exactly one 'no such line'"):
        pitfalls.edit(pitfalls.BROKEN_PIPELINE, ("no such line", "x"))
    assert "+    tasks, results = ctx.Queue(maxsize=2 * workers), ctx.Queue()   # bounded" in \
        pitfalls.diff(pitfalls.CHECKED_PIPELINE, pitfalls.BOUNDED_PIPELINE)


def test_shared_memory_mistakes_show_one_by_one_and_the_repairs_end_them():
    """Anti-pattern 3: each stage of lesson 04 fails as the lesson says, and the last one is right."""
    method = mpdemo.start_method()
    outcomes = {stage: sandbox.run_script(script, "20001", "2", method, timeout=60)
                for stage, script in pitfalls.SHARED_MEMORY_STAGES.items()}
    broken, imported, views_first, one_owner, all_rows, repaired = outcomes.values()
    assert broken.returncode == 1
    assert broken.errors() == ["AttributeError: module 'multiprocessing' has no attribute 'shared_memory'"]
    assert imported.returncode == -signal.SIGSEGV and "was killed by SIGSEGV" in str(imported)
    assert any(error.startswith("FileExistsError") for error in imported.errors())
    assert views_first.returncode == 0 and any(e.startswith("FileExistsError") for e in views_first.errors())
    assert re.search(r"^10,00[01] of 20,001 squares right$", views_first.stdout, re.M)  # one worker's rows
    assert one_owner.returncode == 0 and "20,000 of 20,001 squares right" in one_owner.stdout
    for outcome in (all_rows, repaired):
        assert outcome.returncode == 0 and "20,001 of 20,001 squares right" in outcome.stdout, outcome
        assert not outcome.errors() and "exit codes [0, 0]" in outcome.stdout
    assert "Lock()" not in pitfalls.REPAIRED_SHARED_MEMORY and "with lock" not in pitfalls.REPAIRED_SHARED_MEMORY


def test_unregistering_in_a_worker_breaks_the_owners_unlink():
    outcome = sandbox.run_script(pitfalls.UNREGISTER_IN_WORKER, mpdemo.start_method(), timeout=60)
    assert outcome.returncode == 0 and outcome.stdout.startswith("created, attached in a worker, unlinked")
    assert any(error.startswith("KeyError: '/psm_") for error in outcome.errors()), outcome.stderr
