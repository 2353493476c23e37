"""mpdemo.pipeline: results equal a serial csv.reader loop, in both feeds; every failure is named.

The reference everywhere is :func:`serial`: a plain ``csv.reader`` loop over the file, which
gives each row with the line it starts on. Row functions used here live in this module, so
spawned workers can import them.
"""

from __future__ import annotations

import codecs
import collections
import csv
import functools
import gc
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from tqdm import tqdm

import mpdemo
from conftest import end_child_and_orphans, wait_until, worker_processes
from mpdemo import FileChanged, NotSendable, RowError, SplitError, WorkerDied, data, pipeline, workloads
from mpdemo.chunking import CHUNKS_IN_FLIGHT_PER_PROCESS
from mpdemo.pipeline import CsvJob, CsvSettings, byte_ranges, process_csv, records, stream_csv
from mpdemo.sandbox import run_code
from mpdemo.timing import Timeline

FEEDS = ["rows", "ranges"]


def serial(path: Path, header: bool = True) -> list[tuple[int, list[str]]]:
    """``(line, row)`` for every row of the file, by a plain csv.reader loop (blank lines are no rows)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        found, before = [], 0
        for row in reader:
            if row:
                found.append((before + 1, row))
            before = reader.line_num
    return found[1:] if header else found


def reject(row: list[str]) -> None:
    """Fail on every row, saying what the row was: on_error="skip" then lists every row with its line."""
    raise ValueError(repr(row))


def rejected(path: Path, header: bool = True) -> list[tuple[int, str]]:
    """What ``reject`` with on_error="skip" must report: every row of :func:`serial`, with its line."""
    return [(line, f"ValueError: {row!r}") for line, row in serial(path, header)]


def lock_for_order_7(row: list[str]):
    """A row function whose result for order 7 cannot be pickled (a lock)."""
    return threading.Lock() if row[0] == "7" else row[0]


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> Path:
    """3,000 orders with quoted commas, quoted line breaks and a bad row every 97."""
    return data.write_orders_csv(tmp_path_factory.mktemp("data") / "orders.csv", 3_000, bad_every=97)


def expected_totals(path: Path) -> tuple[list[float], list[tuple[int, str]]]:
    """order_total's results and skipped rows from a serial loop."""
    results, skipped = [], []
    for line, row in serial(path):
        try:
            results.append(workloads.order_total(row))
        except ValueError as error:
            skipped.append((line, f"ValueError: {error}"))
    return results, skipped


# ── results equal the serial reference ───────────────────────────────────────────────────────


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_results_and_skipped_rows_equal_a_serial_loop(orders, feed, ordered):
    result = process_csv(orders, workloads.order_total, processes=2, chunksize=50, on_error="skip", feed=feed,
                         ordered=ordered)
    results, skipped = expected_totals(orders)
    assert len(skipped) == 3_000 // 97
    if ordered:
        assert result.results == results and result.skipped == skipped
    else:  # the same results and skipped rows, as multisets
        assert collections.Counter(result.results) == collections.Counter(results)
        assert sorted(result.skipped) == skipped
    assert result.rows_read == 3_000 == len(result.results) + len(result.skipped)


@pytest.mark.parametrize("feed", FEEDS)
def test_rows_arrive_exactly_as_csv_reader_gives_them(orders, feed):
    rows = [row for _, row in serial(orders)]
    assert any("\n" in row[5] for row in rows) and any('"' in row[5] for row in rows)  # the hard cases are there
    assert process_csv(orders, list, processes=2, chunksize=7, feed=feed).results == rows


