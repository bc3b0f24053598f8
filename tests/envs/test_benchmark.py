"""envs.benchmark: the bundled index offline, FILE:COLUMN in every form the price reader takes, returns paired by
holding period (computed by hand), and the exact one-line errors."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from envs.benchmark import PRICE_INDEX_NOTE, benchmark_returns, load_benchmark, parse_benchmark
from envs.data import DataError, load_prices

FORMS = (
    "give 'sp500' (skfolio's bundled S&P 500 index) or FILE:COLUMN (a CSV/Parquet file with a date column and the "
    "price column COLUMN, e.g. prices.csv:SPY)"
)


def _err(spec: str) -> str:
    with pytest.raises(DataError) as info:
        load_benchmark(spec)
    return str(info.value)


def test_bundled_index_loads_offline_and_covers_the_bundled_prices(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bench = load_benchmark("sp500")
    assert (bench.source, bench.column, bench.label) == ("sp500", "SP500", "S&P 500 price index")
    assert bench.notes == [PRICE_INDEX_NOTE]  # dividends are not in it
    assert bench.prices.index[0] == pd.Timestamp("1990-01-02") and bench.prices.iloc[0] == pytest.approx(359.69)
    assert bench.prices.index.equals(load_prices("sp500").prices.index)  # every day of the bundled data
    assert np.isfinite(bench.prices.to_numpy()).all() and (bench.prices.to_numpy() > 0).all()


def _prices(n: int = 40, start: str = "2021-01-04") -> pd.DataFrame:
    days = pd.bdate_range(start, periods=n)
    return pd.DataFrame(
        {"SPY": 100.0 * 1.001 ** np.arange(n), "QQQ": 50.0 + np.arange(n), "name": "x"}, index=days
    ).rename_axis("date")


def test_returns_are_paired_by_holding_period_by_hand(tmp_path):
    frame = _prices()
    frame.to_csv(tmp_path / "b.csv", date_format="%Y-%m-%d")
    bench = load_benchmark(f"{tmp_path / 'b.csv'}:QQQ")  # a text column beside it is never read
    assert bench.label == "QQQ (b.csv)" and bench.column == "QQQ"
    days = frame.index[[3, 4, 5, 8]]  # a window whose calendar lacks days 6 and 7 of the benchmark
    # QQQ = 50 + i: 53 -> 54 -> 55, then 55 -> 58 over the two days the window's market was closed
    np.testing.assert_allclose(benchmark_returns(bench, days), [54 / 53 - 1, 55 / 54 - 1, 58 / 55 - 1], rtol=1e-15)
    assert benchmark_returns(bench, list(frame.index[:1])).size == 0


def test_long_form_and_parquet_files(tmp_path):
    frame = _prices()[["SPY", "QQQ"]]
    long = frame.reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    long = long[~((long["ticker"] == "QQQ") & (long["date"] == frame.index[10]))]  # QQQ lacks one day
    long.to_csv(tmp_path / "long.csv", index=False, date_format="%Y-%m-%d")
    spy = load_benchmark(f"{tmp_path / 'long.csv'}:SPY")
    np.testing.assert_allclose(spy.prices.to_numpy(), frame["SPY"].to_numpy(), rtol=1e-12)
    qqq = load_benchmark(f"{tmp_path / 'long.csv'}:QQQ")
    assert len(qqq.prices) == len(frame) - 1  # the other ticker's dates are not gaps of this one
    day = frame.index[10].date()
    with pytest.raises(DataError) as info:
        benchmark_returns(qqq, frame.index[5:20])
    assert str(info.value) == (
        f"{tmp_path / 'long.csv'}: column 'QQQ' has no price on {day} (1 of the 15 days of the evaluated window "
        f"{frame.index[5].date()} .. {frame.index[19].date()} lack one; it has prices {frame.index[0].date()} .. "
        f"{frame.index[-1].date()}); give the benchmark a price on every trading day of the window, or evaluate a "
        "window it covers"
    )
    frame.to_parquet(tmp_path / "b.parquet")  # dates in the index
    parquet = load_benchmark(f"{tmp_path / 'b.parquet'}:SPY")
    assert parquet.prices.index.equals(frame.index)


def test_a_window_the_bundled_index_does_not_cover_names_the_first_missing_day():
    bench = load_benchmark("sp500")
    days = pd.DatetimeIndex(["2022-12-27", "2022-12-28", "2022-12-29", "2022-12-30"])
    with pytest.raises(DataError) as info:
        benchmark_returns(bench, days)
    assert str(info.value) == (
        "sp500 (skfolio's bundled S&P 500 index): column 'SP500' has no price on 2022-12-29 (2 of the 4 days of the "
        "evaluated window 2022-12-27 .. 2022-12-30 lack one; it has prices 1990-01-02 .. 2022-12-28); give the "
        "benchmark a price on every trading day of the window, or evaluate a window it covers"
    )


@pytest.mark.parametrize("spec", ["spx", "prices.csv", ":SPY", "prices.csv:", " : "])
def test_a_spec_in_neither_form_is_refused(spec):
    assert _err(spec) == f"benchmark {spec!r}: {FORMS}"


def test_parse_keeps_colons_of_the_path():
    assert parse_benchmark("C:/data/idx.csv:SPY") == ("C:/data/idx.csv", "SPY")
    assert parse_benchmark(" sp500 ") == ("sp500", "SP500")


def test_file_errors_name_the_file_and_list_the_columns(tmp_path):
    missing = tmp_path / "none.csv"
    assert _err(f"{missing}:SPY") == f"{missing}: file not found; {FORMS}"
    path = tmp_path / "b.csv"
    _prices().to_csv(path, date_format="%Y-%m-%d")
    assert _err(f"{path}:spy") == (
        f"{path}: no column 'spy'; its price columns are 'SPY', 'QQQ', 'name'; give FILE:COLUMN with one of them"
    )
    wide = pd.DataFrame(1.0 + np.arange(15.0)[None, :].repeat(30, 0), index=_prices(30).index)
    wide.columns = [f"C{i}" for i in range(15)]
    wide.to_csv(tmp_path / "wide.csv", date_format="%Y-%m-%d")
    listed = ", ".join(f"'C{i}'" for i in range(12))
    assert _err(f"{tmp_path / 'wide.csv'}:X") == (
        f"{tmp_path / 'wide.csv'}: no column 'X'; its price columns are {listed}, ... (15 in all); give FILE:COLUMN "
        "with one of them"
    )
    assert _err(f"{path}:name").startswith(f"{path}: ticker 'name' has a non-numeric price 'x' on 2021-01-04")


def test_prices_are_validated_like_price_data(tmp_path):
    monthly = _prices(30).iloc[:, :2].set_axis(pd.date_range("2020-01-31", periods=30, freq="ME"), axis=0)
    monthly.rename_axis("date").to_csv(tmp_path / "m.csv", date_format="%Y-%m-%d")
    assert _err(f"{tmp_path / 'm.csv'}:SPY").startswith(f"{tmp_path / 'm.csv'}: dates are monthly, not daily")
    bad = _prices()
    bad.iloc[5, 0] = -1.0
    bad.to_csv(tmp_path / "neg.csv", date_format="%Y-%m-%d")
    assert _err(f"{tmp_path / 'neg.csv'}:SPY") == (
        f"{tmp_path / 'neg.csv'}: ticker 'SPY' has a non-positive price (-1.0) on 2021-01-11; prices must be > 0 "
        "(use adjusted close prices)"
    )
