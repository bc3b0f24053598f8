"""trainer.evaluation.baselines on walk-forward folds: the classical portfolios are fitted on the fold's own training
window (a market loaded for a fold carries that fold's windows), never on later prices. No Ray needed."""

from __future__ import annotations

import numpy as np
import pytest

from envs.folds import FoldSpec, fold_ranges
from envs.market import load_market
from envs.portfolio import PortfolioEnv
from tests.conftest import synthetic_prices, write_wide_csv
from trainer.evaluation.baselines import MAX_SHARPE, MIN_VOLATILITY, fit_classical, run_baselines, split_returns

SPEC = FoldSpec(n_folds=3, scheme="rolling", test_days=60, validation_days=60, train_days=300)
DRIFTS = [0.001, 0.0, 0.0005, -0.0005]


def _markets(tmp_path, fold: int):
    prices = synthetic_prices(n_days=1200, n_assets=4, seed=5, drifts=DRIFTS)
    a = write_wide_csv(tmp_path / "a.csv", prices)
    train_end = load_market(a, folds=SPEC, fold=fold).splits["train"].end
    shocked = prices.copy()
    rows = shocked.iloc[train_end + 1 :].shape
    shocked.iloc[train_end + 1 :] *= np.random.default_rng(fold).uniform(0.7, 1.4, rows)  # after training only
    b = write_wide_csv(tmp_path / "b.csv", shocked)
    return load_market(a, folds=SPEC, fold=fold), load_market(b, folds=SPEC, fold=fold)


@pytest.mark.parametrize("fold", [0, 2])
def test_fold_baselines_ignore_prices_after_the_folds_training_end(tmp_path, fold):
    ma, mb = _markets(tmp_path, fold)
    assert ma.splits["train"] == fold_ranges(ma.data, ma.feature_config.lookback, SPEC)[fold]["train"]
    fa, fb = fit_classical(split_returns(ma, "train")), fit_classical(split_returns(mb, "train"))
    np.testing.assert_array_equal(fa.min_volatility, fb.min_volatility)
    np.testing.assert_array_equal(fa.max_sharpe, fb.max_sharpe)
    # run_baselines fits on market.splits["train"]: the fold's window, so the weights it trades are the same
    runs = {}
    for name, market in (("a", ma), ("b", mb)):
        runs[name] = run_baselines(lambda m=market: PortfolioEnv(data=m, split="validation"), market, "validation")
    for strategy in (MIN_VOLATILITY, MAX_SHARPE):
        np.testing.assert_array_equal(runs["a"][strategy].weights[0], runs["b"][strategy].weights[0])
        np.testing.assert_array_equal(runs["a"][strategy].weights[0][:-1], getattr(fa, strategy))
    # the validation window's returns did change, so the runs' P&L differs (the shock is real)
    assert not np.array_equal(runs["a"][MIN_VOLATILITY].net_returns, runs["b"][MIN_VOLATILITY].net_returns)


def test_each_fold_fits_on_its_own_window(tmp_path):
    path = write_wide_csv(tmp_path / "p.csv", synthetic_prices(n_days=1200, n_assets=4, seed=5, drifts=DRIFTS))
    markets = [load_market(path, folds=SPEC, fold=k) for k in range(SPEC.n_folds)]
    fits = [fit_classical(split_returns(m, "train")) for m in markets]
    for m, k in zip(markets, range(SPEC.n_folds), strict=True):
        rng = m.splits["train"]
        assert len(split_returns(m, "train")) == rng.n_rows - 1 == SPEC.train_days - 1
        if k:
            assert rng.start == markets[k - 1].splits["train"].start + SPEC.test_days  # rolled forward
    assert not np.allclose(fits[0].max_sharpe, fits[2].max_sharpe)  # different windows, different fits
