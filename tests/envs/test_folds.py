"""envs.folds / envs.market: walk-forward windows (hand-computed rows, no overlap, purge gaps, exact
errors), markets of one fold, no look-ahead across a fold's training end, and the CLI's fold summary."""

from __future__ import annotations

import subprocess
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from envs.data import DataError, load_prices
from envs.folds import FoldSpec, experiment_folds, fold_ranges, fold_windows
from envs.market import load_market, load_market_for
from envs.portfolio import PortfolioEnv
from tests.conftest import synthetic_prices, write_wide_csv

LOOKBACK = 60  # FeatureConfig().lookback: the purge gap load_market uses
SPEC = FoldSpec(n_folds=3, test_days=50, validation_days=40, train_days=200)


@pytest.fixture
def data_1000(tmp_path):
    path = write_wide_csv(tmp_path / "p.csv", synthetic_prices(n_days=1000, seed=4))
    return load_prices(path), path


def _rows(splits):
    return {name: (r.start, r.end) for name, r in splits.items()}


def test_expanding_and_rolling_rows_by_hand(data_1000):
    data, _ = data_1000
    # 1000 rows, last row 999: tests back to back at the end, 50 rows each; validation ends 60 rows (the
    # purge gap) before its test starts; training ends 60 rows before validation starts.
    expanding = [_rows(f) for f in fold_ranges(data, LOOKBACK, SPEC)]
    assert expanding == [
        {"train": (60, 689), "validation": (750, 789), "test": (850, 899)},
        {"train": (60, 739), "validation": (800, 839), "test": (900, 949)},
        {"train": (60, 789), "validation": (850, 889), "test": (950, 999)},
    ]
    rolling = [_rows(f) for f in fold_ranges(data, LOOKBACK, FoldSpec(**{**SPEC.as_dict(), "scheme": "rolling"}))]
    assert [r["train"] for r in rolling] == [(490, 689), (540, 739), (590, 789)]  # 200 rows each
    assert [{k: v for k, v in r.items() if k != "train"} for r in rolling] == [
        {k: v for k, v in e.items() if k != "train"} for e in expanding
    ]


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
@pytest.mark.parametrize(("n_folds", "test_days"), [(1, 30), (3, 50), (5, 31), (4, 77)])
def test_invariants_no_overlap_and_purge_gaps(data_1000, scheme, n_folds, test_days):
    data, _ = data_1000
    spec = FoldSpec(n_folds=n_folds, scheme=scheme, test_days=test_days, validation_days=35, train_days=150)
    folds = fold_ranges(data, LOOKBACK, spec)
    assert len(folds) == n_folds
    assert folds[-1]["test"].end == len(data.prices) - 1  # the last test ends at the data's end
    for a, b in combinations(folds, 2):  # test windows pairwise disjoint
        assert a["test"].end < b["test"].start or b["test"].end < a["test"].start
    for k, f in enumerate(folds):
        assert f["validation"].start - f["train"].end - 1 == LOOKBACK
        assert f["test"].start - f["validation"].end - 1 == LOOKBACK
        assert f["test"].n_rows == test_days and f["validation"].n_rows == 35
        if scheme == "expanding":
            assert f["train"].start == LOOKBACK and f["train"].n_rows >= 150
        else:
            assert f["train"].n_rows == 150 and f["train"].start >= LOOKBACK
        if k:  # consecutive test windows are back to back, later folds test later
            assert f["test"].start == folds[k - 1]["test"].end + 1
        for s in f.values():
            assert s.start_date == data.prices.index[s.start] and s.end_date == data.prices.index[s.end]


def test_too_short_data_is_refused_with_the_numbers(tmp_path):
    path = write_wide_csv(tmp_path / "short.csv", synthetic_prices(n_days=500))
    with pytest.raises(DataError) as info:
        fold_ranges(load_prices(path), LOOKBACK, SPEC)
    assert str(info.value) == (
        f"{path}: 3 expanding walk-forward fold(s) need 570 rows up to 2011-12-02 (60 feature lookback + 200 "
        "train + 60 purge + 40 validation + 60 purge + 3 x 50 test), the data has 500 rows (2010-01-04..2011-12-02); "
        "use fewer or shorter folds (data.folds) or more history"
    )
    with pytest.raises(DataError) as info:  # also through load_market and the env
        PortfolioEnv(data=path, folds=SPEC, fold=0)
    assert "need 570 rows" in str(info.value)


