"""The notebook harness must catch a hang: nbval with a short cell timeout, plus our conftest.

Each case runs pytest on a throwaway notebook in a separate process, with this repository's
configuration and conftest, and checks how that run ended.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 5

CELLS = {
    "sleeps_forever": "import time\ntime.sleep(10_000)",
    "swallows_the_interrupt":
        "import time\ntry:\n    time.sleep(10_000)\nexcept KeyboardInterrupt:\n    print('caught it')",
    "finishes": "print(6 * 7)",
}


def run_notebook(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess, float]:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbformat.write(notebook, tmp_path / "throwaway.ipynb")
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
               "-p", "conftest", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               f"--nbval-cell-timeout={CELL_TIMEOUT}", "throwaway.ipynb"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # so "-p conftest" loads this repository's conftest
    start = time.monotonic()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - start


@pytest.mark.parametrize("case", ["sleeps_forever", "swallows_the_interrupt"])
def test_a_cell_over_the_timeout_fails_the_run(tmp_path, case):
    result, seconds = run_notebook(tmp_path, CELLS[case])
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout
    assert seconds < 60  # the cell timeout, the kernel's start and stop; not the cell's 10,000 s


def test_a_quick_cell_passes(tmp_path):
    result, _ = run_notebook(tmp_path, CELLS["finishes"])
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout
