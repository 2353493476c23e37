"""mpdemo.frames: DataFrames through a pool (frame_apply) and Parquet row groups read by the workers
(process_parquet), on every kind of executor."""

from __future__ import annotations

import functools
import os
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import mpdemo
from mpdemo import data, frames, workloads
from mpdemo.errors import FileChanged, FrameError, NotSendable, WorkerDied
from mpdemo.timing import Timeline

order_values_by_row = functools.partial(workloads.apply_rows, func=workloads.order_value)


# ── Frame and row functions for the workers (a module's functions, so that spawn workers find them) ──


def doubled(frame: pd.DataFrame) -> pd.DataFrame:
    """Every numeric column doubled, the others as they are: a row-wise function of a whole frame."""
    return frame.assign(**{name: frame[name] * 2 for name in frame.select_dtypes("number").columns})


def big_orders(frame: pd.DataFrame) -> pd.DataFrame:
    """A filter: the rows with a quantity above 10."""
    return frame[frame["quantity"] > 10]


def with_total(frame: pd.DataFrame) -> pd.DataFrame:
    """A new column from two others."""
    return frame.assign(total=frame["quantity"] * frame["unit_price"])


def fail_on_label(frame: pd.DataFrame, label="ORD-000013") -> pd.DataFrame:
    if label in frame.index:
        raise ValueError(f"cannot process {label}")
    return frame


def fail_on_many(frame: pd.DataFrame) -> pd.DataFrame:
    """Fails on any frame of more than 3 rows: no single row is to blame."""
    if len(frame) > 3:
        raise RuntimeError("too many rows at once")
    return frame


def crash_on_label(frame: pd.DataFrame, label="ORD-000013") -> pd.DataFrame:
    if label in frame.index:
        os.kill(os.getpid(), signal.SIGKILL)
    return frame


def total_of(frame: pd.DataFrame) -> float:
    """Not a frame: a reduction, which frame_apply refuses."""
    return float(frame["quantity"].sum())