# Small files with every kind of line end, blank line and quoting a reader can trip over.
EDGE_FILES = {
    "crlf": b'a,b\r\n1,"x\r\ny"\r\n2,3\r\n',
    "no final newline": b'a,b\n1,2\n3,"4\n5"',
    "no final newline, plain": b"a,b\n1,2\n3,4",
    "byte-order mark": codecs.BOM_UTF8 + b'a,b\n1,"x\ny"\n2,3\n',
    "blank lines": b'\n\na,b\n\n1,2\n\r\n3,"x\n\ny"\n\n\n4,5\n\n',
    "header only": b"a,b\n",
    "header only, no newline": b"a,b",
    "empty": b"",
    "only blank lines": b"\n\r\n\n",
    "doubled quotes": b'a,b\n1,"he said ""hi""\nthen ""left"""\n2,""""\n3,4\n',
    "quoted crlf and cr": b'a,b\r\n1,"x\r\ny\rz"\r\n2,3\r\n',
    "lone cr line ends": b"a,b\r1,2\r3,4\r",
    "unterminated quote at the end": b'a,b\n1,2\n3,"open\n4,5\n',
    "spaces are a row": b"a,b\n \n1,2\n",
}


@pytest.fixture(params=list(EDGE_FILES), ids=list(EDGE_FILES))
def edge_file(request, tmp_path) -> Path:
    path = tmp_path / "edge.csv"
    path.write_bytes(EDGE_FILES[request.param])
    return path


def in_process(path: Path, func, feed: str, chunksize: int = 1, header: bool = True) -> list[pipeline.ChunkDone]:
    """The pipeline's reader and worker code, run here one chunk after another, without processes."""
    settings = CsvSettings.checked(path, func, processes=1, chunksize=chunksize, on_error="skip", header=header,
                                   feed=feed)
    chunks = (pipeline.range_chunks(settings, pipeline.Pace.of(settings)) if feed == "ranges"
              else pipeline.row_chunks(settings))
    job = CsvJob(func, str(path), "skip", pickle_results=False)
    return [pipeline.run_csv_chunk(job, chunk) for chunk in chunks]


@pytest.mark.parametrize("feed", FEEDS)
def test_edge_files_give_csv_readers_rows_and_lines(edge_file, feed):
    """Every row with its line, via a function that rejects every row (chunksize 1: tiny byte ranges)."""
    done = in_process(edge_file, reject, feed)
    assert [skip for chunk in done for skip in chunk.skipped] == rejected(edge_file)
    assert sum(chunk.rows for chunk in done) == len(rejected(edge_file))


@pytest.mark.parametrize("feed", FEEDS)
def test_failing_rows_in_a_chunk_keep_their_lines_and_every_row_runs_once(orders, feed):
    """The worker's loop runs rows without line numbers until one fails, then numbers them: the
    failures of a large chunk (several per chunk) are still named by their lines, and no row runs twice."""
    calls = []

    def total(row: list[str]) -> float:
        calls.append(row[0])
        return workloads.order_total(row)

    settings = CsvSettings.checked(orders, workloads.order_total, processes=1, chunksize=400, feed=feed)
    chunks = (pipeline.range_chunks(settings, pipeline.Pace.of(settings)) if feed == "ranges"
              else pipeline.row_chunks(settings))
    done = [pipeline.run_csv_chunk(CsvJob(total, str(orders), "skip", pickle_results=False), chunk)
            for chunk in chunks]
    results, skipped = expected_totals(orders)
    assert [r for chunk in done for r in chunk.results] == results
    assert [s for chunk in done for s in chunk.skipped] == skipped
    assert max(sum(1 for s in chunk.skipped) for chunk in done) > 1  # chunks with several failing rows
    assert calls == [row[0] for _, row in serial(orders)]


