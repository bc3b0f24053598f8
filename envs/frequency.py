"""How often a price table is sampled: daily trading data only, and rows that only repeat the previous one.

Everything downstream counts rows as trading days: the feature windows (5, 20, 60 rows), the purge gap between
splits, the episode length and the annualisation of returns and Sharpe ratios. Weekly or month-end prices
would be read as daily ones without complaint (a 60-row purge gap of month-end rows is five years, an
annualised Sharpe ratio of weekly returns is inflated by about the square root of five), so they are refused:

- The **median gap** between consecutive dates must be one day. Daily trading data has gaps of one day,
  three across a weekend and up to four or five around holidays (the bundled S&P 500 sample: 1, 2, 3, 4, 5 and
  once 7 days, after 11 September 2001), so a file of fewer than :data:`SHORT_FILE_INTERVALS` intervals, where
  one weekend and a holiday can make most gaps long, may have a median of up to :data:`MAX_TRADING_GAP_DAYS`.
- No stretch of :data:`MAX_LONG_GAPS_IN_A_ROW` or more consecutive gaps longer than
  :data:`MAX_TRADING_GAP_DAYS` (weekly or monthly history in front of daily prices); a single long gap (an
  exchange closed for a week, or a few missing days) is accepted.

Trading seven days a week (crypto) is daily data and accepted. A row whose price equals the previous row's
for every ticker is what forward-filling a day without trading gives (a weekend or holiday row copied from
the day before); such rows are counted and reported as a warning, weekends apart, because each is a zero
return the agent trains and is scored on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from envs.errors import fail, fmt_dates

# The longest gap between consecutive trading days that is normal: Thursday to Monday around a Friday holiday.
MAX_TRADING_GAP_DAYS = 4
# From this many intervals between dates on, the median gap must be exactly one day.
SHORT_FILE_INTERVALS = 20
# This many consecutive gaps longer than MAX_TRADING_GAP_DAYS make a stretch of non-daily rows.
MAX_LONG_GAPS_IN_A_ROW = 3
# Rows repeating the previous row for every ticker are reported when there are at least this many and they
# come two in a row (a forward-filled weekend) or make up this share of the rows (forward-filled holidays).
MIN_FLAT_ROWS = 2
FLAT_ROWS_SHARE = 0.01

_DAILY_FIX = (
    "the feature windows, the purge gap and annualised figures count rows as trading days, so give daily prices "
    "(one row per trading day)"
)


def _describe(gap_days: float) -> str:
    """A median gap in days, in words: ``weekly``, ``monthly``, ... or ``every N days``."""
    for low, high, name in ((5, 10, "weekly"), (26, 35, "monthly"), (85, 95, "quarterly"), (355, 375, "yearly")):
        if low <= gap_days <= high:
            return name
    return f"every {gap_days:g} days"


def _first_dates(dates: pd.DatetimeIndex, shown: int = 3) -> str:
    """``2020-01-03, 2020-01-10, 2020-01-17, ...: 300 dates``."""
    more = ", ..." if len(dates) > shown else ""
    return f"{fmt_dates(dates[:shown])}{more}: {len(dates)} dates"


def _gap_days(dates: pd.DatetimeIndex) -> np.ndarray:
    return np.diff(dates.to_numpy().astype("datetime64[D]")).astype(np.int64)


def check_daily(dates: pd.DatetimeIndex, where: str, date_format: str | None = None) -> None:
    """Refuse dates that are not daily trading data (see the module docstring).

    Args:
        dates: the table's dates, increasing and unique.
        where: the source, for the message.
        date_format: the format the dates were read with when the user gave one: a day and month read the
            wrong way round make daily dates monthly, so the message asks to check it.

    Raises:
        DataError: the dates are weekly, monthly, ... as a whole or over a stretch of them.
    """
    gaps = _gap_days(dates)
    if gaps.size == 0:
        return
    check = f"; or check date_format '{date_format}'" if date_format else ""
    median = float(np.median(gaps))
    limit = MAX_TRADING_GAP_DAYS if gaps.size < SHORT_FILE_INTERVALS else 1
    if median > limit:
        raise fail(
            where,
            f"dates are {_describe(median)}, not daily: consecutive dates are a median {median:g} days apart "
            f"({_first_dates(dates)}); {_DAILY_FIX}{check}",
        )
    long = gaps > MAX_TRADING_GAP_DAYS
    # Start and end (exclusive) of every run of consecutive long gaps, from the edges of the boolean mask.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], long.astype(np.int8), [0]))))
    runs = edges.reshape(-1, 2)
    lengths = runs[:, 1] - runs[:, 0]
    if lengths.size and lengths.max() >= MAX_LONG_GAPS_IN_A_ROW:
        start, stop = (int(x) for x in runs[int(np.argmax(lengths))])
        stretch = gaps[start:stop]
        days = f"{stretch.min()}" if stretch.min() == stretch.max() else f"{stretch.min()} to {stretch.max()}"
        raise fail(
            where,
            f"dates from {fmt_dates([dates[start]])} to {fmt_dates([dates[stop]])} are "
            f"{_describe(float(np.median(stretch)))} ({stop - start} gaps in a row of {days} days) while the rest "
            f"is daily; give daily prices for that stretch or remove its rows{check}",
        )


def flat_rows_note(prices: pd.DataFrame) -> str | None:
    """A warning about rows that repeat the previous row's price for every ticker, or None when there are few.

    Args:
        prices: validated prices, increasing dates, one column per ticker.
    """
    values = prices.to_numpy()
    flat = np.concatenate(([False], (values[1:] == values[:-1]).all(axis=1)))
    count = int(flat.sum())
    if count < MIN_FLAT_ROWS:
        return None
    two_in_a_row = bool((flat[1:] & flat[:-1]).any())
    if not two_in_a_row and count < FLAT_ROWS_SHARE * len(flat):
        return None
    dates = prices.index[flat]
    weekend = dates.day_of_week >= 5
    parts = [
        f"{int(mask.sum())} on {name}: {fmt_dates(dates[mask])}"
        for mask, name in ((weekend, "Saturdays or Sundays"), (~weekend, "weekdays"))
        if mask.any()
    ]
    return (
        f"{count} of {len(flat)} rows repeat the previous row's price for every ticker ({'; '.join(parts)}), as "
        "days without trading filled with the last price do: each is a zero return the agent trains and is "
        "scored on; remove those rows (keep the trading days only)"
    )
