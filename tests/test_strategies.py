"""mpdemo.strategies: every contender gives the serial results; the guide and figures follow the numbers;
closing leaves no process, port or /dev/shm entry."""

import os

import numpy as np
import psutil
import pytest

from mpdemo import strategies
from mpdemo.strategies import CONTENDERS, Comparison, Contenders
from mpdemo.timing import Measurement

LIBRARIES = {"Pool", "ProcessPoolExecutor", "joblib", "mpire", "chunked_map", "dask"}


def listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections("inet") if c.status == psutil.CONN_LISTEN}


# First, before the module's shared contenders exist: the leftover check then sees only this test's.
def test_close_stops_every_pool_and_the_cluster():
    before = listening_ports()
    with Contenders(2) as contenders:
        assert listening_ports() - before, "the dask scheduler listens on a port"
        runs = contenders.runs(abs, range(-6, 6), chunksize=3) + [contenders.joblib_default(abs, range(3))]
        for run in runs + contenders.block_runs(np.sum, [np.arange(3), np.arange(3, 6)]):
            run()  # every pool starts its workers
        assert len(psutil.Process().children(recursive=True)) >= 8
    assert listening_ports() == before
    # the conftest fails this test if a process or a /dev/shm entry is left


def test_a_failed_start_stops_what_did_start(monkeypatch):
    def no_mpire(**options):
        raise RuntimeError("mpire cannot start")

    monkeypatch.setattr(strategies, "WorkerPool", no_mpire)
    contenders = Contenders(2, dask=False)
    with pytest.raises(RuntimeError, match="mpire cannot start"):
        contenders.start()
    assert contenders.pool is None and contenders.executor is None  # the pools started before it are stopped
    # the conftest fails this test if their processes are still running


@pytest.fixture(scope="module")
def contenders():
    with Contenders(2) as started:
        for run in started.runs(abs, range(4), chunksize=1):
            run()  # start every library's workers now, not during a test
        yield started


def test_every_contender_gives_the_serial_results(contenders):
    comparison = strategies.measure_contenders(contenders, strategies.comparison_rows(120), rounds=1, empty_tasks=20)
    assert tuple(comparison.times) == CONTENDERS
    assert comparison.equal == {label: True for label in CONTENDERS[1:]}
    assert set(comparison.per_task) == LIBRARIES and all(s > 0 for s in comparison.per_task.values())
    assert comparison.chunksize == 15 and comparison.rows == 120 and comparison.tasks == 8
    assert set(comparison.pickling) == {"per row", "blocks"} and all(s > 0 for s in comparison.pickling.values())
    assert all(comparison.times[label].cores == 2 for label in CONTENDERS[2:])  # parallel: flagged above 2×
    assert comparison.times["serial"].cores is None and comparison.times["vectorised"].cores is None
    lines = comparison.table().splitlines()
    assert [line.split("  ")[0].strip() for line in lines[1:len(CONTENDERS) + 1]] == list(CONTENDERS)


def test_every_pool_runs_on_the_same_blocks_and_by_its_usual_call():
    assert CONTENDERS[:2] == ("serial", "vectorised")
    blocks = [label for label in CONTENDERS if label.endswith(", blocks")]
    assert [strategies.library(label) for label in blocks] == list(strategies.POOLS)
    usual = [label for label in CONTENDERS[2:] if label not in blocks]
    assert {strategies.library(label) for label in usual} == set(strategies.POOLS)
    assert strategies.form("chunked_map, slices") == "slices" and strategies.form("serial") == ""
    rows = strategies.comparison_rows(10)
    assert [len(b) for b in strategies.as_blocks(rows, 4)] == [4, 4, 2]


def test_without_dask_the_others_still_run():
    contenders = Contenders(2, dask=False)  # an unstarted one: its runs only need the pools it is given
    assert "dask" not in [run.label for run in contenders.runs(abs, [1], 1)]
    assert "dask" not in [run.label for run in contenders.block_runs(sum, [[1]])]


