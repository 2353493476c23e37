"""mpdemo.widgets and mpdemo.plots: the explorer's callbacks and the figures, without a browser."""

from dataclasses import replace

import pytest
from matplotlib.figure import Figure

from mpdemo import context, experiments, plots, widgets
from mpdemo.timing import Measurement, TaskRecord, Timeline

PNG_MAGIC = b"\x89PNG"


def test_explore_runs_serial_and_parallel_and_agrees():
    run = experiments.chunking_experiment(processes=2, chunksize=8, cost_us=30, rows=300)
    assert run.same_results
    assert run.serial_seconds > 0 and run.parallel_seconds > 0
    assert run.speedup == pytest.approx(run.serial_seconds / run.parallel_seconds)
    assert sum(r.items for r in run.timeline.records) == 300
    assert len(run.timeline.records) == 38  # ceil(300 / 8)


def test_describe_reports_times_speedup_and_agreement(monkeypatch):
    monkeypatch.setattr(experiments, "cpu_count", lambda: 2)
    tl = Timeline(began=0.0, records=[TaskRecord(1, 0.0, 1.0, 10)])
    run = experiments.ChunkingRun(2, 8, 30, 10, serial_seconds=2.0, parallel_seconds=1.0, timeline=tl,
                              same_results=True)
    text = experiments.describe_chunking(run)
    assert "serial <b>2.000 s</b>" in text and "2 processes <b>1.000 s</b>" in text
    assert "<b>2.00× faster than serial</b>" in text
    assert "results equal serial: True" in text
    slower = experiments.describe_chunking(replace(run, parallel_seconds=4.0))
    assert "<b>2.00× slower than serial</b>" in slower
    assert "about as fast as serial (1.01×)" in experiments.describe_chunking(replace(run, parallel_seconds=1.98))


def test_describe_says_a_speedup_beyond_the_cores_is_not_the_pools_doing(monkeypatch):
    tl = Timeline(began=0.0, records=[TaskRecord(1, 0.0, 1.0, 10)])
    run = experiments.ChunkingRun(2, 8, 30, 10, serial_seconds=2.5, parallel_seconds=1.0, timeline=tl,
                              same_results=True)
    monkeypatch.setattr(experiments, "cpu_count", lambda: 2)
    assert "2.50× faster than serial (more than 2 cores can give, so not the pool's doing" in \
        experiments.describe_chunking(run)
    monkeypatch.setattr(experiments, "cpu_count", lambda: 1)  # 2 processes on one core: 1 core's worth
    assert "more than 1 cores can give" in experiments.describe_chunking(replace(run, serial_seconds=1.5))


def test_sliders_cover_the_settings():
    explorer = widgets.chunking_explorer()
    assert (explorer.processes.min, explorer.processes.max) == (1, context.cpu_count())
    assert explorer.chunksize.options[0] == 1 and explorer.chunksize.options[-1] == 4096
    assert explorer.readout.value == "Choose settings, then press <b>Run</b>."
    assert bytes(explorer.picture.value) == b"" and explorer.picture.layout.display == "none"


def test_run_button_shows_the_new_settings_result():
    explorer = widgets.chunking_explorer()
    explorer.rows.value, explorer.cost_us.value, explorer.chunksize.value = 500, 30, 4
    explorer.run_button.click()
    first_text, first_picture = explorer.readout.value, bytes(explorer.picture.value)
    assert "than serial" in first_text or "as fast as serial" in first_text
    assert "results equal serial: True" in first_text
    assert "125 tasks" in first_text
    assert first_picture.startswith(PNG_MAGIC) and explorer.picture.layout.display == ""
    assert not explorer.run_button.disabled

    explorer.chunksize.value = 128
    explorer.run_button.click()
    assert "4 tasks" in explorer.readout.value
    assert bytes(explorer.picture.value) != first_picture


def test_a_failing_run_says_so_in_the_readout(monkeypatch):
    def broken(*args):
        raise RuntimeError("no cores left")

    monkeypatch.setattr(experiments, "chunking_experiment", broken)
    explorer = widgets.chunking_explorer()
    explorer.run_button.click()
    assert explorer.readout.value == "<b>run failed</b>: RuntimeError: no cores left"
    assert not explorer.run_button.disabled


def legend_texts(figure: Figure) -> list[str]:
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_bars_label_each_speedup():
    fig = plots.bars([Measurement("serial", (2.0,)), Measurement("processes", (1.0,))])
    assert [t.get_text() for t in fig.axes[0].texts] == [" 1.00×", " 2.00×"]
    assert fig.axes[0].get_xscale() == "linear"


def test_bars_mark_a_speedup_beyond_the_cores_and_can_use_a_log_axis():
    fig = plots.bars([Measurement("serial", (2.2,)), Measurement("2 processes", (1.0,), cores=2),
                      Measurement("NumPy", (0.01,))], log=True)
    assert [t.get_text() for t in fig.axes[0].texts] == [" 1.00×", " 2.20× *", " 220.00×"]
    assert fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_xlim()[0] < 0.01  # the shortest bar shows
    assert "* more than its cores can give" in fig.axes[0].get_xlabel()


def test_speedup_curve_shows_ideal_amdahl_and_measured():
    fig = plots.speedup_curve([1, 2], [1.0, 1.6])
    texts = legend_texts(fig)
    assert texts[0] == "ideal (speedup = processes)" and texts[3] == "measured"
    assert texts[1] == "Amdahl, serial fraction 25.0%"  # 1/1.6 - 1/2 = s · (1 - 1/2)
    assert texts[2] == "the same, extrapolated beyond 2 processes"
    fitted, extrapolated = fig.axes[0].get_lines()[1:3]
    assert list(fitted.get_xdata()) == [1, 2] and fitted.get_linestyle() == "-"
    assert list(extrapolated.get_xdata()) == list(range(2, 9)) and extrapolated.get_linestyle() == "--"


def test_speedup_curve_of_one_process_fits_nothing():
    assert legend_texts(plots.speedup_curve([1], [1.0])) == ["ideal (speedup = processes)", "measured"]


def test_sweep_marks_the_fastest_chunksize():
    fig = plots.sweep({1: Measurement("1", (3.0,)), 64: Measurement("64", (0.5,)), 4096: Measurement("4096", (2.0,))})
    assert legend_texts(fig) == ["fastest: chunksize 64"]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"  # 6× apart


def test_sweep_keeps_a_narrow_range_of_times_on_a_linear_axis():
    fig = plots.sweep({1: Measurement("1", (0.63,)), 64: Measurement("64", (0.46,)), 4096: Measurement("4096", (0.5,))})
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylim()[0] == 0


def test_timeline_draws_one_bar_per_task_and_one_row_per_worker():
    tl = Timeline(began=0.0, records=[TaskRecord(7, 0.0, 1.0, 5), TaskRecord(8, 0.5, 2.0, 5),
                                      TaskRecord(7, 1.0, 1.5, 5)])
    fig = plots.timeline(tl)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker 1", "worker 2"]  # numbers, not pids
    first, second = (p for p in ax.patches if p.get_y() < 0.5)  # worker 1's two tasks, side by side
    assert first.get_facecolor() != second.get_facecolor()
    assert legend_texts(fig) == ["one bar per task (shades alternate)", "outside any task"]
    assert plots.png(fig).startswith(PNG_MAGIC)


# ── The queue explorer (lesson 03) ───────────────────────────────────────────────────────────


def test_a_fast_reader_fills_a_bounded_queue_and_waits_an_unbounded_one_holds_everything():
    bounded = experiments.queue_experiment(workers=1, bound=2, cost_us=300, reader_us=1, rows=1_000)
    unbounded = experiments.queue_experiment(workers=1, bound=0, cost_us=300, reader_us=1, rows=1_000)
    for run in (bounded, unbounded):
        assert run.rows_done == 1_000 and run.throughput == pytest.approx(1_000 / run.seconds)
        assert run.samples and all(s.sent >= s.started >= s.done for s in run.samples)
    assert bounded.reader_waited > 0.5 * bounded.seconds  # backpressure: the reader spent the run waiting
    assert 2 <= bounded.deepest() <= 3  # the bound, and the moment before a worker's "start" arrives
    assert unbounded.reader_waited < 0.1 and unbounded.deepest() >= 15  # 20 chunks, queued at once
    # A reader ten times slower than the worker leaves it without a chunk about 90% of the time; a fast
    # one much less (not never: the reports cross a pipe and a busy machine delays them).
    slow = experiments.queue_experiment(workers=1, bound=2, cost_us=300, reader_us=3_000, rows=500)
    assert slow.idle_share() > 0.7 and max(bounded.idle_share(), unbounded.idle_share()) < slow.idle_share() - 0.2
    chunk_mb = experiments.CHUNK_BYTES / 2**20
    assert unbounded.memory_growth_mb() > 10 * chunk_mb > bounded.memory_growth_mb()


def test_describe_queue_reports_throughput_bound_and_waiting():
    samples = [experiments.QueueSample(0.0, 0, 0, 0, 100.0), experiments.QueueSample(0.5, 4, 1, 0, 104.0)]
    run = experiments.QueueRun(2, 4, 300, 10, rows=1_000, seconds=2.0, reader_waited=1.5, samples=samples,
                           rows_done=1_000)
    text = experiments.describe_queue(run)
    assert "1,000 of 1,000 rows done in <b>2.00 s</b>: <b>500 rows/s</b> · queue bound <b>4 chunks</b>" in text
    assert "deepest queue 3 chunks" in text and "for 1.50 s (75% of the run)" in text and "+4 MB" in text
    assert "the workers had no chunk 75% of the time" in text  # 2 idle, then 1: (2 + 1) of 2 × 2
    assert "queue bound <b>unbounded</b>" in experiments.describe_queue(replace(run, bound=0))


