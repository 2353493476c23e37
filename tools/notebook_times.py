"""How long a learner needs for each notebook: reading it, running it, doing its exercises.

The estimate the instructor's timetables are built from (docs/instructors.md), made the same
way for every notebook, so that they can be compared and re-made after a notebook changes:

    reading    markdown words at 120 a minute (technical prose, read closely), plus the lines of
               code a learner reads, at 15 a minute (the code cells and what `mpdemo.show` shows)
    running    the notebook's measured run time at full size, from a run with nbclient
    exercises  10 minutes for each exercise: trying it, then reading and running the solution

    .venv/bin/python tools/notebook_times.py                 # reading and exercises only
    .venv/bin/python tools/notebook_times.py --run           # and the full-size run time (slow)
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WORDS_PER_MINUTE = 120
CODE_LINES_PER_MINUTE = 15
MINUTES_PER_EXERCISE = 10


def shown_lines(source: str) -> int:
    """Lines of mpdemo source that ``mpdemo.show(...)`` calls in a cell put in front of the learner."""
    import mpdemo  # noqa: F401  (the names below are looked up in the package)

    lines = 0
    for target in re.findall(r"mpdemo\.show\(([\w.]+)\)", source):
        obj = _resolve(target)
        if obj is not None:
            lines += len(inspect.getsource(obj).splitlines())
    return lines


def _resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    if parts[0] != "mpdemo":
        parts = ["mpdemo", *parts]
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        return obj
    return None


def estimate(path: Path, run: bool) -> dict[str, float]:
    """Minutes of reading, running and exercises for one notebook."""
    notebook = nbformat.read(path, as_version=4)
    words = sum(len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"
            and not cell.metadata.get("jupyter", {}).get("source_hidden")]
    code_lines = sum(len(cell.source.splitlines()) + shown_lines(cell.source) for cell in code)
    exercises = sum(cell.source.strip() == "# Your code here" for cell in notebook.cells)
    minutes = {"reading": words / WORDS_PER_MINUTE + code_lines / CODE_LINES_PER_MINUTE,
               "exercises": exercises * MINUTES_PER_EXERCISE, "running": 0.0}
    if run:
        os.environ["MPDEMO_SIZE"] = "full"
        start = time.perf_counter()
        nbclient.NotebookClient(notebook, timeout=1200, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        minutes["running"] = (time.perf_counter() - start) / 60
    return minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="also run each notebook at full size and time it")
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted(NOTEBOOKS.glob("*.ipynb")))
    args = parser.parse_args()
    print(f"{'notebook':<40} {'reading':>8} {'running':>8} {'exercises':>10} {'total':>6}  (minutes)")
    for path in args.notebooks:
        m = estimate(path, args.run)
        total = sum(m.values())
        print(f"{path.stem:<40} {m['reading']:>8.0f} {m['running']:>8.1f} {m['exercises']:>10.0f} {total:>6.0f}")


if __name__ == "__main__":
    main()
