"""Figures for the lessons: timing bars, speedup curves, chunksize sweeps and worker timelines.

Each function returns a matplotlib ``Figure`` (shown when it is a cell's last value) and takes
an optional ``ax`` to draw into an existing one instead. The figures are built without pyplot,
so nothing accumulates in pyplot's global state when a widget redraws them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mpdemo.timing import Measurement, Timeline, amdahl_speedup, fit_serial_fraction, impossible


def _axes(ax: Axes | None, size: tuple[float, float] = (6.4, 3.2)) -> Axes:
    """The given axes, or the axes of a new figure."""
    return ax if ax is not None else Figure(figsize=size, layout="constrained").subplots()


def _plain_log(axis, span: float) -> None:
    """Ticks of a log axis written as plain numbers (0.2, 1, 5,000): at each power of ten, and at 2 and 5
    times each when the values ``span`` (largest over smallest) less than a hundredfold."""
    axis.set_major_locator(LogLocator(subs=(1.0,) if span > 100 else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def bars(measurements: Sequence[Measurement], *, title: str = "", log: bool = False,
         ax: Axes | None = None) -> Figure:
    """Horizontal bars of each measurement's best time, labelled with its speedup over the first.

    ``log``: a log time axis, so that a bar a hundred times shorter than the others still shows
    (NumPy next to Python loops). A speedup more than a measurement's ``cores`` can give is
    marked ``*``, as in :func:`mpdemo.timing.speedup_table`.
    """
    ax = _axes(ax, (6.4, 0.5 + 0.45 * len(measurements)))
    labels = [m.label for m in measurements]
    best = [m.best for m in measurements]
    ax.barh(labels, best, color="tab:blue")
    ax.invert_yaxis()  # first measurement on top
    marked = False
    for y, m in enumerate(measurements):
        speedup = best[0] / m.best
        mark = " *" if impossible(speedup, m.cores) else ""
        marked = marked or bool(mark)
        ax.annotate(f" {speedup:.2f}×{mark}", (m.best, y), va="center")
    if log:
        ax.set_xscale("log")
        _plain_log(ax.xaxis, max(best) / min(best))
        ax.set_xlim(min(best) / 2, max(best) * 3)  # room for the labels on a log axis
    else:
        ax.set_xlim(0, max(best) * 1.2)
    ax.set_xlabel(f"best time (s{', log scale' if log else ''}); labels: speedup over the first bar"
                  + ("\n* more than its cores can give: not the pool's doing" if marked else ""))
    ax.set_title(title)
    return ax.figure


def speedup_curve(processes: Sequence[int], speedups: Sequence[float], *, title: str = "",
                  ax: Axes | None = None) -> Figure:
    """Measured speedup against process count, the ideal line, and the best-fitting Amdahl curve.

    ``speedups[i]`` is the time on one process divided by the time on ``processes[i]``. The
    lines go on to at least 8 processes, to show where Amdahl's law predicts the curve flattens;
    beyond the largest measured count the fitted curve is dashed and labelled as extrapolated.
    With only one process measured there is nothing to fit, and no curve is drawn.
    """
    ax = _axes(ax)
    last = max(processes)
    ps = list(range(1, max(8, 2 * last) + 1))
    ax.plot(ps, ps, ":", color="grey", label="ideal (speedup = processes)")
    if last > 1:
        serial_fraction = fit_serial_fraction(list(processes), list(speedups))
        measured = [p for p in ps if p <= last]
        beyond = [p for p in ps if p >= last]
        ax.plot(measured, [amdahl_speedup(p, serial_fraction) for p in measured], color="tab:orange",
                label=f"Amdahl, serial fraction {serial_fraction:.1%}")
        ax.plot(beyond, [amdahl_speedup(p, serial_fraction) for p in beyond], "--", color="tab:orange",
                label=f"the same, extrapolated beyond {last} processes")
    ax.plot(processes, speedups, "o", color="tab:blue", label="measured")
    ax.set_xlabel("processes")
    ax.set_ylabel("speedup over 1 process")
    ax.set_xticks(ps)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return ax.figure


#: :func:`sweep` draws times on a log axis only when the slowest is more than this many times the fastest.
LOG_RANGE = 3.0


def sweep(results: dict[int, Measurement], *, title: str = "", ax: Axes | None = None) -> Figure:
    """Best time per chunk size (chunk sizes on a log axis), with the fastest point marked.

    The times go on a log axis too when they span more than ``LOG_RANGE`` times, so that both the
    steep left end and the flat bottom show; over a narrower range a linear axis reads better.
    """
    ax = _axes(ax)
    sizes = sorted(results)
    best = [results[c].best for c in sizes]
    ax.plot(sizes, best, "o-", color="tab:blue")
    fastest = min(sizes, key=lambda c: results[c].best)
    ax.plot([fastest], [results[fastest].best], "*", markersize=14, color="tab:red",
            label=f"fastest: chunksize {fastest:,}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.10g}"))
    if max(best) > LOG_RANGE * min(best):
        ax.set_yscale("log")
        _plain_log(ax.yaxis, max(best) / min(best))
        ax.set_ylabel("best time (s, log scale)")
    else:
        ax.set_ylim(0, max(best) * 1.1)  # from zero: the differences show at their true size
        ax.set_ylabel("best time (s)")
    ax.set_xlabel("chunksize (items per task, log scale)")
    ax.legend()
    ax.set_title(title)
    return ax.figure


#: :func:`timeline`'s two shades: each worker's tasks alternate between them, so neighbours show apart.
TASK_SHADES = ("tab:blue", "tab:cyan")


def timeline(tl: Timeline, *, title: str = "", ax: Axes | None = None) -> Figure:
    """A Gantt chart: one row per worker, one bar per task, time measured from the run's start.

    Workers are numbered 1, 2, … in the order they started their first task. Each worker's tasks
    alternate between two shades, so that two tasks side by side show as two bars; white space
    is time that worker spent outside any task.
    """
    ax = _axes(ax, (6.4, 1.3 + 0.5 * max(1, len(tl.workers()))))
    rows = {pid: row for row, pid in enumerate(tl.workers())}
    done = dict.fromkeys(rows, 0)  # tasks drawn so far on each worker
    for r in sorted(tl.records, key=lambda r: r.start):
        ax.barh(rows[r.pid], r.seconds, left=r.start - tl.began, height=0.6,
                color=TASK_SHADES[done[r.pid] % 2], linewidth=0)
        done[r.pid] += 1
    ax.set_yticks(list(rows.values()), [f"worker {row + 1}" for row in rows.values()])
    ax.invert_yaxis()
    ax.set_xlim(0, max(tl.span(), 1e-3) * 1.02)
    ax.set_xlabel("seconds since the run began")
    shades = tuple(Patch(color=colour) for colour in TASK_SHADES)
    ax.legend([shades, Patch(facecolor="white", edgecolor="lightgrey")],
              ["one bar per task (shades alternate)", "outside any task"],
              handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, fontsize=8,
              loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.set_title(title or tl.summary(), fontsize=9)
    return ax.figure


def png(figure: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes, e.g. for an ``ipywidgets.Image``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def queue_depth(run, *, title: str = "") -> Figure:
    """A queue explorer run (``mpdemo.experiments.QueueRun``) over time, in two panels that share the
    time axis: above, the chunks waiting in the queue and being worked on (stacked) and the queue's
    bound; below, the parent's memory above where it started."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    chunks, memory = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    times = [s.seconds for s in run.samples]
    chunks.stackplot(times, [s.waiting for s in run.samples], [s.working for s in run.samples], step="post",
                     colors=["tab:orange", "tab:blue"], labels=["waiting in the queue", "being worked on"])
    if run.bound:
        chunks.axhline(run.bound, color="tab:red", linestyle="--", label=f"queue bound ({run.bound})")
    chunks.set_ylabel("chunks")
    chunks.legend(loc="upper right", fontsize=8)
    memory.plot(times, [s.memory_mb - run.samples[0].memory_mb for s in run.samples], color="black", linewidth=1)
    memory.set_ylabel("parent memory\n(MB above start)")
    memory.set_ylim(bottom=min(0.0, memory.get_ylim()[0]))
    memory.set_xlabel("seconds since the reader started")
    chunks.set_title(title or f"{run.workers} workers, queue bound {run.bound_text}: {run.throughput:,.0f} rows/s",
                     fontsize=9)
    return figure