def reset(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reset_index(drop=True)


def locks(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(lock=[threading.Lock() for _ in range(len(frame))])


def exits(frame: pd.DataFrame) -> pd.DataFrame:
    raise SystemExit(4)


def batch_rows(batch: pd.DataFrame) -> tuple:
    """What a worker saw of a batch: its first and last index labels, its columns."""
    return batch.index[0], batch.index[-1], list(batch.columns)


# ── Inputs ───────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> pd.DataFrame:
    """400 orders, indexed by "ORD-000001"…, with a categorical city, as the lesson uses them."""
    path = data.write_orders_csv(tmp_path_factory.mktemp("orders") / "orders.csv", 400)
    frame = pd.read_csv(path, keep_default_na=False)
    frame.index = "ORD-" + frame["order_id"].astype(str).str.zfill(6)
    frame["city"] = frame["city"].astype("category")
    return frame


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    """Every kind of column that must round-trip: ordered categories, nullable integers, time zones, bools."""
    n = 50
    return pd.DataFrame({
        "size": pd.Categorical(["S", "M", "L", "M", "S"] * 10, categories=["S", "M", "L", "XL"], ordered=True),
        "count": pd.array([1, None, 3, 4, 5] * 10, dtype="Int64"),
        "when": pd.date_range("2026-01-01", periods=n, freq="h", tz="Europe/Lisbon"),
        "ok": [True, False] * 25,
        "value": np.linspace(0, 1, n),
        "name": [f"n{i}" for i in range(n)],
    }, index=pd.Index([f"k{i:02d}" for i in range(n)], name="key"))


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    """1,000 orders in row groups of 100 rows: 10 row groups."""
    folder = tmp_path_factory.mktemp("parquet")
    return data.csv_to_parquet(data.write_orders_csv(folder / "orders.csv", 1_000), folder / "orders.parquet",
                               row_group_rows=100, column_types=data.ORDER_TYPES)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local, distributed.Client(local) as client:
        yield client


@pytest.fixture(params=["ProcessPool", "ProcessPoolExecutor", "threads"])
def any_executor(request, pool, executor):
    """Each kind of executor these run on (dask has tests of its own, below)."""
    if request.param == "threads":
        with ThreadPoolExecutor(2) as threads:
            yield threads
    else:
        yield pool if request.param == "ProcessPool" else executor


def assert_same(result, expected) -> None:
    """Equal values, dtypes (categories included), index and names."""
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(result, expected, check_index_type=True)
    else:
        pd.testing.assert_series_equal(result, expected, check_index_type=True)


# ── frame_apply: results equal func(df) ─────────────────────────────────────────────────────


@pytest.mark.parametrize("func", [order_values_by_row, workloads.order_values, doubled, big_orders, with_total],
                         ids=["apply rows (Series)", "columns (Series)", "doubled (DataFrame)", "filter",
                              "new column"])
def test_frame_apply_equals_func_of_the_whole_frame(func, orders, any_executor):
    assert_same(mpdemo.frame_apply(func, orders, processes=2, chunksize=37, executor=any_executor), func(orders))


@pytest.mark.parametrize("chunksize", [1, 7, "auto", 10_000])
def test_index_dtypes_and_categories_round_trip_at_any_chunk_size(chunksize, mixed, pool):
    result = mpdemo.frame_apply(doubled, mixed, processes=2, chunksize=chunksize, executor=pool)
    assert_same(result, doubled(mixed))
    assert result["size"].cat.categories.tolist() == ["S", "M", "L", "XL"] and result["size"].cat.ordered
    assert result["when"].dtype == mixed["when"].dtype and str(result["when"].dt.tz) == "Europe/Lisbon"
    assert result.index.name == "key"


def test_a_range_index_and_duplicate_labels_come_back_in_order(pool):
    frame = pd.DataFrame({"quantity": range(100), "unit_price": 1.5, "note": "gift"}, index=[i % 7 for i in range(100)])
    frame.loc[frame["quantity"] == 0, "quantity"] = 1
    assert_same(mpdemo.frame_apply(order_values_by_row, frame, processes=2, chunksize=9, executor=pool),
                order_values_by_row(frame))
    ranged = frame.reset_index(drop=True)
    result = mpdemo.frame_apply(with_total, ranged, processes=2, chunksize=9, executor=pool)
    assert_same(result, with_total(ranged))


@pytest.mark.parametrize("func", [order_values_by_row, doubled, big_orders], ids=["Series", "DataFrame", "filter"])
def test_an_empty_frame_gives_what_func_gives_for_it(func, orders, pool):
    empty = orders.iloc[:0]
    assert_same(mpdemo.frame_apply(func, empty, processes=2, executor=pool), func(empty))


def test_auto_chunks_are_pool_maps_rule_capped_by_size(orders, monkeypatch):
    assert frames.auto_chunksize(orders, 2) == mpdemo.default_chunksize(len(orders), 2)
    monkeypatch.setattr(frames, "MAX_CHUNK_MB", 1)
    wide = pd.DataFrame({"text": ["x" * 100_000] * 1_000})  # about 100 KB a row
    assert frames.auto_chunksize(wide, 2) == 10


def test_a_kept_pool_sets_the_number_of_chunks(orders):
    """Without processes=, the chunks are cut for the pool's own size (four per worker), not the machine's."""
    timeline = Timeline()
    with mpdemo.ProcessPool(1) as one:
        mpdemo.frame_apply(doubled, orders, executor=one, timeline=timeline)
    assert len(timeline.records) == 4


def test_each_chunk_is_pickled_once_in_the_caller(monkeypatch, orders, pool):
    packed = []
    real = frames.pack_frame
    monkeypatch.setattr(frames, "pack_frame", lambda chunk, start: packed.append(start) or real(chunk, start))
    mpdemo.frame_apply(doubled, orders, processes=2, chunksize=100, executor=pool)
    assert packed == [0, 100, 200, 300]


def test_the_timeline_says_what_pickling_cost(orders, pool):
    timeline = Timeline()
    mpdemo.frame_apply(doubled, orders, processes=2, chunksize=100, executor=pool, timeline=timeline)
    assert [record.items for record in timeline.records] == [100] * 4
    assert all(record.pickling > 0 and record.caller_pickling > 0 for record in timeline.records)


def test_progress_counts_every_row(orders, pool, capsys):
    mpdemo.frame_apply(doubled, orders, processes=2, chunksize=100, executor=pool, progress=True)
    assert "400/400" in capsys.readouterr().err


def test_threads_get_a_copy_and_cannot_change_the_callers_frame(orders):
    def scribble(frame):  # a lambda-like function is fine in threads: nothing is pickled
        frame["quantity"] = 0
        return frame

    before = orders.copy()
    with ThreadPoolExecutor(2) as threads:
        result = mpdemo.frame_apply(scribble, orders, processes=2, chunksize=50, executor=threads)
    assert (result["quantity"] == 0).all()
    assert_same(orders, before)


# ── frame_apply: errors name the row's label ─────────────────────────────────────────────────


def test_a_failing_row_is_named_by_its_index_label_and_position(orders, any_executor):
    with pytest.raises(FrameError, match=r"^row 'ORD-000013' \(position 12\): ValueError: cannot process ORD-000013$") \
            as caught:
        mpdemo.frame_apply(fail_on_label, orders, processes=2, chunksize=50, executor=any_executor)
    error = caught.value
    assert error.label == "ORD-000013" and error.index == 12 and isinstance(error, mpdemo.WorkerError)
    assert isinstance(error.__cause__, ValueError)


def test_a_row_function_that_fails_in_df_apply_names_its_row(orders, pool):
    bad = orders.copy()
    bad.loc["ORD-000321", "quantity"] = 0
    with pytest.raises(FrameError, match=r"row 'ORD-000321' \(position 320\): ValueError: quantity 0 is not") as caught:
        mpdemo.frame_apply(order_values_by_row, bad, processes=2, executor=pool)
    assert "in order_value" in str(caught.value.__cause__.__cause__)  # the worker's traceback


def test_a_failure_no_single_row_causes_names_the_chunk(orders, pool):
    with pytest.raises(FrameError, match=r"^rows 0–49 \(index 'ORD-000001' to 'ORD-000050'\) \(no single row fails "
                                         r"alone\): RuntimeError: too many rows at once"):
        mpdemo.frame_apply(fail_on_many, orders, processes=2, chunksize=50, executor=pool)


def test_first_failing_row_halves_its_way_to_the_first_bad_row():
    frame = pd.DataFrame({"x": range(1_000)})
    calls = []

    def bad_at_or_after_600(part):
        calls.append(len(part))
        if (part["x"] >= 600).any():
            raise ValueError

    assert frames.first_failing_row(bad_at_or_after_600, frame) == 600
    assert sum(calls) <= 2 * len(frame)
    assert frames.first_failing_row(fail_on_many, frame) is None
    assert frames.first_failing_row(exits, frame.iloc[:1]) == 0


def test_exits_in_the_function_fail_the_row_not_the_caller(orders, pool):
    with pytest.raises(FrameError, match=r"row 'ORD-000001' \(position 0\): SystemExit: 4"):
        mpdemo.frame_apply(exits, orders, processes=2, executor=pool)


def test_a_killed_worker_raises_within_seconds_naming_the_rows(orders):
    start = time.monotonic()
    with pytest.raises(WorkerDied, match=r"killed by SIGKILL.*rows 0–49 \(index 'ORD-000001' to 'ORD-000050'\)"):
        mpdemo.frame_apply(crash_on_label, orders, processes=2, chunksize=50)
    assert time.monotonic() - start < 15


# ── frame_apply: what it refuses, clearly ────────────────────────────────────────────────────


@pytest.mark.parametrize("df, message", [
    (pd.Series([1, 2]), "frame_apply takes a DataFrame, not a Series: pass series.to_frame()"),
    ([[1, 2], [3, 4]], "frame_apply takes a pandas DataFrame, not list: .* use mpdemo.chunked_map"),
    (np.zeros((3, 2)), "frame_apply takes a pandas DataFrame, not ndarray"),
])
def test_other_inputs_are_refused(df, message):
    with pytest.raises(TypeError, match=message):
        mpdemo.frame_apply(doubled, df, processes=2)


@pytest.mark.parametrize("kwargs, message", [({"chunksize": 0}, "chunksize must be"), ({"processes": 0}, "processes must be"),
                                             ({"chunksize": "big"}, "chunksize must be")])
def test_bad_settings_are_refused(kwargs, message, orders):
    with pytest.raises(ValueError, match=message):
        mpdemo.frame_apply(doubled, orders, **kwargs)


def test_a_function_that_returns_no_frame_is_refused_naming_its_rows(orders, pool):
    with pytest.raises(TypeError, match=r"needs func to return a DataFrame or a Series of the chunk's rows; for rows "
                                        r"0–199 .* it returned float"):
        mpdemo.frame_apply(total_of, orders, processes=2, chunksize=200, executor=pool)


def test_a_function_that_changes_the_labels_is_refused(orders, pool):
    with pytest.raises(ValueError, match="index labels are not those of its chunk .* A groupby or a reset_index"):
        mpdemo.frame_apply(reset, orders, processes=2, chunksize=200, executor=pool)


def test_a_lambda_is_refused_before_anything_starts(orders):
    with pytest.raises(NotSendable, match="cannot be sent to worker processes"):
        mpdemo.frame_apply(lambda frame: frame, orders, processes=2)


def test_a_value_that_cannot_travel_is_named_by_row_label_and_column(pool):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [1, threading.Lock(), 3]}, index=["x", "y", "z"])
    with pytest.raises(NotSendable, match=r"^the value in column 'b' of row 'y' \(position 1\) cannot be sent"):
        mpdemo.frame_apply(doubled, frame, processes=2, executor=pool)


