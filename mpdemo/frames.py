"""DataFrames through a pool: ``frame_apply`` for a frame in memory, ``process_parquet`` for a file.

How the data flows::

      frame_apply(func, df)                                      worker processes
      ─────────────────────                                      ────────────────
      df ─► rows 0–2,499 (df.iloc)     ─ pickle, send ─►   run_frame_chunk: func(chunk), the
            rows 2,500–4,999           ─ pickle, send ─►     result checked and pickled here
            ...  (at most 4 × processes chunks in flight: in_flight)                │
      pd.concat(the results, in row order) ◄──────────── FrameReply ◄──────────────┘

      process_parquet(path, func)                                worker processes
      ───────────────────────────                                ────────────────
      read the footer: how many row groups,    ─ (path, row  ─►  run_parquet_task: open the file,
      how many rows in each (nothing else)        groups)        read one row group at a time,
      [func(batch) for every row group]  ◄─────── results ◄────  func(batch) on each

**A chunk is a slice of rows.** ``frame_apply`` cuts the frame with ``df.iloc`` and pickles each
chunk once, here: the index, the dtypes and the categories of categorical columns travel with
it, so ``pd.concat`` of the results, in row order, is ``func(df)`` for any function that works
row by row (or keeps some rows, as a filter does). The result of each chunk must keep its rows'
index labels; the worker checks that, so a function that would give a different answer in
chunks (a ``groupby``, a ``reset_index``) is refused instead of silently glued together.

**Errors name the row.** ``func`` runs on a whole chunk, so when it raises, the worker runs it
again on halves of the chunk to find the first row that fails on its own, and the error
(:class:`~mpdemo.errors.FrameError`) names that row's index label and position.

**Parquet row groups are to Parquet what byte ranges are to CSV.** A Parquet file is stored in
*row groups* of rows, column by column, with a footer that says where each starts. A worker can
read any one of them without the others, so ``process_parquet`` sends each worker a path and a
few row group numbers, and the worker reads them itself, one at a time: nothing large crosses a
pipe, and each worker holds one row group at a time, whatever the file's size. The writer of a
file chooses its row groups: a file of one row group is one task.

Both run on :func:`mpdemo.chunking.in_flight`, the loop of ``chunked_map`` and the CSV pipeline,
so they share its behaviour: a killed worker raises :class:`~mpdemo.errors.WorkerDied` within
moments, Ctrl-C stops the workers at once, a function that cannot be sent is named before any
process starts, and they run on a :class:`mpdemo.ProcessPool`, a ``ProcessPoolExecutor``,
threads or a dask cluster (``executor=client.get_executor()``).

pandas and pyarrow are imported inside the functions that need them: every worker imports
``mpdemo``, and most lessons never need either.
"""

from __future__ import annotations

import functools
import os
import pickle
import stat
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, NamedTuple

from mpdemo.chunking import CHUNKS_IN_FLIGHT_PER_PROCESS, chosen_chunksize, default_chunksize, in_flight
from mpdemo.context import process_count
from mpdemo.errors import FrameError, NotSendable, WorkerTraceback, sendable
from mpdemo.guard import DATA_CURE, check_function
from mpdemo.pipeline import FileStamp, check_unchanged, stamp_of
from mpdemo.pool import Call, ProcessPool, workers_for
from mpdemo.timing import TaskRecord, Timeline

if TYPE_CHECKING:
    import pandas as pd

#: With ``chunksize="auto"``, chunks hold about this much of the frame at most (MB in memory).
MAX_CHUNK_MB = 16


class RowFailure(NamedTuple):
    """The row a chunk failed on, in words (``where``), with its index label and position."""

    where: str
    label: Any
    position: int
    error: BaseException
    traceback: str


class FrameReply(NamedTuple):
    """What a worker sends back for one task: its result (pickled by the worker when the task came
    pickled), the task's record, and a failure (a :class:`RowFailure`, or another exception)."""

    result: Any
    record: TaskRecord
    failure: RowFailure | BaseException | None = None


# ── Shared by both: run the function, and find the row to blame ──────────────────────────────


