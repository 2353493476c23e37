"""The streaming CSV pipeline: bounded, in order, nothing lost, on any pool.

How the data flows::

      the caller's process                                       the workers (a ProcessPool, or any executor)
      ────────────────────                                       ────────────────────────────────────────────
      reader ──► chunk 0, 1, 2, …  ──► in_flight: at most W ──────► run_csv_chunk: apply func to each row,
        ▲        (rows, with their     chunks sent and not yet       note the rows that fail (on_error),
        │         lines; or a byte     handed back to you            pickle its results itself
        │         range to read)                                                 │
        │ reads on only while fewer                                              ▼
        │ than W chunks are in flight     ◄──────────── ChunkDone: results, skipped rows, counts, record
      you ◄── results, in the file's order ◄── reorder buffer (part of the W in flight)

**Reader.** The caller's process reads the file and cuts it into chunks. With ``feed="rows"``
it parses the CSV itself and ships each chunk as rows with the line each starts on; with
``feed="ranges"`` it only finds where records end (quote parity, at C speed: see
:func:`byte_ranges`) and ships ``(start, end, first line)``: each worker opens the file and
parses its own range. So ``feed="ranges"`` runs on any executor whose workers can open the
path, a dask cluster on a shared file system included. Both feeds give exactly what
``csv.reader`` gives: the rows are ``csv.reader``'s own, numbered by one function,
:func:`records`, wherever a line number is needed.

**Backpressure.** The chunks go through :func:`mpdemo.chunking.in_flight`, the same loop as
``chunked_map``'s: at most ``W`` chunks (4 per process) are in flight, sent but not yet handed
to you. The reader reads the next chunk only when one leaves, so when the workers are slow, or
you are, reading stops, and memory holds at most ``W`` chunks whatever the size of the file.

**Reorder buffer.** Chunks finish in any order. With ``ordered=True`` a finished chunk waits
until every chunk before it has been handed over; since it is one of the ``W`` in flight, one
slow chunk stops the reader instead of piling up results behind it.

**Nothing lost.** Every row read is a result or a skipped row (``on_error="skip"``), so
``rows_read == len(results) + len(skipped)``. A row that fails (the function raises, the CSV
is malformed, the bytes are not UTF-8, the result cannot be pickled) is raised as
:class:`~mpdemo.errors.RowError` naming the file and line, or recorded in ``skipped``. The
file's size, modification time and identity are noted when reading starts; a file that
changes while it is read (truncated, appended to, rewritten) raises
:class:`~mpdemo.errors.FileChanged` instead of giving fewer rows. A killed worker raises
:class:`~mpdemo.errors.WorkerDied` within moments. On any error, on Ctrl-C, and when you stop
early (``break``, ``close()``, the end of a ``with`` block, the stream dropped) the workers
are stopped at once.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import os
import pickle
import stat
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from mpdemo.chunking import CHUNKS_IN_FLIGHT_PER_PROCESS, default_chunksize, in_flight
from mpdemo.context import process_count, require_whole
from mpdemo.errors import FileChanged, NotSendable, RowError, SplitError, WorkerTraceback, sendable
from mpdemo.guard import DATA_CURE, check_function, pickling_method
from mpdemo.pool import Call, ProcessPool, workers_for
from mpdemo.timing import TaskRecord, Timeline

#: Rows per chunk at most when ``chunksize=None``: keeps the chunks in flight small in memory.
MAX_AUTO_CHUNKSIZE = 1_000
#: With ``chunksize=None`` and ``feed="ranges"``: a worker's seconds of work per range to aim at,
#: once the first ranges have shown what a row costs, and the most rows a range may then hold.
RANGE_SECONDS = 0.01
MAX_RANGE_ROWS = 20_000
#: Bytes the reader reads at a time with ``feed="rows"`` (then on to the end of that line).
READ_BLOCK = 64 * 1024
#: Rows a worker parses at a time from a byte range (see :func:`strict_batches`).
BATCH_ROWS = 300
#: A line no CSV file holds, parsed after a byte range to check that the range ended between records.
SPLIT_MARK = "\ue000mpdemo: end of range\ue000"
ON_ERROR = ("raise", "skip")
FEEDS = ("rows", "ranges")
#: The first bytes of compressed files, which are not CSV until decompressed.
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
              b"PK\x03\x04": "zip"}


@dataclass
class PipelineResult:
    """What :func:`process_csv` returns: every result, every skipped row, and the rows read."""

    results: list
    skipped: list[tuple[int, str]]
    rows_read: int


class FileStamp(NamedTuple):
    """What identifies the content of a file: its size, its modification time and its inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileStamp:
        return cls(status.st_size, status.st_mtime_ns, status.st_ino)


