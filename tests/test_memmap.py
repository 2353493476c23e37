"""mpdemo.memmap: .npy files written and read in windows, by workers that open the file themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpdemo import memmap, workloads
from mpdemo.blocks import row_blocks
from mpdemo.errors import BlockError


def fill(start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a deterministic test array of 64 columns: row i holds i, i+1, …"""
    return np.arange(start, stop, dtype=np.float64)[:, None] + np.arange(64)


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> Path:
    """A 64 MB file of 131,073 rows of 512 bytes (an odd count: no even split), written in 4 MB blocks."""
    return memmap.write_npy(tmp_path_factory.mktemp("npy") / "rows.npy", (131_073, 64), fill=fill, block_mb=4)


def test_write_npy_writes_every_block_and_np_load_reads_it(npy):
    loaded = np.load(npy)
    assert loaded.shape == (131_073, 64) and np.array_equal(loaded, fill(0, 131_073))


def test_the_layout_says_where_the_rows_begin(npy):
    layout = memmap.npy_layout(npy)
    assert layout.shape == (131_073, 64) and layout.dtype == np.float64 and layout.row_bytes == 512
    assert npy.stat().st_size == layout.offset + 131_073 * 512
    assert layout.offset % 64 == 0  # the header is padded to a multiple of 64 bytes


def test_open_rows_maps_exactly_those_rows(npy):
    rows = memmap.open_rows(npy, 1000, 1003)
    assert isinstance(rows, np.memmap) and np.array_equal(rows, fill(1000, 1003))


def test_fortran_order_is_refused(tmp_path):
    path = tmp_path / "columns.npy"
    np.save(path, np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="Fortran order"):
        memmap.npy_layout(path)


@pytest.mark.parametrize("window_mb", [1, 0.3, None])
def test_file_apply_equals_the_same_windows_done_serially(npy, pool, window_mb):
    whole = memmap.open_npy(npy)
    window_rows = 131_073 if window_mb is None else int(window_mb * 2**20 // 512)
    expected = []
    for start, stop in row_blocks(len(whole), 2):
        for first in range(start, stop, min(window_rows, stop - start)):
            expected.append(workloads.moments(whole[first:min(stop, first + window_rows)]))
    result = memmap.file_apply(workloads.moments, npy, processes=2, window_mb=window_mb, executor=pool)
    assert len(result.results) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(result.results, expected, strict=True))
    count, total, squares = np.sum(result.results, axis=0)
    assert count == whole.size and total == pytest.approx(whole.sum())
    assert [report.rows for report in result.reports] == row_blocks(len(whole), 2)


def test_a_window_at_a_time_keeps_each_worker_small(npy, pool):
    """Each worker reads 32 MB. Mapped at once, its touched pages stay resident; a window at a time,
    it holds about one window."""
    windowed = memmap.file_apply(np.sum, npy, processes=2, window_mb=2, executor=pool)
    whole = memmap.file_apply(np.sum, npy, processes=2, window_mb=None, executor=pool)
    assert all(report.extra_mb < 10 for report in windowed.reports), windowed.reports
    assert all(report.extra_mb > 24 for report in whole.reports), whole.reports


def test_a_failing_range_names_its_rows(tmp_path, pool):
    path = memmap.write_npy(tmp_path / "bad.npy", (1000,), fill=lambda start, stop: np.arange(start, stop))
    with pytest.raises(BlockError, match="rows 500–999 raised ValueError: cannot process 500"):
        memmap.file_apply(workloads.fail_on_block, path, processes=2, executor=pool)


def test_evict_drops_the_cache_and_the_data_stays(npy):
    assert memmap.evict(npy) is True
    assert np.array_equal(memmap.open_rows(npy, 0, 2), fill(0, 2))