def apply_to_rows(func: Callable, frame: pd.DataFrame, name_row: Callable[[int], str], start: int) -> tuple:
    """``(func(frame), None)``, or ``(None, RowFailure)`` naming the first row ``func`` fails on alone.

    ``name_row(position)`` says where the row at that position of ``frame`` is, in words;
    ``start`` is the position of ``frame``'s first row in the whole input. Every exception
    counts, ``SystemExit`` too.
    """
    try:
        return func(frame), None
    except BaseException as error:
        worker_traceback = traceback.format_exc()
        position = first_failing_row(func, frame)
        if position is None:
            where = f"{rows_text(frame, start)} (no single row fails alone)"
            return None, RowFailure(where, None, start, sendable(error), worker_traceback)
        return None, RowFailure(name_row(position), frame.index[position], start + position, sendable(error),
                                worker_traceback)


def first_failing_row(func: Callable, frame: pd.DataFrame) -> int | None:
    """The position of the first row that ``func`` fails on alone, found by halving.

    ``func`` failed on the whole frame. If it fails on the first half, the row is there; if not,
    and it fails on the second half, it is there; if it fails on neither, the failure needs rows
    of both, and no one row is to blame (None). At most about twice the frame's rows of work.
    """
    low, high = 0, len(frame)
    while high - low > 1:
        middle = (low + high) // 2
        if fails(func, frame.iloc[low:middle]):
            high = middle
        elif fails(func, frame.iloc[middle:high]):
            low = middle
        else:
            return None
    return low if high - low == 1 else None


def fails(func: Callable, frame: pd.DataFrame) -> bool:
    try:
        func(frame)
    except BaseException:
        return True
    return False


def rows_text(frame: pd.DataFrame, start: int) -> str:
    """``"rows 0–2,499 (index 'a' to 'z')"``: the rows of a chunk, by position and by label."""
    if len(frame) == 0:
        return "the empty frame"
    positions = f"row {start:,}" if len(frame) == 1 else f"rows {start:,}–{start + len(frame) - 1:,}"
    labels = f"{frame.index[0]!r}" if len(frame) == 1 else f"{frame.index[0]!r} to {frame.index[-1]!r}"
    return f"{positions} (index {labels})"


def raise_failure(failure: RowFailure | BaseException) -> None:
    """A worker's failure raised here: a row's as :class:`FrameError`, with its traceback chained."""
    if not isinstance(failure, RowFailure) or isinstance(failure.error, NotSendable):
        raise failure.error if isinstance(failure, RowFailure) else failure
    failure.error.__cause__ = WorkerTraceback(failure.traceback)
    raise FrameError(failure.where, failure.label, failure.position, failure.error) from failure.error


def open_reply(reply: FrameReply, call: Call) -> tuple[Any, TaskRecord]:
    """A task's result and record (the caller's pickling added); its failure raised."""
    record = reply.record
    result = reply.result
    if isinstance(result, bytes):
        clock = time.perf_counter()
        result = pickle.loads(result)
        record = record._replace(caller_pickling=call.caller_seconds + time.perf_counter() - clock)
    if reply.failure is not None:
        raise_failure(reply.failure)
    return result, record


# ── frame_apply: a DataFrame in memory ───────────────────────────────────────────────────────


def frame_apply(func: Callable[[pd.DataFrame], Any], df: pd.DataFrame, *, processes: int | None = None,
                chunksize: int | str = "auto", executor: Executor | ProcessPool | None = None,
                progress: bool = False, timeline: Timeline | None = None) -> pd.DataFrame | pd.Series:
    """``func(df)``, computed on chunks of rows by worker processes and put back together in order.

    func: ``func(chunk) -> DataFrame | Series`` that keeps its rows' index labels: row by row
        (``chunk.apply(f, axis=1)``, column arithmetic) or a filter; from a module, not a lambda.
    chunksize: rows per chunk; ``"auto"``: about four chunks per process, at most ``MAX_CHUNK_MB``.
    processes, executor, progress, timeline: as for :func:`mpdemo.chunked_map`.

    Raises :class:`~mpdemo.errors.FrameError` naming the index label and position of the row that
    failed, :class:`~mpdemo.errors.NotSendable` for a function, value or result that cannot travel,
    :class:`~mpdemo.errors.WorkerDied` within moments when a worker dies.
    """
    df = require_frame(df)
    processes = process_count(processes, executor)
    chunksize = auto_chunksize(df, processes) if chunksize == "auto" else chosen_chunksize(chunksize, len(df), processes)
    pickled = check_function(func, executor)
    import pandas as pd
    from tqdm.auto import tqdm

    if timeline is not None:
        timeline.began = time.time()
    call_for = functools.partial(frame_call, func, pickled=pickled)
    results = []
    with workers_for(executor, processes) as workers, tqdm(total=len(df), disable=not progress, unit="row") as bar:
        window = CHUNKS_IN_FLIGHT_PER_PROCESS * processes
        for _, call, reply in in_flight(workers, frame_chunks(df, chunksize), call_for, window):
            result, record = open_reply(reply, call)
            results.append(result)
            bar.update(record.items)
            if timeline is not None:
                timeline.append(record)
    return pd.concat(results)