@dataclass(frozen=True)
class CsvSettings:
    """The settings of one run of the pipeline, checked once, here (see :func:`stream_csv`)."""

    path: str
    func: Callable[[list[str]], Any]
    processes: int
    chunksize: int
    on_error: str
    ordered: bool
    header: bool
    progress: bool
    feed: str
    timeline: Timeline | None
    executor: Executor | ProcessPool | None
    stamp: FileStamp  # the file when the run was set up
    auto_chunks: bool  # chunksize=None: the pipeline picks the size (and with ranges, follows the rows' cost)

    @classmethod
    def checked(cls, path: str | os.PathLike, func: Callable[[list[str]], Any], *, processes: int | None = None,
                chunksize: int | None = None, on_error: str = "raise", ordered: bool = True, header: bool = True,
                progress: bool = False, feed: str = "rows", timeline: Timeline | None = None,
                executor: Executor | ProcessPool | None = None) -> CsvSettings:
        processes = process_count(processes, executor)
        if chunksize is not None:
            require_whole("chunksize", chunksize, also="None")
        _require_choice(on_error=(on_error, ON_ERROR), feed=(feed, FEEDS))
        _require_bool(ordered=ordered, header=header, progress=progress)
        stamp = check_csv_file(path)
        check_function(func, executor)  # before any process starts: a lambda fails here, clearly
        return cls(str(path), func, processes, chunksize or auto_chunksize(path, processes), on_error, ordered,
                   header, progress, feed, timeline, executor, stamp, auto_chunks=chunksize is None)

    @property
    def window(self) -> int:
        """Chunks in flight at most."""
        return CHUNKS_IN_FLIGHT_PER_PROCESS * self.processes


def check_csv_file(path: str | os.PathLike) -> FileStamp:
    """The file's stamp, after checking that it is a regular, uncompressed file we may read.

    The pipeline opens the path more than once (to estimate the chunk size, to read, and with
    ``feed="ranges"`` in every worker), which a FIFO, ``/dev/stdin`` or a process substitution
    such as ``<(zcat f.gz)`` cannot give: each would hang or give nothing the second time.
    """
    status = os.stat(path)  # FileNotFoundError or PermissionError, naming the path
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(f"{path} is a directory, not a CSV file")
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"{path} is not a regular file (a pipe, a device or a process substitution such as "
                         "<(zcat f.gz)): the pipeline reads the file more than once, which these cannot give. "
                         "Save it to a file first.")
    with open(path, "rb") as file:
        head = file.read(8)
    for magic, kind in COMPRESSED.items():
        if head.startswith(magic):
            raise ValueError(f"{path} is {kind}-compressed, not CSV text: decompress it first (for gzip: gunzip -k "
                             f"{Path(path).name}), or read it with {kind == 'gzip' and 'gzip.open' or 'its library'} "
                             "and pass the rows to chunked_map")
    return FileStamp.of(status)


