"""Reading price files: CSV and Parquet tables, date columns, long to wide form, numbers.

The lower layer of :mod:`envs.data` (which validates the prices and splits them): every problem found while
reading raises :class:`DataError` with one line naming the file, the column, the row or date and the fix.
Date columns are read as ISO when every value is ISO, otherwise with the one layout that fits every value;
two layouts that fit and disagree, or values in two layouts, are refused (see :mod:`envs.data`). Headers
(names, spellings, two-level headers) are checked and read by :mod:`envs.price_headers`.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_timedelta64_dtype

from envs.errors import DataError, fail, fmt_dates
from envs.price_dates import check_order, is_missing, parse_dates
from envs.price_headers import (
    DATE_NAMES,
    check_header,
    check_ticker_spellings,
    csv_two_level,
    price_column,
    read_two_level,
)

FORM_BUNDLED = "bundled"
FORM_WIDE = "wide"
FORM_LONG = "long"

_TICKER_NAMES = ("ticker", "symbol", "asset")


_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# Field separators a CSV may use; the one occurring most in the header line wins (ties: the first).
_CSV_SEPARATORS = (",", ";", "\t", "|")
# The CSV parser's complaint about a line longer than the header (the header fixes the column count).
_FIELD_COUNT_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


class _Table(NamedTuple):
    """A file's table, one header line (names stripped), and how its rows are numbered."""

    frame: pd.DataFrame
    first_row: int  # the row number messages give the first data row: 2 in a CSV with one header line


def load_bundled() -> pd.DataFrame:
    # skfolio ships this file inside its wheel; load_sp500_dataset reads it from disk (no network).
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset()


def _csv_separator(path: Path, where: str) -> str:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            header = fh.readline()
    except UnicodeDecodeError as exc:
        raise fail(where, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    counts = [header.count(sep) for sep in _CSV_SEPARATORS]
    return _CSV_SEPARATORS[int(np.argmax(counts))] if max(counts) > 0 else ","


def _read_csv(path: Path, where: str, notes: list[str]) -> tuple[pd.DataFrame, int]:
    sep = _csv_separator(path, where)
    # Read every cell as text, header included: pandas would otherwise rename duplicate columns (A, A.1),
    # turn a ticker called "NA" into a missing value and dates like 20200131 into integers.
    grid = pd.read_csv(path, sep=sep, header=None, dtype=str, na_filter=False, encoding="utf-8-sig", index_col=False)
    two_level = csv_two_level(grid)
    if two_level is not None:
        frame, first_row = two_level
        return read_two_level(frame, where, notes), first_row
    frame = grid.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c) for c in grid.iloc[0]]
    return frame, 2


