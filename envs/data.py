"""Daily price data: load, validate and split into train / validation / test by date.

Sources:

- ``"sp500"`` (default): skfolio's bundled daily prices of 20 US large caps, 1990-2022, read from the
  installed skfolio package (no network).
- A CSV or Parquet file in *wide* form (a date column plus one price column per ticker) or *long* form
  (``date``, ``ticker`` and ``close`` or ``price`` columns). The form is detected and reported. A CSV may be
  separated by commas, semicolons, tabs or pipes (detected from the header line) and may start with a
  UTF-8 byte-order mark; a Parquet file may keep its dates in the index instead of a column.

Every validation failure raises :class:`DataError` with one line naming the file, the column or ticker, the
row or date(s) and saying how to fix it. Nothing is guessed silently:

- **Dates** are read as ISO (``2020-01-31``, with or without a time) when every value is ISO; otherwise
  with the one format among the usual numeric and month-name layouts that fits every value, with a warning
  saying which. If two formats fit every value and disagree (``01/02/2020`` as 2 January or 1 February) the
  file is refused until ``date_format`` (a ``strptime`` format) is given; values in two different formats
  are refused too. A time of day and a time-zone offset are ignored: the date is the one written.
- **Order**: dates must be increasing as written (in long form, within each ticker), so that a date read
  the wrong way cannot reorder the series unnoticed; ``sort_dates=True`` sorts instead, with a warning.
- **Prices** must be numbers between :data:`MIN_PRICE` and :data:`MAX_PRICE`, and no one-day move may
  exceed :data:`MAX_DAILY_RATIO` or fall below :data:`MIN_DAILY_RATIO` (a unit change or a missing split
  adjustment, never a real move); every daily log return must be finite.

Tickers that start trading later than the others (leading missing prices) are handled by **trimming the
history** to the first date on which every ticker has a price, with a warning naming the ticker that forced
the trim: the asset universe is what the user asked for, never silently changed. A gap after a ticker
started trading is an error.

``python -m envs.data [SOURCE] [--date-format FORMAT] [--sort-dates] [--exp NAME]`` prints a summary and
exits 0, or prints ``error: ...`` and exits 2. With ``--exp`` (an experiment in ``tune_configs/`` or a YAML
path) the splits are the experiment's ``data.split_dates`` and its walk-forward fold windows (``data.folds``,
see ``envs.folds``) are printed too; SOURCE then defaults to the experiment's ``data.source``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_timedelta64_dtype
from pandas.tseries.api import guess_datetime_format

SP500 = "sp500"
FORM_BUNDLED = "bundled"
FORM_WIDE = "wide"
FORM_LONG = "long"
SPLITS = ("train", "validation", "test")

# Default date ranges for the bundled data (inclusive), from the design.
SP500_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("2005-01-01", "2016-12-31"),
    "validation": ("2017-01-01", "2018-12-31"),
    "test": ("2019-01-01", "2022-12-28"),
}
# Fractions of the dates for user files without explicit ranges.
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_SPLIT_ROWS = 30

# Plausible prices. Below MIN_PRICE float64 ratios lose digits and a series near 1e-300 makes features
# non-finite; MAX_PRICE is far above any real quote (hyperinflation indices included) and far below where
# rolling sums of prices overflow. A stock quoted below 1e-6 should be quoted per 1000 or per million units.
MIN_PRICE = 1e-6
MAX_PRICE = 1e15
# Plausible one-day price ratios p_t / p_{t-1} between consecutive dates: +1000 % and -99 %. Real stocks
# stay inside (the bundled S&P 500 sample moves between x0.33 and x1.53); a x1e6 or x1e-3 step is a change of
# units or an unadjusted split, which would otherwise become one enormous reward.
MAX_DAILY_RATIO = 11.0
MIN_DAILY_RATIO = 0.01

_DATE_NAMES = ("date", "datetime", "timestamp", "time", "day")
_TICKER_NAMES = ("ticker", "symbol", "asset")
_PRICE_NAMES = ("close", "price", "adj_close", "adjclose", "adj close")

# How the fix for dates is spelled in messages: the load_prices keyword (also the experiment key) and the
# CLI flag.
_DATE_FORMAT_FIX = "give the format with date_format (--date-format), e.g. '%d/%m/%Y'"
_SORT_FIX = "sort the file by date, or pass sort_dates=True (--sort-dates) to sort it on loading"

_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# Field separators a CSV may use; the one occurring most in the header line wins (ties: the first).
_CSV_SEPARATORS = (",", ";", "\t", "|")
# Cells read as a missing price (compared lower-cased); anything else that is not a number is an error.
_MISSING_TOKENS = frozenset({"", "na", "n/a", "#n/a", "#na", "nan", "-nan", "null", "none", "<na>"})
# The CSV parser's complaint about a line longer than the header (the header fixes the column count).
_FIELD_COUNT_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
# A time of day (and an optional zone after it) at the end of a date value: dropped, the date is kept as
# written. The zone is only recognised after a time so that the "-02" of "2020-01-02" is never taken for one.
_TIME_SUFFIX = re.compile(
    r"[T\s]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[AaPp][Mm])?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?\s*$"
)
# Date layouts tried when the values are not ISO. Every one that fits all values is a candidate: one
# candidate is used, several that disagree make the column ambiguous.
_NUMERIC_DATE_ORDERS = ("dmY", "mdY", "Ymd", "dmy", "mdy", "ymd")
_DATE_FORMATS: tuple[str, ...] = (
    *(sep.join(f"%{field}" for field in order) for sep in ("/", "-", ".", " ") for order in _NUMERIC_DATE_ORDERS),
    *("%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%b %d, %Y", "%d %B %Y", "%B %d %Y", "%B %d, %Y", "%d-%b-%y"),
)
# Integer dates (a Parquet int column) are read as YYYYMMDD only inside this range; anything else is
# refused rather than read as nanoseconds since 1970.
_YYYYMMDD_RANGE = (1000_01_01, 9999_12_31)


class DataError(ValueError):
    """Bad price data; the message says what is wrong, where, and how to fix it."""


@dataclass(frozen=True)
class PriceData:
    """Validated daily prices.

    Attributes:
        source: ``"sp500"`` or the file path as given.
        form: ``"bundled"``, ``"wide"`` or ``"long"``.
        prices: float64 prices, sorted ``DatetimeIndex`` (unique), one column per ticker, no missing values.
        warnings: human-readable notes about what was fixed up or inferred (date format, sorting, trimming).
    """

    source: str
    form: str
    prices: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def tickers(self) -> list[str]:
        return [str(c) for c in self.prices.columns]


@dataclass(frozen=True)
class SplitRange:
    """Inclusive row range ``[start, end]`` of one split in the price table."""

    name: str
    start: int
    end: int
    start_date: pd.Timestamp
    end_date: pd.Timestamp

    @property
    def n_rows(self) -> int:
        return self.end - self.start + 1


class _Table(NamedTuple):
    """A file's table with its column names as written (stripped) and how its rows are numbered."""

    frame: pd.DataFrame
    first_row: int  # the row number messages give the first data row: 2 in a CSV (line 1 is the header)