def stream_csv(path: str | os.PathLike, func: Callable[[list[str]], Any], *, processes: int | None = None,
               chunksize: int | None = None, on_error: str = "raise", ordered: bool = True, header: bool = True,
               progress: bool = False, feed: str = "rows", timeline: Timeline | None = None,
               executor: Executor | ProcessPool | None = None) -> CsvStream:
    """``func(row)`` for every row of a CSV file, computed by worker processes, as an iterator.

    path: a regular CSV file, UTF-8 (a byte-order mark is skipped), any line ends (``\\n``, ``\\r\\n``).
    func: gets each row as ``list[str]``, exactly as ``csv.reader`` yields it; it must be
        importable by the workers (a module's function, not a lambda or a notebook cell's).
    processes: workers at most (default :func:`mpdemo.cpu_count`); started as chunks need them.
    chunksize: rows per chunk (``feed="ranges"``: about that many lines); None picks Pool.map's
        rule for the file's estimated row count, at most ``MAX_AUTO_CHUNKSIZE``, and with
        ``feed="ranges"`` lets light rows have larger ranges (see :class:`Pace`).
    on_error: ``"raise"``: the first bad row raises :class:`~mpdemo.errors.RowError` naming file and
        line (in order, after the results of every row before it when ``ordered``); ``"skip"``: bad
        rows go to ``.skipped`` as ``(line, reason)`` and the stream goes on.
    ordered: results in the file's order (default), or chunk by chunk as they finish.
    header: the first row (blank lines aside) is a header, not passed to ``func``.
    progress: a tqdm bar over the file's bytes.
    feed: ``"rows"``: this process parses and ships rows; ``"ranges"``: it ships byte ranges that
        each worker reads and parses itself (see :func:`byte_ranges`).
    timeline: receives one :class:`~mpdemo.timing.TaskRecord` per chunk; ``began`` is set when
        reading starts.
    executor: an :class:`mpdemo.ProcessPool` you keep across calls, or any
        ``concurrent.futures.Executor`` (with ``feed="ranges"`` its workers must be able to open
        ``path``); None starts a ``ProcessPool`` for this stream.

    Blank lines are not rows: ``csv.reader`` yields ``[]`` for them, and the pipeline skips them
    (as ``csv.DictReader`` does), so a trailing blank line is no bad row. Line numbers are the
    1-based lines of the file where each row starts (the header is line 1); a quoted field with
    line breaks makes a row span several lines.

    Raises, besides ``RowError``: :class:`~mpdemo.errors.NotSendable` at once for a function the
    workers cannot receive (a lambda; under spawn, a notebook cell's function), or later naming
    the line whose result cannot be sent back; :class:`~mpdemo.errors.WorkerDied` within moments
    when a worker is killed; :class:`~mpdemo.errors.FileChanged` when the file changes while it
    is read; :class:`~mpdemo.errors.SplitError` when ``feed="ranges"`` meets quoting that is not
    RFC 4180; at once, ``FileNotFoundError``, ``IsADirectoryError``, or ``ValueError`` for a
    pipe or a compressed file.

    Nothing runs until you iterate. The workers stop when it ends, raises, is interrupted
    (Ctrl-C), is closed (``close()``, the end of a ``with`` block), is dropped, or when a ``for``
    loop over it ends early (``break``): the rest of the file is then not read. ``.skipped``,
    ``.rows_read`` and ``.chunks_read`` stay readable; when the stream is exhausted,
    ``rows_read`` is the number of results plus ``len(skipped)``.
    """
    return CsvStream(CsvSettings.checked(path, func, processes=processes, chunksize=chunksize, on_error=on_error,
                                         ordered=ordered, header=header, progress=progress, feed=feed,
                                         timeline=timeline, executor=executor))


def process_csv(path: str | os.PathLike, func: Callable[[list[str]], Any], **options: Any) -> PipelineResult:
    """:func:`stream_csv` collected into a :class:`PipelineResult`; it takes the same options."""
    with stream_csv(path, func, **options) as stream:
        results = list(stream._results)  # not list(stream): no generator step per row
    return PipelineResult(results, stream.skipped, stream.rows_read)


@dataclass
class Counts:
    """What a run has counted so far: skipped rows, rows read, chunks read (by the reader)."""

    skipped: list[tuple[int, str]] = field(default_factory=list)
    rows_read: int = 0
    chunks_read: int = 0


class CsvStream(Iterator):
    """The iterator :func:`stream_csv` returns; the pipeline runs while you iterate it.

    ``skipped`` and ``rows_read`` grow as chunks are handed over; ``chunks_read`` counts the
    chunks the reader has read and sent so far (at most a window ahead of what you have).
    """

    def __init__(self, settings: CsvSettings):
        self.settings = settings
        self.counts = Counts()
        # The generator knows the settings and the counts, not this object: dropping the stream
        # frees the generator at once (no reference cycle), and its `finally` stops the workers.
        self._chunks = run(settings, self.counts)  # one list of results per chunk
        self._results = itertools.chain.from_iterable(self._chunks)  # flattened at C speed

    def __iter__(self) -> Iterator[Any]:
        """A generator of its own for each ``for`` loop: when the loop ends early (``break``), the
        loop drops it, and closing it closes the pipeline. It looks ``_results`` up for every
        result, so that a ``close()`` inside the loop ends it at once."""
        try:
            while True:
                yield next(self._results)
        except StopIteration:
            return
        finally:
            self.close()

    def __next__(self) -> Any:
        return next(self._results)

    def close(self) -> None:
        """Stop now: the workers are stopped, and iterating further gives nothing (not even the
        rest of the chunk being handed over)."""
        self._chunks.close()
        self._results = iter(())

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def skipped(self) -> list[tuple[int, str]]:
        return self.counts.skipped

    @property
    def rows_read(self) -> int:
        return self.counts.rows_read

    @property
    def chunks_read(self) -> int:
        return self.counts.chunks_read


# ── The caller side: read, send, hand over ─────────────────────────────────────────────────────


class RowsChunk(NamedTuple):
    """Rows parsed by the reader (as tuples), with the line each starts on. A row the reader could
    not read travels as the exception that says why, so the worker applies ``on_error`` to it."""

    lines: list[int]
    rows: list[tuple[str, ...] | Exception]
    size: int  # bytes of the file it covers, for the progress bar