def test_a_result_that_cannot_travel_is_named_by_its_rows(orders, pool):
    with pytest.raises(NotSendable, match=r"the result of rows 0–199 .* cannot be sent back from the worker"):
        mpdemo.frame_apply(locks, orders, processes=2, chunksize=200, executor=pool)


def test_frame_errors_pickle_with_their_label():
    error = FrameError("row 'a' (position 3)", "a", 3, ValueError("bad"))
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "row 'a' (position 3): ValueError: bad" and again.label == "a" and again.index == 3


# ── process_parquet ─────────────────────────────────────────────────────────────────────────


def test_one_result_per_row_group_in_file_order_indexed_by_file_row(parquet, any_executor):
    results = mpdemo.process_parquet(parquet, batch_rows, processes=2, executor=any_executor)
    assert results == [(start, start + 99, list(workloads.ORDER_FIELDS)) for start in range(0, 1_000, 100)]


def test_the_results_put_together_equal_func_of_the_whole_file(parquet, pool):
    whole = pd.read_parquet(parquet)
    assert_same(pd.concat(mpdemo.process_parquet(parquet, order_values_by_row, processes=2, executor=pool)),
                order_values_by_row(whole))
    totals = pd.concat(mpdemo.process_parquet(parquet, workloads.city_totals, processes=2, executor=pool))
    combined = totals.groupby(level=0).sum()
    expected = workloads.city_totals(whole)
    assert combined.index.equals(expected.index) and np.allclose(combined, expected, rtol=1e-12)