@pytest.mark.parametrize("last", [False, True], ids=["inner range", "last range"])
def test_a_range_read_the_fast_way_gives_the_careful_ways_rows(tmp_path, last):
    """A worker reads a range with strict csv.reader in batches (no line numbers), and hands over
    to the numbering parse (which checks the split) where that stops. On 2,000 random texts of
    quotes, commas and line breaks: every text the fast way reads whole gives the careful way's
    rows and is split correctly; every row runs once, with results and skipped lines equal to the
    careful way's, wherever the fast way stopped."""
    rng = random.Random(15)
    path = tmp_path / "range.csv"
    pieces = ["a", "bc", ",", '"', '""', "\n", "\r\n", "\r"]
    fast_whole = careful = 0
    for _ in range(2_000):
        text = "".join(rng.choices(pieces, k=rng.randint(1, 40))) + "\n"
        path.write_bytes(text.encode())
        stamp = pipeline.stamp_of(path)
        header = rng.random() < 0.5 and bool(text.strip("\r\n"))  # as the reader marks ranges: with data
        chunk = pipeline.RangeChunk(0, stamp.size, 1, header, last, stamp)
        rows = pipeline.rows_of_chunk(chunk, str(path))
        try:
            fast = [row for batch in rows.batches for row in batch]
        except csv.Error:
            fast = None
        try:
            numbered = rows.numbered
        except SplitError:
            assert fast is None  # a wrong split never reads whole the fast way
            continue
        if fast is not None:
            fast_whole += 1
            assert fast == [row for _, row in numbered]
        else:
            careful += 1
        calls = []

        def first_field(row: list[str]) -> str:
            calls.append(row)
            if len(row) > 2:
                raise ValueError("too long")
            return row[0]

        job = CsvJob(first_field, str(path), "skip", pickle_results=False)
        done = pipeline.run_csv_chunk(job, chunk)
        assert done.failure is None
        assert calls == [row for _, row in numbered if isinstance(row, list)]
        assert done.results == [row[0] for _, row in numbered if isinstance(row, list) and len(row) <= 2]
        assert [line for line, _ in done.skipped] == [line for line, row in numbered
                                                      if not isinstance(row, list) or len(row) > 2]
    assert fast_whole > 500 and careful > 100  # both ways were taken, many times


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("name", ["crlf", "blank lines", "byte-order mark", "lone cr line ends"])
def test_edge_files_through_worker_processes(tmp_path, name, feed):
    path = tmp_path / "edge.csv"
    path.write_bytes(EDGE_FILES[name])
    result = process_csv(path, reject, processes=2, chunksize=1, on_error="skip", feed=feed)
    assert result.skipped == rejected(path)
    assert result.rows_read == len(result.skipped) and result.results == []


@pytest.mark.parametrize("feed", FEEDS)
def test_header_false_keeps_the_first_row(tmp_path, feed):
    path = tmp_path / "h.csv"
    path.write_bytes(b'\na,b\n1,"2\n3"\n')
    result = process_csv(path, reject, processes=1, chunksize=1, on_error="skip", feed=feed, header=False)
    assert result.skipped == rejected(path, header=False) == [(2, "ValueError: ['a', 'b']"),
                                                              (3, "ValueError: ['1', '2\\n3']")]


QUOTED = b'id,text\r\n1,"a\nb"\r\n2,"say ""x""\r\n,y"\r\n3,plain\r\n4,"\r\n\r\n"\r\n5,"""q"""\n6,"z\r"\r\n'


@pytest.mark.parametrize("block_size", range(1, 40))
def test_byte_ranges_end_where_records_end_for_any_block_size(tmp_path, block_size):
    """Cut into ranges with tiny blocks, parsed range by range, the file gives what it gives whole."""
    path = tmp_path / "q.csv"
    path.write_bytes(QUOTED * 3)
    ranges = list(byte_ranges(path, block_size))
    assert ranges[0].start == 0 and ranges[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(ranges[:-1], ranges[1:], strict=True))
    content = path.read_bytes()
    parsed = []
    for start, end, first_line, _ in ranges:
        text = content[start:end].decode()
        assert text.endswith("\n")
        parsed += records(io.StringIO(text, newline=""), first_line)
    whole = serial(path, header=False)
    assert parsed == whole and len(whole) == 21


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_quoted_newlines_straddling_ranges_in_real_data(orders, ordered):
    """Ranges of about one line each: nearly every quoted line break straddles a boundary."""
    result = process_csv(orders, workloads.order_total, processes=2, chunksize=1, on_error="skip", feed="ranges",
                         ordered=ordered)
    results, skipped = expected_totals(orders)
    assert sorted(result.results) == sorted(results) and sorted(result.skipped) == skipped