class RangeChunk(NamedTuple):
    """Bytes ``start:end`` of the file, whose first line is ``first_line``, for a worker to parse."""

    start: int
    end: int
    first_line: int
    header: bool  # the header is in this range: skip it
    last: bool  # the range ends at the end of the file
    stamp: FileStamp  # the file as the reader found it: the worker checks it is still the same

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class CsvJob:
    """What every worker needs to know for every chunk: the function, the file, what to do on errors."""

    func: Callable[[list[str]], Any]
    path: str
    on_error: str
    pickle_results: bool  # pickle them in the worker (process pools), or leave them as they are


def run(settings: CsvSettings, counts: Counts) -> Iterator[list]:
    """The pipeline, as a generator of each chunk's results (a list per chunk, in order unless
    ``settings.ordered`` is False): it starts on the first ``next()``, and leaving it (exhausted,
    an error, Ctrl-C, closed, dropped) leaves the ``with`` blocks, which stop the workers. A list
    per chunk, not a result at a time, so that the caller's cost per row stays small."""
    from tqdm.auto import tqdm  # imported here: workers import this module and never need it

    pickled = pickling_method(settings.executor) is not None
    job = CsvJob(settings.func, settings.path, settings.on_error, pickle_results=pickled)
    pace = Pace.of(settings)
    reader = range_chunks(settings, pace) if settings.feed == "ranges" else row_chunks(settings)
    if settings.timeline is not None:
        settings.timeline.began = time.time()

    def call_for(chunk: RowsChunk | RangeChunk) -> Call:
        counts.chunks_read += 1
        return csv_call(job, chunk, pickled)

    with workers_for(settings.executor, settings.processes) as workers, \
            tqdm(total=settings.stamp.size, disable=not settings.progress, unit="B", unit_scale=True) as bar:
        for chunk, call, done in in_flight(workers, reader, call_for, settings.window, ordered=settings.ordered):
            bar.update(chunk.size)
            pace.learn(done.record)
            yield from hand_over(done, settings, counts, call)
        check_unchanged(settings.path, settings.stamp, stamp_of(settings.path))
        bar.update(bar.total - bar.n)  # what follows the last row (line breaks) counts too


def hand_over(done: ChunkDone, settings: CsvSettings, counts: Counts, call: Call) -> Iterator[list]:
    """Account for one chunk, then yield its results (one list); raise its error, if it has one.
    The chunk's record gets the caller's pickling: the chunk's (``call``) and the unpickling of
    its results."""
    counts.rows_read += done.rows
    counts.skipped += done.skipped
    clock = time.perf_counter()
    results = pickle.loads(done.results) if isinstance(done.results, bytes) else done.results
    if settings.timeline is not None:
        caller = call.caller_seconds + (time.perf_counter() - clock if isinstance(done.results, bytes) else 0.0)
        settings.timeline.append(done.record._replace(caller_pickling=caller))
    yield results
    if done.row_error is not None:
        line, error, worker_traceback = done.row_error
        if isinstance(error, NotSendable):
            raise error
        error.__cause__ = WorkerTraceback(worker_traceback)
        raise RowError(settings.path, line, error) from error
    if done.failure is not None:
        raise done.failure


def csv_call(job: CsvJob, chunk: RowsChunk | RangeChunk, pickled: bool) -> Call:
    """What to run for one chunk; rows are pickled here (timed) when the workers are processes."""
    if isinstance(chunk, RangeChunk):
        what = f"bytes {chunk.start:,}–{chunk.end:,} of {job.path} (from line {chunk.first_line:,})"
        return Call(run_csv_chunk, (job, chunk), what)
    what = f"lines {chunk.lines[0]:,}–{chunk.lines[-1]:,} of {job.path}"
    if not pickled:
        return Call(run_csv_chunk, (job, chunk), what)
    clock = time.perf_counter()
    payload = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
    return Call(run_csv_chunk, (job, payload), what, caller_seconds=time.perf_counter() - clock)


def row_chunks(settings: CsvSettings) -> Iterator[RowsChunk]:
    """``feed="rows"``: parse the file here; yield chunks of rows, each with the bytes it covers.

    Rows wait in chunks as tuples: Python's garbage collector scans every list that is alive
    again and again, which slowed this reader threefold; a tuple of strings it stops tracking.
    At the end of the file, the file must still be the one the run began with.
    """
    with open(settings.path, "rb") as file:
        bad_lines: dict[int, UnicodeDecodeError] = {}
        chunk, counted = RowsChunk([], [], 0), 0
        for line, row in records(_text_lines(file, bad_lines), 1, bad_lines, header=settings.header):
            chunk.lines.append(line)
            chunk.rows.append(tuple(row) if isinstance(row, list) else row)
            if len(chunk.rows) == settings.chunksize:
                yield chunk._replace(size=file.tell() - counted)
                chunk, counted = RowsChunk([], [], 0), file.tell()
        # before the last chunk, which a file cut short while we read would end with a cut-off row
        check_unchanged(settings.path, settings.stamp, stamp_of(settings.path, file), read=file.tell())
        if chunk.rows:
            yield chunk._replace(size=file.tell() - counted)


