"""The streaming CSV pipeline: bounded queues, worker processes, results in order, nothing lost.

How the data flows::

      the caller's process                                          worker processes (ctx.Process)
      ────────────────────                                          ──────────────────────────────
      reader ──► chunk 0, 1, 2, …  ──► task queue ─────────────────► worker: take a chunk,
        ▲        (seq, rows)            (bounded: never more          apply func to each row,
        │     or (seq, byte range)       than W chunks in flight)     pickle what it sends itself
        │                                                                         │
        │ reads on only while fewer                                               ▼
        │ than W chunks are in flight    result queue ◄──── bytes: (seq, results, skipped, record)
        │                                    │
      caller ◄── results, in input order ◄── reorder buffer {seq: chunk}  (at most W chunks)

**Reader.** The caller's process reads the file and cuts it into chunks, each with a sequence
number ``seq``. With ``feed="rows"`` it parses the CSV itself and ships each chunk as rows;
with ``feed="ranges"`` it only finds where records end (quote parity, at C speed: see
:func:`byte_ranges`) and ships ``(start, end, first line)``: each worker opens the file and
parses its own range. Both go through one parser, :func:`records`, so both give exactly what
``csv.reader`` gives.

**Backpressure.** At most ``W`` chunks (4 per process) are *in flight*: sent but not yet handed
to you. The reader reads the next chunk only when one leaves, so when the workers are slow, or
you are, reading stops. Memory holds at most ``W`` chunks whatever the size of the file.

**Workers** start on demand (no more than there are chunks), ignore Ctrl-C, take chunks until
a ``None`` sentinel, and send back every chunk's outcome as *bytes they pickled themselves*.
``multiprocessing.Queue.put`` pickles in a background feeder thread and drops an object it
cannot pickle with only a printed traceback (CPython gh-84376); bytes always pickle, so a result
that cannot travel fails in the worker, where it is an ordinary exception naming its line.

**Reorder buffer.** Chunks finish in any order. With ``ordered=True`` a finished chunk waits in
a dict keyed by ``seq`` until every chunk before it has been handed over; since it is one of the
``W`` in flight, one slow chunk stops the reader instead of piling up results behind it.

**Failures.** A row that fails (the function raises, the CSV is malformed, the bytes are not
UTF-8) is raised as :class:`RowError` naming the file and line, or recorded in ``skipped``
(``on_error="skip"``). The caller never blocks without a timeout: it checks that every worker
is alive while it waits, so a killed worker raises :class:`~mpdemo.chunking.WorkerDied` within
moments. On any error, on Ctrl-C, and when you stop early (``break``, ``close()``, the stream
garbage-collected) the workers are stopped at once.
"""

from __future__ import annotations

import codecs
import csv
import io
import multiprocessing
import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from mpdemo.chunking import (
    CHUNKS_IN_FLIGHT_PER_PROCESS,
    WorkerDied,
    WorkerError,
    _picklable,
    _require_positive,
    default_chunksize,
)
from mpdemo.context import cpu_count, get_context, start_method
from mpdemo.guard import DATA_CURE, NotSendable, check_sendable, describe_dead_processes, ignore_sigint, stop_processes
from mpdemo.timing import TaskRecord, Timeline

#: Rows per chunk at most when ``chunksize=None``: keeps the chunks in flight small in memory.
MAX_AUTO_CHUNKSIZE = 1_000
#: Bytes the reader reads at a time with ``feed="rows"`` (then on to the end of that line).
READ_BLOCK = 64 * 1024
#: How often (seconds) the caller checks on its workers while it waits for a result.
POLL_SECONDS = 0.1
#: How often (seconds) an idle worker checks that its parent is still alive.
PARENT_CHECK_SECONDS = 1.0
#: A line no CSV file holds, parsed after a byte range to check that the range ended between records.
SPLIT_MARK = "\ue000mpdemo: end of range\ue000"
ON_ERROR = ("raise", "skip")
FEEDS = ("rows", "ranges")


