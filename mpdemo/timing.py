"""Measuring: how long something takes, how much faster it got, and what each worker did when.

Three tools, used by every lesson:

* :func:`measure` runs a callable a few times after a warm-up and keeps every time. Report the
  **minimum**: noise (other programs, the garbage collector, a cold cache) only ever adds time,
  so the fastest run is the best estimate of the work itself. The median shows the spread.
* :func:`speedup_table` puts several measurements side by side as ratios to a baseline. Ratios
  measured in one run are comparable; absolute seconds on a busy laptop are not.
* :class:`Timeline` collects one :class:`TaskRecord` per task: which worker ran it, when it
  started and ended, and how many items it held. Plotted (``mpdemo.plots.timeline``), it shows
  idle workers, load imbalance and per-task overhead at a glance. :meth:`Timeline.breakdown`
  splits each process's time into computing, pickling and waiting
  (``mpdemo.plots.time_split`` draws it).
* :class:`MemoryWatch` samples the memory of this process and its workers during a call, and
  keeps the peaks: what a hand-off or a queue really holds, shared pages counted once.

Timeline timestamps come from ``time.time()``, the wall clock, because it is the one clock
whose readings agree between processes. (``perf_counter`` is finer but its zero point is
undefined and may differ between processes.)
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psutil


@dataclass(frozen=True)
class Measurement:
    """The times of repeated runs of one thing, in seconds.

    ``cores``: how many cores the run could keep busy, when it is a parallel run of CPU-bound
    work; :func:`speedup_table` then says so when its speedup is more than those cores can give.
    """

    label: str
    times: tuple[float, ...]
    cores: int | None = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """The median over the best: 1.0 when every run took the same; 1.3 means 30% of noise."""
        return self.median / self.best


def measure(func: Callable[..., Any], *args: Any, repeats: int = 3, warmup: int = 1,
            label: str | None = None, cores: int | None = None) -> Measurement:
    """Call ``func(*args)`` ``warmup`` times untimed, then ``repeats`` times timed.

    The warm-up pays one-off costs (imports, caches, starting a pool) so they do not pollute
    the comparison; leave it at 0 when the one-off cost is what you want to see.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        func(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(*args)
        times.append(time.perf_counter() - start)
    return Measurement(label or getattr(func, "__name__", "run"), tuple(times), cores)


def compare(calls: dict[str, Callable[[], Any]], *, rounds: int = 3, warmup: int = 0,
            cores: dict[str, int] | None = None) -> dict[str, Measurement]:
    """Time several calls in turns: each round calls every one once; keep every time.

    Taking turns spreads a busy machine's noise over all of them, where back-to-back repeats
    of one (as :func:`measure` does) could put a whole burst of noise on that one. ``cores``
    gives the parallel calls' core counts (see :class:`Measurement`).
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            times[label] += measure(call, repeats=1, warmup=0).times
    cores = cores or {}
    return {label: Measurement(label, tuple(t), cores.get(label)) for label, t in times.items()}


def speedup_table(measurements: Iterable[Measurement], baseline: str | None = None) -> str:
    """A text table of best and median times and each one's speedup over ``baseline``.

    ``baseline`` is a label; by default the first measurement. Speedup = baseline's best time
    divided by this one's best time, so 2.0× means twice as fast and 0.5× twice as slow. A
    parallel run faster than its cores can make it is marked, with the reason under the table.
    """
    rows = list(measurements)
    base = next(m for m in rows if m.label == baseline) if baseline else rows[0]
    width = max(len(m.label) for m in rows)
    lines = [f"{'':<{width}}  {'best (s)':>9}  {'median (s)':>10}  {'speedup vs ' + base.label:>12}"]
    notes = []
    for m in rows:
        speedup = base.best / m.best
        mark = ""
        if impossible(speedup, m.cores):
            mark = " *"
            notes.append(f"* {m.label}: {beyond_cores(m.cores, base.label)}")
        lines.append(f"{m.label:<{width}}  {m.best:>9.4f}  {m.median:>10.4f}  {speedup:>11.2f}×{mark}")
    return "\n".join(lines + notes)


#: Ratios closer to 1 than this are noise on a laptop: "about as fast".
NOISE = 0.05


def impossible(speedup: float, cores: int | None) -> bool:
    """Whether a parallel run on ``cores`` cores is more than ``cores`` times faster: not its doing."""
    return cores is not None and speedup > cores * (1 + NOISE)


def beyond_cores(cores: int, baseline: str = "serial") -> str:
    """Why a speedup above ``cores`` is not the pool's doing, in words."""
    return (f"more than {cores} cores can give, so not the pool's doing: the {baseline} run was slowed (another "
            "program took a core, the machine was busy) or the parallel run had an advantage of its own (its "
            "data fit the cores' caches)")


def describe_speedup(speedup: float, than: str = "serial", *, cores: int | None = None) -> str:
    """A measured ratio in words: 1.93 → "1.93× faster than serial", 0.8 → "1.25× slower than serial".

    Within 5% of 1 it says "about as fast as serial (1.02×)": closer than that is noise here.
    ``cores``: the cores a parallel run could use; a speedup above them is said to be no pool's doing.
    """
    if abs(speedup - 1) < NOISE:
        text = f"about as fast as {than} ({speedup:.2f}×)"
    elif speedup > 1:
        text = f"{speedup:.2f}× faster than {than}"
    else:
        text = f"{1 / speedup:.2f}× slower than {than}"
    if impossible(speedup, cores):
        text += f" ({beyond_cores(cores, than)})"
    return text


def versus_best(seconds: float, best: float, what: str = "the sweep's best") -> str:
    """A time against the best of a set of measurements, in words; a time *below* the best is noise."""
    ratio = seconds / best
    if ratio < 1 - NOISE:
        return (f"{ratio:.2f}× the time of {what}: faster than that best, so the measurements differ by at least "
                f"{1 - ratio:.0%} from run to run here; within that, they are equal")
    if ratio <= 1 + NOISE:
        return f"{ratio:.2f}× the time of {what}: as fast, within the {NOISE:.0%} that is noise"
    return f"{ratio:.2f}× the time of {what}"


class TaskRecord(NamedTuple):
    """What one task did: the worker that ran it, its wall-clock start and end, its item count.

    Two more durations, where they were measured (``chunked_map`` and the CSV pipeline measure
    them when their workers are processes): ``pickling``, the part of ``seconds`` the worker
    spent unpickling the chunk and pickling its results, and ``caller_pickling``, the seconds
    the caller spent pickling the chunk and unpickling the results. (A named tuple: it travels
    back with every task, and a tuple pickles fastest.)
    """

    pid: int
    start: float
    end: float
    items: int
    pickling: float = 0.0
    caller_pickling: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def computing(self) -> float:
        """Seconds the worker spent running the row function: the task's time minus its pickling."""
        return self.seconds - self.pickling


@dataclass
class Timeline:
    """Task records from one parallel run, with the moment the run began.

    Pass a new one to ``chunked_map(..., timeline=Timeline())``: it sets ``began`` when it starts
    and appends a record as each task finishes.
    """

    records: list[TaskRecord] = field(default_factory=list)
    began: float = field(default_factory=time.time)

    def append(self, record: TaskRecord) -> None:
        self.records.append(record)

    def workers(self) -> list[int]:
        """The worker pids, in the order they first started a task."""
        return list(dict.fromkeys(r.pid for r in sorted(self.records, key=lambda r: r.start)))

    def span(self) -> float:
        """Seconds from the start of the run to the end of its last task."""
        return max((r.end for r in self.records), default=self.began) - self.began

    def busy(self) -> dict[int, float]:
        """Seconds each worker spent inside tasks."""
        totals = {pid: 0.0 for pid in self.workers()}
        for r in self.records:
            totals[r.pid] += r.seconds
        return totals

    def utilisation(self) -> float:
        """Busy time of all workers over (workers × span): 1.0 means nobody ever waited."""
        busy = self.busy()
        span = self.span()
        return sum(busy.values()) / (len(busy) * span) if busy and span > 0 else 0.0

    def summary(self) -> str:
        """One line: tasks, workers, span and utilisation."""
        return (f"{len(self.records)} tasks on {len(self.workers())} workers in {self.span():.3f} s; "
                f"workers were busy {self.utilisation():.0%} of the time")

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Where each process's time went during the run: computing, pickling and waiting, in seconds.

        One entry per worker (``"pid 4242"``), then one for the caller. Every entry adds up to
        :meth:`span`: waiting is whatever was neither computing nor pickling (for a task to
        arrive, for the pipe, for the others to finish). The caller computes nothing; its
        pickling is the records' ``caller_pickling``. Pickling counts only where it was measured
        (see :class:`TaskRecord`), otherwise it is part of the waiting.
        """
        span = self.span()
        parts = {}
        for pid in self.workers():
            mine = [r for r in self.records if r.pid == pid]
            computing = sum(r.computing for r in mine)
            pickling = sum(r.pickling for r in mine)
            parts[f"pid {pid}"] = {"computing": computing, "pickling": pickling,
                                   "waiting": max(0.0, span - computing - pickling)}
        caller = sum(r.caller_pickling for r in self.records)
        parts["caller"] = {"computing": 0.0, "pickling": caller, "waiting": max(0.0, span - caller)}
        return parts


def amdahl_speedup(processes: float, serial_fraction: float) -> float:
    """Amdahl's law: the speedup on ``processes`` cores when ``serial_fraction`` cannot be split."""
    return 1.0 / (serial_fraction + (1.0 - serial_fraction) / processes)


def fit_serial_fraction(processes: list[int], speedups: list[float]) -> float:
    """The serial fraction whose Amdahl curve best fits measured speedups (least squares).

    Amdahl's law rearranges to ``1/S - 1/p = s · (1 - 1/p)``, a line through the origin in
    ``s``, so the fit is one division. The result is clipped to [0, 1].
    """
    xs = [1 - 1 / p for p in processes]
    ys = [1 / s - 1 / p for p, s in zip(processes, speedups, strict=True)]
    denominator = sum(x * x for x in xs)
    if denominator == 0:
        return 0.0
    return min(1.0, max(0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / denominator))


def fit_confidence(processes: list[int]) -> str:
    """How much a fit of :func:`fit_serial_fraction` to these process counts can say, in words."""
    counts = sorted(set(processes) - {1})
    if not counts:
        return "nothing to fit: only one process was measured"
    if len(counts) == 1:
        return (f"one ratio (1 against {counts[0]} processes) decides the whole curve, and any noise in it moves "
                "the fraction with it: beyond the measured points the curve is an extrapolation, not a measurement")
    return (f"fitted to {len(counts)} ratios (up to {counts[-1]} processes); beyond {counts[-1]} the curve is an "
            "extrapolation")


# ── Memory (lessons 03–05: what a queue or a hand-off holds) ─────────────────────────────────────


def memory_mb() -> float:
    """This process's resident memory (RSS) now, in MB (1 MB = 2**20 bytes).

    Read straight from ``/proc`` on Linux, which is quick enough to sample every few
    milliseconds; psutil elsewhere.
    """
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return psutil.Process().memory_info().rss / 2**20


class MemoryWatch:
    """The memory of this process and of its children, sampled by a thread during a ``with`` block.

    Every ``interval`` seconds it reads each process's memory and keeps the highest values:

    * ``peak_total_mb``: the highest *sum* over all the processes. On Linux each process is read
      as its PSS (proportional set size), which counts a page shared by ``n`` processes as
      ``1/n`` in each, so the sum is the RAM the group really holds, shared memory counted once.
      Elsewhere it is the RSS, which counts a shared page in every process that maps it.
    * ``peaks_mb``: the highest RSS of each process, by pid (``"caller"`` for this one).

    Read ``extra_mb()``, the peak above where the processes stood when the watch started, to
    see what a call cost. Short peaks between two samples are missed; keep ``interval`` small.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.me = psutil.Process()
        self.peaks_mb: dict[str, float] = {}
        self.start_total_mb = self.peak_total_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.start_total_mb = self.peak_total_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def extra_mb(self) -> float:
        """The highest total during the watch, above the total when it started."""
        return self.peak_total_mb - self.start_total_mb

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> float:
        total = 0.0
        for process in [self.me, *self.me.children(recursive=True)]:
            try:
                if process.pid != self.me.pid and "resource_tracker" in " ".join(process.cmdline()):
                    continue  # multiprocessing's helper, not part of the work
                info = process.memory_full_info()
            except psutil.Error:  # it ended meanwhile
                continue
            label = "caller" if process.pid == self.me.pid else f"pid {process.pid}"
            self.peaks_mb[label] = max(self.peaks_mb.get(label, 0.0), info.rss / 2**20)
            total += getattr(info, "pss", info.rss) / 2**20
        self.peak_total_mb = max(self.peak_total_mb, total)
        return total
