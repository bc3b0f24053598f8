"""envs.data: loading, form detection, validation errors (exact), splits and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from envs.data import DataError, load_prices, split_ranges
from tests.conftest import synthetic_prices, write_wide_csv


def _err(source) -> str:
    with pytest.raises(DataError) as info:
        load_prices(source)
    return str(info.value)


def test_bundled_sp500_loads_without_network():
    data = load_prices("sp500")
    assert data.form == "bundled"
    assert len(data.tickers) == 20 and "AAPL" in data.tickers
    assert data.prices.index[0] == pd.Timestamp("1990-01-02")
    assert data.prices.index[-1] == pd.Timestamp("2022-12-28")
    assert np.isfinite(data.prices.to_numpy()).all() and (data.prices.to_numpy() > 0).all()


def test_wide_csv_and_parquet(tmp_path):
    prices = synthetic_prices(n_days=300)
    csv = write_wide_csv(tmp_path / "p.csv", prices)
    data = load_prices(csv)
    assert data.form == "wide" and data.tickers == ["A0", "A1", "A2"]
    np.testing.assert_allclose(data.prices.to_numpy(), prices.to_numpy(), rtol=1e-12)
    pq_path = tmp_path / "p.parquet"
    prices.rename_axis("Date").to_parquet(pq_path)  # a DatetimeIndex named Date
    assert load_prices(str(pq_path)).form == "wide"


def test_long_form_detected(tmp_path):
    prices = synthetic_prices(n_days=300)
    long = prices.rename_axis("date").reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    path = tmp_path / "long.csv"
    long.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # rows in any order: pivoted by date
    data = load_prices(str(path))
    assert data.form == "long"
    np.testing.assert_allclose(data.prices[prices.columns].to_numpy(), prices.to_numpy(), rtol=1e-12)


def test_unsorted_dates_sorted_with_warning(tmp_path):
    prices = synthetic_prices(n_days=300)
    path = write_wide_csv(tmp_path / "p.csv", prices.iloc[::-1])
    with pytest.warns(UserWarning, match=r"p\.csv: dates were not in ascending order: sorted"):
        data = load_prices(path)
    assert data.prices.index.is_monotonic_increasing


def test_late_starter_trims_history_with_warning(tmp_path):
    prices = synthetic_prices(n_days=300)
    prices.iloc[:10, 1] = np.nan
    path = write_wide_csv(tmp_path / "p.csv", prices)
    with pytest.warns(UserWarning, match="ticker 'A1' starts on 2010-01-18: history trimmed"):
        data = load_prices(path)
    assert len(data.prices) == 290 and data.tickers == ["A0", "A1", "A2"]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.csv"
    assert _err(str(p)) == (f"{p}: file not found; pass 'sp500' for the bundled data or the path of a CSV/Parquet file")


def test_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    assert _err(str(p)) == f"{p}: file is empty; expected a CSV/Parquet table of daily prices"


def test_not_a_table(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"this is not parquet at all")
    assert _err(str(p)).startswith(f"{p}: not a readable PARQUET table (")
    q = tmp_path / "x.xlsx"
    q.write_text("a")
    assert _err(str(q)) == f"{q}: unsupported file type '.xlsx'; use .csv or .parquet"


def test_no_date_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("when,A,B\n2020-01-01,1,2\n")
    assert _err(str(p)) == (
        f"{p}: no date column (looked for date, datetime, timestamp, time, day); columns are 'when', 'A', "
        "'B'; name the date column 'date'"
    )


def test_unparsable_dates(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B\n2020-01-01,1,2\nnot-a-date,1,2\n")
    assert _err(str(p)) == (
        f"{p}: column 'date' has a value that is not a date in row 3: 'not-a-date'; use ISO dates like 2020-01-31"
    )


def test_duplicate_dates_wide_and_long(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,1,2\n2020-01-02,1,2\n")
    assert _err(str(p)) == f"{p}: duplicate dates: 2020-01-02; keep one row per date"
    q = tmp_path / "l.csv"
    q.write_text("date,ticker,close\n2020-01-01,A,1\n2020-01-01,B,2\n2020-01-01,B,3\n")
    assert _err(str(q)) == (f"{q}: duplicate dates for ticker 'B': 2020-01-01; keep one row per date and ticker")


def test_non_numeric(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,abc,2\n")
    assert _err(str(p)) == (f"{p}: ticker 'A' has a non-numeric price 'abc' on 2020-01-02; prices must be numbers")


def test_nan_and_inf_inside_series(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,,2\n2020-01-03,1,2\n")
    assert _err(str(p)) == (
        f"{p}: ticker 'A' has missing (NaN) prices on 2020-01-02 after it started trading on 2020-01-01; "
        "fill or remove the gaps"
    )
    q = tmp_path / "q.csv"
    q.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,1,inf\n")
    assert _err(str(q)) == f"{q}: ticker 'B' has an infinite price on 2020-01-02"


def test_non_positive_prices(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,1,0\n")
    assert _err(str(p)) == (
        f"{p}: ticker 'B' has a non-positive price (0.0) on 2020-01-02; prices must be > 0 (use adjusted close prices)"
    )


def test_fewer_than_two_assets(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A\n2020-01-01,1\n2020-01-02,1\n")
    assert _err(str(p)) == f"{p}: found 1 asset(s) ('A'); at least 2 are needed"


def test_too_few_rows_for_splits(tmp_path):
    path = write_wide_csv(tmp_path / "p.csv", synthetic_prices(n_days=200))
    data = load_prices(path)
    with pytest.raises(DataError) as info:
        split_ranges(data, lookback=60)
    assert str(info.value) == (
        f"{path}: too few rows for split 'validation' (2010-07-19..2010-08-27): 0 usable dates after the "
        "60-day feature window/purge gap, need at least 30; the data has 200 dates "
        "(2010-01-04..2010-10-08); provide more history or change the split dates"
    )


def test_default_splits_sp500_with_purge_gap():
    data = load_prices("sp500")
    s = split_ranges(data, lookback=60)
    assert s["train"].start_date == pd.Timestamp("2005-01-03")
    assert s["train"].end_date == pd.Timestamp("2016-12-30")
    # purge: validation starts 60 rows after the last training row, test 60 rows after validation.
    assert s["validation"].start == s["train"].end + 61
    assert s["test"].start == s["validation"].end + 61
    assert s["validation"].end_date == pd.Timestamp("2018-12-31")
    assert s["test"].end_date == pd.Timestamp("2022-12-28")


def test_default_splits_user_file_70_15_15(price_csv):
    data = load_prices(price_csv)
    s = split_ranges(data, lookback=20)
    # 600 rows: train rows 0..419 (from row 20), validation 420..509 (+20 purge), test 510..599 (+20).
    assert (s["train"].start, s["train"].end) == (20, 419)
    assert (s["validation"].start, s["validation"].end) == (440, 509)
    assert (s["test"].start, s["test"].end) == (530, 599)


def test_cli_summary_and_error(tmp_path, price_csv):
    ok = subprocess.run([sys.executable, "-m", "envs.data", price_csv], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "form:     wide" in ok.stdout and "tickers:  3: A0, A1, A2" in ok.stdout
    assert "validation" in ok.stdout and "warnings: none" in ok.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("date,A,B\n2020-01-01,1,-2\n")
    res = subprocess.run([sys.executable, "-m", "envs.data", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {bad}: ticker 'B' has a non-positive price (-2.0) on 2020-01-01; prices must be > 0 "
        "(use adjusted close prices)"
    )
    assert "Traceback" not in res.stderr