def test_explicit_end_date(data_1000):
    data, path = data_1000
    dates = data.prices.index
    end = dates[899] + pd.Timedelta(days=1)  # a Saturday: the last test ends on the last trading day before
    folds = fold_ranges(data, LOOKBACK, FoldSpec(**{**SPEC.as_dict(), "end": end.date().isoformat()}))
    assert folds[-1]["test"].end == 899 and folds[0]["test"].start == 900 - 150
    with pytest.raises(DataError) as info:
        fold_ranges(data, LOOKBACK, FoldSpec(end="2030-01-01"))
    assert str(info.value) == (
        f"{path}: folds end 2030-01-01 is after the data's last date {dates[-1].date()}; "
        "use an earlier end or null (the data's end)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_folds": 0}, "n_folds must be an integer >= 1, got 0"),
        ({"scheme": "anchored"}, "scheme must be one of expanding, rolling, got 'anchored'"),
        ({"test_days": 29}, "test_days must be an integer >= 30 (trading days), got 29"),
        ({"validation_days": 40.0}, "validation_days must be an integer >= 30 (trading days), got 40.0"),
        ({"train_days": -1}, "train_days must be an integer >= 30 (trading days), got -1"),
        ({"end": "2020-13-01"}, "end must be an ISO date like 2020-12-31 or null, got '2020-13-01'"),
    ],
)
def test_bad_fold_spec_is_an_exact_error(kwargs, message):
    with pytest.raises(ValueError) as info:
        FoldSpec(**kwargs)
    assert str(info.value) == message


def test_fold_spec_from_mapping():
    assert FoldSpec.from_mapping(None) == FoldSpec()
    assert FoldSpec.from_mapping({"n_folds": 2, "end": "2020-12-31"}) == FoldSpec(n_folds=2, end="2020-12-31")
    import datetime as dt

    assert FoldSpec(end=dt.date(2020, 12, 31)).end == "2020-12-31"  # YAML dates are normalised
    with pytest.raises(ValueError) as info:
        FoldSpec.from_mapping({"folds": 3})
    assert str(info.value) == (
        "unknown folds key(s) folds; valid: n_folds, scheme, test_days, validation_days, train_days, end"
    )


def test_fold_windows_iso_dates(data_1000):
    data, _ = data_1000
    windows = fold_windows(data, SPEC.as_dict())
    iso = [d.date().isoformat() for d in data.prices.index]
    assert windows[0] == {
        "fold": 0,
        "train": [iso[60], iso[689]],
        "validation": [iso[750], iso[789]],
        "test": [iso[850], iso[899]],
    }
    assert [w["fold"] for w in windows] == [0, 1, 2]
    assert windows[2]["test"][1] == iso[-1]


def test_load_market_of_a_fold_shares_the_arrays(data_1000):
    data, path = data_1000
    plain = load_market(path)
    markets = [load_market(path, folds=SPEC.as_dict(), fold=k) for k in range(3)]
    for k, m in enumerate(markets):
        assert _rows(m.splits) == _rows(fold_ranges(data, LOOKBACK, SPEC)[k])
        assert m.features is plain.features  # one copy of the arrays per process, whatever the windows
    assert load_market(path, folds=SPEC, fold=1) is markets[1]  # a FoldSpec and its dict are one cache key
    env = PortfolioEnv(data=path, split="test", folds=SPEC.as_dict(), fold=1)
    _, info = env.reset(seed=0)
    assert info["step_index"] == 900 and env.episode_len == 49  # one pass over fold 1's test window


