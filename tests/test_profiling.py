"""mpdemo.profiling and the lesson-06 row functions: profiles name the hot spot; a timeline times its parts."""

import numpy as np
import pytest
from line_profiler import LineProfiler

from mpdemo import chunked_map, profiling, workloads
from mpdemo.data import make_array
from mpdemo.timing import Timeline

ROWS = make_array(40, 60)


def test_the_fixed_and_the_vectorised_row_functions_agree_with_the_slow_one():
    slow = [workloads.row_score(row) for row in ROWS]
    assert np.allclose([workloads.row_score_fast(row) for row in ROWS], slow)
    assert np.allclose(workloads.row_scores(ROWS), slow)
    assert any(score > 0 for score in slow)  # the rows do have peaks, so the comparison means something


def test_a_constant_row_scores_zero_everywhere():
    flat = np.full((2, 30), 7.0)
    assert workloads.row_score(flat[0]) == workloads.row_score_fast(flat[0]) == 0.0
    assert workloads.row_scores(flat).tolist() == [0.0, 0.0]


def test_cprofile_names_the_moving_average_as_the_hot_spot():
    name, share = profiling.hottest_function(profiling.profile_calls(workloads.row_score, ROWS))
    assert name == "moving_average" and 0.3 < share <= 1.0


def test_line_profiler_names_the_inner_loop():
    profiler = LineProfiler(workloads.moving_average)
    profiled = profiler(workloads.row_score)
    for row in ROWS:
        profiled(row)
    number, text, share = profiling.hottest_line(profiler, workloads.moving_average)
    assert text in ("total += values[i + j]", "for j in range(window):") and 0.2 < share <= 1.0
    assert number > workloads.moving_average.__code__.co_firstlineno


def test_a_timeline_splits_a_parallel_run_into_computing_pickling_and_waiting(pool):
    timeline = Timeline()
    results = chunked_map(workloads.row_score, ROWS, processes=2, chunksize=7, executor=pool, timeline=timeline)
    assert results == [workloads.row_score(row) for row in ROWS]
    assert sorted(r.items for r in timeline.records) == [5] + [7] * 5
    for r in timeline.records:
        assert 0 < r.pickling < r.seconds and r.computing > 0 and r.caller_pickling > 0
        assert timeline.began <= r.start <= r.end
    parts = timeline.breakdown()
    assert list(parts)[-1] == "caller" and len(parts) == len(timeline.workers()) + 1
    for name, part in parts.items():
        if name != "caller":
            assert sum(part.values()) == pytest.approx(timeline.span())


def test_time_split_draws_each_process_as_shares_of_the_run_not_a_timeline():
    from mpdemo import plots
    from mpdemo.timing import TaskRecord

    timeline = Timeline(began=100.0)
    timeline.append(TaskRecord(11, 100.0, 101.0, 5, pickling=0.25, caller_pickling=0.1))
    timeline.append(TaskRecord(22, 100.5, 102.0, 5, pickling=0.5, caller_pickling=0.1))
    figure = plots.time_split(timeline)
    ax = figure.axes[0]
    assert ax.get_xlim() == (0, 100) and "share of the whole run (2.000 s)" in ax.get_xlabel()
    assert "not a timeline" in ax.get_xlabel()
    assert [label.get_text() for label in ax.get_yticklabels()] == ["worker 1", "worker 2", "caller"]
    widths: dict[float, float] = {}
    for bar in ax.patches:
        widths[round(bar.get_y(), 3)] = widths.get(round(bar.get_y(), 3), 0.0) + bar.get_width()
    assert all(total == pytest.approx(100) for total in widths.values()) and len(widths) == 3
    texts = {text.get_text() for text in ax.texts}
    assert {"38%", "12%", "50%", "25%", "90%"} <= texts  # worker 1: 0.75 s computing, 0.25 pickling, 1 waiting
