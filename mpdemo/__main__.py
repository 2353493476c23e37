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
    bench = commands.add_parser("bench", help="run the benchmark scripts in benchmarks/")
    bench.add_argument("names", nargs="*", help="benchmark files to run (default: all)")
    args = parser.parse_args(argv)

    if args.command == "check":
        return 0 if context.check() else 1
    if args.command == "data":
        for path in data.generate(args.size):
            print(f"{path}  ({path.stat().st_size:,} bytes)")
        return 0
    return run_benchmarks(args.names)


def run_benchmarks(names: list[str]) -> int:
    """Run ``benchmarks/*.py`` of a course checkout (they are not part of the installed package)."""
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    scripts = [folder / name for name in names] or sorted(folder.glob("bench_*.py"))
    if not scripts:
        print(f"no benchmarks found in {folder}; run this from a clone of the course", file=sys.stderr)
        return 1
    for script in scripts:
        print(f"== {script.name}")
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
