"""The DataFrame packages of lesson 08 work together, at the versions the `notebooks` extra allows.

Lesson 08 (DataFrames and columnar files) is still to be written. Until it is, this checks what
it will rely on: pandas writes a small Parquet file of two row groups, and pyarrow, polars,
DuckDB and dask.dataframe each read it back; threadpoolctl limits NumPy's thread pool.
``make test-minimum`` runs it with every package at its lowest allowed version.
"""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

ROWS = 6
TOTAL = sum(0.5 * row for row in range(ROWS))  # 7.5


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    """A Parquet file written by pandas: columns row and value, 6 rows in row groups of 3."""
    path = tmp_path / "rows.parquet"
    frame = pd.DataFrame({"row": np.arange(ROWS), "value": 0.5 * np.arange(ROWS)})
    frame.to_parquet(path, row_group_size=3)
    return path


def test_pyarrow_reads_one_row_group(parquet: Path):
    file = pq.ParquetFile(parquet)
    assert file.num_row_groups == 2
    assert file.read_row_group(0).column("row").to_pylist() == [0, 1, 2]


def test_polars_reads_the_file(parquet: Path):
    assert pl.read_parquet(parquet)["value"].sum() == TOTAL


def test_duckdb_queries_the_file(parquet: Path):
    assert duckdb.sql("select 1").fetchall() == [(1,)]
    assert duckdb.sql(f"select sum(value) from '{parquet.as_posix()}'").fetchall() == [(TOTAL,)]


def test_dask_reads_the_file(parquet: Path):
    # Imported here, inside a test, not at the top: importing dask.dataframe changes how every
    # exception pickles, for the whole process (see pickling_as_it_was in conftest.py), and the
    # conftest undoes that only for what happens during a test.
    import dask.dataframe as dd

    frame = dd.read_parquet(parquet)
    assert frame.npartitions >= 1
    assert frame["value"].sum().compute(scheduler="sync") == TOTAL


def test_threadpoolctl_limits_numpys_threads():
    assert isinstance(threadpool_info(), list)
    with threadpool_limits(limits=1):
        assert float(np.ones((50, 50)) @ np.ones(50) @ np.ones(50)) == 50 * 50