def range_chunks(settings: CsvSettings, pace: Pace) -> Iterator[RangeChunk]:
    """``feed="ranges"``: yield byte ranges of about ``pace.rows`` lines each."""
    line = bytes_per_line(settings.path)
    header, size = settings.header, settings.stamp.size
    for start, end, first_line, has_data in byte_ranges(settings.path, lambda: max(1, round(pace.rows * line))):
        if end > size:
            raise FileChanged(f"{settings.path} grew while it was read: it had {size:,} bytes when reading began")
        yield RangeChunk(start, end, first_line, header and has_data, end >= size, settings.stamp)
        header = header and not has_data
    check_unchanged(settings.path, settings.stamp, stamp_of(settings.path))


def check_unchanged(path: str, stamp: FileStamp, now: FileStamp, read: int | None = None) -> None:
    """Raise :class:`~mpdemo.errors.FileChanged` unless the file is still as ``stamp`` says (same
    size, time of last change and inode) and, when ``read`` is given, all of it was read."""
    read = stamp.size if read is None else read
    if now == stamp and read == stamp.size:
        return
    if now.inode != stamp.inode:
        how = "was replaced by another file"
    elif now.size != stamp.size or read != stamp.size:
        how = (f"changed size while it was read: it had {stamp.size:,} bytes when reading began, {now.size:,} now, "
               f"and {read:,} were read")
    else:
        how = "was modified while it was read (its size is the same, its time of last change is not)"
    raise FileChanged(f"{path} {how}. The results would mix two versions of it, or miss rows: run again on a file "
                      "that nothing writes to meanwhile (copy it first, if it is still being written).")


def stamp_of(path: str | os.PathLike, file: BinaryIO | None = None) -> FileStamp:
    """The file's stamp now: of the open ``file``, or of whatever ``path`` names now."""
    return FileStamp.of(os.fstat(file.fileno()) if file is not None else os.stat(path))


def _require_choice(**settings: tuple[str, tuple[str, ...]]) -> None:
    for name, (value, allowed) in settings.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _require_bool(**settings: Any) -> None:
    for name, value in settings.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")


def auto_chunksize(path: str | os.PathLike, processes: int) -> int:
    """Pool.map's rule for the file's estimated row count, at most ``MAX_AUTO_CHUNKSIZE`` rows.

    The rule alone would give a huge file huge chunks, and the chunks in flight are what the
    pipeline holds in memory, so the cap keeps memory small. It also keeps the work balanced:
    the last chunk runs alone, and with rows of 60 µs a chunk of 1,000 takes 60 ms, while a
    thousand rows already make the per-chunk overhead (well under a millisecond) small.
    """
    estimated_rows = round(os.path.getsize(path) / bytes_per_line(path))
    return min(default_chunksize(estimated_rows, processes), MAX_AUTO_CHUNKSIZE)


