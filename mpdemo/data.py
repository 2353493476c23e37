"""Deterministic synthetic data: the same seed gives the same bytes on every machine.

Nothing is downloaded. ``MPDEMO_SIZE=small`` (CI) keeps every notebook quick; ``full`` (the
default) gives learners enough rows for the effects to be clear. :func:`pick` chooses between
a small and a full value, so each notebook states both sizes where it uses them.

The orders CSV looks like real exported data, including the parts that break naive parsers::

    order_id,customer,city,quantity,unit_price,note
    1,"Okafor, Ada",Lagos,3,19.99,
    2,"Tanaka, Ren",Osaka,12,4.50,"fragile, keep upright"
    3,"Silva, Ana",Porto,1,250.00,"two-line
    note"

Quoted fields hold commas and, now and then, a line break, so one row can span two lines of
the file. With ``bad_every=n`` every n-th row is deliberately wrong (a non-numeric quantity, a
missing field) so the lessons can show error handling.
"""

from __future__ import annotations

import csv
import functools
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from mpdemo.context import size
from mpdemo.workloads import ORDER_FIELDS

T = TypeVar("T")

_FIRST = ["Ada", "Ren", "Ana", "Omar", "Mei", "Lars", "Priya", "Tomás", "Zoe", "Kwame"]
_LAST = ["Okafor", "Tanaka", "Silva", "Haddad", "Chen", "Berg", "Iyer", "García", "Novak", "Mensah"]
_CITIES = ["Lagos", "Osaka", "Porto", "Cairo", "Xi'an", "Bergen", "Pune", "Bogotá", "Brno", "Accra"]
_NOTES = ["", "", "", "fragile, keep upright", 'says "thanks"', "gift", "two-line\nnote"]


def pick(small: T, full: T) -> T:
    """``small`` when ``MPDEMO_SIZE=small``, otherwise ``full``."""
    return small if size() == "small" else full