def test_columns_reads_only_those(parquet, pool):
    results = mpdemo.process_parquet(parquet, batch_rows, columns=["city", "quantity"], processes=2, executor=pool)
    assert {tuple(columns) for _, _, columns in results} == {("city", "quantity")}


def test_a_file_written_by_pandas_keeps_its_own_index(tmp_path, orders, pool):
    path = tmp_path / "labelled.parquet"
    orders.to_parquet(path, row_group_size=150)
    results = mpdemo.process_parquet(path, batch_rows, columns=["quantity"], processes=2, executor=pool)
    assert [(first, last) for first, last, _ in results] == [("ORD-000001", "ORD-000150"),
                                                             ("ORD-000151", "ORD-000300"), ("ORD-000301", "ORD-000400")]
    assert_same(pd.concat(mpdemo.process_parquet(path, doubled, processes=2, executor=pool)), doubled(orders))


def test_a_failing_row_names_its_row_of_the_file_and_its_row_group(parquet, any_executor):
    bad = functools.partial(fail_on_label, label=537)  # the label of file row 537
    with pytest.raises(FrameError, match=r"^row 537 of .*orders.parquet \(row group 5\): ValueError: cannot process 537"):
        mpdemo.process_parquet(parquet, bad, processes=2, executor=any_executor)


