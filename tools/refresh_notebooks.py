"""Re-run the notebooks in small mode and keep only the outputs that nbval compares.

Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their outputs and execution count: nbval
(``--nbval-lax``) compares them with a fresh run. Every other output is removed, so the
committed notebooks never show timings measured on someone else's machine.

    .venv/bin/python tools/refresh_notebooks.py                      # every notebook
    .venv/bin/python tools/refresh_notebooks.py notebooks/01_gil.ipynb
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECKED = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path, timeout: int) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    notebook.metadata.pop("widgets", None)  # the state of the last run's widgets: noise in every diff
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # the kernel's timestamps: noise in every diff
        if cell.cell_type == "code" and CHECKED not in cell.source:
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)
    print(f"refreshed {path.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted(NOTEBOOKS.glob("*.ipynb")))
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    args = parser.parse_args()
    os.environ.setdefault("MPDEMO_SIZE", "small")
    for path in args.notebooks:
        refresh(path, args.timeout)


if __name__ == "__main__":
    main()
