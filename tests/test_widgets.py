"""mpdemo.widgets and mpdemo.plots: the explorer's callbacks and the figures, without a browser."""

import pytest
from matplotlib.figure import Figure

from mpdemo import context, plots, widgets
from mpdemo.timing import Measurement, TaskRecord, Timeline

PNG_MAGIC = b"\x89PNG"


def test_explore_runs_serial_and_parallel_and_agrees():
    run = widgets.explore(processes=2, chunksize=8, cost_us=30, rows=300)
    assert run.same_results
    assert run.serial_seconds > 0 and run.parallel_seconds > 0
    assert run.speedup == pytest.approx(run.serial_seconds / run.parallel_seconds)
    assert sum(r.items for r in run.timeline.records) == 300
    assert len(run.timeline.records) == 38  # ceil(300 / 8)


def test_describe_reports_times_speedup_and_agreement():
    tl = Timeline(began=0.0, records=[TaskRecord(1, 0.0, 1.0, 10)])
    run = widgets.ExplorerRun(2, 8, 30, 10, serial_seconds=2.0, parallel_seconds=1.0, timeline=tl,
                              same_results=True)
    text = widgets.describe(run)
    assert "serial <b>2.000 s</b>" in text and "2 processes <b>1.000 s</b>" in text
    assert "speedup <b>2.00×</b> (faster)" in text
    assert "results equal serial: True" in text


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
    assert "speedup" in first_text and "results equal serial: True" in first_text
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

    monkeypatch.setattr(widgets, "explore", broken)
    explorer = widgets.chunking_explorer()
    explorer.run_button.click()
    assert explorer.readout.value == "<b>run failed</b>: RuntimeError: no cores left"
    assert not explorer.run_button.disabled


def legend_texts(figure: Figure) -> list[str]:
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_bars_label_each_speedup():
    fig = plots.bars([Measurement("serial", (2.0,)), Measurement("processes", (1.0,))])
    assert [t.get_text() for t in fig.axes[0].texts] == [" 1.00×", " 2.00×"]


def test_speedup_curve_shows_ideal_amdahl_and_measured():
    fig = plots.speedup_curve([1, 2], [1.0, 1.6])
    texts = legend_texts(fig)
    assert texts[0] == "ideal (speedup = processes)" and texts[2] == "measured"
    assert texts[1] == "Amdahl, serial fraction 25.0%"  # 1/1.6 - 1/2 = s · (1 - 1/2)


def test_sweep_marks_the_fastest_chunksize():
    fig = plots.sweep({1: Measurement("1", (3.0,)), 64: Measurement("64", (1.0,)), 4096: Measurement("4096", (2.0,))})
    assert legend_texts(fig) == ["fastest: chunksize 64"]
    assert fig.axes[0].get_xscale() == "log"


def test_timeline_draws_one_bar_per_task_and_one_row_per_worker():
    tl = Timeline(began=0.0, records=[TaskRecord(7, 0.0, 1.0, 5), TaskRecord(8, 0.5, 2.0, 5),
                                      TaskRecord(7, 1.0, 1.5, 5)])
    fig = plots.timeline(tl)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pid 7", "pid 8"]
    assert plots.png(fig).startswith(PNG_MAGIC)
