"""Memory-mapped ``.npy`` files: every worker opens the file itself and reads only its own rows.

How the data flows::

      caller                                         worker processes
      ──────                                         ────────────────
      write_npy(path, shape, fill)                   reduce_rows(func, path, start, stop):
        ┌────────┬───────┬───────┬─────┬─────────┐     map rows start:stop, one window at a time
        │ header │ row 0 │ row 1 │  …  │ row n-1 │     func(window) → one result per window
        └────────┴───────┴───────┴─────┴─────────┘     unmap it, on to the next window
      file_apply(func, path) ── (start, stop) ──►
      results, each worker's memory  ◄── results ──
                 ▲                                        ▲
                 └──── the page cache: the kernel's copy of the file's pages, one for all ┘

**A .npy file** is a short header (``np.lib.format``: magic bytes, then a dict with the dtype,
the order and the shape, padded to a multiple of 64 bytes) followed by the raw values, row
after row. Row ``i`` starts at ``offset + i * row_bytes`` (:func:`npy_layout`), so a worker can
map exactly the rows it needs, and nothing travels between processes but a path and two
numbers.

**A mapping reads nothing up front.** ``np.memmap`` reserves addresses; the first touch of each
page reads it from disk into the *page cache*, the kernel's memory for file contents, which
every process mapping the file shares, and which stays after the run: a second run finds the
file in memory and is faster (:func:`evict` drops it, for a cold run). Pages a process has
touched count in its resident memory (RSS) while it maps them, so a worker that mapped its whole
range would end up holding all of it; one window at a time, its memory stays about a window.

:func:`open_npy` is ``np.lib.format.open_memmap``, which reads the header for you; this module
maps windows with plain ``np.memmap`` at the offsets :func:`npy_layout` computes.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mpdemo.blocks import map_blocks, row_blocks
from mpdemo.context import process_count
from mpdemo.pool import ProcessPool
from mpdemo.timing import Timeline, memory_mb


class Layout(NamedTuple):
    """Where the values of a ``.npy`` file are: its shape and dtype, and the byte they start at."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def write_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.float64, *,
              fill: Callable[[int, int], np.ndarray] | None = None, block_mb: float = 64) -> Path:
    """Create a ``.npy`` file of ``shape`` and write it a block of rows at a time.

    ``fill(start, stop)`` returns rows ``start:stop`` (default: zeros). Writing through a memory
    map a block at a time means the file can be far larger than the memory this process uses.
    """
    path = Path(path)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    rows_per_block = max(1, int(block_mb * 2**20 // max(1, array[:1].nbytes)))
    for start in range(0, shape[0], rows_per_block):
        stop = min(shape[0], start + rows_per_block)
        array[start:stop] = 0 if fill is None else fill(start, stop)
    array.flush()
    del array  # unmaps the file
    return path


def open_npy(path: str | os.PathLike, mode: str = "r") -> np.memmap:
    """The whole ``.npy`` file as a memory-mapped array (``"r"``: read only; ``"r+"``: writable)."""
    return np.lib.format.open_memmap(path, mode=mode)


def npy_layout(path: str | os.PathLike) -> Layout:
    """A ``.npy`` file's shape and dtype, and the offset where its values begin (after the header).

    ``open_memmap`` reads the header, and the ``np.memmap`` it returns knows that offset; mapping
    the file costs nothing until its pages are touched.
    """
    whole = open_npy(path)
    if whole.ndim > 1 and not whole.flags.c_contiguous:
        raise ValueError(f"{path} is stored column by column (Fortran order): its rows are not contiguous")
    return Layout(whole.shape, whole.dtype, whole.offset)


def open_rows(path: str | os.PathLike, start: int, stop: int, layout: Layout | None = None) -> np.memmap:
    """Rows ``start:stop`` of a ``.npy`` file, memory-mapped read-only: only they are mapped."""
    layout = layout or npy_layout(path)
    return np.memmap(path, dtype=layout.dtype, mode="r", offset=layout.offset + start * layout.row_bytes,
                     shape=(stop - start, *layout.shape[1:]))


@dataclass(frozen=True)
class RangeReport:
    """What one worker did: its rows, one result per window, and its memory (RSS, MB)."""

    pid: int
    rows: tuple[int, int]
    results: list
    start_mb: float  # when it began the range
    peak_mb: float  # the highest it reached, measured right after each window's work

    @property
    def extra_mb(self) -> float:
        """The memory this range cost the worker: its peak above where it began."""
        return self.peak_mb - self.start_mb


def reduce_rows(func: Callable[[np.ndarray], Any], path: str, window_rows: int | None,
                rows: tuple[int, int]) -> RangeReport:
    """Runs in a worker: ``func`` on rows ``start:stop`` of the file, ``window_rows`` at a time.

    Each window is mapped, given to ``func``, measured and unmapped before the next, so the
    pages it touched leave this process's memory. ``window_rows=None`` maps the whole range at
    once, to show the difference.
    """
    start, stop = rows
    layout = npy_layout(path)
    began = peak = memory_mb()
    results = []
    step = window_rows or max(1, stop - start)
    for first in range(start, stop, step):
        window = open_rows(path, first, min(stop, first + step), layout)
        results.append(func(window))
        peak = max(peak, memory_mb())  # while the window is still mapped: its highest point
        del window
    return RangeReport(os.getpid(), rows, results, began, peak)


@dataclass(frozen=True)
class FileResult:
    """What :func:`file_apply` returns: every window's result in row order, and each worker's report."""

    results: list
    reports: list[RangeReport]


def file_apply(func: Callable[[np.ndarray], Any], path: str | os.PathLike, *, processes: int | None = None,
               window_mb: float | None = 16, executor: Executor | ProcessPool | None = None,
               timeline: Timeline | None = None) -> FileResult:
    """``func`` on every window of rows of a ``.npy`` file, the rows split between worker processes.

    Each worker gets a range of rows (:func:`mpdemo.blocks.row_blocks`) and reads it itself, a
    window of about ``window_mb`` MB at a time (None: its whole range at once); only the path
    and the row numbers are sent. ``results`` holds ``func(window)`` for every window, in row
    order: combine them here, as partial results of a reduction. Runs on
    :func:`mpdemo.chunked_map` (``executor`` and ``timeline`` as there); a failing range raises
    :class:`~mpdemo.errors.BlockError` naming its rows.
    """
    processes = process_count(processes, executor)
    layout = npy_layout(path)
    window_rows = None if window_mb is None else max(1, int(window_mb * 2**20 // max(1, layout.row_bytes)))
    task = functools.partial(reduce_rows, func, str(path), window_rows)
    reports = map_blocks(task, row_blocks(layout.shape[0], processes), processes=processes, executor=executor,
                         timeline=timeline)
    return FileResult([result for report in reports for result in report.results], reports)


def evict(path: str | os.PathLike) -> bool:
    """Ask the kernel to drop the file's pages from the page cache, so the next read is from disk.

    Uses ``posix_fadvise(..., POSIX_FADV_DONTNEED)`` after flushing the file (Linux; the kernel
    treats it as advice). Returns False where the system offers no such call (macOS, Windows).
    """
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True