def _fail(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what}")


def _fmt_dates(dates: pd.Index | list, limit: int = 3) -> str:
    items = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in list(dates)[:limit]]
    more = len(dates) - limit
    return ", ".join(items) + (f" (and {more} more)" if more > 0 else "")


def _load_bundled() -> pd.DataFrame:
    # skfolio ships this file inside its wheel; load_sp500_dataset reads it from disk (no network).
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset()


def _csv_separator(path: Path, where: str) -> str:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            header = fh.readline()
    except UnicodeDecodeError as exc:
        raise _fail(where, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    counts = [header.count(sep) for sep in _CSV_SEPARATORS]
    return _CSV_SEPARATORS[int(np.argmax(counts))] if max(counts) > 0 else ","


def _read_csv(path: Path, where: str) -> pd.DataFrame:
    sep = _csv_separator(path, where)
    # Read every cell as text, header included: pandas would otherwise rename duplicate columns (A, A.1),
    # turn a ticker called "NA" into a missing value and dates like 20200131 into integers.
    grid = pd.read_csv(path, sep=sep, header=None, dtype=str, na_filter=False, encoding="utf-8-sig", index_col=False)
    frame = grid.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c).strip() for c in grid.iloc[0]]
    return frame


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    # Checked on the schema first: reading a file with a duplicated column fails with an obscure message.
    _check_header([str(name).strip() for name in pq.read_schema(path).names], where)
    frame = pd.read_parquet(path)
    index = frame.index
    if isinstance(index, pd.DatetimeIndex) and str(index.name).lower() not in _DATE_NAMES:
        index = index.rename("date")  # a timestamp index holds the dates whatever it is called
    named = [str(n) for n in index.names if n is not None]
    if named:
        clash = [n for n in named if n in {str(c) for c in frame.columns}]
        if clash:
            raise _fail(where, f"'{clash[0]}' is both the index and a column; keep one of them")
        frame = frame.set_axis(index, axis=0).reset_index()
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _check_header(columns: list[str], where: str) -> None:
    for k, name in enumerate(columns):
        if not name:
            raise _fail(
                where,
                f"column {k + 1} has no name in the header; name the date column 'date' and each price column "
                "after its ticker",
            )
    seen: dict[str, int] = {}
    for k, name in enumerate(columns):
        if name in seen:
            raise _fail(
                where,
                f"column '{name}' appears twice in the header (columns {seen[name] + 1} and {k + 1}); keep one "
                "column per ticker",
            )
        seen[name] = k