def data_dir() -> Path:
    """The folder for generated data: ``MPDEMO_DATA_DIR``, or ``data/`` beside the package."""
    default = Path(__file__).resolve().parent.parent / "data"
    folder = Path(os.environ.get("MPDEMO_DATA_DIR", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def order_rows(n: int, *, seed: int = 0, bad_every: int = 0):
    """Yield ``n`` order rows as lists of strings (no header), the same ones for the same seed."""
    rng = random.Random(seed)
    for i in range(1, n + 1):
        row = [
            str(i),
            f"{rng.choice(_LAST)}, {rng.choice(_FIRST)}",
            rng.choice(_CITIES),
            str(rng.randint(1, 20)),
            f"{rng.uniform(0.5, 300):.2f}",
            rng.choice(_NOTES),
        ]
        if bad_every and i % bad_every == 0:
            row = _spoil(row, i // bad_every)
        yield row


def _spoil(row: list[str], k: int) -> list[str]:
    """Make a row wrong in one of three realistic ways."""
    if k % 3 == 0:
        return row[:-1]  # a missing field
    if k % 3 == 1:
        return row[:3] + [row[3] + ".x"] + row[4:]  # a quantity that is not a number
    return row[:4] + [""] + row[5:]  # an empty price


def write_orders_csv(path: str | os.PathLike, n: int, *, seed: int = 0, bad_every: int = 0) -> Path:
    """Write a header and ``n`` order rows to ``path`` and return the path."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(ORDER_FIELDS)
        writer.writerows(order_rows(n, seed=seed, bad_every=bad_every))
    return path


def orders_csv(n: int, *, seed: int = 0, bad_every: int = 0) -> Path:
    """The path of an orders CSV with these parameters in :func:`data_dir`, written if missing."""
    path = data_dir() / orders_name(n, seed, bad_every)
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")  # never leave a half-written file
        write_orders_csv(partial, n, seed=seed, bad_every=bad_every)
        partial.replace(path)
    return path


def orders_name(n: int, seed: int, bad_every: int) -> str:
    return f"orders_{n}_s{seed}_bad{bad_every}.csv"


def measurements_name(rows: int, cols: int, seed: int) -> str:
    return f"measurements_{rows}x{cols}_s{seed}.npy"


def make_array(rows: int, cols: int = 10, *, seed: int = 0) -> np.ndarray:
    """A ``rows × cols`` float64 array of standard-normal numbers, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((rows, cols))


def measurements(start: int, stop: int, cols: int = 128, *, seed: int = 0) -> np.ndarray:
    """Rows ``start:stop`` of a large table of standard-normal numbers, made block by block.

    Each block of :data:`BLOCK_ROWS` rows comes from its own seed, so any row range is the same
    whoever makes it and however the work is split, and nothing needs the whole table at once.
    """
    first, last = start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS
    blocks = [np.random.default_rng([seed, b]).standard_normal((BLOCK_ROWS, cols)) for b in range(first, last + 1)]
    return np.concatenate(blocks)[start - first * BLOCK_ROWS:stop - first * BLOCK_ROWS]


#: Rows per seeded block of :func:`measurements`.
BLOCK_ROWS = 8_192


def measurements_npy(rows: int, cols: int = 128, *, seed: int = 0) -> Path:
    """The path of a ``.npy`` file of :func:`measurements` rows in :func:`data_dir`, written if missing.

    It is written a block at a time through a memory map, so it may be larger than memory.
    """
    from mpdemo.memmap import write_npy  # memmap imports the pool machinery; data files need it only here

    path = data_dir() / measurements_name(rows, cols, seed)
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        write_npy(partial, (rows, cols), fill=lambda start, stop: measurements(start, stop, cols, seed=seed))
        partial.replace(path)
    return path


# ── Lesson 08: the orders as Parquet ─────────────────────────────────────────────────────────

#: The types of the orders CSV's columns, given to pyarrow rather than guessed from the first block.
ORDER_TYPES = {"order_id": "int64", "customer": "string", "city": "string", "quantity": "int64",
               "unit_price": "float64", "note": "string"}
#: Row groups in the lesson's Parquet files, unless asked otherwise: several per worker.
ROW_GROUPS = 20


def csv_to_parquet(csv_path: str | os.PathLike, parquet_path: str | os.PathLike, *, row_group_rows: int,
                   column_types: dict[str, str] | None = None, block_mb: float = 4) -> Path:
    """Convert a CSV file to Parquet once, in bounded memory, in row groups of ``row_group_rows`` rows.

    pyarrow's streaming CSV reader parses ``block_mb`` of the file at a time (in C++, quoted line
    breaks included); the rows are written out as soon as a row group is full, so memory holds
    about one block and one row group, whatever the size of the file. ``column_types`` (by
    column: ``"int64"``, ``"float64"``, ``"string"``...) fixes the types instead of letting pyarrow
    guess them from the first block; the last row group holds what is left.
    """
    pa, pacsv, pq = _pyarrow()
    types = {name: pa.type_for_alias(kind) for name, kind in (column_types or {}).items()}
    reader = pacsv.open_csv(csv_path, read_options=pacsv.ReadOptions(block_size=int(block_mb * 2**20)),
                            parse_options=pacsv.ParseOptions(newlines_in_values=True),
                            convert_options=pacsv.ConvertOptions(column_types=types))
    pending = pa.Table.from_batches([], reader.schema)  # rows read, not yet written: less than a row group
    with pq.ParquetWriter(parquet_path, reader.schema) as writer:
        for batch in reader:
            pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
            full = pending.num_rows // row_group_rows * row_group_rows
            if full:
                writer.write_table(pending.slice(0, full), row_group_size=row_group_rows)
                pending = pending.slice(full)
        if pending.num_rows:
            writer.write_table(pending, row_group_size=row_group_rows)
    return Path(parquet_path)


def _pyarrow():
    """pyarrow's modules for CSV and Parquet (imported here: only lesson 08 needs them)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError as missing:
        raise ImportError("lesson 08's Parquet files need pyarrow: pip install -e '.[notebooks]' in a clone of the "
                          "course, or use its conda environment") from missing
    return pa, pacsv, pq


def parquet_name(n: int, seed: int, row_group_rows: int) -> str:
    return f"orders_{n}_s{seed}_rg{row_group_rows}.parquet"


def orders_parquet(n: int, *, seed: int = 0, row_group_rows: int | None = None) -> Path:
    """The path of the orders of :func:`orders_csv` as a Parquet file in :func:`data_dir`, written if
    missing (by converting that CSV with :func:`csv_to_parquet`).

    ``row_group_rows``: rows per row group; by default the file has :data:`ROW_GROUPS` of them.
    """
    row_group_rows = row_group_rows or max(1, -(-n // ROW_GROUPS))
    path = data_dir() / parquet_name(n, seed, row_group_rows)
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        csv_to_parquet(orders_csv(n, seed=seed), partial, row_group_rows=row_group_rows, column_types=ORDER_TYPES)
        partial.replace(path)
    return path


def orders_frame(n: int, *, seed: int = 0):
    """The orders of :func:`orders_parquet` as a pandas DataFrame, indexed by order labels such as
    ``"ORD-000001"``, with ``city`` as a categorical column: the frame lesson 08 sends to workers."""
    import pandas as pd

    frame = pd.read_parquet(orders_parquet(n, seed=seed))
    frame.index = "ORD-" + frame["order_id"].astype(str).str.zfill(6)
    frame.index.name = "order"
    frame["city"] = frame["city"].astype("category")
    return frame


#: The orders CSV rows and the .npy rows (1 KB each: 256 MB and 1 GB, notebook 05) of each size.
DATA_ROWS = {"small": (20_000, 2**18), "full": (1_000_000, 2**20)}
#: Lesson 08's orders rows of each size: the side-by-side (the others are DATA_ROWS' orders).
FRAME_ROWS = {"small": 20_000, "full": 200_000}


def data_files(kind: str | None = None) -> dict[Path, Callable[[], Path]]:
    """The data files the notebooks use for ``kind`` (default ``MPDEMO_SIZE``), each with the call
    that writes it."""
    rows, npy_rows = DATA_ROWS[kind or size()]
    frame_rows = FRAME_ROWS[kind or size()]
    folder = data_dir()
    files = {
        folder / orders_name(rows, 0, 0): lambda: orders_csv(rows),
        folder / orders_name(rows, 0, 997): lambda: orders_csv(rows, bad_every=997),
        folder / measurements_name(npy_rows, 128, 0): lambda: measurements_npy(npy_rows),
    }
    for n in dict.fromkeys([rows, frame_rows]):  # lesson 08: the orders as Parquet (and the CSV they come from)
        files[folder / orders_name(n, 0, 0)] = functools.partial(orders_csv, n)
        files[folder / parquet_name(n, 0, max(1, -(-n // ROW_GROUPS)))] = functools.partial(orders_parquet, n)
    return files


def missing_data(kind: str | None = None) -> list[Path]:
    """The data files of ``kind`` not written yet."""
    return [path for path in data_files(kind) if not path.exists()]


def generate(kind: str | None = None) -> list[Path]:
    """Write the data files the notebooks use for ``kind`` (default: ``MPDEMO_SIZE``)."""
    return [write() for write in data_files(kind).values()]
