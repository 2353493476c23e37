"""The command line: ``python -m mpdemo check | data | bench``.

``bench`` first runs the comparison of notebook 07 (:func:`mpdemo.strategies.report`), then,
from a clone of the course, every ``benchmarks/bench_*.py``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from mpdemo import checks, context, data

#: Where a clone of the course keeps its benchmark scripts (an installed package has none).
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpdemo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check that this machine can run the course (exit 0 or 1)")
    make_data = commands.add_parser("data", help="generate the notebooks' data files into data/")
    make_data.add_argument("--size", choices=context.SIZES, help="default: MPDEMO_SIZE, else full")
    bench = commands.add_parser("bench", help="compare every way of running one workload on this machine "
                                "(notebook 07); from a clone of the course, then run every benchmarks/bench_*.py, "
                                "which get --quick, --strict and any other option")
    bench.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    bench.add_argument("--strict", action="store_true", help="exit 1 if any figure is MISS or FAIL")
    bench.add_argument("--png", metavar="FILE", help="write the comparison's plot to FILE")
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    if args.command == "check":
        return 0 if checks.check() else 1
    if args.command == "data":
        for path in data.generate(args.size):
            print(f"{path}  ({path.stat().st_size:,} bytes)")
        return 0
    scripts = sorted(BENCHMARKS.glob("bench_*.py"))
    if unknown and not scripts:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (no benchmarks/ to pass them to)")
    try:
        from mpdemo import strategies  # imported here: joblib, mpire and dask are needed only by bench
    except ImportError as missing:
        parser.error(f"bench compares joblib, mpire and dask too, and {missing.name} is not installed: "
                     "pip install -e '.[dev]' in a clone of the course, or use its conda environment")

    print("== the comparison of notebook 07")
    status = strategies.report(args)
    if not scripts:
        print(f"\n(the other benchmarks are in benchmarks/ of a clone of the course, not in {BENCHMARKS.parent})")
        return status
    options = ["--quick"] * args.quick + ["--strict"] * args.strict + unknown
    return max(status, run_benchmarks(scripts, options))


def run_benchmarks(scripts: list[Path], options: list[str]) -> int:
    """Run each benchmark script of a course checkout as if from the command line.

    The benchmarks are not part of the installed package; each script sees ``options`` as its
    arguments, and a script that exits with an error does not stop the others.
    """
    failed = []
    for script in scripts:
        print(f"== {script.name} {' '.join(options)}")
        sys.argv = [str(script), *options]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
