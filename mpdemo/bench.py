"""What every benchmark script shares: contenders timed in turns, ratios held against targets.

A benchmark here is a *report*, not a test: it prints each figure (a ratio measured in this
run, e.g. processes' time over serial time), the figure's target, whether every parallel result
equalled the serial one, and PASS, MISS or FAIL. Only ratios from one run are compared, because
absolute seconds differ between runs and machines. The scripts in ``benchmarks/`` build their
figures with these pieces, and ``python -m mpdemo bench`` runs them all::

    runs = [Run("serial", lambda: [f(x) for x in rows]), Run("processes", lambda: chunked_map(f, rows))]
    times = in_turns(runs, rounds=3)
    figure = Figure("processes vs serial", times["serial"].best / times["processes"].best,
                    at_least(1.8), all_equal(runs[1:], runs[0].result))
    return finish([figure], args)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpdemo.context import cpu_count, start_method
from mpdemo.timing import Measurement, compare


@dataclass
class Run:
    """One contender: a label and a call without arguments; keeps the result of its last call.
    ``cores``: for a parallel run, the cores it can use: its speedup in the table is marked if it is
    more than those cores can give (the serial run was slowed, not sped up by the pool)."""

    label: str
    call: Callable[[], Any]
    result: Any = None
    cores: int | None = None

    def __call__(self) -> None:
        self.result = self.call()


def in_turns(runs: Sequence[Run], rounds: int, *, warmup: bool = True) -> dict[str, Measurement]:
    """mpdemo's ``timing.compare`` on these runs, after one untimed warm-up round by default."""
    return compare({run.label: run for run in runs}, rounds=rounds, warmup=int(warmup),
                   cores={run.label: run.cores for run in runs if run.cores is not None})


@dataclass(frozen=True)
class Target:
    """What a ratio should be: its text for the table and the test it must pass."""

    text: str
    met_by: Callable[[float], bool]


def at_least(goal: float, note: str = "") -> Target:
    return Target(f"≥ {goal:.2f}×{note}", lambda ratio: ratio >= goal)


def at_most(goal: float) -> Target:
    return Target(f"≤ {goal:.2f}×", lambda ratio: ratio <= goal)


def below(goal: float) -> Target:
    return Target(f"< {goal:.2f}×", lambda ratio: ratio < goal)


@dataclass(frozen=True)
class Figure:
    """One summary line: a measured ratio, its target (None: report only), results checked."""

    name: str
    ratio: float
    target: Target | None
    equal: bool

    @property
    def status(self) -> str:
        if not self.equal:
            return "FAIL"  # a wrong result fails whatever the speed
        if self.target is None:
            return "info"
        return "PASS" if self.target.met_by(self.ratio) else "MISS"


def all_equal(runs: Sequence[Run], reference: Any) -> bool:
    """Whether every run's last result equals the serial reference; says so, one line per run."""
    for run in runs:
        print(f"{run.label}: results equal serial: {run.result == reference}")
    return all(run.result == reference for run in runs)


def in_fresh_process(script: str, path: Path, timeout: float) -> Any:
    """Run ``script --measure path`` in a new Python; what its :func:`measuring` printed, as JSON.

    Memory figures are measured there: a fresh process holds nothing else, and Linux would carry
    this process's peak over into a child's ``ru_maxrss``.
    """
    done = subprocess.run([sys.executable, script, "--measure", str(path)], capture_output=True, text=True,
                          timeout=timeout, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measuring(argv: list[str], measure: Callable[[Path], Any]) -> bool:
    """The other side of :func:`in_fresh_process`: with ``--measure PATH``, print ``measure(PATH)`` as JSON."""
    if argv[:1] != ["--measure"]:
        return False
    print(json.dumps(measure(Path(argv[1]))))
    return True


def load_average() -> str:
    """The 1-minute load average, where the system reports one. Above the core count, other
    programs were competing for the cores, and the figures of this run suffer from it."""
    return f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load average unknown"


def arguments(description: str, argv: list[str]) -> argparse.Namespace:
    """The options every benchmark script takes (``--quick``, ``--strict``), parsed; prints the setting."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any figure is MISS or FAIL")
    args = parser.parse_args(argv)
    print_setting(args.quick)
    return args


def print_setting(quick: bool) -> None:
    """One line saying where the figures come from: Python, start method, cores, load, --quick."""
    print(f"Python {sys.version.split()[0]}, start method {start_method()}, {cpu_count()} cores, "
          f"{load_average()}{' (--quick: sizes too small for real figures)' if quick else ''}")


def print_summary(figures: Sequence[Figure]) -> None:
    width = max(len(f.name) for f in figures)
    print(f"\n{'figure':<{width}}  {'measured':>8}  {'target':<27}  {'equal':<5}  result")
    for f in figures:
        target = f.target.text if f.target else "(report only)"
        print(f"{f.name:<{width}}  {f.ratio:>7.2f}×  {target:<27}  {f.equal!s:<5}  {f.status}")


def finish(figures: Sequence[Figure], args: argparse.Namespace) -> int:
    """Print the load at the end and the summary; the exit status (1 only with --strict and a miss)."""
    print(f"\n{load_average()} at the end, {cpu_count()} cores")
    print_summary(figures)
    return 1 if args.strict and any(f.status not in ("PASS", "info") for f in figures) else 0
