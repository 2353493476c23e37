"""mpdemo.strategies: every contender gives the serial results; the guide and figures follow the numbers;
closing leaves no process, port or /dev/shm entry."""

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
        for run in contenders.runs(abs, range(-6, 6), chunksize=3) + [contenders.joblib_default(abs, range(3))]:
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
    assert comparison.chunksize == 15 and comparison.rows == 120 and comparison.pickling > 0
    lines = comparison.table().splitlines()
    assert [line.split("  ")[0].strip() for line in lines[1:]] == list(CONTENDERS)


def test_without_dask_the_others_still_run():
    runs = Contenders(2, dask=False).runs  # an unstarted one: its runs only need the pools it is given
    assert "dask" not in [run.label for run in runs(abs, [1], 1)]


def fake(times: dict[str, float], per_task_us: dict[str, float], pickling: float = 0.01) -> Comparison:
    """A comparison with made-up numbers: the guide and figures must follow them."""
    return Comparison(processes=2, rows=1_000, chunksize=125,
                      times={label: Measurement(label, (seconds, seconds * 1.1)) for label, seconds in times.items()},
                      per_task={lib: us / 1e6 for lib, us in per_task_us.items()},
                      equal={label: True for label in times if label != "serial"}, pickling=pickling)


TIMES = {"serial": 1.0, "vectorised": 0.05, "Pool": 0.52, "ProcessPoolExecutor": 0.55, "joblib": 0.6,
         "joblib, default batches": 0.9, "mpire": 0.5, "chunked_map": 0.53, "dask": 0.8}
TASKS = {"Pool": 50, "ProcessPoolExecutor": 300, "joblib": 500, "mpire": 200, "chunked_map": 350, "dask": 5_000}


def test_the_guide_is_phrased_from_the_numbers():
    guide = fake(TIMES, TASKS).guide().splitlines()
    assert guide[0] == ("1. Vectorise first. Whole-array NumPy was 20.00× faster than serial and 10.00× faster "
                        "than the fastest pool (mpire).")
    assert guide[1].startswith("2. Then chunk. One task cost from 50 µs (Pool) to 500 µs (joblib) beyond its work, "
                               "against 1,000 µs of work per row. In chunks of 125 rows, mpire was 2.00× faster")
    assert guide[2].startswith("3. Chunked, the pools were close: the slowest of Pool, ProcessPoolExecutor, joblib, "
                               "mpire took 1.20 times as long as the fastest, and chunked_map was 1.06× slower than "
                               "mpire. Choose a pool by what it does when things go wrong")
    assert guide[3] == ("   joblib left to batch by itself was 1.50× slower than with chunk-sized batches: it makes "
                        "one delayed call per row in the caller, and starts with small batches.")
    assert "took 10.0 ms, 2% of chunked_map's time: small here" in guide[4]
    assert guide[5].startswith("5. Scale out last. dask on this machine was 1.51× slower than chunked_map on a local "
                               "pool; one dask task cost 5,000 µs, 100 times a Pool task.")
    assert "worth removing" in fake(TIMES, TASKS, pickling=0.2).guide()
    assert "3. Chunked, the pools differed" in fake({**TIMES, "joblib": 1.5}, TASKS).guide()
    even = fake({**TIMES, "joblib, default batches": 0.6}, TASKS).guide().splitlines()[3]
    assert even == "   joblib left to batch by itself was about as fast as with chunk-sized batches (1.00×)."
    assert "5. Scale out" not in fake({k: v for k, v in TIMES.items() if k != "dask"}, TASKS).guide()


def test_figures_hold_chunked_map_against_the_fastest_other_pool():
    c1, c2, c3 = fake(TIMES, TASKS).figures()
    assert c1.name == "C1 chunked_map time / fastest other pool (mpire)"
    assert c1.ratio == pytest.approx(0.53 / 0.5) and c1.status == "PASS"
    assert c2.name == "C2 fastest parallel (mpire) vs serial (speedup)" and c2.ratio == pytest.approx(2.0)
    assert c3.ratio == pytest.approx(20.0) and c3.status == "info"
    slow = fake({**TIMES, "chunked_map": 0.6}, TASKS).figures()[0]
    assert slow.status == "MISS"
    wrong = fake(TIMES, TASKS)
    wrong.equal["mpire"] = False
    assert wrong.figures()[0].status == "FAIL" and "DIFFER" in wrong.table()