class RowError(WorkerError):
    """A row could not be processed: the row function raised, or the row could not be read.

    ``path`` and ``line`` say where; the original exception is chained as ``__cause__`` and
    is also ``error``. For a row function's error, its own cause holds the worker's traceback.
    """

    def __init__(self, path: str, line: int, error: BaseException):
        super().__init__(line, error)
        self.path, self.line = path, line

    def __str__(self) -> str:
        return f"line {self.line:,} of {self.path}: {type(self.error).__name__}: {self.error}"


class SplitError(ValueError):
    """``feed="ranges"`` found that quote parity put a range boundary inside a quoted field."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


@dataclass
class PipelineResult:
    """What :func:`process_csv` returns: every result, every skipped row, and the rows read."""

    results: list
    skipped: list[tuple[int, str]]
    rows_read: int


class RowsChunk(NamedTuple):
    """Rows parsed by the reader (as tuples), with the line each starts on. A row the reader could
    not read travels as the exception that says why, so the worker applies ``on_error`` to it."""

    seq: int
    lines: list[int]
    rows: list[tuple[str, ...] | Exception]


class RangeChunk(NamedTuple):
    """Bytes ``start:end`` of the file, whose first line is ``first_line``, for a worker to parse."""

    seq: int
    start: int
    end: int
    first_line: int
    header: bool  # the header is in this range: skip it
    last: bool  # the range ends at the end of the file


class ChunkDone(NamedTuple):
    """A worker's report on one chunk. ``row_error``: (line, exception, traceback) of the row that
    raised with ``on_error="raise"``; ``failure``: an error that is not one row's fault."""

    seq: int
    results: list
    skipped: list[tuple[int, str]]
    rows: int
    record: TaskRecord
    row_error: tuple[int, BaseException, str] | None
    failure: Exception | None


def stream_csv(path: str | os.PathLike, func: Callable[[list[str]], Any], *, processes: int | None = None,
               chunksize: int | None = None, on_error: str = "raise", ordered: bool = True, header: bool = True,
               progress: bool = False, feed: str = "rows", timeline: Timeline | None = None) -> CsvStream:
    """``func(row)`` for every row of a CSV file, computed by worker processes, as an iterator.

    path: the CSV file, UTF-8 (a byte-order mark is skipped), any line ends (``\\n``, ``\\r\\n``).
    func: gets each row as ``list[str]``, exactly as ``csv.reader`` yields it; it must be
        importable by the workers (a module's function, not a lambda or a notebook cell's).
    processes: workers at most (default :func:`mpdemo.cpu_count`); started as chunks need them.
    chunksize: rows per chunk (``feed="ranges"``: about that many lines); None picks Pool.map's
        rule for the file's estimated row count, at most ``MAX_AUTO_CHUNKSIZE``.
    on_error: ``"raise"``: the first bad row raises :class:`RowError` naming file and line (in
        order, after the results of every row before it when ``ordered``); ``"skip"``: bad rows
        go to ``.skipped`` as ``(line, reason)`` and the stream goes on.
    ordered: results in the file's order (default), or chunk by chunk as they finish.
    header: the first row (blank lines aside) is a header, not passed to ``func``.
    progress: a tqdm bar over the file's bytes.
    feed: ``"rows"``: this process parses and ships rows; ``"ranges"``: it ships byte ranges that
        each worker reads and parses itself (see :func:`byte_ranges`).
    timeline: receives one :class:`~mpdemo.timing.TaskRecord` per chunk; ``began`` is set when
        reading starts.

    Blank lines are not rows: ``csv.reader`` yields ``[]`` for them, and the pipeline skips them
    (as ``csv.DictReader`` does), so a trailing blank line is no bad row. Line numbers are the
    1-based lines of the file where each row starts (the header is line 1); a quoted field with
    line breaks makes a row span several lines.

    Raises, besides :class:`RowError`: :class:`~mpdemo.guard.NotSendable` at once for a function
    the workers cannot receive (a lambda; under spawn, a notebook cell's function), or later
    naming the line whose result cannot be sent back; :class:`~mpdemo.chunking.WorkerDied` within
    moments when a worker is killed; :class:`SplitError` when ``feed="ranges"`` meets quoting
    that is not RFC 4180; ``FileNotFoundError`` or ``IsADirectoryError`` at once.

    Nothing runs until you iterate. The workers stop when it ends, raises, is interrupted
    (Ctrl-C), is closed (``close()``, the end of a ``with`` block) or is dropped (a ``break``
    out of a ``for`` loop over it). ``.skipped`` and ``.rows_read`` are final when it is
    exhausted, and then ``rows_read`` is the number of results plus ``len(skipped)``.
    """
    return CsvStream(path, func, processes=processes, chunksize=chunksize, on_error=on_error, ordered=ordered,
                     header=header, progress=progress, feed=feed, timeline=timeline)


