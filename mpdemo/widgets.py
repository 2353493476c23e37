"""Interactive explorers for the notebooks, built from ipywidgets.

The work happens in plain functions (:func:`explore`, :func:`describe`), which the tests call
directly; the widget only reads its sliders, calls them and shows the answer. Nothing runs on a
slider tick: a run starts processes, so it waits for the Run button. Every explorer is an
:class:`Explorer`: sliders, a Run button, a readout and a picture.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import ipywidgets as widgets
from matplotlib.figure import Figure

from mpdemo import plots, workloads
from mpdemo.chunking import chunked_map
from mpdemo.context import cpu_count, get_context, start_workers
from mpdemo.timing import Timeline

CHUNKSIZES = [2**k for k in range(13)]  # 1 … 4096, a log scale
ROW_COSTS_US = [1, 3, 10, 30, 100, 300, 1000]
ROW_COUNTS = [250, 500, 1000, 2000, 4000, 8000, 16000]


@dataclass(frozen=True)
class ExplorerRun:
    """One explorer run: the settings, both times, the timeline and whether results agreed."""

    processes: int
    chunksize: int
    cost_us: float
    rows: int
    serial_seconds: float
    parallel_seconds: float
    timeline: Timeline
    same_results: bool

    @property
    def speedup(self) -> float:
        return self.serial_seconds / self.parallel_seconds


def explore(processes: int, chunksize: int, cost_us: float, rows: int) -> ExplorerRun:
    """Run ``rows`` CPU-bound rows of ``cost_us`` each serially, then with ``chunked_map``.

    The pool is started and warmed before the clock starts, so the parallel time shows the cost
    of chunking and communication, not of starting processes.
    """
    func = functools.partial(workloads.cpu_bound, loops=workloads.loops_for(cost_us))
    start = time.perf_counter()
    expected = [func(x) for x in range(rows)]
    serial_seconds = time.perf_counter() - start
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context()) as pool:
        start_workers(pool, processes)
        timeline = Timeline()
        start = time.perf_counter()
        results = chunked_map(func, range(rows), processes=processes, chunksize=chunksize,
                              executor=pool, timeline=timeline)
        parallel_seconds = time.perf_counter() - start
    return ExplorerRun(processes, chunksize, cost_us, rows, serial_seconds, parallel_seconds,
                       timeline, results == expected)


def describe(run: ExplorerRun) -> str:
    """The readout for one run, as HTML."""
    verdict = "faster" if run.speedup >= 1 else "slower"
    return (f"serial <b>{run.serial_seconds:.3f} s</b> · {run.processes} processes "
            f"<b>{run.parallel_seconds:.3f} s</b> · speedup <b>{run.speedup:.2f}×</b> ({verdict})<br>"
            f"{run.timeline.summary()} · results equal serial: {run.same_results}")


class Explorer(widgets.VBox):
    """What every explorer shares: its sliders, a Run button, a readout and a picture.

    A subclass makes its sliders, passes them to ``__init__`` and defines :meth:`compute`, which
    runs the experiment with the sliders' values and returns the readout (HTML) and a figure.
    The Run button calls :meth:`run`; tests call it too, or click the button.
    """

    def __init__(self, sliders: list[widgets.Widget]) -> None:
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.readout = widgets.HTML("Choose settings, then press <b>Run</b>.")
        # hidden until the first run, so the browser shows no broken-image icon
        self.picture = widgets.Image(format="png", layout=widgets.Layout(max_width="640px", display="none"))
        self.run_button.on_click(self.run)
        super().__init__([*sliders, self.run_button, self.readout, self.picture])

    def compute(self) -> tuple[str, Figure]:
        """Run the experiment with the current settings: the readout (HTML) and a figure."""
        raise NotImplementedError

    def run(self, _button: widgets.Button | None = None) -> None:
        """The Run button's callback: compute with the current settings and show the answer."""
        self.run_button.disabled = True
        self.readout.value = "running…"
        try:
            readout, figure = self.compute()
            self.readout.value = readout
            self.picture.value = plots.png(figure)
            self.picture.layout.display = ""
        except Exception as exc:  # show the failure where the learner is looking
            self.readout.value = f"<b>run failed</b>: {type(exc).__name__}: {exc}"
        finally:
            self.run_button.disabled = False


def slider(kind: type[widgets.Widget], description: str, **settings) -> widgets.Widget:
    """A slider of ``kind`` (``IntSlider``, ``SelectionSlider``…) in the explorers' common style."""
    return kind(description=description, style={"description_width": "120px"},
                layout=widgets.Layout(width="480px"), **settings)


class ChunkingExplorer(Explorer):
    """Sliders for processes, chunksize, row cost and rows; Run shows times and the timeline."""

    def __init__(self) -> None:
        self.processes = slider(widgets.IntSlider, "processes", value=cpu_count(), min=1, max=cpu_count())
        self.chunksize = slider(widgets.SelectionSlider, "chunksize", options=CHUNKSIZES, value=16)
        self.cost_us = slider(widgets.SelectionSlider, "row cost (µs)", options=ROW_COSTS_US, value=100)
        self.rows = slider(widgets.SelectionSlider, "rows", options=ROW_COUNTS, value=2000)
        super().__init__([self.processes, self.chunksize, self.cost_us, self.rows])

    def compute(self) -> tuple[str, Figure]:
        run = explore(self.processes.value, self.chunksize.value, self.cost_us.value, self.rows.value)
        return describe(run), plots.timeline(run.timeline)


def chunking_explorer() -> ChunkingExplorer:
    """The chunking explorer of notebook 02."""
    return ChunkingExplorer()