def _read_parquet(path: Path, where: str, notes: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    # Checked on the schema first: reading a file with a duplicated column fails with an obscure message.
    check_header([str(name) for name in pq.read_schema(path).names], where, spellings=False)
    frame = pd.read_parquet(path)
    if isinstance(frame.columns, pd.MultiIndex):
        frame = read_two_level(frame, where, notes)
    index = frame.index
    if isinstance(index, pd.DatetimeIndex) and str(index.name).lower() not in DATE_NAMES:
        index = index.rename("date")  # a timestamp index holds the dates whatever it is called
    named = [str(n) for n in index.names if n is not None]
    if named:
        clash = [n for n in named if n in {str(c).strip() for c in frame.columns}]
        if clash:
            raise fail(where, f"'{clash[0]}' is both the index and a column; keep one of them")
        frame = frame.set_axis(index, axis=0).reset_index()
    frame.columns = [str(c) for c in frame.columns]
    return frame


def read_table(path: Path, notes: list[str]) -> _Table:
    """The table of a CSV or Parquet file, its header checked (``notes`` receives what was inferred)."""
    where = str(path)
    if not path.exists():
        raise fail(where, "file not found; pass 'sp500' for the bundled data or the path of a CSV/Parquet file")
    if path.is_dir():
        raise fail(where, "is a directory, not a CSV/Parquet file")
    if path.stat().st_size == 0:
        raise fail(where, "file is empty; expected a CSV/Parquet table of daily prices")
    suffix = path.suffix.lower()
    if suffix not in _CSV_SUFFIXES + _PARQUET_SUFFIXES:
        raise fail(where, f"unsupported file type '{suffix}'; use .csv or .parquet")
    is_csv = suffix in _CSV_SUFFIXES
    try:
        frame, first_row = _read_csv(path, where, notes) if is_csv else (_read_parquet(path, where, notes), 1)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fields = _FIELD_COUNT_ERROR.search(reason)
        if fields:
            expected, line, seen = fields.groups()
            raise fail(
                where,
                f"line {line} has {seen} fields but line 1 (the header) has {expected}; give every line one value "
                "per header column (no title lines above the header, no trailing separators)",
            ) from None
        raise fail(where, f"not a readable {suffix.lstrip('.').upper()} table ({reason})") from None
    return table_of(frame, where, first_row)


def table_of(frame: pd.DataFrame, where: str, first_row: int) -> _Table:
    """A table read from anywhere (a file, or rows already in memory), its header checked and names stripped.

    Args:
        frame: the cells, one column per header name (names are text).
        where: the source, for messages.
        first_row: the number messages give the first data row (2 in a CSV with one header line).
    """
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise fail(where, "table has no rows or no columns; expected a date column and price columns")
    check_header([str(c) for c in frame.columns], where)
    frame = frame.set_axis([str(c).strip() for c in frame.columns], axis=1)
    return _Table(frame, first_row)


def _find_column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    # The first of ``names`` present wins, so a ticker called DAY or TIME beside 'date' stays a ticker.
    lowered = {str(c).lower(): str(c) for c in frame.columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def to_wide(
    table: _Table, where: str, date_format: str | None, sort_dates: bool, notes: list[str]
) -> tuple[pd.DataFrame, str]:
    """Detect wide or long form and return a wide table indexed by sorted dates (values not yet numeric)."""
    frame, first_row = table
    date_col = _find_column(frame, DATE_NAMES)
    if date_col is None:
        cols = ", ".join(repr(str(c)) for c in list(frame.columns)[:8])
        raise fail(
            where,
            f"no date column (looked for {', '.join(DATE_NAMES)}); columns are {cols}; name the date column 'date'",
        )
    ticker_col = _find_column(frame, _TICKER_NAMES)
    price_col, other_prices = price_column([str(c) for c in frame.columns])
    if ticker_col is not None and price_col is not None:
        if other_prices:
            notes.append(
                f"prices read from column '{price_col}', not {', '.join(repr(c) for c in other_prices)} (an adjusted "
                "close before a close)"
            )
        dates = parse_dates(frame[date_col], where, date_col, first_row, date_format, notes)
        empty = is_missing(frame[ticker_col], frozenset({""}))  # "NA" is a ticker (and "None" could be one)
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise fail(
                where,
                f"column '{ticker_col}' has no ticker in row {first_row + i} ({fmt_dates([dates[i]])}); give "
                "every row a ticker",
            )
        written = frame[ticker_col].astype(object).map(str)
        check_ticker_spellings(written, where, ticker_col, first_row)
        tickers = written.str.strip()
        long = pd.DataFrame({"date": dates, "ticker": tickers.to_numpy(), "price": frame[price_col].to_numpy()})
        dup = long.duplicated(["date", "ticker"], keep=False)
        if dup.any():
            first = long[dup].iloc[0]
            dup_dates = long.loc[dup & (long["ticker"] == first["ticker"]), "date"].unique()
            raise fail(
                where,
                f"duplicate dates for ticker '{first['ticker']}': {fmt_dates(dup_dates)}; "
                "keep one row per date and ticker",
            )
        check_order(dates, where, first_row, date_format, sort_dates, notes, tickers=tickers)
        wide = long.pivot(index="date", columns="ticker", values="price")
        wide.columns.name = None
        wide.index.name = None
        return wide, FORM_LONG
    if ticker_col is not None and price_col is None:
        raise fail(
            where,
            f"long form detected (column '{ticker_col}') but no price column; name it 'close' or 'price'",
        )
    dates = parse_dates(frame[date_col], where, date_col, first_row, date_format, notes)
    if dates.duplicated().any():
        raise fail(
            where,
            f"duplicate dates: {fmt_dates(dates[dates.duplicated()].unique())}; keep one row per date",
        )
    check_order(dates, where, first_row, date_format, sort_dates, notes)
    wide = frame.drop(columns=[date_col])
    wide.index = dates
    return (wide if dates.is_monotonic_increasing else wide.sort_index()), FORM_WIDE


def to_numeric(wide: pd.DataFrame, where: str) -> pd.DataFrame:
    """The table's cells as float64 prices; a column of another kind, or a cell that is not a number, is
    refused naming the ticker, the value and the date."""
    if all(isinstance(d, np.dtype) and d.kind in "iuf" for d in wide.dtypes):
        # Every column already holds numbers (rows sent as JSON, a numeric file): one conversion of the
        # whole table gives what the column-by-column path below gives, at a fraction of its cost.
        return pd.DataFrame(wide.to_numpy(dtype="float64"), index=wide.index, columns=list(wide.columns))
    out = {}
    for ticker in wide.columns:
        col = wide[ticker]
        if is_bool_dtype(col.dtype) or is_datetime64_any_dtype(col.dtype) or is_timedelta64_dtype(col.dtype):
            raise fail(where, f"ticker '{ticker}' holds {col.dtype} values, not prices; remove the column")
        if is_numeric_dtype(col.dtype):
            out[ticker] = col.astype("float64")
            continue
        missing = is_missing(col)
        num = pd.to_numeric(col.astype(object).where(~missing), errors="coerce")
        bad = num.isna() & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            value = col.iloc[i]
            if "," in str(value):
                hint = " without thousands separators and with '.' as the decimal point"
            elif int(bad.sum()) * 2 > int((~missing).sum()):  # mostly text: likely not a price column at all
                hint = f" (remove column '{ticker}' if it does not hold prices)"
            else:
                hint = ""
            raise fail(
                where,
                f"ticker '{ticker}' has a non-numeric price {value!r} on "
                f"{fmt_dates([wide.index[i]])}; prices must be numbers{hint}",
            )
        out[ticker] = num.astype("float64")
    return pd.DataFrame(out, index=wide.index)