def test_a_result_that_cannot_travel_names_its_row_group(parquet, pool):
    with pytest.raises(NotSendable, match=r"the result of row group 0 of .*orders.parquet cannot be sent back"):
        mpdemo.process_parquet(parquet, locks, processes=2, executor=pool)


def test_a_missing_file_raises_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        mpdemo.process_parquet(tmp_path / "nothing.parquet", len, processes=2)


@pytest.mark.parametrize("content", [b"order_id,city\n1,Lagos\n", b"", b"PAR1" + b"\0" * 100],
                         ids=["a CSV file", "an empty file", "a cut-off file"])
def test_a_file_that_is_not_parquet_is_named(content, tmp_path):
    path = tmp_path / "orders.parquet"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"orders.parquet is not a Parquet file, or it is damaged"):
        mpdemo.process_parquet(path, len, processes=2)


def test_a_truncated_file_is_named(parquet, tmp_path):
    path = tmp_path / "cut.parquet"
    path.write_bytes(parquet.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cut.parquet is not a Parquet file, or it is damaged"):
        mpdemo.process_parquet(path, len, processes=2)


def test_a_damaged_row_group_is_named(parquet, tmp_path, pool):
    """The footer is fine, row group 3's data is not: the worker that reads it says so."""
    chunk = pq.read_metadata(parquet).row_group(3).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    damaged = bytearray(parquet.read_bytes())
    damaged[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path = tmp_path / "damaged.parquet"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"row group 3 of .*damaged.parquet cannot be read, the file is damaged"):
        mpdemo.process_parquet(path, len, processes=2, executor=pool)


def test_a_directory_and_unknown_columns_are_refused(parquet, tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory: pass one Parquet file"):
        mpdemo.process_parquet(tmp_path, len, processes=2)
    with pytest.raises(ValueError, match="has no column 'price'; its columns: order_id, customer"):
        mpdemo.process_parquet(parquet, len, columns=["price"], processes=2)
    with pytest.raises(ValueError, match=r"columns must be a list of column names, e.g. \['city'\]"):
        mpdemo.process_parquet(parquet, len, columns="city", processes=2)


def test_a_file_replaced_meanwhile_is_noticed(parquet, tmp_path, pool):
    path = tmp_path / "moving.parquet"
    path.write_bytes(parquet.read_bytes())
    stamp, rows = frames.parquet_layout(path, None)
    os.utime(path, ns=(stamp.mtime_ns + 10**9, stamp.mtime_ns + 10**9))
    job = frames.ParquetJob(len, str(path), None, stamp, True)
    reply = frames.run_parquet_task(job, frames.ParquetTask((0,), 0, rows[0]))
    assert isinstance(reply.failure, FileChanged)


def test_a_lambda_is_refused_and_an_empty_file_gives_nothing(tmp_path, parquet):
    with pytest.raises(NotSendable, match="cannot be sent to worker processes"):
        mpdemo.process_parquet(parquet, lambda batch: batch, processes=2)
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"x": pd.Series([], dtype="int64")}).to_parquet(empty)
    assert mpdemo.process_parquet(empty, len, processes=2) in ([], [0])


