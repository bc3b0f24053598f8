"""envs.data: loading, form detection, validation errors (exact), splits and the CLI."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from envs import data as data_module
from envs.data import DataError, load_prices, split_ranges
from tests.conftest import synthetic_prices, write_wide_csv

DATE_FORMAT_FIX = (
    "give the format, e.g. '%d/%m/%Y': data.date_format in an experiment (--set data.date_format=%d/%m/%Y), "
    "--date-format with python -m envs.data"
)
DAILY_FIX = (
    "the feature windows, the purge gap and annualised figures count rows as trading days, so give daily prices "
    "(one row per trading day)"
)
SORT_FIX = (
    "sort the file by date, or have it sorted on loading: data.sort_dates in an experiment "
    "(--set data.sort_dates=true), --sort-dates with python -m envs.data"
)


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
    long.to_csv(path, index=False)  # one ticker after the other, each in date order: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_prices(str(path))
    assert data.form == "long" and data.warnings == []
    np.testing.assert_allclose(data.prices[prices.columns].to_numpy(), prices.to_numpy(), rtol=1e-12)


def test_long_form_out_of_order_refused_unless_sorting_asked(tmp_path):
    prices = synthetic_prices(n_days=300)
    long = prices.rename_axis("date").reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    path = tmp_path / "long.csv"
    long.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    assert _err(str(path)) == (
        f"{path}: dates of ticker 'A1' are not in increasing order: row 4 (2010-06-04) comes after row 2 "
        f"(2010-09-29); {SORT_FIX}"
    )
    with pytest.warns(UserWarning, match=r"long\.csv: dates were not in ascending order: sorted"):
        data = load_prices(str(path), sort_dates=True)
    np.testing.assert_allclose(data.prices[prices.columns].to_numpy(), prices.to_numpy(), rtol=1e-12)


def test_unsorted_dates_refused_unless_sorting_asked(tmp_path):
    prices = synthetic_prices(n_days=300)
    path = write_wide_csv(tmp_path / "p.csv", prices.iloc[::-1])
    assert _err(path) == (
        f"{path}: dates are not in increasing order: row 3 (2011-02-24) comes after row 2 (2011-02-25); {SORT_FIX}"
    )
    with pytest.warns(UserWarning, match=r"p\.csv: dates were not in ascending order: sorted"):
        data = load_prices(path, sort_dates=True)
    assert data.prices.index.is_monotonic_increasing
    np.testing.assert_allclose(data.prices.to_numpy(), prices.to_numpy(), rtol=1e-12)


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
        f"{p}: column 'date' has a value that is not a date in row 3: 'not-a-date'; use ISO dates like 2020-01-31 "
        f"or {DATE_FORMAT_FIX}"
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


def _wide_csv(path, dates: list[str], sep: str = ",", header: str = "date,A,B", encoding: str = "utf-8") -> str:
    """A wide CSV: ``header`` then one row per date with prices A = 100 + i and B = 50 + i."""
    lines = [header.replace(",", sep)] + [sep.join([d, str(100 + i), str(50 + i)]) for i, d in enumerate(dates)]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return str(path)


@pytest.mark.parametrize(
    ("written", "fmt", "expected"),
    [
        # Read month-first, these became 1 Nov, 1 Dec, 13 Jan, 14 Jan and were silently reordered.
        (["11/01/2020", "12/01/2020", "13/01/2020", "14/01/2020"], "%d/%m/%Y", "2020-01-11"),
        (["12/30/2019", "12/31/2019", "01/02/2020", "01/03/2020"], "%m/%d/%Y", "2019-12-30"),
        (["30.12.2019", "31.12.2019", "02.01.2020", "03.01.2020"], "%d.%m.%Y", "2019-12-30"),
        (["30 Dec 2019", "31 Dec 2019", "2 Jan 2020", "3 Jan 2020"], "%d %b %Y", "2019-12-30"),
    ],
)
def test_the_one_fitting_date_format_is_used_with_warning(tmp_path, written, fmt, expected):
    path = _wide_csv(tmp_path / "p.csv", written)
    with pytest.warns(UserWarning) as caught:
        data = load_prices(path)
    assert [str(w.message) for w in caught] == [
        f"{path}: column 'date' read with date format '{fmt}', the only one that fits every value; pass "
        "data.date_format (--date-format with python -m envs.data) to read it otherwise"
    ]
    assert data.prices.index[0] == pd.Timestamp(expected)
    assert data.prices.index.is_monotonic_increasing
    assert data.prices["A"].tolist() == [100.0, 101.0, 102.0, 103.0]  # rows kept in the order written


def test_ambiguous_day_month_refused_until_format_given(tmp_path):
    # Every day and month is <= 12 and both readings increase: only the user knows which is meant.
    path = _wide_csv(tmp_path / "p.csv", ["03/02/2020", "04/02/2020", "05/02/2020"])
    assert _err(path) == (
        f"{path}: column 'date' has ambiguous dates: row 2 '03/02/2020' reads as 2020-02-03 ('%d/%m/%Y') or "
        f"2020-03-02 ('%m/%d/%Y'); {DATE_FORMAT_FIX}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit format is not a guess: no warning
        day_first = load_prices(path, date_format="%d/%m/%Y")
    assert list(day_first.prices.index) == list(pd.to_datetime(["2020-02-03", "2020-02-04", "2020-02-05"]))
    # Read month-first the rows are a month apart: not daily data, and the message points at the format.
    with pytest.raises(DataError) as info:
        load_prices(path, date_format="%m/%d/%Y")
    assert str(info.value) == (
        f"{path}: dates are monthly, not daily: consecutive dates are a median 30.5 days apart (2020-03-02, "
        f"2020-04-02, 2020-05-02: 3 dates); {DAILY_FIX}; or check date_format '%m/%d/%Y'"
    )


def test_dates_increasing_only_one_way_are_ambiguous_and_a_wrong_format_is_caught(tmp_path):
    days = ["08/01/2020", "09/01/2020", "10/01/2020", "11/01/2020", "12/01/2020", "01/02/2020"]
    path = _wide_csv(tmp_path / "p.csv", days)
    assert _err(path) == (
        f"{path}: column 'date' has ambiguous dates: row 2 '08/01/2020' reads as 2020-01-08 ('%d/%m/%Y') or "
        f"2020-08-01 ('%m/%d/%Y'); {DATE_FORMAT_FIX}"
    )
    with pytest.raises(DataError) as info:
        load_prices(path, date_format="%m/%d/%Y")  # 1 Aug .. 1 Dec, then 2 Jan: goes backwards as written
    assert str(info.value) == (
        f"{path}: dates are not in increasing order: row 7 (2020-01-02) comes after row 6 (2020-12-01); "
        f"{SORT_FIX}; or check date_format '%m/%d/%Y'"
    )
    assert load_prices(path, date_format="%d/%m/%Y").prices.index[-1] == pd.Timestamp("2020-02-01")


def test_layouts_beyond_the_usual_are_guessed_and_still_checked_for_ambiguity(tmp_path):
    path = _wide_csv(tmp_path / "p.csv", ["Mon 03/02/2020", "Tue 04/02/2020"])
    assert _err(path) == (
        f"{path}: column 'date' has ambiguous dates: row 2 'Mon 03/02/2020' reads as 2020-03-02 ('%a %m/%d/%Y') or "
        f"2020-02-03 ('%a %d/%m/%Y'); {DATE_FORMAT_FIX}"
    )
    # Excel's text marker before a year-first date: guessed, and no year-day-month reading is invented.
    quoted = _wide_csv(tmp_path / "q.csv", ["'2020-01-02", "'2020-01-03"])
    with pytest.warns(UserWarning, match="column 'date' read with date format ''%Y-%m-%d', the only one"):
        assert load_prices(quoted).prices.index[1] == pd.Timestamp("2020-01-03")


def test_mixed_and_mismatched_date_formats(tmp_path):
    path = _wide_csv(tmp_path / "p.csv", ["2020-01-02", "2020-01-03", "06/01/2020"])
    assert _err(path) == (
        f"{path}: column 'date' mixes date formats: row 2 '2020-01-02' and row 4 '06/01/2020' fit no single "
        "format; write every date the same way (ISO like 2020-01-31)"
    )
    with pytest.raises(DataError) as info:
        load_prices(path, date_format="%d/%m/%Y")
    assert str(info.value) == (
        f"{path}: column 'date' has a value that does not match date_format '%d/%m/%Y' in row 2: '2020-01-02'; "
        "fix the value or the format"
    )


def test_missing_date(tmp_path):
    path = _wide_csv(tmp_path / "p.csv", ["2020-01-02", " ", "2020-01-06"])
    assert _err(path) == f"{path}: column 'date' has no date in row 3; give every row a date"


def test_time_of_day_and_zone_offsets_keep_the_written_date(tmp_path):
    written = ["2020-03-06T00:00:00-05:00", "2020-03-09T00:00:00-04:00", "2020-03-10 16:00:00Z"]
    path = _wide_csv(tmp_path / "p.csv", written)
    expected = list(pd.to_datetime(["2020-03-06", "2020-03-09", "2020-03-10"]))
    assert list(load_prices(path).prices.index) == expected
    explicit = _wide_csv(tmp_path / "q.csv", written[:2])  # offsets that differ: pandas refuses to mix them
    assert list(load_prices(explicit, date_format="%Y-%m-%dT%H:%M:%S%z").prices.index) == expected[:2]


def test_parquet_dates_in_the_index_or_zoned(tmp_path):
    prices = synthetic_prices(n_days=50)
    zoned = prices.set_axis(prices.index.tz_localize("America/New_York").rename("Datum"), axis=0)
    zoned.to_parquet(tmp_path / "zoned.parquet")  # a zone-aware DatetimeIndex, not named like a date column
    assert load_prices(str(tmp_path / "zoned.parquet")).prices.index.equals(prices.index)
    text_index = prices.set_axis(prices.index.strftime("%Y-%m-%d").rename("date"), axis=0)
    text_index.to_parquet(tmp_path / "text.parquet")
    np.testing.assert_array_equal(load_prices(str(tmp_path / "text.parquet")).prices.to_numpy(), prices.to_numpy())
    long = prices.rename_axis("date").reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    long.set_index(["date", "ticker"]).to_parquet(tmp_path / "long.parquet")
    data = load_prices(str(tmp_path / "long.parquet"))
    assert data.form == "long"
    np.testing.assert_array_equal(data.prices[prices.columns].to_numpy(), prices.to_numpy())


def test_numbers_as_dates(tmp_path):
    path = _wide_csv(tmp_path / "p.csv", ["20200102", "20200103", "20200106"])
    assert load_prices(path).prices.index[-1] == pd.Timestamp("2020-01-06")
    frame = pd.DataFrame({"date": [20200102, 20200103], "A": [1.0, 2.0], "B": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "ymd.parquet")
    assert load_prices(str(tmp_path / "ymd.parquet")).prices.index[1] == pd.Timestamp("2020-01-03")
    frame.assign(date=[1577923200, 1578009600]).to_parquet(tmp_path / "epoch.parquet")  # seconds since 1970
    q = tmp_path / "epoch.parquet"
    assert _err(str(q)) == (
        f"{q}: column 'date' holds numbers, not dates (row 1: 1577923200); store dates as dates or ISO text like "
        "2020-01-31"
    )


def test_duplicate_column_names_refused(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,A,B,A\n2020-01-02,1,2,3\n2020-01-03,1,2,3\n")
    assert _err(str(path)) == (
        f"{path}: column 'A' appears twice in the header (columns 2 and 4); keep one column per ticker"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = tmp_path / "p.parquet"
    pq.write_table(pa.table([pa.array(["2020-01-02"]), pa.array([1.0]), pa.array([2.0])], names=["date", "B", "B"]), q)
    assert _err(str(q)) == f"{q}: column 'B' appears twice in the header (columns 2 and 3); keep one column per ticker"


def test_duplicate_date_and_ticker_rows_far_apart_in_long_form(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text(
        "date,ticker,close\n2020-01-02,A,1\n2020-01-03,A,1\n2020-01-02,B,2\n2020-01-03,B,2\n2020-01-03,B,2\n"
    )
    assert _err(str(path)) == f"{path}: duplicate dates for ticker 'B': 2020-01-03; keep one row per date and ticker"


@pytest.mark.parametrize(
    ("last_a", "shown", "ratio"),
    [(101e6, "1.01e+08", "1e+06"), (0.101, "0.101", "0.001"), (1112.0, "1112", "11")],
)
def test_implausible_one_day_move_refused(tmp_path, last_a, shown, ratio):
    path = tmp_path / "p.csv"
    path.write_text(f"date,A,B\n2020-01-02,100,50\n2020-01-03,101,51\n2020-01-06,{last_a},52\n")
    assert _err(str(path)) == (
        f"{path}: ticker 'A' moves from 101 on 2020-01-03 to {shown} on 2020-01-06 (x{ratio}), outside the plausible "
        "one-day range x0.01..x11; check for a change of units or a missing split adjustment (use adjusted close "
        "prices)"
    )


def test_large_real_moves_inside_the_bounds_pass(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,A,B\n2020-01-02,100,50\n2020-01-03,1000,51\n2020-01-06,20,52\n")  # x10 then x0.02
    assert load_prices(str(path)).prices["A"].tolist() == [100.0, 1000.0, 20.0]


@pytest.mark.parametrize(
    ("scale", "shown", "side", "bound"),
    [(1e-300, "1e-300", "below the minimum", "1e-06"), (1e300, "1e+300", "above the maximum", "1e+15")],
)
def test_prices_outside_the_bounds_refused(tmp_path, scale, shown, side, bound):
    path = tmp_path / "p.csv"
    path.write_text(f"date,A,B\n2020-01-02,100,{scale!r}\n2020-01-03,101,{scale * 1.01!r}\n")
    assert _err(str(path)) == (
        f"{path}: ticker 'B' has a price of {shown} on 2020-01-02, {side} {bound}; check the units: quote the asset "
        "in a unit (e.g. per 1000 shares or tokens) that keeps prices between 1e-06 and 1e+15"
    )


def test_prices_at_the_minimum_give_finite_features(tmp_path):
    from envs.features import FeatureConfig, compute_features

    prices = synthetic_prices(n_days=200)
    prices *= data_module.MIN_PRICE / prices.to_numpy().min()
    data = load_prices(write_wide_csv(tmp_path / "p.csv", prices))
    assert data.prices.to_numpy().min() == pytest.approx(1e-6, rel=1e-9)
    assert np.isfinite(compute_features(data.prices)[FeatureConfig().lookback :]).all()


def test_non_finite_returns_refused_even_with_the_bounds_loosened(tmp_path, monkeypatch):
    for name, value in (
        ("MIN_PRICE", 0.0),
        ("MAX_PRICE", np.inf),
        ("MIN_DAILY_RATIO", 0.0),
        ("MAX_DAILY_RATIO", np.inf),
    ):
        monkeypatch.setattr(data_module, name, value)
    path = tmp_path / "p.csv"
    path.write_text("date,A,B\n2020-01-02,1e-300,50\n2020-01-03,1e300,51\n")  # 1e300 / 1e-300 overflows
    assert _err(str(path)) == (
        f"{path}: ticker 'A' has a non-finite daily return on 2020-01-03 (price 1e-300 then 1e+300); check the prices"
    )


@pytest.mark.parametrize(
    ("sep", "encoding", "header"),
    [
        (";", "utf-8", "date,A,B"),
        ("\t", "utf-8", "date,A,B"),
        ("|", "utf-8", "date,A,B"),
        (",", "utf-8-sig", "date,A,B"),
        (",", "utf-8", " Date , A , B "),
    ],
)
def test_csv_dialects_give_the_same_prices(tmp_path, sep, encoding, header):
    dates = ["2020-01-02", "2020-01-03", "2020-01-06"]
    path = _wide_csv(tmp_path / "p.csv", dates, sep=sep, header=header, encoding=encoding)
    data = load_prices(path)
    assert data.tickers == ["A", "B"]
    assert data.prices.index.equals(pd.DatetimeIndex(dates))
    assert data.prices.to_numpy().tolist() == [[100.0, 50.0], [101.0, 51.0], [102.0, 52.0]]


def test_header_problems(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,,B\n2020-01-02,1,2\n")
    assert _err(str(p)) == (
        f"{p}: column 2 has no name in the header; name the date column 'date' and each price column after its ticker"
    )
    p.write_text(",date,A,B\n0,2020-01-02,1,2\n")  # an index column written by pandas
    assert _err(str(p)).startswith(f"{p}: column 1 has no name in the header;")
    p.write_text("date,A,B\n2020-01-02,1,2,\n2020-01-03,1,2,\n")  # trailing separators
    assert _err(str(p)) == (
        f"{p}: line 2 has 4 fields but line 1 (the header) has 3; give every line one value per header column (no "
        "title lines above the header, no trailing separators)"
    )
    p.write_bytes("date,Société,B\n2020-01-02,1,2\n".encode("latin-1"))
    assert _err(str(p)) == f"{p}: not UTF-8 text (invalid continuation byte at byte 9); save the file as UTF-8"


def test_missing_cells_and_a_ticker_called_na(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,NA,B\n2020-01-02,1,NA\n2020-01-03,1,#N/A\n2020-01-06,1,2\n2020-01-07,1,2\n")
    with pytest.warns(UserWarning, match="ticker 'B' starts on 2020-01-06: history trimmed"):
        data = load_prices(str(p))
    assert data.tickers == ["NA", "B"] and len(data.prices) == 2


def test_empty_ticker_in_long_form(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("date,ticker,close\n2020-01-02,A,1\n2020-01-02, ,2\n")
    assert _err(str(p)) == f"{p}: column 'ticker' has no ticker in row 3 (2020-01-02); give every row a ticker"
    p.write_text("date,ticker,close\n2020-01-02,A,1\n2020-01-02,NA,2\n")  # a real ticker, not a missing value
    assert load_prices(str(p)).tickers == ["A", "NA"]


def test_columns_that_are_not_prices(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("date,A,B,name\n2020-01-02,1,2,Apple\n2020-01-03,1,2,5\n2020-01-06,1,2,Apple\n")
    assert _err(str(p)) == (
        f"{p}: ticker 'name' has a non-numeric price 'Apple' on 2020-01-02; prices must be numbers (remove column "
        "'name' if it does not hold prices)"
    )
    p.write_text("date;A;B\n2020-01-02;1,5;2\n")
    assert _err(str(p)) == (
        f"{p}: ticker 'A' has a non-numeric price '1,5' on 2020-01-02; prices must be numbers without thousands "
        "separators and with '.' as the decimal point"
    )
    q = tmp_path / "p.parquet"
    pd.DataFrame({"date": ["2020-01-02"], "A": [True], "B": [1.0]}).to_parquet(q)
    assert _err(str(q)) == f"{q}: ticker 'A' holds bool values, not prices; remove the column"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "envs.data", *args], capture_output=True, text=True)


def test_cli_date_format_and_sort_dates(tmp_path):
    prices = synthetic_prices()
    # 600 dates whose day of month is <= 12, written day-first and newest first: ambiguous without
    # --date-format, out of order without --sort-dates.
    days = pd.DatetimeIndex([d for d in pd.bdate_range("2010-01-01", periods=2000) if d.day <= 12][: len(prices)])
    path = tmp_path / "dm.csv"
    prices.set_axis(days.strftime("%d/%m/%Y").rename("date"), axis=0).iloc[::-1].to_csv(path)
    res = _cli(str(path))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {path}: column 'date' has ambiguous dates: row 2 '12/10/2015' reads as 2015-10-12 ('%d/%m/%Y') "
        f"or 2015-12-10 ('%m/%d/%Y'); {DATE_FORMAT_FIX}"
    )
    res = _cli(str(path), "--date-format", "%d/%m/%Y")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {path}: dates are not in increasing order: row 3 (2015-10-09) comes after row 2 (2015-10-12); "
        f"{SORT_FIX}; or check date_format '%d/%m/%Y'"
    )
    ok = _cli(str(path), "--date-format", "%d/%m/%Y", "--sort-dates")
    assert ok.returncode == 0, ok.stderr
    assert "dates:    600 rows, 2010-01-01 .. 2015-10-12" in ok.stdout
    assert ok.stdout.endswith("warnings: \n  - dates were not in ascending order: sorted\n")