def frame_chunks(df: pd.DataFrame, chunksize: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(start, rows start:start + chunksize)`` of the frame; an empty frame is one empty chunk,
    so that ``func`` still decides the result's columns and dtypes."""
    for start in range(0, max(1, len(df)), chunksize):
        yield start, df.iloc[start:start + chunksize]


def frame_call(func: Callable, task: tuple[int, pd.DataFrame], *, pickled: bool) -> Call:
    """What to run for one chunk: pickled here (timed) for process pools; a copy for threads, which
    would otherwise share the caller's rows."""
    start, chunk = task
    what = rows_text(chunk, start)
    if not pickled:
        return Call(run_frame_chunk, (func, start, chunk.copy()), what)
    clock = time.perf_counter()
    payload = pack_frame(chunk, start)
    return Call(run_frame_chunk, (func, start, payload), what, caller_seconds=time.perf_counter() - clock)


def run_frame_chunk(func: Callable, start: int, chunk: pd.DataFrame | bytes) -> FrameReply:
    """Runs in a worker: ``func`` on one chunk of rows (``start``: the position of its first row).

    A chunk that came pickled gets its result pickled here too, so that a result that cannot
    travel is named here. The result must be a DataFrame or a Series of the chunk's rows.
    """
    began, clock = time.time(), time.perf_counter()
    pickled = isinstance(chunk, bytes)
    if pickled:
        chunk = pickle.loads(chunk)
    unpickling = time.perf_counter() - clock
    result, failure = apply_to_rows(func, chunk, lambda i: f"row {chunk.index[i]!r} (position {start + i:,})", start)
    if failure is None:
        failure = wrong_result(result, chunk, start)
    clock = time.perf_counter()
    if pickled and failure is None:
        result, failure = pack_result(result, f"the result of {rows_text(chunk, start)}")
    pickling = unpickling + time.perf_counter() - clock
    return FrameReply(result, TaskRecord(os.getpid(), began, time.time(), len(chunk), pickling=pickling), failure)


def wrong_result(result: Any, chunk: pd.DataFrame, start: int) -> Exception | None:
    """Why ``result`` cannot be put together with the other chunks' results, or None."""
    import pandas as pd

    if not isinstance(result, (pd.DataFrame, pd.Series)):
        return TypeError(f"frame_apply needs func to return a DataFrame or a Series of the chunk's rows; for "
                         f"{rows_text(chunk, start)} it returned {type(result).__name__}. For one value per chunk "
                         "(a sum, a count), use mpdemo.chunked_map on the chunks, or process_parquet on a file, and "
                         "combine the values yourself")
    if not (result.index.equals(chunk.index) or result.index.isin(chunk.index).all()):
        return ValueError(f"func returned rows whose index labels are not those of its chunk "
                          f"({rows_text(chunk, start)}): frame_apply puts the chunks' results together in row "
                          "order, which equals func(df) only when func keeps each row's label (works row by row, "
                          "or keeps some rows). A groupby or a reset_index inside func gives other labels: do it "
                          "on frame_apply's result instead")
    return None


def pack_frame(chunk: pd.DataFrame, start: int) -> bytes:
    """``chunk`` pickled: the bytes that travel. A failure names the first value that cannot travel."""
    try:
        return pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise NotSendable(f"{unpicklable_value(chunk, start)} cannot be sent to worker processes: "
                          f"{type(error).__name__}: {error}. {DATA_CURE}") from error


def unpicklable_value(chunk: pd.DataFrame, start: int) -> str:
    """Where the first value of ``chunk`` that cannot be pickled is, in words."""
    for column in range(chunk.shape[1]):
        for position, value in enumerate(chunk.iloc[:, column]):
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                return (f"the value in column {chunk.columns[column]!r} of row {chunk.index[position]!r} "
                        f"(position {start + position:,})")
    return f"{rows_text(chunk, start)} (its index or its attributes)"


def pack_result(result: Any, what: str) -> tuple[bytes | None, Exception | None]:
    """``result`` pickled here, in the worker, or the error that names what cannot be sent back."""
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), None
    except Exception as error:
        return None, NotSendable(f"{what} cannot be sent back from the worker: {type(error).__name__}: {error}. "
                                 f"{DATA_CURE}")