def test_queue_explorer_run_button_shows_readout_and_plot():
    explorer = widgets.queue_explorer()
    assert [label for label, _ in explorer.bound.options][-1] == "unbounded"
    assert (explorer.workers.min, explorer.workers.max) == (1, context.cpu_count())
    explorer.cost_us.value, explorer.reader_us.value, explorer.bound.value = 100, 1, 8
    explorer.run_button.click()
    readout = explorer.readout.value
    assert "2,000 of 2,000 rows done" in readout and "queue bound <b>8 chunks</b>" in readout
    assert bytes(explorer.picture.value).startswith(PNG_MAGIC)
    sample = experiments.QueueSample(0, 1, 1, 0, 50.0)
    figure = plots.queue_depth(experiments.QueueRun(1, 8, 1, 1, 10, 1.0, 0.0, [sample], 10))
    assert legend_texts(figure) == ["waiting in the queue", "being worked on", "queue bound (8)"]
    chunks, memory = figure.axes  # memory in a panel of its own, on the same time axis: no twin axis
    assert memory.get_ylabel().startswith("parent memory") and chunks.get_shared_x_axes().joined(chunks, memory)


def test_queue_rounds_take_turns_and_give_one_measurement_per_bound():
    runs = experiments.queue_rounds(1, (2, 0), cost_us=10, reader_us=1, rounds=2, rows=200)
    assert list(runs) == [2, 0] and all(len(done) == 2 and all(r.rows_done == 200 for r in done)
                                        for done in runs.values())
    times = experiments.queue_times(runs[0])
    assert times.label == "unbounded" and times.times == tuple(r.seconds for r in runs[0])
    assert experiments.queue_times(runs[2]).label == "bound 2"


# ── The shared-memory explorer (lesson 04) ───────────────────────────────────────────────────


def test_shm_explore_hands_the_array_over_both_ways_and_pickling_costs_memory():
    run = experiments.handoff_experiment(32, processes=2)
    assert run.same_results and run.processes == 2 and run.size_mb == pytest.approx(32, rel=0.01)
    assert run.pickled_seconds > 0 and run.shared_seconds > 0
    assert run.ratio == pytest.approx(run.pickled_seconds / run.shared_seconds)
    assert run.pickled_extra_mb > 16 > run.shared_extra_mb  # copies of the blocks, against none


def test_shm_explore_checks_any_block_function_against_serial():
    assert experiments.handoff_experiment(1, processes=2, func=len).same_results


def test_a_repeated_handoff_runs_each_way_that_many_times(monkeypatch):
    calls = {"pickled": 0, "shared": 0}
    real_map, real_apply = experiments.chunked_map, experiments.parallel_apply

    def counted(way, real):
        def call(*args, **kwargs):
            calls[way] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(experiments, "chunked_map", counted("pickled", real_map))
    monkeypatch.setattr(experiments, "parallel_apply", counted("shared", real_apply))
    run = experiments.handoff_experiment(1, processes=1, repeats=3)
    assert calls == {"pickled": 3, "shared": 3} and run.same_results


def test_describe_handoff_reports_both_ways_and_the_ratio():
    run = experiments.HandoffRun(64, 2, pickled_seconds=0.5, shared_seconds=0.01, pickled_extra_mb=96,
                             shared_extra_mb=0.4, same_results=True)
    text = experiments.describe_handoff(run)
    assert "64 MB to 2 workers · pickled <b>0.500 s</b>, peak +96 MB" in text
    assert "shared <b>0.0100 s</b>, peak +0 MB" in text
    assert "shared memory was <b>50.00× faster than pickling</b>" in text and "results equal serial: True" in text


def test_shm_explorer_run_button_shows_readout_and_plot():
    explorer = widgets.shm_explorer()
    assert explorer.size_mb.options[0] == 1 and explorer.size_mb.options[-1] == 256
    assert (explorer.processes.min, explorer.processes.max) == (1, context.cpu_count())
    explorer.size_mb.value, explorer.processes.value = 4, 1
    explorer.run_button.click()
    readout = explorer.readout.value
    assert "4 MB to 1 worker ·" in readout and "results equal serial: True" in readout, readout
    assert bytes(explorer.picture.value).startswith(PNG_MAGIC)


def test_handoff_figures_draw_both_ways():
    runs = [experiments.HandoffRun(size, 2, 0.01 * size, 0.001, 2.0 * size, 0.0, True) for size in (1, 4, 16)]
    single = plots.handoff(runs[-1])
    assert [t.get_text() for t in single.axes[0].get_yticklabels()] == ["pickled", "shared"]
    sweep = plots.handoff_sweep(runs)
    assert [t.get_text() for t in sweep.axes[1].get_legend().get_texts()] == ["pickled", "shared", "the array's size"]
    assert plots.png(sweep).startswith(PNG_MAGIC)
