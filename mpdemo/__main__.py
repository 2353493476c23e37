"""The command line: ``python -m mpdemo check | data | bench``."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from mpdemo import context, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpdemo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check that this machine can run the course (exit 0 or 1)")
    make_data = commands.add_parser("data", help="generate the notebooks' data files into data/")
    make_data.add_argument("--size", choices=context.SIZES, help="default: MPDEMO_SIZE, else full")
    commands.add_parser("bench", help="run every benchmarks/bench_*.py; other options (--quick) go to each")
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    if args.command == "check":
        return 0 if context.check() else 1
    if args.command == "data":
        for path in data.generate(args.size):
            print(f"{path}  ({path.stat().st_size:,} bytes)")
        return 0
    return run_benchmarks(unknown)


def run_benchmarks(options: list[str]) -> int:
    """Run each ``benchmarks/bench_*.py`` of a course checkout as if from the command line.

    The benchmarks are not part of the installed package; each script sees ``options`` as its
    arguments, and a script that exits with an error does not stop the others.
    """
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    scripts = sorted(folder.glob("bench_*.py"))
    if not scripts:
        print(f"no benchmarks found in {folder}; run this from a clone of the course", file=sys.stderr)
        return 1
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