def _read_table(path: Path) -> _Table:
    where = str(path)
    if not path.exists():
        raise _fail(where, "file not found; pass 'sp500' for the bundled data or the path of a CSV/Parquet file")
    if path.is_dir():
        raise _fail(where, "is a directory, not a CSV/Parquet file")
    if path.stat().st_size == 0:
        raise _fail(where, "file is empty; expected a CSV/Parquet table of daily prices")
    suffix = path.suffix.lower()
    if suffix not in _CSV_SUFFIXES + _PARQUET_SUFFIXES:
        raise _fail(where, f"unsupported file type '{suffix}'; use .csv or .parquet")
    is_csv = suffix in _CSV_SUFFIXES
    try:
        frame = _read_csv(path, where) if is_csv else _read_parquet(path, where)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fields = _FIELD_COUNT_ERROR.search(reason)
        if fields:
            expected, line, seen = fields.groups()
            raise _fail(
                where,
                f"line {line} has {seen} fields but line 1 (the header) has {expected}; give every line one value "
                "per header column (no title lines above the header, no trailing separators)",
            ) from None
        raise _fail(where, f"not a readable {suffix.lstrip('.').upper()} table ({reason})") from None
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise _fail(where, "table has no rows or no columns; expected a date column and price columns")
    _check_header(list(frame.columns), where)
    return _Table(frame, first_row=2 if is_csv else 1)


