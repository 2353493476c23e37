"""mpdemo.shm: SharedArray's life (create, send, attach, close, unlink) and parallel_apply.

After every test the root conftest checks that no block is left in /dev/shm; the tests here
check what happens in between, and what the resource tracker says (nothing, on stderr).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mpdemo import pitfalls, shm, workloads
from mpdemo.blocks import row_blocks
from mpdemo.errors import BlockError
from mpdemo.sandbox import run_script
from mpdemo.shm import SharedArray, parallel_apply

SHM = Path("/dev/shm")
linux_only = pytest.mark.skipif(not SHM.is_dir(), reason="reads /dev/shm (Linux)")


def fill_with(shared: SharedArray, value: float) -> int:
    """Runs in a worker: write ``value`` into every element of the shared array; return the pid."""
    shared.array[...] = value
    return os.getpid()


def shape_and_dtype(shared: SharedArray) -> tuple:
    """Runs in a worker: what the received handle says."""
    return shared.array.shape, str(shared.array.dtype), shared.owner


def double(block: np.ndarray) -> np.ndarray:
    return block * 2


def lock_result(block: np.ndarray):
    """A block function whose result cannot be pickled."""
    return __import__("threading").Lock()


def drop_and_collect(shared: SharedArray) -> None:
    """Runs in a forked child, which has a copy of the owner itself: drop it and collect it."""
    del shared
    gc.collect()


def mapped(name: str) -> bool:
    """Whether this process still maps the block (``/proc/self/maps`` lists it, deleted or not)."""
    return name in Path("/proc/self/maps").read_text()


# ── SharedArray ──────────────────────────────────────────────────────────────────────────────


def test_from_array_copies_and_describes_itself():
    source = np.arange(12, dtype=np.int32).reshape(3, 4)
    with SharedArray.from_array(source) as shared:
        assert np.array_equal(shared.array, source)
        assert (shared.shape, shared.dtype, shared.owner) == ((3, 4), np.dtype(np.int32), True)
        assert shared.name and repr(shared) == f"SharedArray(name={shared.name!r}, shape=(3, 4), dtype=int32, owner)"
        assert np.shares_memory(shared.array, shared.array[1:])
        assert not np.shares_memory(shared.array, source)  # a copy of it, in the block


def test_create_gives_zeros_of_any_shape_even_empty():
    with SharedArray.create((2, 3), np.float32) as shared:
        assert shared.array.dtype == np.float32 and not shared.array.any()
    with SharedArray.create(0) as empty:
        assert empty.array.shape == (0,)


def test_object_arrays_cannot_be_shared():
    with pytest.raises(TypeError, match="pointers into one process's memory"):
        SharedArray.create(3, object)


@linux_only
def test_the_block_is_its_owners_only():
    with SharedArray.create(10) as shared:
        assert (SHM / shared.name).stat().st_mode & 0o777 == 0o600


def test_pickling_sends_a_handle_not_the_data():
    with SharedArray.create((1000, 1000)) as shared:  # 8 MB
        handle = pickle.dumps(shared)
        assert len(handle) < 300
        received = pickle.loads(handle)
        assert not received.owner and "not attached yet" in repr(received)
        received.array[0, 0] = 42.0  # attaches on first use: the same memory
        assert shared.array[0, 0] == 42.0


def test_a_spawned_worker_writes_into_the_callers_array(executor):
    with SharedArray.create((4, 5)) as shared:
        worker = executor.submit(fill_with, shared, 7.0).result(timeout=60)
        assert worker != os.getpid()
        assert (shared.array == 7.0).all()


def test_shape_and_dtype_travel_in_the_handle_not_in_the_blocks_size(executor):
    with SharedArray.create(3, np.float32) as shared:  # 12 bytes; the mapping is a whole page
        assert executor.submit(shape_and_dtype, shared).result(timeout=60) == ((3,), "float32", False)


def test_closing_with_a_live_view_keeps_the_view_valid_and_removes_the_name():
    shared = SharedArray.from_array(np.arange(5.0))
    view = shared.array[1:]
    shared.close()  # must neither raise BufferError nor unmap under `view`
    assert view.sum() == 10.0
    assert not shm.exists(shared.name)
    with pytest.raises(ValueError, match="closed"):
        shared.array  # noqa: B018
    with pytest.raises(ValueError, match="cannot be sent"):
        pickle.dumps(shared)
    shared.close()  # twice: nothing happens
    if SHM.is_dir():
        assert mapped(shared.name)
        del view
        gc.collect()
        assert not mapped(shared.name), "the last view is gone, but the block is still mapped"


def test_an_exception_inside_the_with_block_still_unlinks():
    with pytest.raises(RuntimeError), SharedArray.create(10) as shared:
        raise RuntimeError("boom")
    assert not shm.exists(shared.name)


def test_keyboard_interrupt_inside_the_with_block_still_unlinks():
    with pytest.raises(KeyboardInterrupt), SharedArray.create(10) as shared:
        raise KeyboardInterrupt
    assert not shm.exists(shared.name)


def test_an_owner_dropped_without_with_unlinks_when_collected():
    shared = SharedArray.create(10)
    name = shared.name
    del shared
    gc.collect()
    assert not shm.exists(name)


def test_a_handle_to_a_removed_block_says_why_it_is_missing():
    with SharedArray.create(10) as shared:
        handle = pickle.dumps(shared)
    with pytest.raises(FileNotFoundError, match="no shared-memory block is called .* any more"):
        pickle.loads(handle).array  # noqa: B018


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_childs_copy_of_the_owner_does_not_unlink():
    with SharedArray.create(10) as shared:
        child = multiprocessing.get_context("fork").Process(target=drop_and_collect, args=(shared,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert shm.exists(shared.name)


LIFECYCLE = """
import gc
import numpy as np
from mpdemo import shm
from mpdemo.shm import SharedArray, parallel_apply