@dataclass
class Pace:
    """How many rows the next byte range should hold.

    With ``chunksize`` given, that, always. With ``chunksize=None`` it starts at
    :func:`auto_chunksize` and then follows what the ranges that came back cost a worker per row,
    aiming at :data:`RANGE_SECONDS` of work a range. Each range costs the caller about the same
    whatever its size (cutting it, sending it, collecting its results: about 0.1 ms), which is a
    tenth of a 1,000-row range of light rows (1 µs each): those get ranges up to ten times larger.
    Heavy rows keep the starting size, so the last ranges, which run alone, stay short. A range
    never holds more than Pool.map's rule gives (at least 4 ranges a worker) or
    :data:`MAX_RANGE_ROWS`. (The reasoning of :func:`mpdemo.suggest_chunksize`, with the cost of a
    row measured by the workers as they go instead of beforehand.)
    """

    rows: int
    smallest: int
    largest: int

    @classmethod
    def of(cls, settings: CsvSettings) -> Pace:
        if not (settings.auto_chunks and settings.feed == "ranges"):
            return cls(settings.chunksize, settings.chunksize, settings.chunksize)
        estimated_rows = round(settings.stamp.size / bytes_per_line(settings.path))
        largest = min(default_chunksize(estimated_rows, settings.processes), MAX_RANGE_ROWS)
        return cls(settings.chunksize, settings.chunksize, max(largest, settings.chunksize))

    def learn(self, record: TaskRecord) -> None:
        """Size the next ranges from one that came back: its rows and its seconds in the worker."""
        if self.largest > self.smallest and record.items > 0 and record.end > record.start:
            per_row = (record.end - record.start) / record.items
            self.rows = max(self.smallest, min(self.largest, round(RANGE_SECONDS / per_row)))


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
    """Line breaks in ``data`` as ``csv.reader`` counts them: ``\\n``, ``\\r\\n`` and a lone ``\\r``.

    NumPy compares many bytes per instruction (SIMD), where ``bytes.count`` looks at one byte at a
    time: for a 60 KB block of a file with ``\\r\\n`` line ends, 23 µs here against 207 µs for the
    three counts. On the reader of ``feed="ranges"`` this counting is most of the caller's work,
    and the caller shares the cores with the workers.
    """
    codes = np.frombuffer(data, np.uint8)
    newlines = codes == ord("\n")
    lines = int(np.count_nonzero(newlines))
    if b"\r" in data:  # a quick scan: files written by csv.writer end their lines with \r\n
        returns = codes == ord("\r")
        lines += int(np.count_nonzero(returns)) - int(np.count_nonzero(returns[:-1] & newlines[1:]))  # lone \r
    return lines


def count_byte(data: bytes, byte: bytes) -> int:
    """How many times the one ``byte`` occurs in ``data``, counted by NumPy (see :func:`count_lines`)."""
    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == byte[0]))


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


def byte_ranges(path: str | os.PathLike, block_size: int | Callable[[], int]) -> Iterator[ByteRange]:
    """Cut a CSV file into byte ranges of at least ``block_size`` bytes that end where records end
    (``block_size`` may be a function, asked before each range: the pipeline's :class:`Pace`).

    A line break ends a record unless it is inside a quoted field. In RFC 4180 CSV every quote
    inside a quoted field is doubled (``""``), which leaves the count of quotes even, so a line
    break is inside a quoted field exactly when an *odd* number of ``"`` came before it. Each
    range is one or more blocks, each read on to the end of its line; a range ends after the
    first block that leaves the count even. NumPy does all the counting (:func:`count_byte`).

    A quote in the middle of an unquoted field (``55" TV``) is not RFC 4180, and ``csv.reader``
    takes it literally, which breaks the parity rule. Each worker checks that its range really
    ended between records and raises :class:`SplitError` if not: never a silent mis-split.
    """
    with open(path, "rb") as file:
        _skip_bom(file)
        first_line = 1
        while True:
            start, quotes, lines, has_data = file.tell(), 0, 0, False
            size = block_size() if callable(block_size) else block_size
            while block := file.read(size):
                if not block.endswith(b"\n"):
                    block += file.readline()
                quotes += count_byte(block, b'"')
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


class ChunkDone(NamedTuple):
    """A worker's report on one chunk. ``results``: pickled by the worker (process pools) or a list;
    ``row_error``: (line, exception, traceback) of the row that raised with ``on_error="raise"``;
    ``failure``: an error that is not one row's fault (a wrong split, a file that changed)."""

    results: bytes | list
    skipped: list[tuple[int, str]]
    rows: int
    record: TaskRecord
    row_error: tuple[int, BaseException, str] | None
    failure: BaseException | None


@dataclass
class ChunkRows:
    """The rows of one chunk, two ways.

    ``batches``: the rows as the function gets them (each a ``list[str]``), :data:`BATCH_ROWS` at a
    time, without line numbers: the fast way. For a byte range it is ``csv.reader`` in strict mode,
    which stops with ``csv.Error`` at a row it cannot read cleanly, and at a range that ends inside
    a quoted field (a wrong split). None when the fast way cannot read the chunk at all (a row the
    reader could not read, bytes that are not UTF-8).

    ``numbered``: every row with the line it starts on, or the exception that says why it could
    not be read: the careful way. It is worked out only when it is needed, when a row fails or the
    fast way stops; for a byte range that is a second parse, which checks the split too.
    """

    batches: Iterable[list[list[str]]] | None
    find_numbered: Callable[[], list[tuple[int, list[str] | Exception]]]

    @functools.cached_property
    def numbered(self) -> list[tuple[int, list[str] | Exception]]:
        return self.find_numbered()