def test_a_quote_inside_an_unquoted_field_is_never_a_silent_mis_split(tmp_path):
    path = tmp_path / "inches.csv"
    # csv.reader takes the quote of 55" literally, but it flips the parity: the line break inside the quoted
    # field of line 3 then looks like the end of a record (with ranges of about one line, it ends one).
    path.write_bytes(b'item,size\nTV,55"\n2,"a long first line\nsecond"\n3,4\n')
    expected = [row for _, row in serial(path)]
    assert process_csv(path, list, processes=2, chunksize=1, feed="rows").results == expected
    with pytest.raises(SplitError, match=r"^line 3 of .*inches\.csv: feed='ranges' cannot split this file safely.*"
                                         r"Use feed='rows' for this file\.$"):
        process_csv(path, list, processes=2, chunksize=1, feed="ranges")


# ── failures ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("feed", FEEDS)
def test_a_failing_row_names_file_and_line_after_every_earlier_result(orders, feed):
    results, skipped = expected_totals(orders)
    first_bad = skipped[0][0]
    received = []
    with pytest.raises(RowError) as caught:
        for total in stream_csv(orders, workloads.order_total, processes=2, chunksize=20, feed=feed):
            received.append(total)
    assert str(caught.value) == f"line {first_bad} of {orders}: {skipped[0][1]}"
    assert caught.value.line == first_bad and caught.value.path == str(orders)
    original = caught.value.__cause__
    assert isinstance(original, ValueError) and isinstance(caught.value, mpdemo.WorkerError)
    assert "in order_total" in str(original.__cause__)  # the worker's traceback, as text
    assert received == results[:96]  # every row before line `first_bad`, in order, then the error


BAD_BYTES = b'a,b\n1,2\n3,"\xff\n\xfe"\n4,5\n6,\xc3\n'


@pytest.mark.parametrize("feed", FEEDS)
def test_undecodable_bytes_follow_on_error_with_their_line(tmp_path, feed):
    path = tmp_path / "latin.csv"
    path.write_bytes(BAD_BYTES)
    skip = process_csv(path, list, processes=2, chunksize=1, on_error="skip", feed=feed)
    assert skip.results == [["1", "2"], ["4", "5"]]
    assert [line for line, _ in skip.skipped] == [3, 6]
    assert skip.skipped[0][1] == ("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 3: "
                                  "invalid start byte")
    assert skip.rows_read == 4 == len(skip.results) + len(skip.skipped)
    with pytest.raises(RowError, match=r"^line 3 of .*latin\.csv: UnicodeDecodeError") as caught:
        process_csv(path, list, processes=2, feed=feed)
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize("feed", FEEDS)
def test_bad_quoting_follows_on_error_with_its_line(tmp_path, feed):
    """An unterminated quote swallows the lines after it until csv's field size limit: csv.Error."""
    path = tmp_path / "runaway.csv"
    path.write_bytes(b'a,b\n1,2\n3,"never closed\n' + b"x,y\n" * 40_000 + b"5,6\n")
    with open(path, newline="") as f:  # what csv.reader does: raise, then go on after the long field
        reader, expected = csv.reader(f), []
        while True:
            try:
                expected.append(next(reader))
            except csv.Error:
                continue
            except StopIteration:
                break
    skip = process_csv(path, list, processes=2, on_error="skip", feed=feed)
    assert skip.skipped == [(3, "Error: field larger than field limit (131072)")]
    assert skip.results == expected[1:] and len(expected) > 1_000
    assert skip.rows_read == len(skip.results) + len(skip.skipped)
    with pytest.raises(RowError, match=r"^line 3 of .*runaway\.csv: Error: field larger than field limit") as caught:
        process_csv(path, list, processes=2, feed=feed)
    assert isinstance(caught.value.__cause__, csv.Error)