def test_window_arguments_are_checked(data_1000):
    _, path = data_1000
    dates = {
        "train": ["2010-01-01", "2011-12-31"],
        "validation": ["2012-01-01", "2012-12-31"],
        "test": ["2013", "2013-10-30"],
    }
    with pytest.raises(ValueError) as info:
        load_market(path, split_dates=dates, fold=0)
    assert str(info.value) == "give split_dates or fold, not both: a fold's windows replace the split dates"
    with pytest.raises(ValueError) as info:
        load_market(path, folds=SPEC, fold=3)
    assert str(info.value) == "fold must be an integer in 0..2 (folds.n_folds is 3), got 3"
    with pytest.raises(ValueError) as info:  # a loaded market is used only for the windows it holds
        PortfolioEnv(data=load_market(path, folds=SPEC, fold=0), folds=SPEC, fold=1)
    assert str(info.value) == (
        f"data: the MarketData holds the windows of fold 0 of {SPEC} but the env was given fold 1 of {SPEC}; "
        "load it with load_market(source, split_dates, folds, fold) using the env's values"
    )
    with pytest.raises(ValueError, match=r"holds the windows of the default split dates but the env was given fold 0"):
        PortfolioEnv(data=load_market(path), folds=SPEC, fold=0)
    same = load_market(path, folds=SPEC, fold=2)
    assert PortfolioEnv(data=same, folds=SPEC.as_dict(), fold=2, split="test").market is same
    # an env config (as a checkpoint stores it) gives the market of the windows it selects
    config = {"data": path, "split": "test", "split_dates": None, "folds": SPEC.as_dict(), "fold": 2, "cost_bps": 5.0}
    assert load_market_for(config) is same
    assert PortfolioEnv(data=load_market_for(config), **{k: v for k, v in config.items() if k != "data"}).market is same


def test_fold_training_observations_ignore_later_prices(tmp_path):
    prices = synthetic_prices(n_days=1000, seed=9)
    train_end = fold_ranges(load_prices(write_wide_csv(tmp_path / "a.csv", prices)), LOOKBACK, SPEC)[0]["train"].end
    shocked = prices.copy()
    shocked.iloc[train_end + 1 :] *= np.random.default_rng(0).uniform(0.7, 1.4, shocked.iloc[train_end + 1 :].shape)
    a = load_market(write_wide_csv(tmp_path / "a.csv", prices), folds=SPEC, fold=0)
    b = load_market(write_wide_csv(tmp_path / "b.csv", shocked), folds=SPEC, fold=0)
    assert _rows(a.splits) == _rows(b.splits)
    tr = a.splits["train"]
    np.testing.assert_array_equal(a.features[: tr.end + 1], b.features[: tr.end + 1])
    assert not np.array_equal(a.features[tr.end + 1 :], b.features[tr.end + 1 :])  # the shock is real
    # every observation of a training episode is identical (the last one sees the last training day)
    env_a, env_b = PortfolioEnv(data=a, episode_len=200), PortfolioEnv(data=b, episode_len=200)
    actions = np.random.default_rng(1).uniform(-1, 1, (600, 4)).astype(np.float32)
    oa, _ = env_a.reset(seed=3)
    ob, _ = env_b.reset(seed=3)
    for act in actions:
        np.testing.assert_array_equal(oa, ob)
        oa, _, _, trunc, _ = env_a.step(act)
        ob, *_ = env_b.step(act)
        if trunc:
            np.testing.assert_array_equal(oa, ob)
            oa, _ = env_a.reset()
            ob, _ = env_b.reset()


def _write_exp(tmp_path, text: str) -> str:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return str(p)