def _find_column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    # The first of ``names`` present wins, so a ticker called DAY or TIME beside 'date' stays a ticker.
    lowered = {str(c).lower(): str(c) for c in frame.columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _is_missing(values: pd.Series, tokens: frozenset[str] = _MISSING_TOKENS) -> pd.Series:
    """True where a cell is NaN/None or text in ``tokens`` (by default '', 'NA', 'NaN', '#N/A', 'null', ...)."""
    token = values.astype(object).map(lambda v: isinstance(v, str) and v.strip().lower() in tokens)
    return values.isna() | token.astype(bool)


def _wall_clock(value: object) -> pd.Timestamp:
    """The date and time as written: a zone-aware value keeps its local time and drops its zone."""
    ts = pd.Timestamp(value)
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def _parse_with_format(text: pd.Series, fmt: str) -> pd.Series:
    try:
        return pd.to_datetime(text, format=fmt, errors="coerce")
    except ValueError:  # values with different zone offsets (%z): pandas refuses to mix them in one column
        out = []
        for value in text:
            try:
                out.append(_wall_clock(dt.datetime.strptime(value, fmt)))
            except ValueError:
                out.append(pd.NaT)
        return pd.Series(out, index=text.index, dtype="datetime64[us]")


def _swap_day_month(fmt: str) -> str | None:
    """``fmt`` with day and month swapped when both come before the year (no one writes year-day-month)."""
    day, month, year = fmt.find("%d"), fmt.find("%m"), max(fmt.find("%Y"), fmt.find("%y"))
    if min(day, month) < 0 or year < max(day, month):
        return None
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _infer_dates(text: pd.Series, where: str, column: str, first_row: int, notes: list[str]) -> pd.Series:
    """Read date strings (see the module docstring); refuses ambiguous and mixed formats."""
    dates = text.str.replace(_TIME_SUFFIX, "", regex=True)
    iso = pd.to_datetime(dates, format="ISO8601", errors="coerce")
    if iso.notna().all():
        return iso
    candidates = list(_DATE_FORMATS)
    with warnings.catch_warnings():  # it warns about dayfirst for day-first guesses: the checks below decide
        warnings.simplefilter("ignore")
        guessed = guess_datetime_format(dates.iloc[0])
    for fmt in (guessed, _swap_day_month(guessed) if guessed else None):  # formats beyond the usual layouts
        if fmt and fmt not in candidates:
            candidates.append(fmt)
    parses = {fmt: _parse_with_format(dates, fmt) for fmt in candidates}
    fits: list[tuple[str, pd.Series]] = []
    for fmt, parsed in parses.items():
        if parsed.notna().all() and not any(parsed.equals(other) for _, other in fits):
            fits.append((fmt, parsed))
    if len(fits) == 1:
        fmt, parsed = fits[0]
        notes.append(
            f"column '{column}' read with date format '{fmt}', the only one that fits every value; pass "
            "date_format (--date-format) to read it otherwise"
        )
        return parsed
    if len(fits) > 1:
        (fmt_a, a), (fmt_b, b) = fits[:2]
        i = int(np.flatnonzero((a != b).to_numpy())[0])
        raise _fail(
            where,
            f"column '{column}' has ambiguous dates: row {first_row + i} {text.iloc[i]!r} reads as "
            f"{_fmt_dates([a.iloc[i]])} ('{fmt_a}') or {_fmt_dates([b.iloc[i]])} ('{fmt_b}'); {_DATE_FORMAT_FIX}",
        )
    readable = iso.notna()
    for parsed in parses.values():
        readable |= parsed.notna()
    if not readable.all():
        i = int(np.flatnonzero(~readable.to_numpy())[0])
        raise _fail(
            where,
            f"column '{column}' has a value that is not a date in row {first_row + i}: {text.iloc[i]!r}; "
            f"use ISO dates like 2020-01-31 or {_DATE_FORMAT_FIX}",
        )
    best = max([iso, *parses.values()], key=lambda p: int(p.notna().sum()))
    i, j = int(np.flatnonzero(best.notna().to_numpy())[0]), int(np.flatnonzero(best.isna().to_numpy())[0])
    raise _fail(
        where,
        f"column '{column}' mixes date formats: row {first_row + i} {text.iloc[i]!r} and row {first_row + j} "
        f"{text.iloc[j]!r} fit no single format; write every date the same way (ISO like 2020-01-31)",
    )


def _parse_dates(
    values: pd.Series, where: str, column: str, first_row: int, date_format: str | None, notes: list[str]
) -> pd.DatetimeIndex:
    """Dates of the date column, normalised to midnight, zone dropped (see the module docstring)."""
    missing = _is_missing(values)
    if missing.any():
        i = int(np.flatnonzero(missing.to_numpy())[0])
        raise _fail(where, f"column '{column}' has no date in row {first_row + i}; give every row a date")
    if is_datetime64_any_dtype(values.dtype):  # a Parquet timestamp column: no text to interpret
        index = pd.DatetimeIndex(values)
        return (index.tz_localize(None) if index.tz is not None else index).normalize()
    if is_bool_dtype(values.dtype) or is_timedelta64_dtype(values.dtype):
        raise _fail(where, f"column '{column}' holds {values.dtype} values, not dates; store dates or ISO text")
    if is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype="float64")
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        inside = whole & (numbers >= _YYYYMMDD_RANGE[0]) & (numbers <= _YYYYMMDD_RANGE[1])
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise _fail(
                where,
                f"column '{column}' holds numbers, not dates (row {first_row + i}: {values.iloc[i]}); store "
                "dates as dates or ISO text like 2020-01-31",
            )
        values = pd.Series([str(int(n)) for n in numbers], index=values.index)
    objects = values.astype(object)
    if objects.map(lambda v: isinstance(v, dt.date)).all():  # date/datetime objects, maybe zone-aware
        return pd.DatetimeIndex([_wall_clock(v) for v in objects]).normalize()
    text = objects.map(lambda v: str(v).strip())
    if date_format is None:
        parsed = _infer_dates(text, where, column, first_row, notes)
    else:
        parsed = _parse_with_format(text, date_format)
        if parsed.isna().any():
            i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise _fail(
                where,
                f"column '{column}' has a value that does not match date_format '{date_format}' in row "
                f"{first_row + i}: {text.iloc[i]!r}; fix the value or the format",
            )
    index = pd.DatetimeIndex(parsed)
    return (index.tz_localize(None) if index.tz is not None else index).normalize()