def fake(times: dict[str, float], per_task_us: dict[str, float], pickling: dict[str, float] | None = None,
         load: float | None = 0.2, serial_times: tuple[float, ...] | None = None) -> Comparison:
    """A comparison with made-up numbers: the guide and figures must follow them."""
    measured = {label: Measurement(label, (seconds, seconds * 1.02), 2 if strategies.form(label) else None)
                for label, seconds in times.items()}
    if serial_times:
        measured["serial"] = Measurement("serial", serial_times)
    return Comparison(processes=2, rows=1_000, chunksize=125, times=measured,
                      per_task={lib: us / 1e6 for lib, us in per_task_us.items()},
                      equal={label: True for label in times if label != "serial"},
                      pickling=pickling or {"per row": 0.05, "blocks": 0.01}, tasks=8, load=load)


TIMES = {"serial": 1.0, "vectorised": 0.05,
         "Pool, blocks": 0.52, "ProcessPoolExecutor, blocks": 0.55, "joblib, blocks": 0.6, "mpire, blocks": 0.5,
         "chunked_map, blocks": 0.53, "dask, blocks": 0.8,
         "Pool, per row": 0.6, "ProcessPoolExecutor, per row": 0.62, "joblib, per row": 0.7,
         "joblib, default batches": 1.05, "mpire, per row": 0.58, "chunked_map, slices": 0.54, "dask, slices": 0.82}
TASKS = {"Pool": 50, "ProcessPoolExecutor": 300, "joblib": 500, "mpire": 200, "chunked_map": 350, "dask": 5_000}


def test_the_guide_is_phrased_from_the_numbers():
    guide = fake(TIMES, TASKS).guide().splitlines()
    assert guide[0] == ("1. Vectorise first. Whole-array NumPy was 20.00× faster than serial and 10.00× faster "
                        "than the fastest pool (mpire, blocks).")
    assert guide[1] == ("2. Then chunk. One task cost from 50 µs (Pool) to 500 µs (joblib) beyond its work, "
                        "against 1,000 µs of work per row. In 8 tasks of up to 125 rows, the fastest pool "
                        "(mpire, blocks) was 2.00× faster than serial on 2 processes.")
    assert guide[2].startswith("3. Chunked, on the same blocks, the pools differed: the slowest of Pool, "
                               "ProcessPoolExecutor, joblib, mpire, chunked_map (joblib) took 1.20 times as long as "
                               "the fastest (mpire), 100 ms more. Its dearer tasks account for 2.4 ms of it (8 tasks × "
                               "300 µs); the rest was not measured apart here. Choose a pool by what it does")
    assert guide[3] == ("   Given the rows one by one, each library's usual call took 1.15× (Pool), 1.13× "
                        "(ProcessPoolExecutor), 1.17× (joblib), 1.16× (mpire) the time of the same library on blocks. "
                        "Pickling and unpickling the rows one by one took 50.0 ms, as blocks 10.0 ms: 40.0 ms more, "
                        "part of joblib's 100 ms gap (the rest is what it does per row besides pickling, not "
                        "measured apart here). chunked_map's usual call sends 2-D slices, the blocks' form: 1.02× "
                        "its time on blocks.")
    assert guide[4] == ("   joblib left to batch by itself was 1.50× slower than with batches of the chunk size: it "
                        "grows its batches from small ones, each a task of its own.")
    assert "took 10.0 ms, 1.9% of chunked_map's time on them: small here" in guide[5]
    assert guide[6].startswith("5. Scale out last. dask on this machine was 1.51× slower than chunked_map on a local "
                               "pool on the same blocks; one dask task cost 5,000 µs, 100 times a Pool task.")
    assert guide[7].startswith("6. Rows in a DataFrame or a Parquet file? Notebook 08")
    assert guide[8] == "   (This run: the serial loop's 2 rounds varied by 1%; the load average before the runs was " \
                       f"0.2 on {os.cpu_count()} cores.)"