def main():
    with SharedArray.from_array(np.arange(10_000.0).reshape(100, 100)) as shared:
        sums = parallel_apply(np.sum, shared, processes=2)
        kept = shared.array[:10]
    print("sums:", sum(sums) == np.arange(10_000.0).sum(), "kept:", kept.sum())
    forgotten = SharedArray.create(5)          # never closed: unlinked at exit
    view_kept = SharedArray.create(5).array    # the owner is gone, its view lives on to the exit

if __name__ == "__main__":
    main()
"""


def test_the_resource_tracker_has_nothing_to_say():
    """No "leaked shared_memory" warning, no KeyError traceback, no ignored exception: stderr is empty."""
    outcome = run_script(LIFECYCLE, timeout=120)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.strip() == "sums: True kept: 499500.0"
    assert outcome.stderr == ""


@pytest.mark.skipif(sys.platform == "win32", reason="no resource tracker on Windows")
def test_a_process_with_its_own_tracker_removes_a_plain_attach_but_not_a_handle():
    """CPython gh-82300, which notebook 04 shows: a plain attach in an unrelated process unlinks the
    block when that process exits; our attach does not register, so the block survives."""
    with SharedArray.create(10) as shared:
        ours = run_script(pitfalls.ATTACH_ELSEWHERE, "handle", shared.name, timeout=60)
        assert ours.returncode == 0 and ours.stderr == ""
        assert shm.exists(shared.name)
        plain = run_script(pitfalls.ATTACH_ELSEWHERE, "plain", shared.name, timeout=60)
        assert plain.returncode == 0 and "leaked shared_memory" in plain.stderr
        assert not shm.exists(shared.name)  # gone from under its owner, which still maps it
        assert shared.array.shape == (10,)
    # the owner's unlink found nothing to remove, and said nothing (checked by the next test too)


@linux_only
def test_unlinking_a_block_someone_else_removed_is_quiet():
    code = textwrap.dedent("""
        import os
        from mpdemo.shm import SharedArray
        shared = SharedArray.create(10)
        os.unlink(f"/dev/shm/{shared.name}")   # as another process's own tracker does (gh-82300)
        shared.close()
        print("closed")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "closed" and done.stderr == "", done.stderr


# ── row_blocks and parallel_apply ────────────────────────────────────────────────────────────


@pytest.mark.parametrize("rows, count", [(10, 3), (7, 7), (100, 1), (3, 8), (0, 4), (1001, 2)])
def test_row_blocks_cover_every_row_once_in_order(rows, count):
    blocks = row_blocks(rows, count)
    covered = [row for start, stop in blocks for row in range(start, stop)]
    assert covered == list(range(rows))
    assert all(stop > start for start, stop in blocks) and len(blocks) == min(count, rows)
    sizes = [stop - start for start, stop in blocks]
    assert not sizes or max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("rows", [1001, 7, 1])
@pytest.mark.parametrize("processes, blocks", [(2, None), (3, None), (2, 5)])
def test_results_equal_serial_for_rows_not_divisible_by_the_processes(rows, processes, blocks):
    array = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3)
    expected = [np.sum(array[start:stop]) for start, stop in row_blocks(rows, blocks or processes)]
    assert parallel_apply(np.sum, array, processes=processes, blocks=blocks) == expected


def test_a_reduction_from_per_block_partials(pool):
    array = np.arange(1001.0)
    with SharedArray.from_array(array) as shared:
        partials = parallel_apply(np.sum, shared, processes=2, blocks=4, executor=pool)
    assert len(partials) == 4 and sum(partials) == array.sum()


def test_out_receives_every_row_written_by_the_workers(pool):
    array = np.random.default_rng(1).standard_normal((1001, 4))
    with SharedArray.from_array(array) as shared, SharedArray.create(array.shape) as out:
        written = parallel_apply(double, shared, processes=2, blocks=3, out=out, executor=pool)
        assert written is out.array and np.array_equal(out.array, array * 2)


def test_a_thread_pool_works_on_the_owners_own_array():
    with SharedArray.from_array(np.arange(10.0)) as shared:
        with ThreadPoolExecutor(2) as threads:
            assert parallel_apply(np.sum, shared, processes=2, executor=threads) == [10.0, 35.0]
        assert shared.owner and shm.exists(shared.name)  # the threads did not close it