def require_frame(df: Any) -> pd.DataFrame:
    """``df``, if it is a DataFrame; anything else is refused with what to do instead."""
    import pandas as pd

    if isinstance(df, pd.DataFrame):
        return df
    if isinstance(df, pd.Series):
        raise TypeError("frame_apply takes a DataFrame, not a Series: pass series.to_frame(), and a func that takes "
                        "a DataFrame")
    raise TypeError(f"frame_apply takes a pandas DataFrame, not {type(df).__name__}: for a list or an array of rows, "
                    "use mpdemo.chunked_map")


def auto_chunksize(df: pd.DataFrame, processes: int) -> int:
    """Pool.map's rule for the frame's rows (about four chunks per process), at most about
    ``MAX_CHUNK_MB`` of the frame a chunk (its size in memory, measured on its first rows)."""
    sample = df.iloc[:1_000]
    row_bytes = sample.memory_usage(index=True, deep=True).sum() / max(1, len(sample))
    return max(1, min(default_chunksize(len(df), processes), int(MAX_CHUNK_MB * 2**20 / max(1.0, row_bytes))))


# ── process_parquet: a Parquet file, read by the workers ─────────────────────────────────────


class ParquetJob(NamedTuple):
    """What every worker needs for every task: the function, the file as it was, what to read."""

    func: Callable
    path: str
    columns: list[str] | None
    stamp: FileStamp  # the file when the run began: a worker checks it is still the same
    pickle_results: bool  # pickle them in the worker (process pools), or leave them as they are


class ParquetTask(NamedTuple):
    """Consecutive row groups of the file, the first of them starting at row ``first_row``."""

    groups: tuple[int, ...]
    first_row: int
    rows: int


def process_parquet(path: str | os.PathLike, func: Callable[[pd.DataFrame], Any], *, columns: list[str] | None = None,
                    processes: int | None = None, executor: Executor | ProcessPool | None = None,
                    progress: bool = False, timeline: Timeline | None = None) -> list:
    """``[func(batch) for every row group of the file]``, in file order; each worker reads its own row groups.

    path: one Parquet file the workers can open (on a cluster: a shared file system).
    func: ``func(batch)`` gets one row group as a DataFrame (only ``columns``, if given), indexed
        by the file's row numbers (or by the index pandas stored in the file). Return something
        small (a sum, a count per group) to keep memory flat; ``pd.concat`` the results of a
        function that returns rows.
    processes, executor, progress, timeline: as for :func:`mpdemo.chunked_map`.

    Each task is a few consecutive row groups (about four tasks per process); the worker reads
    them one at a time, with one thread (the workers are the parallelism), so it holds one row
    group at a time; at most four tasks per process are in flight. Raises at once
    ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not Parquet (or
    is damaged) and for unknown ``columns``; :class:`~mpdemo.errors.FrameError` naming the row
    ``func`` failed on; :class:`~mpdemo.errors.FileChanged` if the file changes meanwhile.
    """
    processes = process_count(processes, executor)
    stamp, group_rows = parquet_layout(path, columns)
    pickled = check_function(func, executor)
    from tqdm.auto import tqdm

    job = ParquetJob(func, str(path), None if columns is None else list(columns), stamp, pickled)
    if timeline is not None:
        timeline.began = time.time()
    results = []
    with workers_for(executor, processes) as workers, tqdm(total=sum(group_rows), disable=not progress,
                                                           unit="row") as bar:
        tasks = parquet_tasks(group_rows, default_chunksize(len(group_rows), processes))
        for task, call, reply in in_flight(workers, tasks, functools.partial(parquet_call, job),
                                           CHUNKS_IN_FLIGHT_PER_PROCESS * processes):
            part, record = open_reply(reply, call)
            results += part
            bar.update(task.rows)
            if timeline is not None:
                timeline.append(record)
    return results