def _first_backwards(dates: pd.DatetimeIndex, groups: pd.Series | None = None) -> tuple[int, int] | None:
    """Positions ``(previous, current)`` of the first date earlier than the one before it (per group)."""
    frame = pd.DataFrame({"date": dates, "pos": np.arange(len(dates))})
    grouped = frame.groupby(groups.to_numpy(), sort=False) if groups is not None else None
    prev_date = grouped["date"].shift() if grouped is not None else frame["date"].shift()
    prev_pos = grouped["pos"].shift() if grouped is not None else frame["pos"].shift()
    back = np.flatnonzero((frame["date"] < prev_date).to_numpy())
    if back.size == 0:
        return None
    i = int(back[0])
    return int(prev_pos.iloc[i]), i


def _check_order(
    dates: pd.DatetimeIndex,
    where: str,
    first_row: int,
    date_format: str | None,
    sort_dates: bool,
    notes: list[str],
    tickers: pd.Series | None = None,
) -> None:
    """Refuse dates that go backwards as written, unless sorting was asked for (then note it)."""
    found = _first_backwards(dates, tickers)
    if found is None:
        return
    if sort_dates:
        notes.append("dates were not in ascending order: sorted")
        return
    prev, i = found
    whose = "dates" if tickers is None else f"dates of ticker '{tickers.iloc[i]}'"
    check = f"; or check date_format '{date_format}'" if date_format else ""
    raise _fail(
        where,
        f"{whose} are not in increasing order: row {first_row + i} ({_fmt_dates([dates[i]])}) comes after row "
        f"{first_row + prev} ({_fmt_dates([dates[prev]])}); {_SORT_FIX}{check}",
    )


def _to_wide(
    table: _Table, where: str, date_format: str | None, sort_dates: bool, notes: list[str]
) -> tuple[pd.DataFrame, str]:
    """Detect wide or long form and return a wide table indexed by sorted dates (values not yet numeric)."""
    frame, first_row = table
    date_col = _find_column(frame, _DATE_NAMES)
    if date_col is None:
        cols = ", ".join(repr(str(c)) for c in list(frame.columns)[:8])
        raise _fail(
            where,
            f"no date column (looked for {', '.join(_DATE_NAMES)}); columns are {cols}; name the date column 'date'",
        )
    ticker_col = _find_column(frame, _TICKER_NAMES)
    price_col = _find_column(frame, _PRICE_NAMES)
    if ticker_col is not None and price_col is not None:
        dates = _parse_dates(frame[date_col], where, date_col, first_row, date_format, notes)
        empty = _is_missing(frame[ticker_col], frozenset({""}))  # "NA" is a ticker (and "None" could be one)
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise _fail(
                where,
                f"column '{ticker_col}' has no ticker in row {first_row + i} ({_fmt_dates([dates[i]])}); give "
                "every row a ticker",
            )
        tickers = frame[ticker_col].astype(object).map(lambda v: str(v).strip())
        long = pd.DataFrame({"date": dates, "ticker": tickers.to_numpy(), "price": frame[price_col].to_numpy()})
        dup = long.duplicated(["date", "ticker"], keep=False)
        if dup.any():
            first = long[dup].iloc[0]
            dup_dates = long.loc[dup & (long["ticker"] == first["ticker"]), "date"].unique()
            raise _fail(
                where,
                f"duplicate dates for ticker '{first['ticker']}': {_fmt_dates(dup_dates)}; "
                "keep one row per date and ticker",
            )
        _check_order(dates, where, first_row, date_format, sort_dates, notes, tickers=tickers)
        wide = long.pivot(index="date", columns="ticker", values="price")
        wide.columns.name = None
        wide.index.name = None
        return wide, FORM_LONG
    if ticker_col is not None and price_col is None:
        raise _fail(
            where,
            f"long form detected (column '{ticker_col}') but no price column; name it 'close' or 'price'",
        )
    dates = _parse_dates(frame[date_col], where, date_col, first_row, date_format, notes)
    if dates.duplicated().any():
        raise _fail(
            where,
            f"duplicate dates: {_fmt_dates(dates[dates.duplicated()].unique())}; keep one row per date",
        )
    _check_order(dates, where, first_row, date_format, sort_dates, notes)
    wide = frame.drop(columns=[date_col])
    wide.index = dates
    return wide.sort_index(), FORM_WIDE