def test_the_guide_attributes_each_gap_to_what_was_measured():
    near = {"Pool, blocks": 0.51, "ProcessPoolExecutor, blocks": 0.505, "joblib, blocks": 0.51, "chunked_map, blocks": 0.51}
    close = fake({**TIMES, **near}, TASKS).guide()
    assert "3. Chunked, on the same blocks, the pools were close: the slowest of" in close
    assert "within this run's noise" in close
    dear = fake({**TIMES, **near, "Pool, blocks": 0.6}, {**TASKS, "Pool": 20_000}).guide()
    assert "(Pool) took 1.20 times as long" in dear and "most of the gap" in dear
    cheap = fake({**TIMES, "Pool, blocks": 0.7}, {**TASKS, "Pool": 10}).guide()
    assert "Its tasks cost no more than mpire's, so per-task cost does not explain it" in cheap
    assert "worth removing" in fake(TIMES, TASKS, pickling={"per row": 0.3, "blocks": 0.2}).guide()
    pickled = fake(TIMES, TASKS, pickling={"per row": 0.2, "blocks": 0.01}).guide()
    assert "190.0 ms more, most of joblib's 100 ms gap." in pickled
    busy = fake({**TIMES, "Pool, blocks": 0.7}, TASKS, load=4.0 * (os.cpu_count() or 1)).guide()
    assert "other programs were busy" in busy  # said only when the load average measured it
    assert "busy" not in fake({**TIMES, "Pool, blocks": 0.7}, TASKS).guide()
    noisy = fake({**TIMES, **near, "joblib, blocks": 0.56}, TASKS, serial_times=(1.0, 1.3, 1.4)).guide()
    assert "the pools were close" in noisy and "rounds varied by 30%" in noisy
    per_row_no_slower = {"Pool, per row": 0.521, "ProcessPoolExecutor, per row": 0.5, "joblib, per row": 0.45,
                         "mpire, per row": 0.4, "chunked_map, slices": 0.31}
    short = fake({**TIMES, **per_row_no_slower}, TASKS).guide().splitlines()[3]  # seen on one core, small size
    assert "yet no library was slower per row than on blocks here, beyond the runs' noise (5%)." in short
    assert "gap" not in short.split("beyond")[0]  # no "most of Pool's 0 ms gap"
    assert "0.58× its time on blocks. The same data in the same form: a difference that large is the runs' noise" in short
    assert "The same data in the same form" not in fake(TIMES, TASKS).guide()  # 1.02×: within the noise
    even = fake({**TIMES, "joblib, default batches": 0.7}, TASKS).guide().splitlines()[4]
    assert even == "   joblib left to batch by itself was about as fast as with batches of the chunk size (1.00×)."
    assert "5. Scale out" not in fake({k: v for k, v in TIMES.items() if not k.startswith("dask")}, TASKS).guide()


def test_speedups_above_the_cores_are_flagged_where_they_are_printed():
    comparison = fake({**TIMES, "Pool, blocks": 0.4}, TASKS)
    table = comparison.table()
    assert "Pool, blocks" in table and "2.50× *" in table
    assert "* Pool, blocks: more than 2 cores can give, so not the pool's doing" in table
    assert "2.50× faster than serial (more than 2 cores can give" in comparison.guide()
    assert "*" not in fake(TIMES, TASKS).table()


def test_fastest_names_the_fastest_contender_of_all():
    assert fake({**TIMES, "chunked_map, slices": 0.3}, TASKS).fastest() == "chunked_map, slices"


def test_figures_hold_chunked_map_against_the_fastest_other_pool_on_the_same_blocks():
    c1, c1b, c2, c3 = fake(TIMES, TASKS).figures()
    assert c1.name == "C1 chunked_map time / fastest other pool, same blocks (mpire)"
    assert c1.ratio == pytest.approx(0.53 / 0.5) and c1.status == "PASS"
    assert c1b.name == "C1b chunked_map's usual call / fastest other pool's usual call (mpire)"
    assert c1b.ratio == pytest.approx(0.54 / 0.58) and c1b.status == "info"
    assert c2.name == "C2 fastest parallel (mpire, blocks) vs serial (speedup)" and c2.ratio == pytest.approx(2.0)
    assert c3.ratio == pytest.approx(20.0) and c3.status == "info"
    slow = fake({**TIMES, "chunked_map, blocks": 0.6}, TASKS).figures()[0]
    assert slow.status == "MISS"
    wrong = fake(TIMES, TASKS)
    wrong.equal["mpire, blocks"] = False
    assert wrong.figures()[0].status == "FAIL" and "DIFFER" in wrong.table()


def test_on_one_process_the_guide_says_joblib_ran_in_the_caller():
    one = fake(TIMES, {**TASKS, "joblib": 5})
    one.processes = 1
    guide = one.guide()
    assert "joblib starts no worker (n_jobs=1): it runs every call in the caller" in guide
    assert "One task cost from 50 µs (Pool)" in guide  # joblib's 5 µs is no task of a pool
    assert "joblib starts no worker" not in fake(TIMES, TASKS).guide()
