"""Row blocks: cut an array's rows into disjoint ranges, one task each, with errors that name the rows.

Shared memory (lesson 04) and memory-mapped files (lesson 05) split work the same way. Each
worker gets a ``(start, stop)`` range of rows, reads those rows in place (a shared block, a
mapped file) and touches no other::

      rows 0 ─────────────── 333 ─────────────── 666 ─────────────── 1000
           │    block 0       │     block 1       │     block 2       │
           └─ worker A ───────┴─ worker B ────────┴─ worker A ────────┘

No two blocks overlap, so no worker can overwrite another's rows and no lock is needed. Only the
two numbers of each range travel to the worker; the data stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from mpdemo.chunking import chunked_map
from mpdemo.errors import BlockError, WorkerError
from mpdemo.pool import ProcessPool
from mpdemo.timing import Timeline


def row_blocks(rows: int, count: int) -> list[tuple[int, int]]:
    """``count`` disjoint ``(start, stop)`` ranges that cover rows ``0 … rows - 1``, in order.

    ``rows // count`` rows each would drop the last ``rows % count`` rows (anti-pattern 3); here
    the first ``rows % count`` blocks get one row more. No block is empty: with fewer rows than
    ``count``, there are fewer blocks.
    """
    count = min(count, rows)
    size, extra = divmod(rows, count) if count else (0, 0)
    blocks, start = [], 0
    for k in range(count):
        stop = start + size + (1 if k < extra else 0)
        blocks.append((start, stop))
        start = stop
    return blocks


def map_blocks(task: Callable[[tuple[int, int]], Any], bounds: list[tuple[int, int]], *, processes: int,
               executor: Executor | ProcessPool | None = None, timeline: Timeline | None = None) -> list:
    """``[task(rows) for rows in bounds]`` on :func:`mpdemo.chunked_map`, one block per task.

    A block that fails raises :class:`~mpdemo.errors.BlockError` naming its rows, not just its index.
    """
    try:
        return chunked_map(task, bounds, processes=processes, chunksize=1, executor=executor, timeline=timeline)
    except WorkerError as failed:
        raise BlockError(bounds[failed.index], failed.error) from failed.error
