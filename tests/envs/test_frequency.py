"""envs.frequency through envs.data: daily trading data only (exact refusals), and forward-filled rows warned about."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from envs.data import DataError, load_prices
from tests.conftest import write_wide_csv

DAILY_FIX = (
    "the feature windows, the purge gap and annualised figures count rows as trading days, so give daily prices "
    "(one row per trading day)"
)
FLAT_FIX = (
    "as days without trading filled with the last price do: each is a zero return the agent trains and is scored "
    "on; remove those rows (keep the trading days only)"
)
# New York's weekday market holidays after 2 January 2019, for trading days that can be counted by hand.
HOLIDAYS = pd.DatetimeIndex(
    [
        *("2019-01-21", "2019-02-18", "2019-04-19", "2019-05-27", "2019-07-04", "2019-09-02", "2019-11-28"),
        *("2019-12-25", "2020-01-01", "2020-01-20", "2020-02-17", "2020-04-10", "2020-05-25", "2020-07-03"),
        *("2020-09-07", "2020-11-26", "2020-12-25"),
    ]
)


def _prices(dates, n_assets: int = 3, seed: int = 0) -> pd.DataFrame:
    """Random-walk prices (1% daily moves: no price repeats) on ``dates``."""
    rng = np.random.default_rng(seed)
    values = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((len(dates), n_assets)), axis=0))
    return pd.DataFrame(values, index=pd.DatetimeIndex(dates), columns=[f"A{i}" for i in range(n_assets)])


def _trading_days(start: str = "2019-01-02", end: str = "2020-12-31") -> pd.DatetimeIndex:
    return pd.bdate_range(start, end).difference(HOLIDAYS)


def _err(path: str, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_prices(path, **kwargs)
    return str(info.value)


def _quiet_load(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        return load_prices(path)


def _cli(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_weekly_closes_refused_by_load_prices_and_the_cli(tmp_path):
    path = write_wide_csv(tmp_path / "weekly.csv", _prices(pd.date_range("2015-01-02", periods=300, freq="W-FRI")))
    expected = (
        f"{path}: dates are weekly, not daily: consecutive dates are a median 7 days apart (2015-01-02, 2015-01-09, "
        f"2015-01-16, ...: 300 dates); {DAILY_FIX}"
    )
    assert _err(path) == expected
    res = _cli("envs.data", path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == f"error: {expected}"


def test_weekly_data_refused_by_train_before_ray_starts(tmp_path):
    path = write_wide_csv(tmp_path / "weekly.csv", _prices(pd.date_range("2015-01-02", periods=300, freq="W-FRI")))
    out = tmp_path / "run"
    # Nothing listens on this address: had the command reached Ray, it would fail with another message.
    res = _cli("trainer.train", "--exp", "smoke", "--data", path, "--out", str(out), RAY_ADDRESS="127.0.0.1:9")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {path}: dates are weekly, not daily: consecutive dates are a median 7 days apart (2015-01-02, "
        f"2015-01-09, 2015-01-16, ...: 300 dates); {DAILY_FIX}"
    )
    assert not out.exists()  # no run directory, nothing written


@pytest.mark.parametrize(
    ("dates", "described", "shown"),
    [
        # month ends since 1926: a 60-row purge gap would be five years
        (pd.date_range("1926-07-31", periods=1100, freq="ME"), "monthly", "31 days apart (1926-07-31, 1926-08-31"),
        (pd.date_range("2000-03-31", periods=100, freq="QE"), "quarterly", "92 days apart (2000-03-31, 2000-06-30"),
        (pd.date_range("2010-01-01", periods=400, freq="2D"), "every 2 days", "2 days apart (2010-01-01, 2010-01-03"),
    ],
)
def test_other_frequencies_refused(tmp_path, dates, described, shown):
    path = write_wide_csv(tmp_path / "p.csv", _prices(dates))
    message = _err(path)
    assert message.startswith(f"{path}: dates are {described}, not daily: consecutive dates are a median {shown}")
    assert message.endswith(f", ...: {len(dates)} dates); {DAILY_FIX}")


def test_a_weekly_stretch_before_daily_prices_is_refused(tmp_path):
    weekly = pd.date_range("2009-10-02", periods=14, freq="W-FRI")  # 2009-10-02 .. 2010-01-01
    daily = pd.bdate_range("2010-01-04", periods=600)
    path = write_wide_csv(tmp_path / "p.csv", _prices(weekly.append(daily)))
    assert _err(path) == (
        f"{path}: dates from 2009-10-02 to 2010-01-01 are weekly (13 gaps in a row of 7 days) while the rest is "
        "daily; give daily prices for that stretch or remove its rows"
    )


def test_trading_days_with_holidays_missing_days_and_a_closed_week_pass_quietly(tmp_path):
    days = _trading_days("2018-01-02")
    days = days.delete([50, 51, 200, 400])  # a few days missing
    days = days[(days < "2019-03-04") | (days > "2019-03-08")]  # an exchange closed for a week: one 10-day gap
    data = _quiet_load(write_wide_csv(tmp_path / "p.csv", _prices(days)))
    assert data.prices.index.equals(days) and data.warnings == []


@pytest.mark.parametrize(
    "dates",
    [
        ["2020-01-02", "2020-01-03", "2020-01-06"],  # Thursday, Friday, Monday: median gap 2 days
        ["2020-07-02", "2020-07-06", "2020-07-07"],  # across the 3 July holiday: 4 days, then 1
        ["2020-12-24", "2020-12-28"],  # one 4-day gap: Christmas and a weekend
    ],
)
def test_very_short_daily_files_pass(tmp_path, dates):
    path = write_wide_csv(tmp_path / "p.csv", _prices(dates))
    assert list(_quiet_load(path).prices.index) == list(pd.DatetimeIndex(dates))


def test_very_short_weekly_files_refused(tmp_path):
    path = write_wide_csv(tmp_path / "p.csv", _prices(["2020-01-03", "2020-01-10"]))
    assert _err(path) == (
        f"{path}: dates are weekly, not daily: consecutive dates are a median 7 days apart (2020-01-03, 2020-01-10: "
        f"2 dates); {DAILY_FIX}"
    )


def test_seven_day_trading_passes_without_a_warning(tmp_path):
    """Crypto trades every day: weekend rows with their own prices are daily data."""
    path = write_wide_csv(tmp_path / "crypto.csv", _prices(pd.date_range("2019-01-01", periods=800, freq="D")))
    assert len(_quiet_load(path).prices) == 800
    res = _cli("envs.data", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith("warnings: none\n")


def test_calendar_days_forward_filled_are_warned_about_and_trading_days_are_not(tmp_path):
    trading = _prices(_trading_days())
    calendar = trading.reindex(pd.date_range("2019-01-02", "2020-12-31", freq="D")).ffill()
    path = write_wide_csv(tmp_path / "calendar.csv", calendar)
    # 730 days: 2 x (52 Saturdays + 52 Sundays) and the 17 weekday holidays copy the day before.
    note = (
        "225 of 730 rows repeat the previous row's price for every ticker (208 on Saturdays or Sundays: 2019-01-05, "
        "2019-01-06, 2019-01-12 (and 205 more); 17 on weekdays: 2019-01-21, 2019-02-18, 2019-04-19 (and 14 more)), "
        f"{FLAT_FIX}"
    )
    with pytest.warns(UserWarning) as caught:
        data = load_prices(path)
    assert [str(w.message) for w in caught] == [f"{path}: {note}"]
    assert data.warnings == [note] and len(data.prices) == 730  # warned, not changed
    res = _cli("envs.data", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith(f"warnings: \n  - {note}\n")
    # The fix the warning gives: only the trading days.
    assert len(_quiet_load(write_wide_csv(tmp_path / "trading.csv", trading)).prices) == 730 - 225


def test_forward_filled_holidays_alone_are_warned_about(tmp_path):
    days = pd.bdate_range("2020-01-02", "2020-12-31")  # 261 weekdays, the 8 holidays forward-filled
    prices = _prices(_trading_days("2020-01-02")).reindex(days).ffill()
    path = write_wide_csv(tmp_path / "p.csv", prices)
    with pytest.warns(UserWarning) as caught:
        load_prices(path)
    assert [str(w.message) for w in caught] == [
        f"{path}: 8 of 261 rows repeat the previous row's price for every ticker (8 on weekdays: 2020-01-20, "
        f"2020-02-17, 2020-04-10 (and 5 more)), {FLAT_FIX}"
    ]


def test_a_few_unchanged_rows_pass_and_two_in_a_row_are_warned_about(tmp_path):
    prices = _prices(pd.bdate_range("2010-01-04", periods=600), n_assets=2)
    prices.iloc[100] = prices.iloc[99]  # two isolated unchanged rows (0.3 %): a coincidence, not a fill
    prices.iloc[300] = prices.iloc[299]
    assert _quiet_load(write_wide_csv(tmp_path / "p.csv", prices)).warnings == []
    prices.iloc[301] = prices.iloc[300]  # two in a row: a filled gap
    with pytest.warns(UserWarning, match=r"3 of 600 rows repeat the previous row's price for every ticker \(3 on"):
        load_prices(write_wide_csv(tmp_path / "q.csv", prices))
