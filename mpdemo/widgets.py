"""Interactive explorers for the notebooks: sliders, a Run button, a readout and a picture.

The experiments are plain functions of :mod:`mpdemo.experiments`, which the tests call directly;
a widget here only reads its sliders, calls one and shows the answer. Nothing runs on a slider
tick: a run starts processes, so it waits for the Run button. Every explorer is an
:class:`Explorer`.
"""

from __future__ import annotations

import ipywidgets as widgets
from matplotlib.figure import Figure

from mpdemo import experiments, plots
from mpdemo.context import cpu_count

CHUNKSIZES = [2**k for k in range(13)]  # 1 … 4096, a log scale
ROW_COSTS_US = [1, 3, 10, 30, 100, 300, 1000]
ROW_COUNTS = [250, 500, 1000, 2000, 4000, 8000, 16000]
QUEUE_BOUNDS = [("1", 1), ("2", 2), ("4", 4), ("8", 8), ("16", 16), ("64", 64), ("unbounded", 0)]
READER_COSTS_US = [1, 3, 10, 30, 100, 300, 1000]
ARRAY_SIZES_MB = [1, 4, 16, 64, 256]


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
        run = experiments.chunking_experiment(self.processes.value, self.chunksize.value, self.cost_us.value,
                                              self.rows.value)
        return experiments.describe_chunking(run), plots.timeline(run.timeline)


def chunking_explorer() -> ChunkingExplorer:
    """The chunking explorer of notebook 02."""
    return ChunkingExplorer()



class QueueExplorer(Explorer):
    """Sliders for workers, queue bound, row cost and reader speed; Run plots queue depth and memory."""

    def __init__(self) -> None:
        self.workers = slider(widgets.IntSlider, "workers", value=cpu_count(), min=1, max=cpu_count())
        self.bound = slider(widgets.SelectionSlider, "queue bound", options=QUEUE_BOUNDS, value=4)
        self.cost_us = slider(widgets.SelectionSlider, "row cost (µs)", options=ROW_COSTS_US, value=300)
        self.reader_us = slider(widgets.SelectionSlider, "reader (µs/row)", options=READER_COSTS_US, value=10)
        super().__init__([self.workers, self.bound, self.cost_us, self.reader_us])

    def compute(self) -> tuple[str, Figure]:
        run = experiments.queue_experiment(self.workers.value, self.bound.value, self.cost_us.value,
                                           self.reader_us.value)
        return experiments.describe_queue(run), plots.queue_depth(run)


def queue_explorer() -> QueueExplorer:
    """The queue explorer of notebook 03."""
    return QueueExplorer()


class ShmExplorer(Explorer):
    """Sliders for the array's size and the processes; Run hands it over pickled and shared."""

    def __init__(self) -> None:
        self.size_mb = slider(widgets.SelectionSlider, "array size (MB)", options=ARRAY_SIZES_MB, value=16)
        self.processes = slider(widgets.IntSlider, "processes", value=cpu_count(), min=1, max=cpu_count())
        super().__init__([self.size_mb, self.processes])

    def compute(self) -> tuple[str, Figure]:
        run = experiments.handoff_experiment(self.size_mb.value, self.processes.value)
        return experiments.describe_handoff(run), plots.handoff(run)


def shm_explorer() -> ShmExplorer:
    """The shared-memory explorer of notebook 04."""
    return ShmExplorer()