# --- Lessons 06 and 07: where a parallel run's time went; the contenders side by side -----------------------

#: Colours of the parts of :func:`time_split`'s bars.
PART_COLOURS = {"computing": "tab:blue", "pickling": "tab:orange", "waiting": "lightgrey"}


def time_split(tl: Timeline, *, title: str = "", ax: Axes | None = None) -> Figure:
    """Where each process's time went during a run, as shares of the run: one stacked bar per
    worker and one for the caller, split into computing, pickling and waiting.

    These are *totals* over the whole run (:meth:`mpdemo.timing.Timeline.breakdown`), not a
    timeline: each bar is the whole run, 100%, and its parts say how much of it went where, not
    when. (``mpdemo.plots.timeline`` shows when.) Workers are numbered in the order they first
    started a task.
    """
    parts = tl.breakdown()
    span = max(tl.span(), 1e-9)
    names = list(parts)
    labels = [f"worker {k + 1}" for k in range(len(names) - 1)] + ["caller"]
    ax = _axes(ax, (7.2, 1.2 + 0.45 * len(names)))
    left = [0.0] * len(names)
    for part, colour in PART_COLOURS.items():
        shares = [100 * parts[name][part] / span for name in names]
        ax.barh(labels, shares, left=left, height=0.6, color=colour, label=part)
        for y, (start, share) in enumerate(zip(left, shares, strict=True)):
            if share >= 8:  # room for its label
                ax.annotate(f"{share:.0f}%", (start + share / 2, y), ha="center", va="center", fontsize=8)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xticks(range(0, 101, 25), [f"{tick}%" for tick in range(0, 101, 25)])
    ax.set_xlabel(f"share of the whole run ({span:.3f} s), added up per process: totals, not a timeline")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or tl.summary(), fontsize=9)
    return ax.figure