def process_csv(path: str | os.PathLike, func: Callable[[list[str]], Any], *, processes: int | None = None,
                chunksize: int | None = None, on_error: str = "raise", ordered: bool = True, header: bool = True,
                progress: bool = False, feed: str = "rows", timeline: Timeline | None = None) -> PipelineResult:
    """:func:`stream_csv` collected into a :class:`PipelineResult`; the options are the same."""
    with stream_csv(path, func, processes=processes, chunksize=chunksize, on_error=on_error, ordered=ordered,
                    header=header, progress=progress, feed=feed, timeline=timeline) as stream:
        results = list(stream)
    return PipelineResult(results, stream.skipped, stream.rows_read)


class CsvStream(Iterator):
    """The iterator :func:`stream_csv` returns; the pipeline runs while you iterate it.

    ``skipped`` and ``rows_read`` grow as chunks are handed over; ``chunks_read`` counts the
    chunks the reader has read and sent so far (at most a window ahead of what you have).
    """

    def __init__(self, path: str | os.PathLike, func: Callable[[list[str]], Any], **options: Any):
        # The pipeline does not know this object, so dropping it (a `break` out of a for loop
        # does) frees the generator at once, whose `finally` stops the workers.
        self._pipeline = Pipeline(path, func, **options)
        self._results = self._pipeline.run()

    def __iter__(self) -> Iterator[Any]:
        return self._results  # the generator itself: a for loop then runs at full speed

    def __next__(self) -> Any:
        return next(self._results)

    def close(self) -> None:
        """Stop now: the workers are stopped, and iterating further gives nothing."""
        self._results.close()

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def skipped(self) -> list[tuple[int, str]]:
        return self._pipeline.skipped

    @property
    def rows_read(self) -> int:
        return self._pipeline.rows_read

    @property
    def chunks_read(self) -> int:
        return self._pipeline.chunks_read