def test_workers_read_one_row_group_at_a_time_and_only_a_path_travels(parquet, monkeypatch, pool):
    calls = []
    real = frames.parquet_call
    monkeypatch.setattr(frames, "parquet_call", lambda job, task: calls.append(real(job, task)) or calls[-1])
    mpdemo.process_parquet(parquet, len, processes=2, executor=pool)
    assert [call.args[1].groups for call in calls] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # 4 a process at most
    assert max(len(call.pickled()) for call in calls) < 1_000  # a path and some numbers, no rows


# ── The dask cluster of notebook 07 ──────────────────────────────────────────────────────────


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dask closes its sockets after the test ends
def test_both_run_unchanged_on_a_dask_cluster(cluster, orders, parquet):
    on_dask = cluster.get_executor()
    assert_same(mpdemo.frame_apply(order_values_by_row, orders, processes=2, chunksize=64, executor=on_dask),
                order_values_by_row(orders))
    assert_same(mpdemo.frame_apply(doubled, orders, processes=2, executor=cluster.get_executor()), doubled(orders))
    assert mpdemo.process_parquet(parquet, batch_rows, processes=2, executor=cluster.get_executor()) == \
        [(start, start + 99, list(workloads.ORDER_FIELDS)) for start in range(0, 1_000, 100)]
    with pytest.raises(FrameError, match=r"row 'ORD-000013' \(position 12\)"):
        mpdemo.frame_apply(fail_on_label, orders, processes=2, executor=cluster.get_executor())
    with pytest.raises(FrameError, match=r"row 537 of .*orders.parquet \(row group 5\)"):
        mpdemo.process_parquet(parquet, functools.partial(fail_on_label, label=537), processes=2,
                               executor=cluster.get_executor())


# ── The lesson's data ────────────────────────────────────────────────────────────────────────


def test_csv_to_parquet_gives_what_pandas_reads_from_the_csv_in_full_row_groups(tmp_path):
    csv_path = data.write_orders_csv(tmp_path / "orders.csv", 2_345)
    path = data.csv_to_parquet(csv_path, tmp_path / "orders.parquet", row_group_rows=500,
                               column_types=data.ORDER_TYPES, block_mb=0.01)  # many small blocks
    metadata = pq.read_metadata(path)
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [500] * 4 + [345]
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_csv(csv_path, keep_default_na=False),
                                  check_dtype=False)
    assert list(pd.read_parquet(path).dtypes.astype(str)[["order_id", "quantity", "unit_price"]]) == \
        ["int64", "int64", "float64"]


def test_the_lessons_parquet_file_is_made_once_from_the_orders_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("MPDEMO_DATA_DIR", str(tmp_path))
    path = data.orders_parquet(1_000)
    assert path.name == "orders_1000_s0_rg50.parquet" and pq.read_metadata(path).num_row_groups == data.ROW_GROUPS
    stamp = path.stat().st_mtime_ns
    assert data.orders_parquet(1_000).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders_1000_s0_bad0.csv", path.name]
    frame = data.orders_frame(1_000)
    assert frame.index[0] == "ORD-000001" and frame["city"].dtype == "category" and len(frame) == 1_000


def test_the_three_order_values_agree_to_the_last_bit(orders):
    by_row = order_values_by_row(orders)
    assert by_row.equals(workloads.order_values(orders))
    import duckdb

    with duckdb.connect() as con:
        con.register("orders", orders.reset_index(drop=True))
        by_sql = con.sql(f"SELECT {workloads.ORDER_VALUE_SQL} AS v FROM orders").fetchnumpy()["v"]
    assert np.array_equal(by_sql, by_row.to_numpy())