def contenders(times: Sequence[Measurement], per_task: dict[str, float], *, title: str = "") -> Figure:
    """Two panels: each contender's best time (labelled with its speedup over the first), and the
    cost of one task at chunk size 1 of each library, beside the library's first row (log scale).

    A contender's library is its label up to the first comma (``"Pool, blocks"``: ``Pool``).
    """
    figure = Figure(figsize=(10, 0.8 + 0.45 * len(times)), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    bars(times, title=title, ax=left)
    first_rows = {}
    for y, m in enumerate(times):
        first_rows.setdefault(m.label.split(",")[0], y)
    rows = [(y, per_task[lib] * 1e6, lib) for lib, y in first_rows.items() if lib in per_task]
    right.barh([y for y, _, _ in rows], [us for _, us, _ in rows], color="tab:orange")
    for y, us, lib in rows:
        right.annotate(f" {us:,.0f} ({lib})", (us, y), va="center", fontsize=8)
    right.set_ylim(left.get_ylim())  # the same rows as the left panel (no task: no bar)
    right.set_yticks(range(len(times)), [""] * len(times))
    right.set_xscale("log")
    right.set_xlim(right=max((us for _, us, _ in rows), default=1.0) * 30)
    right.set_xlabel("one task at chunk size 1, per library (µs, log scale)")
    return figure


# --- Lesson 04: handing an array to workers, pickled or shared ---------------------------------------------------

#: Colours of the two ways to hand an array over.
WAY_COLOURS = {"pickled": "tab:orange", "shared": "tab:blue"}


def handoff(run, *, title: str = "") -> Figure:
    """One shared-memory explorer run (``mpdemo.experiments.HandoffRun``): the time and the extra memory
    of each way, side by side (times on a log scale: they can differ a hundredfold)."""
    figure = Figure(figsize=(8, 2.2), layout="constrained")
    times, memory = figure.subplots(1, 2)
    ways = list(WAY_COLOURS)
    colours = list(WAY_COLOURS.values())
    seconds = [run.pickled_seconds, run.shared_seconds]
    extra = [max(0.0, run.pickled_extra_mb), max(0.0, run.shared_extra_mb)]
    times.barh(ways, seconds, color=colours)
    times.set_xscale("log")
    times.set_xlabel("seconds (log scale)")
    memory.barh(ways, extra, color=colours)
    memory.set_xlabel("extra memory at the peak (MB)")
    for ax, values, text in ((times, seconds, "{:.3g} s"), (memory, extra, "{:,.0f} MB")):
        ax.invert_yaxis()
        for y, value in enumerate(values):
            ax.annotate(" " + text.format(value), (value, y), va="center", fontsize=8)
    memory.set_xlim(0, max(max(extra), 1.0) * 1.3)
    times.set_xlim(right=max(seconds) * 10)
    figure.suptitle(title or f"{run.size_mb:,.0f} MB handed to {run.processes} workers", fontsize=9)
    return figure


def handoff_sweep(runs: Sequence, *, title: str = "") -> Figure:
    """Several hand-offs (``mpdemo.experiments.HandoffRun``) by array size: the time of each way (log
    scale) and its extra memory (log scale above 1 MB, linear below, so that 0 shows)."""
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    times, memory = figure.subplots(1, 2)
    sizes = [run.size_mb for run in runs]
    for way, colour in WAY_COLOURS.items():
        times.plot(sizes, [getattr(run, f"{way}_seconds") for run in runs], "o-", color=colour, label=way)
        memory.plot(sizes, [max(0.0, getattr(run, f"{way}_extra_mb")) for run in runs], "o-", color=colour,
                    label=way)
    memory.plot(sizes, sizes, "--", color="grey", label="the array's size")
    times.set_yscale("log")
    times.set_ylabel("seconds (log scale)")
    memory.set_yscale("symlog", linthresh=1.0)
    memory.set_ylim(bottom=0)
    memory.set_ylabel("extra memory at the peak (MB)")
    for ax in (times, memory):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{size:,.3g}" for size in sizes])  # the sizes measured, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel("array size (MB, log scale)")
        ax.legend(fontsize=8)
    figure.suptitle(title or f"handing an array to {runs[0].processes} workers", fontsize=9)
    return figure