class Pipeline:
    """One run of the pipeline: its settings, checked once, here, and its counts (see the module doc)."""

    def __init__(self, path: str | os.PathLike, func: Callable[[list[str]], Any], *, processes: int | None,
                 chunksize: int | None, on_error: str, ordered: bool, header: bool, progress: bool, feed: str,
                 timeline: Timeline | None):
        self.path = str(path)
        self.processes = cpu_count() if processes is None else processes
        _require_positive(processes=self.processes)
        if chunksize is not None:
            _require_positive(chunksize=chunksize)
        _require_choice(on_error=(on_error, ON_ERROR), feed=(feed, FEEDS))
        if Path(path).is_dir():
            raise IsADirectoryError(f"{self.path} is a directory, not a CSV file")
        open(path, "rb").close()  # raises FileNotFoundError or PermissionError, naming the path
        check_sendable(func, start_method())  # before any process starts: a lambda fails here, clearly
        self.func, self.on_error, self.ordered, self.header, self.feed = func, on_error, ordered, header, feed
        self.chunksize = chunksize or auto_chunksize(path, self.processes)
        self.window = CHUNKS_IN_FLIGHT_PER_PROCESS * self.processes
        self.progress, self.timeline = progress, timeline
        self.skipped: list[tuple[int, str]] = []
        self.rows_read = self.chunks_read = self.delivered = 0

    def run(self) -> Iterator[Any]:
        """The pipeline, as a generator: it starts on the first ``next()``, and its ``finally``
        stops the workers however it ends (exhausted, an error, Ctrl-C, closed, dropped)."""
        from tqdm.auto import tqdm  # imported here: workers import this module and never need it

        self.ctx = get_context()
        self.tasks, self.results = self.ctx.Queue(maxsize=self.window), self.ctx.Queue()
        self.tasks._ignore_epipe = True  # see _let_go; set before the queue starts its feeder thread
        self.workers: list[BaseProcess] = []
        reader = self._range_chunks() if self.feed == "ranges" else self._row_chunks()  # a local: see _send_more
        self.sizes: dict[int, int] = {}  # seq -> bytes of the file in that chunk, for the progress bar
        waiting: dict[int, ChunkDone] = {}  # the reorder buffer
        finished = False
        self.bar = tqdm(total=os.path.getsize(self.path), disable=not self.progress, unit="B", unit_scale=True)
        if self.timeline is not None:
            self.timeline.began = time.time()
        try:
            self._send_more(reader)
            while self.chunks_read > self.delivered:
                done = self._receive()
                waiting[done.seq] = done
                ready = _in_order(waiting, self.delivered) if self.ordered else [waiting.pop(done.seq)]
                for chunk in ready:
                    self.delivered += 1
                    self._send_more(reader)  # read ahead, so that the workers are busy while you use these
                    yield from self._hand_over(chunk)
            for _ in self.workers:
                self.tasks.put(None)  # the sentinel: "no more chunks", one per worker
            for process in self.workers:
                process.join(timeout=10)
            self.bar.update(self.bar.total - self.bar.n)  # what follows the last row (line breaks) counts too
            finished = True
        finally:
            self.bar.close()
            reader.close()
            stop_processes(self.workers)  # at once after an error or an early stop; normally they have left
            if not finished:
                _let_go(self.tasks)
            self.tasks.close()
            self.results.close()
            # A queue holds OS semaphores (files in /dev/shm) until it is garbage-collected: let
            # them go now, not when the stream object is dropped.
            self.tasks = self.results = None

    def _send_more(self, reader: Iterator[tuple[RowsChunk | RangeChunk, int]]) -> None:
        """Read and send chunks until ``window`` chunks are in flight or the file is read.

        (The reader is no attribute: it refers to this object, and the cycle would keep the
        queues alive until the garbage collector came by.)
        """
        while self.chunks_read - self.delivered < self.window:
            item = next(reader, None)
            if item is None:
                return
            chunk, size = item
            self.sizes[chunk.seq] = size
            if len(self.workers) < self.processes:  # start workers only as chunks need them
                # daemon: should this process exit without stopping them, multiprocessing does
                process = self.ctx.Process(target=work, name="mpdemo-pipeline-worker", daemon=True, args=(
                    self.func, self.path, self.feed, self.on_error, self.tasks, self.results))
                process.start()
                self.workers.append(process)
            self.tasks.put(chunk)  # never blocks: the queue holds `window` chunks, and fewer are in flight
            self.chunks_read += 1

    def _receive(self) -> ChunkDone:
        """The next chunk a worker finished. Never waits on the queue alone: a dead worker raises."""
        while True:
            try:
                message = self.results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                message = None
            dead = [p for p in self.workers if p.exitcode is not None]
            if dead:
                raise WorkerDied(f"a worker process died unexpectedly while processing {self.path} "
                                 f"({describe_dead_processes(dead)}); the other workers were stopped and "
                                 "the rows in flight are lost")
            if message is not None:
                return pickle.loads(message)

    def _hand_over(self, done: ChunkDone) -> Iterator[Any]:
        """Account for one chunk, then yield its results; raise its error, if it has one."""
        self.bar.update(self.sizes.pop(done.seq))
        self.rows_read += done.rows
        self.skipped += done.skipped
        if self.timeline is not None:
            self.timeline.append(done.record)
        yield from done.results
        if done.row_error is not None:
            line, error, worker_traceback = done.row_error
            error.__cause__ = WorkerTraceback(worker_traceback)
            raise RowError(self.path, line, error) from error
        if done.failure is not None:
            raise done.failure

    def _row_chunks(self) -> Iterator[tuple[RowsChunk, int]]:
        """``feed="rows"``: parse the file here; yield chunks of rows, each with the bytes it read.

        Rows wait in chunks as tuples: Python's garbage collector scans every list that is alive
        again and again, which slowed this reader threefold; a tuple of strings it stops tracking.
        """
        with open(self.path, "rb") as file:
            bad_lines: dict[int, UnicodeDecodeError] = {}
            chunk, counted = RowsChunk(0, [], []), 0
            for line, row in records(_text_lines(file, bad_lines), 1, bad_lines, header=self.header):
                chunk.lines.append(line)
                chunk.rows.append(tuple(row) if isinstance(row, list) else row)
                if len(chunk.rows) == self.chunksize:
                    yield chunk, file.tell() - counted
                    chunk, counted = RowsChunk(chunk.seq + 1, [], []), file.tell()
            if chunk.rows:
                yield chunk, file.tell() - counted

    def _range_chunks(self) -> Iterator[tuple[RangeChunk, int]]:
        """``feed="ranges"``: yield byte ranges of about ``chunksize`` lines, with their sizes."""
        block_size = max(1, round(self.chunksize * bytes_per_line(self.path)))
        size = os.path.getsize(self.path)
        header = self.header
        for seq, (start, end, first_line, has_data) in enumerate(byte_ranges(self.path, block_size)):
            yield RangeChunk(seq, start, end, first_line, header and has_data, end >= size), end - start
            header = header and not has_data


