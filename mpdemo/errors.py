"""Every error mpdemo raises about parallel work, in one place: what went wrong, and where.

A parallel call can fail in three places, and each has its error::

      the caller                      │ the way between          │ a worker process
      ──────────                      │                          │ ────────────────
      ValueError: a bad setting       │ NotSendable: a function, │ WorkerError: the row function
      SplitError: a CSV that byte     │   item or result cannot  │   raised (RowError: on a CSV
        ranges cannot cut safely      │   be pickled, or spawn   │   line; BlockError: on a row
      FileChanged: the input changed  │   workers cannot import  │   block; FrameError: on a
        while it was read             │   it                     │   DataFrame's row)
      NotEnoughSharedMemory: /dev/shm │                          │ WorkerDied: the process itself
        cannot hold the block         │                          │   ended (a signal, os._exit)

**Worker errors carry the original.** ``WorkerError.error`` is the exception the row function
raised, chained as ``__cause__``; its own ``__cause__`` is a :class:`WorkerTraceback` holding the
worker's traceback as text, so the whole story prints in the caller. Every ``BaseException``
counts: a row function that calls ``sys.exit()`` or raises ``KeyboardInterrupt`` gives a
``WorkerError`` naming its item, and never ends the caller's program.

**A dead worker is a broken pool.** :class:`WorkerDied` is a
``concurrent.futures.process.BrokenProcessPool`` (as loky's ``TerminatedWorkerError`` is), so
code written for the standard library's pools catches it too.
"""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool


class NotSendable(TypeError):
    """A function, item or result cannot travel between the caller and a worker process."""


class WorkerError(Exception):
    """The row function raised inside a worker; ``index`` is the failing item's input position.

    ``error`` is the original exception, also chained as ``__cause__``.
    """

    def __init__(self, index: int, error: BaseException):
        super().__init__(index, error)
        self.index = index
        self.error = error

    def __str__(self) -> str:
        return f"item {self.index:,} raised {type(self.error).__name__}: {self.error}"


class RowError(WorkerError):
    """A CSV row could not be processed: the row function raised, or the row could not be read.

    ``path`` and ``line`` say where (the line the row starts on; the header is line 1).
    """

    def __init__(self, path: str, line: int, error: BaseException):
        super().__init__(line, error)
        self.path, self.line = path, line

    def __str__(self) -> str:
        return f"line {self.line:,} of {self.path}: {type(self.error).__name__}: {self.error}"


class BlockError(WorkerError):
    """A block function raised on one block of rows; ``rows`` is the block's ``(start, stop)``."""

    def __init__(self, rows: tuple[int, int], error: BaseException) -> None:
        super().__init__(rows[0], error)
        self.rows = rows

    def __str__(self) -> str:
        start, stop = self.rows
        return f"rows {start:,}–{stop - 1:,} raised {type(self.error).__name__}: {self.error}"


class FrameError(WorkerError):
    """A DataFrame function raised on a row (``frame_apply``, ``process_parquet``). ``label`` is the
    row's index label, ``index`` its position (in the frame, or in the file), ``where`` both in words.

    The function ran on a whole chunk; the worker found the row by running it again on halves of
    the chunk. When no single row fails alone, ``label`` is None and ``where`` names the chunk.
    """

    def __init__(self, where: str, label: object, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.where, self.label = where, label

    def __str__(self) -> str:
        return f"{self.where}: {type(self.error).__name__}: {self.error}"

    def __reduce__(self) -> tuple:
        return type(self), (self.where, self.label, self.index, self.error)


class WorkerDied(BrokenProcessPool):
    """A worker process ended while it held work: killed by a signal (the out-of-memory killer,
    ``kill -9``), or ended by ``os._exit`` or a crash inside C code. Its results are lost."""


class SplitError(ValueError):
    """``feed="ranges"`` found that quote parity put a range boundary inside a quoted field."""


class FileChanged(OSError):
    """The input file changed (grew, shrank, was rewritten) while it was being read."""


class NotEnoughSharedMemory(OSError):
    """A shared-memory block does not fit in what ``/dev/shm`` has left."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text (its ``__str__``)."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


def sendable(error: BaseException) -> BaseException:
    """``error`` if it survives the trip between processes, else a RuntimeError that tells its story.

    Exceptions pickle as their class and ``args``; one that holds a lock, or whose ``__init__``
    takes other arguments than it passes on, cannot be rebuilt on the other side.
    """
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error} (the original exception cannot be pickled)")