def parquet_layout(path: str | os.PathLike, columns: list[str] | None) -> tuple[FileStamp, list[int]]:
    """The file's stamp and the rows of each of its row groups, from its footer; a clear error for a
    missing file, a directory, a file that is not Parquet (or is damaged) and unknown ``columns``."""
    import pyarrow.parquet as pq

    status = os.stat(path)  # FileNotFoundError or PermissionError, naming the path
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(f"{path} is a directory: pass one Parquet file (for a folder of them, call "
                                "process_parquet on each, or read the folder with dask.dataframe)")
    try:
        metadata = pq.read_metadata(path)
    except Exception as error:  # pyarrow: "Parquet magic bytes not found in footer", ...
        raise ValueError(f"{path} is not a Parquet file, or it is damaged: {type(error).__name__}: {error}") from error
    if columns is not None:
        if isinstance(columns, str):
            raise ValueError(f"columns must be a list of column names, e.g. [{columns!r}], not a string")
        names = metadata.schema.to_arrow_schema().names
        unknown = [column for column in columns if column not in names]
        if unknown:
            raise ValueError(f"{path} has no column {', '.join(map(repr, unknown))}; its columns: {', '.join(names)}")
    return FileStamp.of(status), [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]


def parquet_tasks(group_rows: list[int], groups_per_task: int) -> Iterator[ParquetTask]:
    """The row groups, ``groups_per_task`` consecutive ones a task, each with its first row."""
    first = 0
    for start in range(0, len(group_rows), groups_per_task):
        rows = sum(group_rows[start:start + groups_per_task])
        yield ParquetTask(tuple(range(start, min(len(group_rows), start + groups_per_task))), first, rows)
        first += rows


def parquet_call(job: ParquetJob, task: ParquetTask) -> Call:
    groups = f"row group {task.groups[0]}" if len(task.groups) == 1 else \
        f"row groups {task.groups[0]}–{task.groups[-1]}"
    return Call(run_parquet_task, (job, task), f"{groups} of {job.path}")


def run_parquet_task(job: ParquetJob, task: ParquetTask) -> FrameReply:
    """Runs in a worker: open the file, read the task's row groups one at a time, ``func`` on each.

    The file must still be the one the caller found (size, time of change, inode). A row group
    that cannot be read is the file's fault, not a row's: a ``ValueError`` naming it.
    """
    import pyarrow.parquet as pq

    began, pickling = time.time(), 0.0
    results, failure, first = [], None, task.first_row
    try:
        with open(job.path, "rb") as source:
            check_unchanged(job.path, job.stamp, stamp_of(job.path, source))
            file = pq.ParquetFile(source)
            for group in task.groups:
                batch = read_row_group(file, group, first, job)
                result, failure = apply_to_rows(job.func, batch, functools.partial(name_row, batch, job.path, group,
                                                                                   first), first)
                if failure is not None:
                    break
                results.append(result)
                first += len(batch)
    except Exception as error:  # not a row's fault: the file changed, or cannot be read
        failure = sendable(error)
    if job.pickle_results:
        clock = time.perf_counter()
        results, cannot = pack_group_results(results, task.groups, job.path)
        failure = failure or cannot
        pickling = time.perf_counter() - clock
    record = TaskRecord(os.getpid(), began, time.time(), first - task.first_row, pickling=pickling)
    return FrameReply(results, record, failure)


def pack_group_results(results: list, groups: tuple[int, ...], path: str) -> tuple[bytes | None, Exception | None]:
    """The results of a task's row groups pickled, or the error naming the first that cannot be."""
    packed, cannot = pack_result(results, f"the results of row groups {groups} of {path}")
    for group, result in zip(groups, results if cannot else []):
        if (cannot := pack_result(result, f"the result of row group {group} of {path}")[1]) is not None:
            break
    return packed, cannot


def read_row_group(file: Any, group: int, first_row: int, job: ParquetJob) -> pd.DataFrame:
    """Row group ``group`` as a DataFrame, with one thread; indexed by the file's row numbers
    (from ``first_row``) unless the file stores an index of its own."""
    import pandas as pd

    try:
        table = file.read_row_group(group, columns=job.columns, use_threads=False, use_pandas_metadata=True)
    except Exception as error:
        raise ValueError(f"row group {group} of {job.path} cannot be read, the file is damaged: "
                         f"{type(error).__name__}: {error}") from error
    batch = table.to_pandas(use_threads=False)
    if isinstance(batch.index, pd.RangeIndex) and batch.index.start == 0 and batch.index.step == 1:
        batch.index = pd.RangeIndex(first_row, first_row + len(batch))
    return batch


def name_row(batch: pd.DataFrame, path: str, group: int, first_row: int, position: int) -> str:
    """Where row ``position`` of a row group is, in words: its row in the file (and its label)."""
    label = batch.index[position]
    own = "" if label == first_row + position else f", index {label!r}"
    return f"row {first_row + position:,} of {path} (row group {group}{own})"