def _in_order(waiting: dict[int, ChunkDone], delivered: int) -> Iterator[ChunkDone]:
    """Take chunks out of the reorder buffer while the next one in sequence is there."""
    while delivered in waiting:
        yield waiting.pop(delivered)
        delivered += 1


def _let_go(tasks: Any) -> None:
    """Release a task queue whose workers are gone, without leaving its feeder thread stuck.

    ``Queue.put`` hands each chunk to a feeder thread that writes it into a pipe. With nobody
    left to read, that thread would wait forever, holding the chunks. Closing our end of the
    pipe makes its write fail, and ``_ignore_epipe`` lets it end quietly, as
    ``concurrent.futures`` does with its own queue (CPython gh-94777).
    """
    tasks._reader.close()
    tasks.cancel_join_thread()  # and never wait for it when this process exits


def _require_choice(**settings: tuple[str, tuple[str, ...]]) -> None:
    for name, (value, allowed) in settings.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def auto_chunksize(path: str | os.PathLike, processes: int) -> int:
    """Pool.map's rule for the file's estimated row count, at most ``MAX_AUTO_CHUNKSIZE`` rows.

    The rule alone would give a huge file huge chunks, and the chunks in flight are what the
    pipeline holds in memory, so the cap keeps memory small. It also keeps the work balanced:
    the last chunk runs alone, and with rows of 60 µs a chunk of 1,000 takes 60 ms, while a
    thousand rows already make the per-chunk overhead (well under a millisecond) small.
    """
    estimated_rows = round(os.path.getsize(path) / bytes_per_line(path))
    return min(default_chunksize(estimated_rows, processes), MAX_AUTO_CHUNKSIZE)


def bytes_per_line(path: str | os.PathLike, sample: int = 64 * 1024) -> float:
    """The average length of a line, from the first ``sample`` bytes of the file."""
    with open(path, "rb") as file:
        head = file.read(sample)
    return max(1.0, len(head) / max(1, head.count(b"\n")))


# ── Reading CSV: one parser for both feeds ───────────────────────────────────────────────────


def records(lines: Iterable[str], first_line: int, bad_lines: Mapping[int, UnicodeDecodeError] | None = None, *,
            header: bool = False) -> Iterator[tuple[int, list[str] | Exception]]:
    """``csv.reader``'s rows, each with the line it starts on; a row that cannot be read comes
    as the exception that says why. Both feeds parse with this function, so they agree.

    lines: text lines with their line ends (a file opened with ``newline=""``, or ``io.StringIO``
        with ``newline=""``), as ``csv.reader`` needs them.
    first_line: the file's line number of the first of them.
    bad_lines: numbers of lines that were not valid UTF-8, mapped to their UnicodeDecodeError;
        a row touching one comes as that error. (It may fill as ``lines`` is read.)
    header: skip the first row (after blank lines).

    Blank lines give no row (``csv.reader`` yields ``[]`` for them).
    """
    reader = csv.reader(lines)
    start = first_line  # the line the next row starts on
    while True:
        try:
            for row in reader:
                end = first_line + reader.line_num
                if row:  # a blank line gives [], which is no row
                    if bad_lines:
                        row = next((bad_lines[n] for n in range(start, end) if n in bad_lines), row)
                    if header:
                        header = False
                        if isinstance(row, list):  # a header that cannot be read is reported
                            start = end
                            continue
                    yield start, row
                start = end
            return
        except csv.Error as error:  # e.g. a field over the size limit; the reader goes on after it
            header = False
            yield start, error
            start = first_line + reader.line_num


