"""Date columns of price files: ISO or the one layout that fits every value, and the order they are written in.

Values are read as ISO when every value is ISO; otherwise with the one layout among the usual numeric and
month-name ones that fits every value (a warning says which). Two layouts that fit and disagree, or values in
two layouts, are refused until ``date_format`` is given. Dates must increase as written unless the caller
asks to sort.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_timedelta64_dtype
from pandas.tseries.api import guess_datetime_format

from envs.errors import fail, fmt_dates

# Cells read as a missing value (compared lower-cased); anything else that is not a number is an error.
MISSING_TOKENS = frozenset({"", "na", "n/a", "#n/a", "#na", "nan", "-nan", "null", "none", "<na>"})

# How the fix for dates is spelled in messages: the load_prices keyword (also the experiment key) and the
# CLI flag.
_DATE_FORMAT_FIX = (
    "give the format, e.g. '%d/%m/%Y': data.date_format in an experiment (--set data.date_format=%d/%m/%Y), "
    "--date-format with python -m envs.data"
)
_SORT_FIX = (
    "sort the file by date, or have it sorted on loading: data.sort_dates in an experiment "
    "(--set data.sort_dates=true), --sort-dates with python -m envs.data"
)
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
            "data.date_format (--date-format with python -m envs.data) to read it otherwise"
        )
        return parsed
    if len(fits) > 1:
        (fmt_a, a), (fmt_b, b) = fits[:2]
        i = int(np.flatnonzero((a != b).to_numpy())[0])
        raise fail(
            where,
            f"column '{column}' has ambiguous dates: row {first_row + i} {text.iloc[i]!r} reads as "
            f"{fmt_dates([a.iloc[i]])} ('{fmt_a}') or {fmt_dates([b.iloc[i]])} ('{fmt_b}'); {_DATE_FORMAT_FIX}",
        )
    readable = iso.notna()
    for parsed in parses.values():
        readable |= parsed.notna()
    if not readable.all():
        i = int(np.flatnonzero(~readable.to_numpy())[0])
        raise fail(
            where,
            f"column '{column}' has a value that is not a date in row {first_row + i}: {text.iloc[i]!r}; "
            f"use ISO dates like 2020-01-31 or {_DATE_FORMAT_FIX}",
        )
    best = max([iso, *parses.values()], key=lambda p: int(p.notna().sum()))
    i, j = int(np.flatnonzero(best.notna().to_numpy())[0]), int(np.flatnonzero(best.isna().to_numpy())[0])
    raise fail(
        where,
        f"column '{column}' mixes date formats: row {first_row + i} {text.iloc[i]!r} and row {first_row + j} "
        f"{text.iloc[j]!r} fit no single format; write every date the same way (ISO like 2020-01-31)",
    )


_PLAIN_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def _plain_iso_dates(values: pd.Series, date_format: str | None) -> pd.DatetimeIndex | None:
    """The dates of a column of plain ``YYYY-MM-DD`` text that all read as dates (what a service's rows and
    most files hold), read at once; None for anything else, which takes the general path below (the same
    dates for such a column: it only skips the checks those values pass anyway)."""
    if date_format is not None or values.dtype.kind not in "OT":
        return None
    cells = values.to_numpy(dtype=object)
    if not all(isinstance(v, str) and _PLAIN_ISO.fullmatch(v) for v in cells):
        return None
    parsed = pd.to_datetime(pd.Series(cells, dtype=object), format="ISO8601", errors="coerce")
    return None if parsed.isna().any() else pd.DatetimeIndex(parsed)  # dates without a time: already midnight


def parse_dates(
    values: pd.Series, where: str, column: str, first_row: int, date_format: str | None, notes: list[str]
) -> pd.DatetimeIndex:
    """Dates of the date column, normalised to midnight, zone dropped (see the module docstring)."""
    plain = _plain_iso_dates(values, date_format)
    if plain is not None:
        return plain
    missing = is_missing(values)
    if missing.any():
        i = int(np.flatnonzero(missing.to_numpy())[0])
        raise fail(where, f"column '{column}' has no date in row {first_row + i}; give every row a date")
    if is_datetime64_any_dtype(values.dtype):  # a Parquet timestamp column: no text to interpret
        index = pd.DatetimeIndex(values)
        return (index.tz_localize(None) if index.tz is not None else index).normalize()
    if is_bool_dtype(values.dtype) or is_timedelta64_dtype(values.dtype):
        raise fail(where, f"column '{column}' holds {values.dtype} values, not dates; store dates or ISO text")
    if is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype="float64")
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        inside = whole & (numbers >= _YYYYMMDD_RANGE[0]) & (numbers <= _YYYYMMDD_RANGE[1])
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise fail(
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
            raise fail(
                where,
                f"column '{column}' has a value that does not match date_format '{date_format}' in row "
                f"{first_row + i}: {text.iloc[i]!r}; fix the value or the format",
            )
    index = pd.DatetimeIndex(parsed)
    return (index.tz_localize(None) if index.tz is not None else index).normalize()


def _first_backwards(dates: pd.DatetimeIndex, groups: pd.Series | None = None) -> tuple[int, int] | None:
    """Positions ``(previous, current)`` of the first date earlier than the one before it (per group)."""
    if groups is None:  # one series: the comparison of neighbours, without a frame
        back = np.flatnonzero(dates.asi8[1:] < dates.asi8[:-1])
        return None if back.size == 0 else (int(back[0]), int(back[0]) + 1)
    frame = pd.DataFrame({"date": dates, "pos": np.arange(len(dates))})
    grouped = frame.groupby(groups.to_numpy(), sort=False) if groups is not None else None
    prev_date = grouped["date"].shift() if grouped is not None else frame["date"].shift()
    prev_pos = grouped["pos"].shift() if grouped is not None else frame["pos"].shift()
    back = np.flatnonzero((frame["date"] < prev_date).to_numpy())
    if back.size == 0:
        return None
    i = int(back[0])
    return int(prev_pos.iloc[i]), i


def check_order(
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
    raise fail(
        where,
        f"{whose} are not in increasing order: row {first_row + i} ({fmt_dates([dates[i]])}) comes after row "
        f"{first_row + prev} ({fmt_dates([dates[prev]])}); {_SORT_FIX}{check}",
    )


def is_missing(values: pd.Series, tokens: frozenset[str] = MISSING_TOKENS) -> pd.Series:
    """True where a cell is NaN/None or text in ``tokens`` (by default '', 'NA', 'NaN', '#N/A', 'null', ...)."""
    token = values.astype(object).map(lambda v: isinstance(v, str) and v.strip().lower() in tokens)
    return values.isna() | token.astype(bool)
