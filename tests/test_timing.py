"""mpdemo.timing: measurements, speedup tables, timelines and Amdahl's law."""

import os
import time

import pytest

from mpdemo import chunked_map, workloads
from mpdemo.timing import (Measurement, TaskRecord, Timeline, amdahl_speedup, compare, describe_speedup,
                           fit_serial_fraction, measure, speedup_table)


def test_measure_warms_up_then_times_each_repeat():
    calls = []
    m = measure(calls.append, "x", repeats=4, warmup=2, label="append")
    assert len(calls) == 6
    assert m.label == "append" and len(m.times) == 4
    assert m.best == min(m.times) <= m.median


def test_compare_takes_turns_and_keeps_every_time():
    calls = []
    measured = compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert list(measured) == ["a", "b"]
    assert all(len(m.times) == 3 and m.label == label for label, m in measured.items())


def test_measure_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        measure(print, repeats=0)


def test_speedup_table_divides_the_baseline_by_each_time():
    table = speedup_table([Measurement("serial", (2.0, 2.2)), Measurement("processes", (1.0, 1.5)),
                           Measurement("threads", (4.0,))])
    lines = table.splitlines()
    assert "speedup vs serial" in lines[0]
    assert lines[1].startswith("serial") and lines[1].endswith("1.00×")
    assert lines[2].endswith("2.00×") and lines[3].endswith("0.50×")
    other_baseline = speedup_table([Measurement("a", (1.0,)), Measurement("b", (4.0,))], baseline="b")
    assert other_baseline.splitlines()[1].endswith("4.00×")


@pytest.mark.parametrize("speedup, words", [
    (1.93, "1.93× faster than serial"), (0.8, "1.25× slower than serial"),
    (1.02, "about as fast as serial (1.02×)"), (0.96, "about as fast as serial (0.96×)"),
])
def test_describe_speedup_puts_ratios_in_words(speedup, words):
    assert describe_speedup(speedup) == words
    assert describe_speedup(2.0, than="the loop") == "2.00× faster than the loop"


def test_timeline_summarises_busy_time_and_utilisation():
    tl = Timeline(began=100.0)
    tl.append(TaskRecord(pid=7, start=100.0, end=102.0, items=10))
    tl.append(TaskRecord(pid=8, start=101.0, end=102.0, items=5))
    tl.append(TaskRecord(pid=7, start=102.0, end=104.0, items=10))
    assert tl.workers() == [7, 8]
    assert tl.span() == 4.0
    assert tl.busy() == {7: 4.0, 8: 1.0}
    assert tl.utilisation() == pytest.approx(5 / 8)
    assert tl.summary() == "3 tasks on 2 workers in 4.000 s; workers were busy 62% of the time"
    assert Timeline().utilisation() == 0.0


def test_timeline_timestamps_agree_across_processes():
    tl = Timeline(began=0.0)
    before = time.time()
    chunked_map(workloads.io_bound, range(8), processes=2, chunksize=1, timeline=tl)
    after = time.time()
    assert len(tl.records) == 8 and sum(r.items for r in tl.records) == 8
    assert os.getpid() not in tl.workers()
    assert before <= tl.began  # chunked_map sets the start of its own run
    for r in tl.records:
        assert tl.began <= r.start <= r.end <= after
        assert r.seconds >= 0.009  # io_bound sleeps 10 ms per item


def test_amdahl_and_its_fit_agree():
    assert amdahl_speedup(1, 0.3) == pytest.approx(1.0)
    assert amdahl_speedup(4, 0.0) == pytest.approx(4.0)
    assert amdahl_speedup(1_000_000, 0.1) == pytest.approx(10.0, rel=1e-3)
    processes = [1, 2, 4, 8]
    assert fit_serial_fraction(processes, [amdahl_speedup(p, 0.2) for p in processes]) == pytest.approx(0.2)
    assert fit_serial_fraction([1], [1.0]) == 0.0
    assert fit_serial_fraction([2, 4], [0.5, 0.5]) == 1.0  # slower than serial: clipped


def test_task_records_made_the_old_way_have_no_pickling_measured():
    r = TaskRecord(7, 1.0, 3.0, 10)
    assert (r.pickling, r.caller_pickling, r.computing) == (0.0, 0.0, 2.0)


def test_breakdown_splits_every_process_into_computing_pickling_and_waiting():
    tl = Timeline(began=100.0)
    tl.append(TaskRecord(7, 100.0, 102.0, 10, pickling=0.5, caller_pickling=0.25))
    tl.append(TaskRecord(8, 101.0, 102.0, 5, pickling=0.25, caller_pickling=0.25))
    tl.append(TaskRecord(7, 102.5, 104.0, 10))  # pickling not measured: it stays in the waiting
    assert tl.breakdown() == {
        "pid 7": {"computing": 3.0, "pickling": 0.5, "waiting": 0.5},
        "pid 8": {"computing": 0.75, "pickling": 0.25, "waiting": 3.0},
        "caller": {"computing": 0.0, "pickling": 0.5, "waiting": 3.5},
    }


def test_a_speedup_above_the_cores_is_said_to_be_no_pools_doing():
    assert describe_speedup(1.9, cores=2) == "1.90× faster than serial"
    text = describe_speedup(2.2, cores=2)
    assert text.startswith("2.20× faster than serial (more than 2 cores can give, so not the pool's doing")
    assert "not the pool's doing" not in describe_speedup(12.0)  # without cores (threads waiting): no judgement


def test_speedup_table_marks_an_impossible_row_and_says_why():
    rows = [Measurement("serial", (2.2,)), Measurement("2 processes", (1.0,), cores=2),
            Measurement("NumPy", (0.1,))]
    table = speedup_table(rows)
    assert "2.20× *" in table and "22.00×" in table and "22.00× *" not in table
    assert table.splitlines()[-1].startswith("* 2 processes: more than 2 cores can give")


def test_a_time_below_the_best_is_called_noise():
    from mpdemo.timing import versus_best

    assert versus_best(0.93, 1.0).startswith("0.93× the time of the sweep's best: faster than that best")
    assert "within the 5%" in versus_best(1.03, 1.0)
    assert versus_best(1.5, 1.0) == "1.50× the time of the sweep's best"


def test_a_fit_to_one_ratio_says_it_is_an_extrapolation():
    from mpdemo.timing import fit_confidence

    assert fit_confidence([1, 2]).startswith("one ratio (1 against 2 processes) decides the whole curve")
    assert fit_confidence([1, 2, 4, 8]).startswith("fitted to 3 ratios (up to 8 processes)")
