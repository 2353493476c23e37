"""The notebooks follow the course's rules; nbval runs them, this checks how they are written.

- numbered 00, 01, ... with no gap; objectives, prerequisites and time in the first cell;
- a summary and exercises at the end, each exercise a "# Your code here" cell followed by its
  solution, collapsed (the solution executes in CI, so a broken one fails the suite);
- committed without outputs, except the cells nbval compares (# NBVAL_CHECK_OUTPUT), and
  without a run's widget state or timestamps;
- no cell catches KeyboardInterrupt: nbval interrupts a cell that runs over its timeout;
- no speedup written into the prose: every "N×" is computed from numbers measured live.
"""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CHECKED = "# NBVAL_CHECK_OUTPUT"


def cells(path: Path, kind: str) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(re.match(r"(\d\d)_[a-z_]+\.ipynb$", p.name).group(1)) for p in NOTEBOOKS]
    assert numbers == list(range(len(NOTEBOOKS))) and len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_states_objectives_prerequisites_and_time(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown"
    for part in ("**Objectives**", "**Prerequisites:**", "**Time:** about"):
        assert part in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_summary_and_exercises_with_hidden_solutions(path):
    notebook = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    exercises = [i for i, c in enumerate(notebook.cells) if c.source.strip() == "# Your code here"]
    assert exercises, "no exercise cell"
    for i in exercises:
        solution = notebook.cells[i + 1]
        assert solution.cell_type == "code" and solution.source.strip()
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_keep_outputs(path):
    for cell in cells(path, "code"):
        if CHECKED in cell.source:
            assert cell.outputs and cell.execution_count, f"checked cell has no stored output:\n{cell.source}"
        else:
            assert not cell.outputs and cell.execution_count is None, f"output left in:\n{cell.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_run_leaves_its_widget_state_or_timestamps(path):
    notebook = nbformat.read(path, as_version=4)
    assert "widgets" not in notebook.metadata, "widget state of a run: tools/refresh_notebooks.py drops it"
    assert not [c for c in notebook.cells if "execution" in c.metadata], "the kernel's timestamps of a run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_can_swallow_the_timeout_interrupt(path):
    for cell in cells(path, "code"):
        assert not re.search(r"except\s*(:|KeyboardInterrupt|BaseException)", cell.source), cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_states_no_speedup_it_did_not_measure(path):
    for cell in cells(path, "markdown"):
        assert not re.search(r"\d\s*×", cell.source), f"a number with × in prose:\n{cell.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_in_the_courses_kernel(path):
    assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"