def test_cli_prints_the_experiments_fold_windows(tmp_path, data_1000):
    data, path = data_1000
    exp = _write_exp(
        tmp_path,
        f"data:\n  source: {path}\n  folds: {{n_folds: 3, scheme: rolling, test_days: 50, validation_days: 40, "
        "train_days: 200}\n",
    )
    res = subprocess.run([sys.executable, "-m", "envs.data", "--exp", exp], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = [x.date() for x in data.prices.index]
    assert (
        "folds:    3 rolling, test 50 / validation 40 / train 200 rows, purge gap 60 rows, last test ends at "
        "the data end"
    ) in res.stdout
    assert (
        f"  fold 1   train {d[540]} .. {d[739]} (200)   validation {d[800]} .. {d[839]} (40)   "
        f"test {d[900]} .. {d[949]} (50)"
    ) in res.stdout
    assert f"source:   {path}" in res.stdout  # SOURCE defaults to the experiment's data.source


def test_cli_fold_errors_are_one_line(tmp_path):
    prices = synthetic_prices(n_days=600)  # enough for the default split, not for two default folds
    short = write_wide_csv(tmp_path / "short.csv", prices)
    last = prices.index[-1].date()
    bad = _write_exp(tmp_path, "data:\n  folds: {n_folds: 2, test_dayz: 40}\n")
    res = subprocess.run([sys.executable, "-m", "envs.data", short, "--exp", bad], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {bad}: key 'data.folds': unknown folds key(s) test_dayz; valid: n_folds, scheme, test_days, "
        "validation_days, train_days, end"
    )
    ok = _write_exp(tmp_path, "data:\n  folds: {n_folds: 2}\n")
    res = subprocess.run([sys.executable, "-m", "envs.data", short, "--exp", ok], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {short}: 2 expanding walk-forward fold(s) need 1692 rows up to {last} (60 feature lookback + "
        "756 train + 60 purge + 252 validation + 60 purge + 2 x 252 test), the data has 600 rows "
        f"(2010-01-04..{last}); use fewer or shorter folds (data.folds) or more history"
    )
    res = subprocess.run([sys.executable, "-m", "envs.data", "--exp", "nope"], capture_output=True, text=True)
    assert res.returncode == 2 and "nope.yaml: experiment not found; available: " in res.stderr


def test_shipped_experiments_have_valid_folds():
    from envs.folds import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        spec, _, _ = experiment_folds(str(path))
        assert fold_windows(load_prices("sp500"), spec)  # the bundled data holds every shipped layout


def test_a_rolling_round_windows_by_hand_and_as_split_dates(data_1000):
    from envs.data import split_ranges
    from envs.folds import round_ranges, window_dates

    data, path = data_1000
    # 1000 rows, the round's date is row 999: validation = the last 40 rows (960..999); training ends 60 rows
    # (the purge gap) before it, at 899; expanding from row 60, rolling over the last 200 rows; no test window
    expanding = round_ranges(data, LOOKBACK, validation_days=40, train_days=200, scheme="expanding")
    rolling = round_ranges(data, LOOKBACK, validation_days=40, train_days=200, scheme="rolling")
    assert _rows(expanding) == {"train": (60, 899), "validation": (960, 999)}
    assert _rows(rolling) == {"train": (700, 899), "validation": (960, 999)}
    dates = data.prices.index
    assert window_dates(rolling) == {
        "train": [str(dates[700].date()), str(dates[899].date())],
        "validation": [str(dates[960].date()), str(dates[999].date())],
    }
    # as split dates, the split machinery gives back the same rows, and an env trains and validates on them
    for ranges in (expanding, rolling):
        assert _rows(split_ranges(data, LOOKBACK, window_dates(ranges))) == _rows(ranges)
    market = load_market(path, window_dates(rolling))
    assert PortfolioEnv(data=market, split="validation").n_assets == 3
    with pytest.raises(ValueError) as err:
        PortfolioEnv(data=market, split="test")
    assert str(err.value) == (
        "split 'test': these windows have no test window (only train, validation: split_dates without test); "
        "evaluate another split, or give test dates"
    )


def test_a_rolling_round_on_too_little_data_is_refused_with_the_numbers(tmp_path):
    from envs.folds import round_ranges

    path = write_wide_csv(tmp_path / "short.csv", synthetic_prices(n_days=200, seed=4))
    data = load_prices(path)
    assert round_ranges(data, LOOKBACK, 40, 40, "rolling")["train"].n_rows == 40  # 2 x 60 + 40 + 40 = 200 rows
    with pytest.raises(DataError) as err:
        round_ranges(data, LOOKBACK, 40, 41, "rolling")
    assert str(err.value) == (
        f"{path}: a rolling round needs 201 rows up to its date (60 feature lookback + 41 train + 60 purge + 40 "
        f"validation), the data has 200 rows (2010-01-04..{data.prices.index[-1].date()}); use shorter windows "
        "(rolling.train_days, rolling.validation_days) or more history"
    )
