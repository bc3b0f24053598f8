"""Daily price data: load, validate and split into train / validation / test by date.

Sources:

- ``"sp500"`` (default): skfolio's bundled daily prices of 20 US large caps, 1990-2022, read from the
  installed skfolio package (no network).
- A CSV or Parquet file in *wide* form (a date column plus one price column per ticker) or *long* form
  (``date``, ``ticker`` and ``close`` or ``price`` columns). The form is detected and reported.

Every validation failure raises :class:`DataError` with one line naming the file, the ticker and the
date(s) and saying how to fix it. Tickers that start trading later than the others (leading missing
prices)
are handled by **trimming the history** to the first date on which every ticker has a price, with a
warning naming the ticker that forced the trim: the asset universe is what the user asked for, never
silently changed. A gap after a ticker started trading is an error.

``python -m envs.data [SOURCE] [--exp NAME]`` prints a summary and exits 0, or prints ``error: ...`` and
exits 2. With ``--exp`` (an experiment in ``tune_configs/`` or a YAML path) the splits are the experiment's
``data.split_dates`` and its walk-forward fold windows (``data.folds``, see ``envs.folds``) are printed too;
SOURCE then defaults to the experiment's ``data.source``.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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

_DATE_NAMES = ("date", "datetime", "timestamp", "time", "day")
_TICKER_NAMES = ("ticker", "symbol", "asset")
_PRICE_NAMES = ("close", "price", "adj_close", "adjclose", "adj close")


class DataError(ValueError):
    """Bad price data; the message says what is wrong, where, and how to fix it."""


@dataclass(frozen=True)
class PriceData:
    """Validated daily prices.

    Attributes:
        source: ``"sp500"`` or the file path as given.
        form: ``"bundled"``, ``"wide"`` or ``"long"``.
        prices: float64 prices, sorted ``DatetimeIndex`` (unique), one column per ticker, no missing values.
        warnings: human-readable notes about what was fixed up (sorting, trimming).
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


def _read_table(path: Path) -> pd.DataFrame:
    where = str(path)
    if not path.exists():
        raise _fail(where, "file not found; pass 'sp500' for the bundled data or the path of a CSV/Parquet file")
    if path.is_dir():
        raise _fail(where, "is a directory, not a CSV/Parquet file")
    if path.stat().st_size == 0:
        raise _fail(where, "file is empty; expected a CSV/Parquet table of daily prices")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if isinstance(frame.index, pd.DatetimeIndex):
                frame = frame.reset_index(names=frame.index.name or "date")
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise _fail(where, f"unsupported file type '{suffix}'; use .csv or .parquet")
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(where, f"not a readable {suffix.lstrip('.').upper()} table ({reason})") from None
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise _fail(where, "table has no rows or no columns; expected a date column and price columns")
    return frame


def _find_column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _parse_dates(values: pd.Series, where: str, column: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna() & values.notna()
    bad |= values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(
            where,
            f"column '{column}' has a value that is not a date in row {row + 2}: {values.iloc[row]!r}; "
            "use ISO dates like 2020-01-31",
        )
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.normalize()


def _to_wide(frame: pd.DataFrame, where: str) -> tuple[pd.DataFrame, str]:
    """Detect wide or long form and return a wide table indexed by date (values not yet numeric)."""
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
        dates = _parse_dates(frame[date_col], where, str(date_col))
        long = pd.DataFrame(
            {"date": dates, "ticker": frame[ticker_col].astype(str).to_numpy(), "price": frame[price_col]}
        )
        dup = long.duplicated(["date", "ticker"], keep=False)
        if dup.any():
            first = long[dup].iloc[0]
            dup_dates = long.loc[dup & (long["ticker"] == first["ticker"]), "date"].unique()
            raise _fail(
                where,
                f"duplicate dates for ticker '{first['ticker']}': {_fmt_dates(dup_dates)}; "
                "keep one row per date and ticker",
            )
        wide = long.pivot(index="date", columns="ticker", values="price")
        wide.columns.name = None
        return wide, FORM_LONG
    if ticker_col is not None and price_col is None:
        raise _fail(
            where,
            f"long form detected (column '{ticker_col}') but no price column; name it 'close' or 'price'",
        )
    dates = _parse_dates(frame[date_col], where, str(date_col))
    wide = frame.drop(columns=[date_col])
    wide.index = dates
    wide.columns = [str(c) for c in wide.columns]
    if dates.duplicated().any():
        raise _fail(
            where,
            f"duplicate dates: {_fmt_dates(dates[dates.duplicated()].unique())}; keep one row per date",
        )
    return wide, FORM_WIDE


def _to_numeric(wide: pd.DataFrame, where: str) -> pd.DataFrame:
    out = {}
    for ticker in wide.columns:
        col = wide[ticker]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()  # read_csv already turned empty/NaN/NA cells into NaN
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(
                where,
                f"ticker '{ticker}' has a non-numeric price {col.iloc[i]!r} on "
                f"{_fmt_dates([wide.index[i]])}; prices must be numbers",
            )
        out[ticker] = num.astype("float64")
    return pd.DataFrame(out, index=wide.index)


def _check_values(prices: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """Check finiteness and positivity; trim leading NaNs of late starters (see module docstring)."""
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
    start = max(first_valid.values())
    if start > 0:
        late = max(first_valid, key=first_valid.__getitem__)
        notes.append(
            f"ticker '{late}' starts on {_fmt_dates([prices.index[start]])}: history trimmed to start there "
            f"({start} earlier dates dropped) so every ticker has a price on every date"
        )
        prices = prices.iloc[start:]
    nonpos = prices.to_numpy() <= 0
    if nonpos.any():
        i, j = (int(x[0]) for x in np.nonzero(nonpos))
        raise _fail(
            where,
            f"ticker '{prices.columns[j]}' has a non-positive price ({prices.iat[i, j]}) on "
            f"{_fmt_dates([prices.index[i]])}; prices must be > 0 (use adjusted close prices)",
        )
    return prices


def load_prices(source: str | Path = SP500) -> PriceData:
    """Load and validate daily prices.

    Args:
        source: ``"sp500"`` for the bundled data, or the path of a CSV/Parquet file.

    Returns:
        The validated prices.

    Raises:
        DataError: anything wrong with the input; the message names the file, ticker and dates.
    """
    notes: list[str] = []
    if str(source) == SP500:
        where = "sp500 (bundled)"
        prices = _load_bundled().astype("float64")
        prices.index = pd.DatetimeIndex(prices.index).normalize()
        prices.columns = [str(c) for c in prices.columns]
        form = FORM_BUNDLED
    else:
        path = Path(source).expanduser()
        where = str(source)
        wide, form = _to_wide(_read_table(path), where)
        prices = _to_numeric(wide, where)
    if not prices.index.is_monotonic_increasing:
        notes.append("dates were not in ascending order: sorted")
        prices = prices.sort_index()
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
    """CLI: ``python -m envs.data [SOURCE] [--exp NAME]``."""
    import argparse

    from envs.features import FeatureConfig
    from envs.folds import experiment_data_section, experiment_folds, fold_summary

    parser = argparse.ArgumentParser(prog="python -m envs.data", description="Validate and summarise prices.")
    parser.add_argument(
        "source", nargs="?", default=None, help="'sp500' (default) or a CSV/Parquet path; with --exp, its data.source"
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
            data = load_prices(source or SP500)
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
