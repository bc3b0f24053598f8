"""A benchmark price series (an index, an ETF) and its daily returns over an evaluated window.

A benchmark is given as ``sp500``, skfolio's bundled daily S&P 500 index (1990-2022, read from the installed
package, no network; the price index, without dividends: ``PRICE_INDEX_NOTE``), or ``FILE:COLUMN``: a CSV or
Parquet price file, read like any price file (:mod:`envs.price_files`: a date column, wide or long form, dates
validated) and checked by the data layer's rules (daily dates, plausible positive prices), of which the one
price column ``COLUMN`` (a column of a wide file, a ticker of a long one) is the benchmark. Other columns of the
file are not read, so they may hold anything; a day without a price in the column is not a day of the series.

Its returns are paired with a strategy's by holding period: over the evaluated window's days ``d_0 .. d_T`` the
benchmark's return on day ``t`` is ``B(d_t) / B(d_{t-1}) - 1``, the same days a strategy held its weights. A
benchmark with more days than the window's calendar (trading on a day the portfolio's market was closed)
compounds them into the period that contains them; a window day without a benchmark price is refused with one
line naming the file, the column and the first such date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.data import check_values
from envs.errors import DataError, fail, fmt_dates
from envs.frequency import check_daily
from envs.market import MarketData
from envs.price_files import FORM_LONG, read_table, to_numeric, to_wide

SP500_INDEX = "sp500"  # the keyword for skfolio's bundled S&P 500 index
SP500_INDEX_COLUMN = "SP500"  # its one column in skfolio's file
_SP500_WHERE = "sp500 (skfolio's bundled S&P 500 index)"
_FORMS = (
    f"give '{SP500_INDEX}' (skfolio's bundled S&P 500 index) or FILE:COLUMN (a CSV/Parquet file with a date column "
    "and the price column COLUMN, e.g. prices.csv:SPY)"
)
# skfolio's series is the price index (its closes are the published S&P 500 levels): no dividends.
PRICE_INDEX_NOTE = (
    "the S&P 500 is a price index: its returns leave out dividends (about 2% a year), which adjusted-close prices "
    "such as the bundled stocks' include, so excess returns over it are that much higher than over a total-return "
    "index"
)
_SHOWN_COLUMNS = 12  # the columns a message about a missing one lists before "... (N in all)"


@dataclass(frozen=True)
class Benchmark:
    """A validated benchmark price series.

    Attributes:
        spec: as given (``sp500`` or ``FILE:COLUMN``).
        source: ``sp500`` or the file's path as given.
        column: the price column (``SP500`` for the bundled index).
        prices: float64 prices on a sorted, unique, daily ``DatetimeIndex`` (dates without a time).
        notes: what was inferred while reading (date format, a trimmed start), as for price data.
    """

    spec: str
    source: str
    column: str
    prices: pd.Series
    notes: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """The source as messages name it."""
        return _SP500_WHERE if self.source == SP500_INDEX else self.source

    @property
    def label(self) -> str:
        """A short name for tables and plot legends."""
        return "S&P 500 price index" if self.source == SP500_INDEX else f"{self.column} ({Path(self.source).name})"


def parse_benchmark(spec: str) -> tuple[str, str]:
    """``(source, column)`` of a benchmark spec: ``sp500`` or ``FILE:COLUMN`` (the last ``:`` splits them).

    Raises:
        DataError: neither form.
    """
    text = str(spec).strip()
    if text == SP500_INDEX:
        return SP500_INDEX, SP500_INDEX_COLUMN
    source, sep, column = text.rpartition(":")
    if not sep or not source.strip() or not column.strip():
        raise DataError(f"benchmark {spec!r}: {_FORMS}")
    return source.strip(), column.strip()


def load_benchmark(spec: str) -> Benchmark:
    """Read and validate a benchmark series (see the module docstring).

    Raises:
        DataError: a bad spec, an unreadable file, a column that does not exist (the message lists the
            columns), or prices the data layer refuses; one line naming the file and column.
    """
    source, column = parse_benchmark(spec)
    notes: list[str] = []
    if source == SP500_INDEX:
        from skfolio.datasets import load_sp500_index  # shipped inside skfolio's wheel: read from disk

        where = _SP500_WHERE
        frame = load_sp500_index().astype("float64")
        frame.index = pd.DatetimeIndex(frame.index).normalize()
        notes.append(PRICE_INDEX_NOTE)
    else:
        where = source
        path = Path(source).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "file not found"
            raise fail(where, f"{what}; {_FORMS}")
        wide, form = to_wide(read_table(path, notes), where, None, False, notes)
        names = [str(c) for c in wide.columns]
        if column not in names:
            kind = "tickers" if form == FORM_LONG else "price columns"
            shown = ", ".join(repr(c) for c in names[:_SHOWN_COLUMNS])
            more = f", ... ({len(names)} in all)" if len(names) > _SHOWN_COLUMNS else ""
            raise fail(where, f"no column '{column}'; its {kind} are {shown}{more}; give FILE:COLUMN with one of them")
        # Only the column's own dates: in a long file other tickers' dates are not gaps of this one (a window day
        # without a price is refused by ``benchmark_returns``, naming it).
        frame = to_numeric(wide[[column]], where).dropna()
    check_daily(frame.index, where)
    frame = check_values(frame, where, notes)
    return Benchmark(str(spec), source, column, frame.iloc[:, 0].rename(column), notes)


def window_days(market: MarketData, split: str) -> pd.DatetimeIndex:
    """The evaluated window's days, its first (whose close the first holding period starts from) to its last."""
    rng = market.splits[split]
    return pd.DatetimeIndex(market.dates[rng.start : rng.end + 1])


def benchmark_returns(benchmark: Benchmark, dates: pd.DatetimeIndex | list) -> NDArray[np.float64]:
    """The benchmark's daily simple returns between consecutive ``dates``, the evaluated window's days (its first
    day, whose close the first holding period starts from, to its last): ``len(dates) - 1`` returns.

    Raises:
        DataError: a window day without a benchmark price; the message names the source, the column and the
            first such date, and says how to fix it.
    """
    days = pd.DatetimeIndex(dates).normalize()
    prices = benchmark.prices
    missing = days.difference(prices.index)
    if len(missing):
        span = f"{fmt_dates([days[0]])} .. {fmt_dates([days[-1]])}"
        covered = f"{fmt_dates([prices.index[0]])} .. {fmt_dates([prices.index[-1]])}"
        raise fail(
            benchmark.where,
            f"column '{benchmark.column}' has no price on {fmt_dates([missing[0]])} ({len(missing)} of the "
            f"{len(days)} days of the evaluated window {span} lack one; it has prices {covered}); give the benchmark "
            "a price on every trading day of the window, or evaluate a window it covers",
        )
    values = prices.reindex(days).to_numpy(dtype=np.float64)
    return values[1:] / values[:-1] - 1.0