def run_csv_chunk(job: CsvJob, chunk: RowsChunk | RangeChunk | bytes) -> ChunkDone:
    """Runs in a worker: apply ``job.func`` to every row of one chunk; report results and errors.

    ``chunk`` comes pickled (rows sent by a process pool's caller), as it is, or as a byte range
    that this worker reads itself. Every row counts once: as a result, a skipped row, or the row
    that stopped the chunk. Every exception the function raises counts (``SystemExit`` too).
    """
    began, clock = time.time(), time.perf_counter()
    if isinstance(chunk, bytes):
        chunk = pickle.loads(chunk)
    pickling = time.perf_counter() - clock
    results, skipped, row_error, failure, rows = [], [], None, None, None
    try:
        rows = rows_of_chunk(chunk, job.path)
        row_error = apply_rows(job, rows, results, skipped)
    except Exception as error:  # not one row's fault: a wrong split, a file that changed, a bug
        failure = sendable(error)
    count = len(results) + len(skipped) + (row_error is not None)  # every row read, counted once
    if job.pickle_results:
        clock = time.perf_counter()
        results, skipped, row_error = pack_rows(results, skipped, row_error, rows, job)
        pickling += time.perf_counter() - clock
    record = TaskRecord(os.getpid(), began, time.time(), count, pickling=pickling)
    return ChunkDone(results, skipped, count, record, row_error, failure)


def apply_rows(job: CsvJob, chunk: ChunkRows, results: list, skipped: list[tuple[int, str]]) -> tuple | None:
    """``job.func`` on every row: results go to ``results``, rows that fail to ``skipped`` (with
    ``on_error="skip"``). Returns ``(line, error, traceback)`` of the row that stopped the chunk, or None.

    While every row succeeds, the loop does nothing but call the function and keep its result:
    no line numbers, no checks. That is most chunks, and it keeps a worker's cost per row close to
    a plain ``csv.reader`` loop's. When a row fails, or the reader meets a row it cannot read
    cleanly, :func:`carry_on` takes over from that row, row by row, with each row's line at hand.
    """
    if chunk.batches is None:
        return carry_on(job, chunk, results, skipped)
    func, keep = job.func, results.append
    try:
        for batch in chunk.batches:
            try:
                for row in batch:
                    keep(func(row))
            except BaseException as error:  # the row after the last result raised
                return carry_on(job, chunk, results, skipped, error)
    except csv.Error:  # from the reader (the function's errors are caught above)
        return carry_on(job, chunk, results, skipped)
    return None


def carry_on(job: CsvJob, chunk: ChunkRows, results: list, skipped: list[tuple[int, str]],
             error: BaseException | None = None) -> tuple | None:
    """The careful way, from the row after the last result: ``error`` is that row's, if it has
    already run; then each row in turn. Returns what :func:`apply_rows` returns. (It runs inside
    the ``except`` block of ``error``, so that ``row_failed`` can format its traceback.)"""
    func, keep = job.func, results.append
    start = len(results) + len(skipped)  # every row before it was handled once: no row runs twice
    numbered = chunk.numbered  # for a range, parsed again here (a wrong split raises SplitError)
    if error is not None:
        if (stop := row_failed(job, numbered[start][0], error, skipped)) is not None:
            return stop
        start += 1
    for line, row in numbered[start:]:
        try:
            if isinstance(row, Exception):
                raise row  # the reader could not read this row: on_error decides, as for func
            keep(func(row))
        except BaseException as failed:
            if (stop := row_failed(job, line, failed, skipped)) is not None:
                return stop
    return None


def row_failed(job: CsvJob, line: int, error: BaseException, skipped: list[tuple[int, str]]) -> tuple | None:
    """A row failed (call it inside the ``except`` block): with ``on_error="skip"`` note it in
    ``skipped`` and return None; else return ``(line, error, traceback)``, which stops the chunk."""
    if job.on_error == "skip":
        skipped.append((line, f"{type(error).__name__}: {error}"))
        return None
    return line, sendable(error), traceback.format_exc()


def pack_rows(results: list, skipped: list[tuple[int, str]], row_error: tuple[int, BaseException, str] | None,
              chunk: ChunkRows | None, job: CsvJob) -> tuple:
    """The results pickled here, in the worker. A result that cannot be pickled is a bad row like any
    other: skipped with ``on_error="skip"``, else the error that ends the chunk, naming its line."""
    try:
        return pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL), skipped, row_error
    except Exception:
        pass
    failed = {line for line, _ in skipped}
    lines = [line for line, _ in chunk.numbered[:len(results) + len(skipped)] if line not in failed]  # the results'
    kept = []
    for line, result in zip(lines, results, strict=True):
        try:
            pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            reason = (f"the row function's result cannot be sent back from the worker: {type(error).__name__}: "
                      f"{error}")
            if job.on_error == "skip":
                skipped = sorted([*skipped, (line, f"NotSendable: {reason}")])
                continue
            cannot = NotSendable(f"line {line:,} of {job.path}: {reason}. {DATA_CURE}")
            return pickle.dumps(kept), skipped, (line, cannot, "")
        kept.append(result)
    return pickle.dumps(kept), skipped, row_error