def _to_numeric(wide: pd.DataFrame, where: str) -> pd.DataFrame:
    out = {}
    for ticker in wide.columns:
        col = wide[ticker]
        if is_bool_dtype(col.dtype) or is_datetime64_any_dtype(col.dtype) or is_timedelta64_dtype(col.dtype):
            raise _fail(where, f"ticker '{ticker}' holds {col.dtype} values, not prices; remove the column")
        if is_numeric_dtype(col.dtype):
            out[ticker] = col.astype("float64")
            continue
        missing = _is_missing(col)
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
            raise _fail(
                where,
                f"ticker '{ticker}' has a non-numeric price {value!r} on "
                f"{_fmt_dates([wide.index[i]])}; prices must be numbers{hint}",
            )
        out[ticker] = num.astype("float64")
    return pd.DataFrame(out, index=wide.index)


def _first_true(mask: np.ndarray) -> tuple[int, int]:
    i, j = (int(x[0]) for x in np.nonzero(mask))
    return i, j


def _check_values(prices: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """Check finiteness, range and one-day moves; trim leading NaNs of late starters (module docstring)."""
    values = prices.to_numpy()
    for j, ticker in enumerate(prices.columns):
        col = values[:, j]
        if np.isinf(col).any():
            i = int(np.flatnonzero(np.isinf(col))[0])
            raise _fail(where, f"ticker '{ticker}' has an infinite price on {_fmt_dates([prices.index[i]])}")
    first_valid = {}
    for j, ticker in enumerate(prices.columns):
        finite = np.flatnonzero(np.isfinite(values[:, j]))
        if finite.size == 0:
            raise _fail(where, f"ticker '{ticker}' has no prices at all; remove the column")
        first_valid[ticker] = int(finite[0])
        gaps = np.flatnonzero(~np.isfinite(values[finite[0] :, j]))
        if gaps.size:
            gap_dates = prices.index[finite[0] + gaps]
            raise _fail(
                where,
                f"ticker '{ticker}' has missing (NaN) prices on {_fmt_dates(gap_dates)} after it started "
                f"trading on {_fmt_dates([prices.index[finite[0]]])}; fill or remove the gaps",
            )
    start = max(first_valid.values(), default=0)
    if start > 0:
        late = max(first_valid, key=first_valid.__getitem__)
        notes.append(
            f"ticker '{late}' starts on {_fmt_dates([prices.index[start]])}: history trimmed to start there "
            f"({start} earlier dates dropped) so every ticker has a price on every date"
        )
        prices = prices.iloc[start:]
    values = prices.to_numpy()
    if (values <= 0).any():
        i, j = _first_true(values <= 0)
        raise _fail(
            where,
            f"ticker '{prices.columns[j]}' has a non-positive price ({prices.iat[i, j]}) on "
            f"{_fmt_dates([prices.index[i]])}; prices must be > 0 (use adjusted close prices)",
        )
    bounds = (
        (values < MIN_PRICE, MIN_PRICE, "below the minimum"),
        (values > MAX_PRICE, MAX_PRICE, "above the maximum"),
    )
    for mask, bound, side in bounds:
        if mask.any():
            i, j = _first_true(mask)
            raise _fail(
                where,
                f"ticker '{prices.columns[j]}' has a price of {values[i, j]:g} on {_fmt_dates([prices.index[i]])}, "
                f"{side} {bound:g}; check the units: quote the asset in a unit (e.g. per 1000 shares or tokens) "
                f"that keeps prices between {MIN_PRICE:g} and {MAX_PRICE:g}",
            )
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratios = values[1:] / values[:-1]
        log_returns = np.diff(np.log(values), axis=0)
    jumps = (ratios > MAX_DAILY_RATIO) | (ratios < MIN_DAILY_RATIO)
    if jumps.any():
        i, j = _first_true(jumps)
        raise _fail(
            where,
            f"ticker '{prices.columns[j]}' moves from {values[i, j]:g} on {_fmt_dates([prices.index[i]])} to "
            f"{values[i + 1, j]:g} on {_fmt_dates([prices.index[i + 1]])} (x{ratios[i, j]:.3g}), outside the "
            f"plausible one-day range x{MIN_DAILY_RATIO:g}..x{MAX_DAILY_RATIO:g}; check for a change of units or "
            "a missing split adjustment (use adjusted close prices)",
        )
    # The returns the environment and the features are built from; finite by the bounds above, checked
    # anyway so that loosening a bound can never let a non-finite reward or observation through.
    derived = np.isfinite(ratios) & np.isfinite(log_returns)
    if not derived.all():
        i, j = _first_true(~derived)
        raise _fail(
            where,
            f"ticker '{prices.columns[j]}' has a non-finite daily return on {_fmt_dates([prices.index[i + 1]])} "
            f"(price {values[i, j]:g} then {values[i + 1, j]:g}); check the prices",
        )
    return prices


def load_prices(source: str | Path = SP500, *, date_format: str | None = None, sort_dates: bool = False) -> PriceData:
    """Load and validate daily prices.

    Args:
        source: ``"sp500"`` for the bundled data, or the path of a CSV/Parquet file.
        date_format: ``strptime`` format of the date column's text (``"%d/%m/%Y"``); ``None`` reads ISO
            dates or the one format that fits every value, and refuses ambiguous ones. Not used for the
            bundled data or for a Parquet column that already holds timestamps.
        sort_dates: sort rows by date instead of refusing a file whose dates go backwards as written.

    Returns:
        The validated prices.

    Raises:
        DataError: anything wrong with the input; the message names the file, column or ticker and dates.
    """
    notes: list[str] = []
    if str(source) == SP500:
        where = "sp500 (bundled)"
        prices = _load_bundled().astype("float64")
        prices.index = pd.DatetimeIndex(prices.index).normalize()
        prices.columns = [str(c) for c in prices.columns]
        form = FORM_BUNDLED
        _check_order(prices.index, where, 1, None, sort_dates, notes)
        prices = prices.sort_index()
    else:
        path = Path(source).expanduser()
        where = str(source)
        wide, form = _to_wide(_read_table(path), where, date_format, sort_dates, notes)
        prices = _to_numeric(wide, where)
    if prices.index.duplicated().any():
        dups = prices.index[prices.index.duplicated()].unique()
        raise _fail(where, f"duplicate dates: {_fmt_dates(dups)}; keep one row per date")
    prices = _check_values(prices, where, notes)
    if prices.shape[1] < 2:
        names = ", ".join(repr(c) for c in prices.columns) or "none"
        raise _fail(where, f"found {prices.shape[1]} asset(s) ({names}); at least 2 are needed")
    for note in notes:
        warnings.warn(f"{where}: {note}", stacklevel=2)
    return PriceData(source=str(source), form=form, prices=prices, warnings=notes)


def default_split_dates(data: PriceData) -> dict[str, tuple[str, str]]:
    """Date ranges used when the user gives none: fixed ranges for sp500, 70/15/15 by date otherwise."""
    if data.form == FORM_BUNDLED:
        return dict(SP500_SPLITS)
    dates = data.prices.index
    n = len(dates)
    b1 = round(n * DEFAULT_FRACTIONS[0])
    b2 = round(n * (DEFAULT_FRACTIONS[0] + DEFAULT_FRACTIONS[1]))
    b1, b2 = max(1, min(b1, n - 2)), max(2, min(b2, n - 1))
    iso = [d.strftime("%Y-%m-%d") for d in dates]
    return {
        "train": (iso[0], iso[b1 - 1]),
        "validation": (iso[b1], iso[b2 - 1]),
        "test": (iso[b2], iso[-1]),
    }


def split_ranges(
    data: PriceData,
    lookback: int,
    split_dates: dict[str, tuple[str, str]] | None = None,
    min_rows: int = MIN_SPLIT_ROWS,
) -> dict[str, SplitRange]:
    """Row ranges of the train / validation / test splits, with a purge gap.

    The first ``lookback`` rows of the whole table are never used (features need that history). Each
    split after the first starts at least ``lookback`` rows after the previous split's last row, so no
    feature window contains prices of two splits (the purge gap).

    Args:
        data: validated prices.
        lookback: the feature window in rows; also the purge gap.
        split_dates: ``{"train": (start, end), ...}`` inclusive ISO dates; defaults per
            :func:`default_split_dates`.
        min_rows: the fewest rows a split may keep after purging.

    Raises:
        DataError: bad or overlapping ranges, or too few rows.
    """
    where = "sp500 (bundled)" if data.form == FORM_BUNDLED else data.source
    ranges = split_dates or default_split_dates(data)
    missing = [s for s in SPLITS if s not in ranges]
    if missing:
        raise _fail(where, f"split dates missing for {', '.join(missing)}; give train, validation and test")
    dates = data.prices.index
    out: dict[str, SplitRange] = {}
    prev_end = -1
    for name in SPLITS:
        try:
            lo, hi = (pd.Timestamp(x) for x in ranges[name])
        except (ValueError, TypeError) as exc:
            raise _fail(where, f"split '{name}' has an unparsable date range {ranges[name]!r} ({exc})") from None
        if lo > hi:
            raise _fail(where, f"split '{name}' starts after it ends ({lo.date()} > {hi.date()})")
        start = int(dates.searchsorted(lo, side="left"))
        end = int(dates.searchsorted(hi, side="right")) - 1
        floor = lookback if prev_end < 0 else prev_end + 1 + lookback
        if prev_end >= 0 and start <= prev_end:
            raise _fail(where, f"split '{name}' ({lo.date()}..{hi.date()}) overlaps the previous split")
        start = max(start, floor)
        n_rows = end - start + 1
        if n_rows < min_rows:
            raise _fail(
                where,
                f"too few rows for split '{name}' ({lo.date()}..{hi.date()}): {max(n_rows, 0)} usable "
                f"dates after the {lookback}-day feature window/purge gap, need at least {min_rows}; the "
                f"data has {len(dates)} dates ({_fmt_dates([dates[0]])}..{_fmt_dates([dates[-1]])}); "
                "provide more history or change the split dates",
            )
        out[name] = SplitRange(name, start, end, dates[start], dates[end])
        prev_end = end
    return out


def summary(data: PriceData, splits: dict[str, SplitRange], lookback: int) -> str:
    """Human-readable summary, as printed by ``python -m envs.data``."""
    p = data.prices
    lines = [
        f"source:   {data.source}",
        f"form:     {data.form}",
        f"tickers:  {len(data.tickers)}: {', '.join(data.tickers)}",
        f"dates:    {len(p)} rows, {_fmt_dates([p.index[0]])} .. {_fmt_dates([p.index[-1]])}",
        f"splits:   (purge gap / feature window = {lookback} rows)",
    ]
    for s in splits.values():
        lines.append(
            f"  {s.name:<10} {s.start_date.date()} .. {s.end_date.date()}  {s.n_rows} rows ({s.n_rows - 1} steps)"
        )
    lines.append("warnings: " + ("none" if not data.warnings else ""))
    lines += [f"  - {w}" for w in data.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m envs.data [SOURCE] [--date-format FORMAT] [--sort-dates] [--exp NAME]``."""
    import argparse

    from envs.features import FeatureConfig
    from envs.folds import experiment_data_section, experiment_folds, fold_summary

    parser = argparse.ArgumentParser(prog="python -m envs.data", description="Validate and summarise prices.")
    parser.add_argument(
        "source", nargs="?", default=None, help="'sp500' (default) or a CSV/Parquet path; with --exp, its data.source"
    )
    parser.add_argument(
        "--date-format",
        metavar="FORMAT",
        help="strptime format of the date column, e.g. '%%d/%%m/%%Y' (default: ISO, or the one format that fits)",
    )
    parser.add_argument(
        "--sort-dates", action="store_true", help="sort rows by date instead of refusing dates out of order"
    )
    parser.add_argument("--exp", help="an experiment (tune_configs/NAME.yaml or a .yaml path): print its fold windows")
    args = parser.parse_args(argv)
    lookback = FeatureConfig().lookback
    try:
        folds, split_dates, source = None, None, args.source
        if args.exp is not None:
            folds, exp_source, _ = experiment_folds(args.exp)
            split_dates = experiment_data_section(args.exp)[0].get("split_dates")
            source = source or exp_source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_prices(source or SP500, date_format=args.date_format, sort_dates=args.sort_dates)
        splits = split_ranges(data, lookback, split_dates)
        text = summary(data, splits, lookback)
        if folds is not None:
            text += "\n" + fold_summary(data, folds, lookback)
    except ValueError as exc:  # DataError, or a bad experiment file (the message names it)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