def test_ragged_rows_are_rejected_by_the_function_with_their_lines(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("order_id,customer,city,quantity,unit_price,note\n1,A,B,2,3.5,\n2,A,B,2\n3,A,B,1,1,,extra\n")
    result = process_csv(path, workloads.order_total, processes=2, chunksize=1, on_error="skip")
    assert result.results == [7.0]
    assert result.skipped == [(3, "ValueError: expected 6 fields, got 4"), (4, "ValueError: expected 6 fields, got 7")]


@pytest.mark.parametrize("feed", FEEDS)
def test_a_killed_worker_raises_within_seconds_and_stops_the_others(orders, feed):
    row_50 = serial(orders)[49][1]
    start = time.monotonic()
    with pytest.raises(WorkerDied, match=r"a worker process died unexpectedly: pid \d+ was killed by SIGKILL.*"
                                         r"\(it was running (lines|bytes) [\d,–]+ of .*orders\.csv"):
        process_csv(orders, functools.partial(workloads.crash_on, bad=row_50), processes=2, chunksize=10, feed=feed)
    assert time.monotonic() - start < 10  # and the autouse fixture checks that no worker is left


def test_an_unpicklable_result_is_named_by_its_line_never_dropped(orders):
    line_7 = serial(orders)[6][0]
    received = []
    with pytest.raises(NotSendable, match=rf"^line {line_7} of .*orders\.csv: the row function's result cannot be "
                                          r"sent back from the worker: TypeError: cannot pickle '_thread\.lock'"):
        for order_id in stream_csv(orders, lock_for_order_7, processes=2, chunksize=4):
            received.append(order_id)
    assert received == ["1", "2", "3", "4", "5", "6"]


def test_a_lambda_is_refused_before_any_process_starts(orders):
    with pytest.raises(NotSendable, match=r"the function \S*<lambda> cannot be sent to worker processes"):
        stream_csv(orders, lambda row: row)  # raised by the call itself, before iterating starts anything


MAIN_FUNCTION = """
import mpdemo
def total(row):
    return row[0]
try:
    mpdemo.stream_csv({path!r}, total)
except mpdemo.NotSendable as error:
    print(error)
"""


def test_a_notebook_function_under_spawn_names_the_cause(orders, monkeypatch):
    monkeypatch.setenv("MPDEMO_START_METHOD", "spawn")
    outcome = run_code(MAIN_FUNCTION.format(path=str(orders)), timeout=60)
    assert outcome.returncode == 0 and outcome.stdout.startswith("the function total is defined in __main__"), outcome


def test_a_missing_file_and_a_directory_raise_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.csv"):
        stream_csv(tmp_path / "no-such.csv", list)
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a CSV file"):
        stream_csv(tmp_path, list)


@pytest.mark.parametrize("options, message", [
    ({"on_error": "ignore"}, "on_error must be one of 'raise', 'skip', got 'ignore'"),
    ({"feed": "bytes"}, "feed must be one of 'rows', 'ranges', got 'bytes'"),
    ({"processes": 0}, "processes must be a whole number of at least 1, got 0"),
    ({"chunksize": -5}, "chunksize must be None or a whole number of at least 1, got -5"),
    ({"header": "yes"}, "header must be True or False, got 'yes'"),
    ({"ordered": 1}, "ordered must be True or False, got 1"),
])
def test_bad_settings_raise_value_error(orders, options, message):
    with pytest.raises(ValueError, match=message):
        stream_csv(orders, list, **options)


@pytest.mark.parametrize("feed", FEEDS)
def test_more_processes_than_chunks_starts_only_the_workers_needed(tmp_path, feed):
    path = tmp_path / "three.csv"
    path.write_text("a\n1\n2\n3\n")
    timeline = Timeline()
    result = process_csv(path, list, processes=8, chunksize=100, feed=feed, timeline=timeline)
    assert result.results == [["1"], ["2"], ["3"]]
    assert len(timeline.records) == 1 and len(timeline.workers()) == 1


def gone_within(seconds: float) -> bool:
    return wait_until(lambda: not worker_processes(), seconds)


def leave_by_break(path: Path) -> None:
    for _ in stream_csv(path, list, processes=2, chunksize=10):
        break


def leave_by_close(path: Path) -> None:
    stream = stream_csv(path, list, processes=2, chunksize=10)
    next(stream)
    stream.close()
    assert list(stream) == []


def leave_by_dropping(path: Path) -> None:
    stream = stream_csv(path, list, processes=2, chunksize=10)
    next(stream)
    gc.disable()  # dropping the last reference must be enough, without the garbage collector
    try:
        del stream
        assert gone_within(3)
    finally:
        gc.enable()


def leave_a_with_block(path: Path) -> None:
    with stream_csv(path, list, processes=2, chunksize=10) as stream:
        next(stream)


def leave_a_loop_over_a_kept_stream(path: Path) -> None:
    """The notebook idiom: keep the stream, to read .skipped afterwards; break out of the loop."""
    stream = stream_csv(path, list, processes=2, chunksize=10, on_error="skip")
    for _ in stream:
        break
    assert gone_within(3), worker_processes()
    assert stream.rows_read >= 10 and stream.skipped == []  # the counts stay readable
    assert list(stream) == []


@pytest.mark.parametrize("leave", [leave_by_break, leave_by_close, leave_by_dropping, leave_a_with_block,
                                   leave_a_loop_over_a_kept_stream],
                         ids=["break", "close", "dropped", "with block", "break, stream kept"])
def test_stopping_early_stops_every_worker_at_once(orders, leave):
    leave(orders)
    assert gone_within(3), worker_processes()


def test_a_slow_consumer_stops_the_reader(orders):
    """Backpressure: while nobody asks for results, the reader reads nothing more."""
    window = CHUNKS_IN_FLIGHT_PER_PROCESS * 2
    with stream_csv(orders, list, processes=2, chunksize=10) as stream:  # 300 chunks
        next(stream)
        time.sleep(0.5)  # the workers finish every chunk in flight meanwhile
        assert stream.chunks_read <= window + 1
        assert len(list(stream)) == 2_999
        assert stream.chunks_read == 300


def test_one_slow_chunk_holds_the_reader_instead_of_piling_results_up(orders):
    """ordered=True: chunk 0 takes a second; the others wait in the reorder buffer, no more than a window."""
    window = CHUNKS_IN_FLIGHT_PER_PROCESS * 2
    slow_first = functools.partial(workloads.slow_on, order_id="1", seconds=1.0)
    with stream_csv(orders, slow_first, processes=2, chunksize=10) as stream:
        assert next(stream) == "1"
        assert stream.chunks_read <= window + 1
        assert list(stream) == [row[0] for _, row in serial(orders)][1:]


def test_ranges_of_light_rows_grow_with_chunksize_none_and_a_given_chunksize_stays(tmp_path, monkeypatch):
    """With chunksize=None, ranges follow what a row costs: light rows get larger ranges (fewer
    tasks), never more than Pool.map's rule allows; a chunksize you give is kept. (The caller
    sizes the ranges: aiming at 10 s a range makes every row "light" however busy the machine.)"""
    monkeypatch.setattr(pipeline, "RANGE_SECONDS", 10.0)
    path = data.write_orders_csv(tmp_path / "light.csv", 40_000)
    auto, fixed = Timeline(), Timeline()
    grown = process_csv(path, workloads.order_total, processes=2, feed="ranges", timeline=auto)
    kept = process_csv(path, workloads.order_total, processes=2, feed="ranges", chunksize=1_000, timeline=fixed)
    assert grown.results == kept.results == workloads.csv_loop(path)
    assert sum(r.items for r in auto.records) == grown.rows_read == 40_000
    assert len(fixed.records) >= 30  # about 40 ranges of about 1,000 lines (sized by bytes per line)
    assert len(auto.records) < len(fixed.records) / 2
    largest = mpdemo.default_chunksize(40_000, 2)  # 5,000: at least 4 ranges a worker
    assert largest / 2 < max(r.items for r in auto.records) < largest * 2  # sized by bytes per line too


def test_pace_aims_at_ten_milliseconds_a_range_between_its_bounds(tmp_path):
    orders = data.write_orders_csv(tmp_path / "light.csv", 40_000)
    settings = CsvSettings.checked(orders, workloads.order_total, processes=2, feed="ranges")
    pace = pipeline.Pace.of(settings)
    start = pace.rows
    assert start == 1_000 < pace.largest  # Pool.map's rule for the rows estimated from bytes per line

    def took(seconds_per_row: float) -> int:
        pace.learn(pipeline.TaskRecord(1, 0.0, seconds_per_row * 100, 100))
        return pace.rows

    assert took(1e-3) == start  # heavy rows: the starting size
    assert took(1e-7) == pace.largest  # very light rows: as large as allowed
    assert took(pipeline.RANGE_SECONDS / (start + 10)) == start + 10
    fixed = pipeline.Pace.of(CsvSettings.checked(orders, workloads.order_total, processes=2, feed="ranges",
                                                 chunksize=7))
    fixed.learn(pipeline.TaskRecord(1, 0.0, 1e-6, 100))
    assert fixed.rows == 7
    rows = pipeline.Pace.of(CsvSettings.checked(orders, workloads.order_total, processes=2, feed="rows"))
    rows.learn(pipeline.TaskRecord(1, 0.0, 1e-6, 100))
    assert rows.rows == settings.chunksize  # feed="rows" keeps its size: the caller parses every row anyway


def test_timeline_gets_one_record_per_chunk(orders):
    timeline = Timeline()
    result = process_csv(orders, list, processes=2, chunksize=500, timeline=timeline)
    assert len(timeline.records) == 6 and sum(r.items for r in timeline.records) == result.rows_read == 3_000
    assert timeline.span() > 0


def test_progress_bar_counts_every_byte(orders, capsys):
    process_csv(orders, list, processes=2, chunksize=500, progress=True, feed="ranges")
    err = capsys.readouterr().err
    size = tqdm.format_sizeof(orders.stat().st_size)
    assert f"100%|██████████| {size}/{size}" in err


ABANDONED_STREAM = """
import time
import mpdemo
stream = mpdemo.stream_csv({path!r}, list, processes=2, chunksize=500)
next(stream)  # the workers go on with the chunks in flight: more results than a pipe holds
print("started", flush=True)
time.sleep(60)
"""


def test_workers_leave_when_their_parent_is_killed(orders):
    """No finally, no atexit: the workers notice by themselves, and do not wait at exit to send their
    results to nobody (a Queue's feeder thread would wait for ever on a full pipe)."""
    child = subprocess.Popen([sys.executable, "-c", ABANDONED_STREAM.format(path=str(orders))],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHON_COLORS": "0"})
    workers: list[psutil.Process] = []
    try:
        assert child.stdout.readline().strip() == "started"
        workers = [p for p in psutil.Process(child.pid).children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2
        time.sleep(0.5)  # they finish the chunks in flight, and their results fill the pipe
        child.send_signal(signal.SIGKILL)
        child.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, alive
    finally:
        end_child_and_orphans(child, workers)


# ── Faults found by probing (issue 14) ───────────────────────────────────────────────────────


def exit_on_order_5(row: list[str]) -> str:
    """A row function that calls sys.exit(5) on order 5."""
    if row[0] == "5":
        sys.exit(5)
    return row[0]


@pytest.mark.parametrize("feed", FEEDS)
def test_a_function_that_calls_sys_exit_is_a_row_error_naming_its_line(orders, feed):
    line_5 = serial(orders)[4][0]
    with pytest.raises(RowError, match=rf"^line {line_5} of .*orders\.csv: SystemExit: 5$"):
        process_csv(orders, exit_on_order_5, processes=2, chunksize=3, feed=feed)
    skip = process_csv(orders, exit_on_order_5, processes=2, chunksize=3, feed=feed, on_error="skip")
    assert skip.skipped == [(line_5, "SystemExit: 5")] and skip.rows_read == len(skip.results) + 1


@pytest.mark.parametrize("feed", FEEDS)
def test_an_unpicklable_result_under_skip_is_a_skipped_row_and_the_counts_reconcile(orders, feed):
    line_7 = serial(orders)[6][0]
    result = process_csv(orders, lock_for_order_7, processes=2, chunksize=4, feed=feed, on_error="skip")
    assert result.skipped == [(line_7, "NotSendable: the row function's result cannot be sent back from the "
                                       "worker: TypeError: cannot pickle '_thread.lock' object")]
    assert result.rows_read == len(result.results) + len(result.skipped) == 3_000


SLOW_READER = """
import functools, os, sys, time
import mpdemo
from mpdemo import workloads
path, feed = sys.argv[1], sys.argv[2]
slow = functools.partial(workloads.slow_on, order_id="1", seconds=1.5)  # chunk 0 holds everyone up a while
try:
    result = mpdemo.process_csv(path, slow, processes=2, chunksize=2_000, feed=feed)
    print("no error:", len(result.results), "results")
except mpdemo.FileChanged as error:
    print("FileChanged:", error)
"""


@pytest.mark.parametrize("feed", FEEDS)
def test_a_file_cut_short_while_it_is_read_is_an_error_never_fewer_rows(tmp_path, feed):
    path = data.write_orders_csv(tmp_path / "shrinking.csv", 200_000)
    child = subprocess.Popen([sys.executable, "-c", SLOW_READER, str(path), feed], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHON_COLORS": "0"})
    try:
        time.sleep(0.8)  # reading has begun; the first chunk sleeps
        os.truncate(path, path.stat().st_size // 2)
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert out.startswith("FileChanged: "), out
    assert "changed size while it was read" in out and "SplitError" not in out


@pytest.mark.parametrize("feed", FEEDS)
def test_a_file_rewritten_in_place_is_an_error(tmp_path, feed):
    path = data.write_orders_csv(tmp_path / "rewritten.csv", 3_000)
    stream = stream_csv(path, list, processes=2, chunksize=100, feed=feed)
    with stream:
        next(stream)
        content = path.read_bytes()
        time.sleep(0.01)
        path.write_bytes(content.replace(b"Lagos", b"Paris"))  # same size, new content
        with pytest.raises(FileChanged, match=r"rewritten\.csv was modified while it was read"):
            list(stream)


def test_a_fifo_is_refused_before_anything_starts(tmp_path):
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"rows\.fifo is not a regular file .*Save it to a file first"):
        stream_csv(fifo, list)
    assert time.monotonic() - start < 5 and not worker_processes()


def test_a_gzip_file_is_named_as_compressed(tmp_path):
    import gzip

    path = tmp_path / "orders.csv.gz"
    path.write_bytes(gzip.compress(data.write_orders_csv(tmp_path / "o.csv", 10).read_bytes()))
    with pytest.raises(ValueError, match=r"orders\.csv\.gz is gzip-compressed, not CSV text: decompress it first"):
        process_csv(path, list)


@pytest.mark.parametrize("feed", FEEDS)
def test_the_pipeline_runs_on_a_kept_pool_and_on_executors(orders, feed, pool, executor):
    from concurrent.futures import ThreadPoolExecutor

    results, skipped = expected_totals(orders)
    with ThreadPoolExecutor(2) as threads:
        for workers in (pool, executor, threads):
            timeline = Timeline()
            result = process_csv(orders, workloads.order_total, processes=2, chunksize=200, on_error="skip",
                                 feed=feed, executor=workers, timeline=timeline)
            assert (result.results, result.skipped) == (results, skipped), workers
            assert len(timeline.records) == len(range(0, 3_000, 200)) or feed == "ranges"


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dask closes its sockets after the test ends
def test_byte_ranges_on_a_dask_cluster_give_the_same_rows_lines_and_counts(orders):
    distributed = pytest.importorskip("distributed")
    results, skipped = expected_totals(orders)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        result = process_csv(orders, workloads.order_total, processes=2, chunksize=100, on_error="skip",
                             feed="ranges", executor=client.get_executor())
        assert (result.results, result.skipped, result.rows_read) == (results, skipped, 3_000)
        with pytest.raises(RowError, match=rf"^line {skipped[0][0]} of .*orders\.csv: ValueError"):
            process_csv(orders, workloads.order_total, processes=2, chunksize=100, feed="ranges",
                        executor=client.get_executor())