def decode(data: bytes, first_line: int, bad_lines: dict[int, UnicodeDecodeError]) -> str:
    """``data`` decoded as UTF-8. Lines that are not valid UTF-8 are noted in ``bad_lines`` (by
    line number, counting from ``first_line``) and decoded with replacement characters."""
    try:
        return data.decode("utf-8")  # the fast path: all of it at once, at C speed
    except UnicodeDecodeError:
        pass
    pieces = []
    for number, line in enumerate(data.splitlines(keepends=True), first_line):  # \n, \r\n and \r, as csv
        try:
            pieces.append(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            bad_lines[number] = error
            pieces.append(line.decode("utf-8", errors="replace"))
    return "".join(pieces)


def count_lines(data: bytes) -> int:
    """Line breaks in ``data`` as ``csv.reader`` counts them: ``\\n``, ``\\r\\n`` and a lone ``\\r``."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _text_lines(file: BinaryIO, bad_lines: dict[int, UnicodeDecodeError]) -> Iterator[str]:
    """The lines of a binary file as text, read and decoded a block at a time (a BOM is dropped).

    Each block is completed to the end of its last line, so neither a ``\\r\\n`` nor a character
    is ever cut in two.
    """
    _skip_bom(file)
    line = 1
    while block := file.read(READ_BLOCK):
        if not block.endswith(b"\n"):
            block += file.readline()
        yield from io.StringIO(decode(block, line, bad_lines), newline="")
        line += count_lines(block)


def _skip_bom(file: BinaryIO) -> None:
    """Move past a UTF-8 byte-order mark at the start of ``file``, if there is one."""
    if file.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
        file.seek(0)


class ByteRange(NamedTuple):
    """Bytes ``start:end`` of a file, ending where a record ends; ``has_data``: not only line breaks."""

    start: int
    end: int
    first_line: int
    has_data: bool


def byte_ranges(path: str | os.PathLike, block_size: int) -> Iterator[ByteRange]:
    """Cut a CSV file into byte ranges of at least ``block_size`` bytes that end where records end.

    A line break ends a record unless it is inside a quoted field. In RFC 4180 CSV every quote
    inside a quoted field is doubled (``""``), which leaves the count of quotes even, so a line
    break is inside a quoted field exactly when an *odd* number of ``"`` came before it. Each
    range is one or more blocks, each read on to the end of its line; a range ends after the
    first block that leaves the count even. ``bytes.count`` does all the counting at C speed.

    A quote in the middle of an unquoted field (``55" TV``) is not RFC 4180, and ``csv.reader``
    takes it literally, which breaks the parity rule. Each worker checks that its range really
    ended between records and raises :class:`SplitError` if not: never a silent mis-split.
    """
    with open(path, "rb") as file:
        _skip_bom(file)
        first_line = 1
        while True:
            start, quotes, lines, has_data = file.tell(), 0, 0, False
            while block := file.read(block_size):
                if not block.endswith(b"\n"):
                    block += file.readline()
                quotes += block.count(b'"')
                lines += count_lines(block)
                has_data = has_data or bool(block.strip(b"\r\n"))
                if quotes % 2 == 0:
                    break  # the line break that ends this block ends a record
            end = file.tell()
            if end == start:
                return
            yield ByteRange(start, end, first_line, has_data)
            first_line += lines


# ── The worker side ──────────────────────────────────────────────────────────────────────────


def work(func: Callable[[list[str]], Any], path: str, feed: str, on_error: str, tasks: Any, results: Any) -> None:
    """Runs in each worker process: take chunks until the ``None`` sentinel, send back each outcome.

    A worker ignores Ctrl-C (its parent stops it), and leaves by itself if its parent dies.
    """
    ignore_sigint()
    parent = multiprocessing.parent_process()
    with open(path, "rb") if feed == "ranges" else nullcontext() as file:
        while parent.is_alive():
            try:
                chunk = tasks.get(timeout=PARENT_CHECK_SECONDS)
            except queue.Empty:
                continue
            if chunk is None:
                return
            results.put(run_chunk(func, chunk, file, on_error, path))
    results.cancel_join_thread()  # the parent is gone: do not wait at exit to send it what it cannot read


def run_chunk(func: Callable[[list[str]], Any], chunk: RowsChunk | RangeChunk, file: BinaryIO | None,
              on_error: str, path: str) -> bytes:
    """Apply ``func`` to every row of one chunk; return the pickled :class:`ChunkDone`."""
    began = time.time()
    results, result_lines, skipped, rows, row_error, failure = [], [], [], 0, None, None
    chunk_rows = rows_of(chunk) if isinstance(chunk, RowsChunk) else range_records(file, chunk, path)
    try:
        for line, row in chunk_rows:
            rows += 1
            try:
                if isinstance(row, Exception):
                    raise row  # the reader could not read this row: on_error decides, as for func
                results.append(func(row))
                result_lines.append(line)
            except Exception as error:
                if on_error == "skip":
                    skipped.append((line, f"{type(error).__name__}: {error}"))
                else:
                    row_error = (line, _picklable(error), traceback.format_exc())
                    break
    except Exception as error:  # not one row's fault: a wrong split, a file that changed, a bug
        failure = _picklable(error)
    done = ChunkDone(chunk.seq, results, skipped, rows, TaskRecord(os.getpid(), began, time.time(), rows),
                     row_error, failure)
    return pack(done, result_lines, path)


def pack(done: ChunkDone, result_lines: list[int], path: str) -> bytes:
    """Pickle a chunk's report here, in the worker. A result that cannot be pickled turns into a
    :class:`~mpdemo.guard.NotSendable` naming its line, sent with the results before it."""
    try:
        return pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    for index, result in enumerate(done.results):
        try:
            pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            failure = NotSendable(f"line {result_lines[index]:,} of {path}: the row function's result cannot be "
                                  f"sent back from the worker: {type(error).__name__}: {error}. {DATA_CURE}")
            return pickle.dumps(done._replace(results=done.results[:index], failure=failure, row_error=None))
    raise RuntimeError(f"the report on chunk {done.seq} cannot be pickled, though each result can")


def rows_of(chunk: RowsChunk) -> Iterator[tuple[int, list[str] | Exception]]:
    """The rows of a :class:`RowsChunk`, each a list again, as ``csv.reader`` gave it."""
    for line, row in zip(chunk.lines, chunk.rows, strict=True):
        yield line, list(row) if isinstance(row, tuple) else row


def range_records(file: BinaryIO, chunk: RangeChunk, path: str) -> Iterator[tuple[int, list[str] | Exception]]:
    """The rows of one byte range, read and parsed by the worker (see :func:`records`).

    Unless the range ends the file, one more line is parsed after it, :data:`SPLIT_MARK`. It
    comes out as a row of its own only if the range ended between records; inside a quoted
    field it would join that field instead, and then the split was wrong: :class:`SplitError`.
    """
    file.seek(chunk.start)
    data = file.read(chunk.end - chunk.start)
    bad_lines: dict[int, UnicodeDecodeError] = {}
    text = decode(data, chunk.first_line, bad_lines)
    if chunk.last:
        yield from records(io.StringIO(text, newline=""), chunk.first_line, bad_lines, header=chunk.header)
        return
    rows = records(io.StringIO(text + SPLIT_MARK + "\n", newline=""), chunk.first_line, bad_lines,
                   header=chunk.header)
    previous = next(rows, None)
    for record in rows:
        yield previous
        previous = record
    if previous is None or previous[1] != [SPLIT_MARK]:
        line = previous[0] if previous else chunk.first_line
        raise SplitError(f"line {line:,} of {path}: feed='ranges' cannot split this file safely. Quote parity "
                         f"said a record ends at byte {chunk.end:,}, but csv.reader is inside a quoted field "
                         "there: a quote inside an unquoted field (such as 55\" for inches) breaks the parity "
                         "rule. Use feed='rows' for this file.")
