"""mpdemo.data and mpdemo.workloads: deterministic data and the row functions."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from mpdemo import data, workloads


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = data.write_orders_csv(tmp_path / "a.csv", 500, seed=1).read_bytes()
    b = data.write_orders_csv(tmp_path / "b.csv", 500, seed=1).read_bytes()
    c = data.write_orders_csv(tmp_path / "c.csv", 500, seed=2).read_bytes()
    assert a == b != c


def test_orders_csv_is_realistic(tmp_path):
    path = data.write_orders_csv(tmp_path / "orders.csv", 2_000)
    rows = read_rows(path)
    assert rows[0] == list(workloads.ORDER_FIELDS)
    assert len(rows) == 2_001
    assert all(len(row) == 6 for row in rows)
    assert any("," in row[1] for row in rows[1:])  # quoted names with commas
    assert any("\n" in row[5] for row in rows[1:])  # a quoted line break: one row, two lines
    assert path.read_text(encoding="utf-8").count("\n") > 2_001
    totals = [workloads.order_total(row) for row in rows[1:]]
    assert all(t > 0 for t in totals)


def test_bad_rows_come_exactly_where_asked(tmp_path):
    rows = read_rows(data.write_orders_csv(tmp_path / "bad.csv", 1_000, bad_every=97))[1:]
    bad = []
    for row in rows:
        try:
            workloads.order_total(row)
        except ValueError:
            bad.append(int(row[0]))
    assert bad == list(range(97, 1_001, 97))


@pytest.mark.parametrize("row, message", [
    (["1", "a", "b", "3"], "expected 6 fields, got 4"),
    (["1", "a", "b", "3.x", "2.50", ""], "quantity '3.x' or unit_price '2.50' is not a number"),
    (["1", "a", "b", "3", "", ""], "quantity '3' or unit_price '' is not a number"),
])
def test_order_total_explains_what_is_wrong(row, message):
    with pytest.raises(ValueError, match=message):
        workloads.order_total(row)


def test_orders_csv_is_written_once_into_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MPDEMO_DATA_DIR", str(tmp_path))
    path = data.orders_csv(100, seed=3)
    assert path.parent == tmp_path and len(read_rows(path)) == 101
    stamp = path.stat().st_mtime_ns
    assert data.orders_csv(100, seed=3).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_data_command_generates_the_small_files(tmp_path):
    env = {**os.environ, "MPDEMO_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "mpdemo", "data", "--size", "small"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["measurements_262144x128_s0.npy", "orders_20000_s0_bad0.csv", "orders_20000_s0_bad997.csv",
                     "orders_20000_s0_rg1000.parquet"]
    assert len(read_rows(tmp_path / names[2])) == 20_001
    assert np.load(tmp_path / names[0], mmap_mode="r").shape == (262_144, 128)


def test_measurements_are_the_same_rows_however_they_are_cut(tmp_path, monkeypatch):
    whole = data.measurements(0, 20_000, 3)
    assert whole.shape == (20_000, 3) and abs(whole.mean()) < 0.05
    for start, stop in [(0, 1), (8_191, 8_193), (5_000, 19_999)]:
        assert np.array_equal(data.measurements(start, stop, 3), whole[start:stop])
    monkeypatch.setenv("MPDEMO_DATA_DIR", str(tmp_path))
    path = data.measurements_npy(10_000, 3)
    assert np.array_equal(np.load(path), whole[:10_000])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_pick_follows_mpdemo_size(monkeypatch):
    monkeypatch.setenv("MPDEMO_SIZE", "small")
    assert data.pick(small=1, full=2) == 1
    monkeypatch.setenv("MPDEMO_SIZE", "full")
    assert data.pick(small=1, full=2) == 2


def test_make_array_is_deterministic():
    a = data.make_array(1_000, 10, seed=5)
    assert a.shape == (1_000, 10) and a.dtype == np.float64
    assert np.array_equal(a, data.make_array(1_000, 10, seed=5))
    assert not np.array_equal(a, data.make_array(1_000, 10, seed=6))


def test_cpu_bound_depends_on_its_input_and_loops():
    assert workloads.cpu_bound(1, 100) == workloads.cpu_bound(1, 100)
    assert workloads.cpu_bound(1, 100) != workloads.cpu_bound(2, 100)
    assert workloads.cpu_bound(5, 0) == 5


def test_spin_costs_what_its_row_says():
    assert workloads.spin(50) == workloads.cpu_bound(50, 50)
    assert workloads.spin(0) == 0


def test_loops_for_grows_with_the_cost():
    assert workloads.loops_for(1_000) > 5 * workloads.loops_for(100) > 0


def test_numpy_heavy_and_sum_of_squares_compute_what_they_say():
    block = np.linspace(0, 3, 12).reshape(3, 4)
    assert workloads.numpy_heavy(block) == pytest.approx(np.sum(np.sqrt(np.abs(np.sin(block) * np.cos(block)) + 1)))
    assert workloads.sum_of_squares(np.array([1.0, 2.0, 3.0])) == 14.0


def test_fail_on_and_io_bound():
    assert workloads.io_bound(4, seconds=0) == 4
    assert workloads.fail_on(3) == 3
    with pytest.raises(ValueError, match="cannot process 13"):
        workloads.fail_on(13)