def rows_of_chunk(chunk: RowsChunk | RangeChunk, path: str) -> ChunkRows:
    """The rows of a chunk: the reader's rows as lists again, or a byte range read and parsed here."""
    if isinstance(chunk, RangeChunk):
        with open(path, "rb") as file:
            return range_rows(file, chunk, path)
    rows = [list(row) if isinstance(row, tuple) else row for row in chunk.rows]
    readable = not any(isinstance(row, Exception) for row in rows)
    return ChunkRows([rows] if readable else None, lambda: list(zip(chunk.lines, rows)))


def range_rows(file: BinaryIO, chunk: RangeChunk, path: str) -> ChunkRows:
    """The rows of one byte range, read and parsed by the worker, both ways (see :class:`ChunkRows`).

    The fast way, :func:`strict_batches`, is ``csv.reader`` alone, at its own speed: nearly every
    range reads cleanly. The careful way is :func:`records`, which numbers the rows, so that every
    row that fails is named by its line. It takes over where a row fails, and for a range the
    fast way cannot read: bytes that are not UTF-8 (from the start), a malformed row, a wrong split.

    To check the split, the careful way parses one more line after the range (unless the range
    ends the file), :data:`SPLIT_MARK`. It comes out as a row of its own only if the range ended
    between records; inside a quoted field it would join that field instead, and then the split
    was wrong: :class:`SplitError`, which ends the run. (The rows before the wrong split are rows
    as ``csv.reader`` reads them: the function may have run on them, and ``stream_csv`` may have
    handed you their results, before the error.)
    """
    check_unchanged(path, chunk.stamp, stamp_of(path, file))  # the file the reader cut into ranges
    file.seek(chunk.start)
    data = file.read(chunk.end - chunk.start)
    if len(data) != chunk.end - chunk.start:  # cut short since the check above
        check_unchanged(path, chunk.stamp, stamp_of(path, file), read=chunk.start + len(data))
    bad_lines: dict[int, UnicodeDecodeError] = {}
    text = decode(data, chunk.first_line, bad_lines)

    def numbered() -> list[tuple[int, list[str] | Exception]]:
        marked = text if chunk.last else text + SPLIT_MARK + "\n"
        pairs = list(records(io.StringIO(marked, newline=""), chunk.first_line, bad_lines, header=chunk.header))
        return without_split_mark(pairs, chunk, path)

    return ChunkRows(None if bad_lines else strict_batches(text, chunk.header), numbered)


def strict_batches(text: str, header: bool) -> Iterator[list[list[str]]]:
    """The rows of a range's text as ``csv.reader`` gives them (blank lines and the header left
    out), :data:`BATCH_ROWS` at a time.

    A batch, not the whole range at once: Python's garbage collector runs each time
    ``gc.get_threshold()[0]`` more lists and other containers are alive than when it last ran (700
    in Python 3.11 and 3.12, 2,000 in 3.13), and a thousand rows held at once woke it again and
    again for nothing; that cost a worker about 15% on light rows under 3.11. Batches of 300 come
    and go under the threshold, as the rows of a plain loop do.

    The reader is strict: it raises ``csv.Error`` where the lenient default would guess, at a
    character after a closing quote (``"a"b``) and at text that ends inside a quoted field, which
    for a range that is not the file's last means the range was cut in the wrong place.
    """
    rows = filter(None, csv.reader(io.StringIO(text, newline=""), strict=True))  # a blank line gives []
    if header:
        next(rows, None)
    while batch := list(itertools.islice(rows, BATCH_ROWS)):
        yield batch


def without_split_mark(pairs: list[tuple[int, list[str] | Exception]], chunk: RangeChunk,
                       path: str) -> list[tuple[int, list[str] | Exception]]:
    """The numbered rows of a range without the split mark after them; :class:`SplitError` if the
    mark did not come out as a row of its own (the range ended inside a quoted field)."""
    if chunk.last:
        return pairs
    if pairs and pairs[-1][1] == [SPLIT_MARK]:
        pairs.pop()
        return pairs
    line = pairs[-1][0] if pairs else chunk.first_line
    raise SplitError(f"line {line:,} of {path}: feed='ranges' cannot split this file safely. Quote parity "
                     f"said a record ends at byte {chunk.end:,}, but csv.reader is inside a quoted field "
                     "there: a quote inside an unquoted field (such as 55\" for inches) breaks the parity "
                     "rule. Use feed='rows' for this file.")