def test_no_rows_no_work():
    assert parallel_apply(np.sum, np.zeros((0, 3)), processes=2) == []


@pytest.mark.parametrize("kwargs, error, message", [
    ({"out": np.zeros(5)}, TypeError, "out= must be a SharedArray"),
    ({"out": "later"}, TypeError, "not str"),
])
def test_bad_out_is_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        parallel_apply(np.sum, np.zeros(5), processes=2, **kwargs)


def test_out_with_other_rows_and_a_scalar_are_refused():
    with SharedArray.create(4) as out, pytest.raises(ValueError, match="out has shape"):
        parallel_apply(double, np.zeros(5), processes=2, out=out)
    with pytest.raises(ValueError, match="at least one dimension"):
        parallel_apply(np.sum, np.float64(3.0), processes=2)


def test_a_failing_block_names_its_rows_and_chains_the_cause(pool):
    with pytest.raises(BlockError, match=r"rows 500–999 raised ValueError: cannot process") as raised:
        parallel_apply(workloads.fail_on_block, np.arange(1000.0), processes=2, executor=pool)
    assert isinstance(raised.value.__cause__, ValueError)
    assert "fail_on_block" in str(raised.value.__cause__.__cause__)  # the worker's traceback


def test_a_block_removed_meanwhile_is_named_not_a_dead_worker(pool):
    shared = SharedArray.create(10)
    handle = pickle.loads(pickle.dumps(shared))
    shared.close()
    with pytest.raises(BlockError, match="no shared-memory block is called"):
        parallel_apply(np.sum, handle, processes=2, executor=pool)


# ── Bad shapes, a small /dev/shm, bad settings (issue 14) ────────────────────────────────────


@pytest.mark.parametrize("shape, dtype, message", [
    ((-1,), "f8", r"shape \(-1,\) must be whole numbers of at least 0"),
    ((2, -3), "f8", r"shape \(2, -3\) must be whole numbers of at least 0"),
    ((2.5,), "f8", r"shape \(2.5,\) must be whole numbers"),
    ((4,), "V0", r"dtype V0 has items of 0 bytes"),
    ((4,), object, r"holds pointers into one process's memory"),
])
def test_a_bad_shape_or_dtype_is_refused_before_any_block_is_made(shape, dtype, message):
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    with pytest.raises((ValueError, TypeError), match=message):
        SharedArray.create(shape, dtype)
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not {name for name in after - before if name.startswith("psm_")}


@pytest.mark.parametrize("kwargs, message", [
    ({"processes": 2.5}, "processes must be a whole number of at least 1, got 2.5"),
    ({"blocks": 0}, "blocks must be a whole number of at least 1, got 0"),
])
def test_parallel_apply_refuses_bad_settings_as_chunked_map_does(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parallel_apply(np.sum, np.ones((4, 2)), **kwargs)


SMALL_SHM = """
import numpy as np
import mpdemo
from mpdemo import workloads
from multiprocessing import shared_memory


def main():
    for what, make in [("create", lambda: mpdemo.SharedArray.create((2**25,), "f8")),
                       ("from_array", lambda: mpdemo.SharedArray.from_array(np.ones(2**25))),
                       ("parallel_apply", lambda: mpdemo.parallel_apply(np.sum, np.ones((2**22, 8)), processes=2)),
                       ("80 TB", lambda: mpdemo.SharedArray.create((10 * 2**40,), "f8"))]:
        try:
            make()
            print(what, "no error")
        except mpdemo.NotEnoughSharedMemory as error:
            print(what, "NotEnoughSharedMemory:", error)
    # A block made without mpdemo, larger than /dev/shm: the worker that writes it dies of SIGBUS.
    block = shared_memory.SharedMemory(create=True, size=2**27)
    try:
        mpdemo.chunked_map(workloads.fill_block, [block.name], processes=1)
    except mpdemo.WorkerDied as error:
        print("WorkerDied:", error)
    finally:
        block.close()
        block.unlink()


if __name__ == "__main__":  # spawn workers import this file again
    main()
"""


@pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("unshare"),
                    reason="a private 64 MB /dev/shm needs root and unshare")
@pytest.mark.timeout(120)
def test_a_block_larger_than_dev_shm_is_an_error_never_a_bus_error(tmp_path):
    script = tmp_path / "small_shm.py"
    script.write_text(SMALL_SHM)
    inner = f"mount -t tmpfs -o size=64m tmpfs /dev/shm && {sys.executable} {script}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=100,
                          env={**os.environ, "PYTHON_COLORS": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for what in ("create", "from_array", "parallel_apply", "80 TB"):
        line = next(line for line in lines if line.startswith(what + " "))
        assert "NotEnoughSharedMemory: a shared-memory block of" in line, line
        assert "/dev/shm has" in line and "--shm-size" in line and "memory-mapped" in line, line
    died = next(line for line in lines if line.startswith("WorkerDied"))
    assert "was killed by SIGBUS" in died and "/dev/shm" in died and "--shm-size" in died, died
