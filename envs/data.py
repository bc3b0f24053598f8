"""Daily price data: load, validate and split into train / validation / test by date.

Sources:

- ``"sp500"`` (default): skfolio's bundled daily prices of 20 US large caps, 1990-2022, read from the
  installed skfolio package (no network).
- A CSV or Parquet file in *wide* form (a date column plus one price column per ticker) or *long* form
  (``date``, ``ticker`` and ``adj_close``, ``close`` or ``price`` columns; with several, the adjusted close,
  with a warning). The form is detected and reported. A CSV may be separated by commas, semicolons, tabs or
  pipes (detected from the header line) and may start with a UTF-8 byte-order mark; a Parquet file may keep
  its dates in the index instead of a column. A two-level ``(field, ticker)`` header (``yfinance``'s layout)
  is read from its adjusted close, else its close, with a warning (:mod:`envs.price_headers`). Two columns
  or tickers whose names differ only in case or surrounding spaces are refused.
- A table already in memory in either form (:func:`prices_from_frame`: rows sent to a service), through the
  same checks as a file.

Every validation failure raises :class:`DataError` with one line naming the file, the column or ticker, the
row or date(s) and saying how to fix it. Nothing is guessed silently:

- **Dates** are read as ISO (``2020-01-31``, with or without a time) when every value is ISO; otherwise
  with the one format among the usual numeric and month-name layouts that fits every value, with a warning
  saying which. If two formats fit every value and disagree (``01/02/2020`` as 2 January or 1 February) the
  file is refused until ``date_format`` (a ``strptime`` format) is given; values in two different formats
  are refused too. A time of day and a time-zone offset are ignored: the date is the one written.
- **Order**: dates must be increasing as written (in long form, within each ticker), so that a date read
  the wrong way cannot reorder the series unnoticed; ``sort_dates=True`` sorts instead, with a warning.
- **Frequency** (:mod:`envs.frequency`): daily trading data only, weekends with their own prices included
  (crypto); weekly, monthly or every-other-day dates, as a whole or over a stretch, are refused (everything
  downstream counts rows as trading days). Rows that repeat the previous row's price for every ticker
  (forward-filled weekends or holidays) are reported with a warning.
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

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from envs.errors import DataError, fail, fmt_dates
from envs.frequency import check_daily, flat_rows_note
from envs.price_dates import check_order
from envs.price_files import (
    FORM_BUNDLED,
    FORM_LONG,
    FORM_WIDE,
    load_bundled,
    read_table,
    table_of,
    to_numeric,
    to_wide,
)

# The public face of the data layer: reading (envs.price_files, envs.price_dates) and errors (envs.errors)
# live in their own modules; callers import these names from here.
__all__ = [
    "FORM_BUNDLED",
    "FORM_LONG",
    "FORM_WIDE",
    "MAX_DAILY_RATIO",
    "MAX_PRICE",
    "MIN_DAILY_RATIO",
    "MIN_PRICE",
    "MIN_SPLIT_ROWS",
    "SP500",
    "SPLITS",
    "TEST",
    "TRAIN",
    "VALIDATION",
    "DataError",
    "PriceData",
    "SplitRange",
    "default_split_dates",
    "load_prices",
    "prices_from_frame",
    "split_ranges",
]

SP500 = "sp500"
SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS

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
        return list(self._tickers)

    @cached_property
    def _tickers(self) -> tuple[str, ...]:  # read on every step of a decision: the column names once
        return tuple(str(c) for c in self.prices.columns)


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


def _first_true(mask: np.ndarray) -> tuple[int, int]:
    i, j = (int(x[0]) for x in np.nonzero(mask))
    return i, j


def _refuse_first(where: str, mask: np.ndarray, message: Callable[[int, int], str]) -> None:
    """Refuse the data at the first (row, column) where ``mask`` is true, with ``message(row, column)``."""
    if mask.any():
        raise fail(where, message(*_first_true(mask)))


def check_values(prices: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """Check finiteness, range and one-day moves; trim leading NaNs of late starters (module docstring).

    Also validates a benchmark series (``envs.benchmark``) by the same rules.
    """
    values = prices.to_numpy()
    for j, ticker in enumerate(prices.columns):
        col = values[:, j]
        if np.isinf(col).any():
            i = int(np.flatnonzero(np.isinf(col))[0])
            raise fail(where, f"ticker '{ticker}' has an infinite price on {fmt_dates([prices.index[i]])}")
    first_valid = {}
    for j, ticker in enumerate(prices.columns):
        finite = np.flatnonzero(np.isfinite(values[:, j]))
        if finite.size == 0:
            raise fail(where, f"ticker '{ticker}' has no prices at all; remove the column")
        first_valid[ticker] = int(finite[0])
        gaps = np.flatnonzero(~np.isfinite(values[finite[0] :, j]))
        if gaps.size:
            gap_dates = prices.index[finite[0] + gaps]
            raise fail(
                where,
                f"ticker '{ticker}' has missing (NaN) prices on {fmt_dates(gap_dates)} after it started "
                f"trading on {fmt_dates([prices.index[finite[0]]])}; fill or remove the gaps",
            )
    start = max(first_valid.values(), default=0)
    if start > 0:
        late = max(first_valid, key=first_valid.__getitem__)
        notes.append(
            f"ticker '{late}' starts on {fmt_dates([prices.index[start]])}: history trimmed to start there "
            f"({start} earlier dates dropped) so every ticker has a price on every date"
        )
        prices = prices.iloc[start:]
    values = prices.to_numpy()
    if (values <= 0).any():
        i, j = _first_true(values <= 0)
        raise fail(
            where,
            f"ticker '{prices.columns[j]}' has a non-positive price ({prices.iat[i, j]}) on "
            f"{fmt_dates([prices.index[i]])}; prices must be > 0 (use adjusted close prices)",
        )
    bounds = (
        (values < MIN_PRICE, MIN_PRICE, "below the minimum"),
        (values > MAX_PRICE, MAX_PRICE, "above the maximum"),
    )
    for mask, bound, side in bounds:
        _refuse_first(
            where,
            mask,
            lambda i, j, bound=bound, side=side: (
                f"ticker '{prices.columns[j]}' has a price of {values[i, j]:g} on {fmt_dates([prices.index[i]])}, "
                f"{side} {bound:g}; check the units: quote the asset in a unit (e.g. per 1000 shares or tokens) "
                f"that keeps prices between {MIN_PRICE:g} and {MAX_PRICE:g}"
            ),
        )
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratios = values[1:] / values[:-1]
        log_returns = np.diff(np.log(values), axis=0)
    _refuse_first(
        where,
        (ratios > MAX_DAILY_RATIO) | (ratios < MIN_DAILY_RATIO),
        lambda i, j: (
            f"ticker '{prices.columns[j]}' moves from {values[i, j]:g} on {fmt_dates([prices.index[i]])} to "
            f"{values[i + 1, j]:g} on {fmt_dates([prices.index[i + 1]])} (x{ratios[i, j]:.3g}), outside the "
            f"plausible one-day range x{MIN_DAILY_RATIO:g}..x{MAX_DAILY_RATIO:g}; check for a change of units or "
            "a missing split adjustment (use adjusted close prices)"
        ),
    )
    # The returns the environment and the features are built from; finite by the bounds above, checked
    # anyway so that loosening a bound can never let a non-finite reward or observation through.
    derived = np.isfinite(ratios) & np.isfinite(log_returns)
    if not derived.all():
        i, j = _first_true(~derived)
        raise fail(
            where,
            f"ticker '{prices.columns[j]}' has a non-finite daily return on {fmt_dates([prices.index[i + 1]])} "
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
        prices = load_bundled().astype("float64")
        prices.index = pd.DatetimeIndex(prices.index).normalize()
        prices.columns = [str(c) for c in prices.columns]
        form = FORM_BUNDLED
        check_order(prices.index, where, 1, None, sort_dates, notes)
        prices = prices.sort_index()
    else:
        path = Path(source).expanduser()
        where = str(source)
        wide, form = to_wide(read_table(path, notes), where, date_format, sort_dates, notes)
        prices = to_numeric(wide, where)
    return _validated(prices, where, str(source), form, date_format, notes)


def prices_from_frame(
    frame: pd.DataFrame, where: str, *, first_row: int = 1, date_format: str | None = None, sort_dates: bool = False
) -> PriceData:
    """Validate prices already in memory (rows sent to a service, say) exactly as a file's are validated.

    Args:
        frame: the table as a file would hold it: a date column and one price column per ticker (wide
            form), or ``date``, ``ticker`` and a price column (long form); cells as numbers, text or missing.
        where: the name of the source in messages (and ``PriceData.source``).
        first_row: the number messages give the first row (0 for the items of a JSON array).
        date_format, sort_dates: as for :func:`load_prices`.

    Raises:
        DataError: anything :func:`load_prices` refuses in a file, in the same one-line messages.
    """
    notes: list[str] = []
    wide, form = to_wide(table_of(frame, where, first_row), where, date_format, sort_dates, notes)
    return _validated(to_numeric(wide, where), where, where, form, date_format, notes)


def _validated(
    prices: pd.DataFrame, where: str, source: str, form: str, date_format: str | None, notes: list[str]
) -> PriceData:
    """The checks every source's wide numeric table goes through: dates, frequency, values, assets."""
    if prices.index.duplicated().any():
        dups = prices.index[prices.index.duplicated()].unique()
        raise fail(where, f"duplicate dates: {fmt_dates(dups)}; keep one row per date")
    check_daily(prices.index, where, date_format)
    prices = check_values(prices, where, notes)
    flat = flat_rows_note(prices)
    if flat is not None:
        notes.append(flat)
    if prices.shape[1] < 2:
        names = ", ".join(repr(c) for c in prices.columns) or "none"
        raise fail(where, f"found {prices.shape[1]} asset(s) ({names}); at least 2 are needed")
    for note in notes:
        warnings.warn(f"{where}: {note}", stacklevel=3)
    return PriceData(source=source, form=form, prices=prices, warnings=notes)


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
    feature window contains prices of two splits (the purge gap). ``split_dates`` without ``test`` gives no
    test window (a rolling round's windows, whose test is the future: ``envs.folds.round_ranges``).

    Args:
        data: validated prices.
        lookback: the feature window in rows; also the purge gap.
        split_dates: ``{"train": (start, end), ...}`` inclusive ISO dates (``test`` may be left out); defaults
            per :func:`default_split_dates`.
        min_rows: the fewest rows a split may keep after purging.

    Raises:
        DataError: bad or overlapping ranges, or too few rows.
    """
    where = "sp500 (bundled)" if data.form == FORM_BUNDLED else data.source
    ranges = split_dates or default_split_dates(data)
    missing = [s for s in (TRAIN, VALIDATION) if s not in ranges]
    if missing:
        raise fail(where, f"split dates missing for {', '.join(missing)}; give train, validation and (optionally) test")
    dates = data.prices.index
    out: dict[str, SplitRange] = {}
    prev_end = -1
    for name in (s for s in SPLITS if s in ranges):
        try:
            lo, hi = (pd.Timestamp(x) for x in ranges[name])
        except (ValueError, TypeError) as exc:
            raise fail(where, f"split '{name}' has an unparsable date range {ranges[name]!r} ({exc})") from None
        if lo > hi:
            raise fail(where, f"split '{name}' starts after it ends ({lo.date()} > {hi.date()})")
        start = int(dates.searchsorted(lo, side="left"))
        end = int(dates.searchsorted(hi, side="right")) - 1
        floor = lookback if prev_end < 0 else prev_end + 1 + lookback
        if prev_end >= 0 and start <= prev_end:
            raise fail(where, f"split '{name}' ({lo.date()}..{hi.date()}) overlaps the previous split")
        start = max(start, floor)
        n_rows = end - start + 1
        if n_rows < min_rows:
            raise fail(
                where,
                f"too few rows for split '{name}' ({lo.date()}..{hi.date()}): {max(n_rows, 0)} usable "
                f"dates after the {lookback}-day feature window/purge gap, need at least {min_rows}; the "
                f"data has {len(dates)} dates ({fmt_dates([dates[0]])}..{fmt_dates([dates[-1]])}); "
                "provide more history or change the split dates",
            )
        out[name] = SplitRange(name, start, end, dates[start], dates[end])
        prev_end = end
    return out


if __name__ == "__main__":  # ``python -m envs.data`` runs the command of envs.summary (which imports this module)
    import runpy

    runpy.run_module("envs.summary", run_name="__main__")
