"""trainer.evaluation.baselines: exact Equal Weight, classical fits that see the training split only and are optimal
there, the returns a split contains, and a description for every strategy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.data import PriceData, SplitRange
from envs.features import FeatureConfig
from envs.limits import project_capped_simplex
from envs.portfolio import MarketData, PortfolioEnv
from tests.conftest import synthetic_prices, toy_market
from trainer.evaluation.baselines import (
    BUY_AND_HOLD,
    DESCRIPTIONS,
    EQUAL_WEIGHT,
    LOOKAHEAD,
    MAX_SHARPE,
    MAX_SHARPE_LOOKAHEAD,
    MIN_VOLATILITY,
    MIN_VOLATILITY_LOOKAHEAD,
    descriptions,
    fit_classical,
    run_baselines,
    split_returns,
)
from trainer.evaluation.runs import run_ensemble, run_policy

# train rows 0..299, validation 300..399, test 400..499
SPLIT_ROWS = {"train": (0, 299), "validation": (300, 399), "test": (400, 499)}


def _market(prices: pd.DataFrame) -> MarketData:
    """MarketData over ``prices`` with the fixed SPLIT_ROWS and zero features (baselines read returns only)."""
    idx = prices.index
    splits = {name: SplitRange(name, a, b, idx[a], idx[b]) for name, (a, b) in SPLIT_ROWS.items()}
    p = prices.to_numpy()
    rets = np.zeros_like(p)
    rets[1:] = p[1:] / p[:-1] - 1
    n_rows, n_assets = p.shape
    features = np.zeros((n_rows, n_assets, 1), np.float32)
    return MarketData(PriceData("synthetic", "wide", prices), features, rets, splits, FeatureConfig())


def _prices(seed: int = 5) -> pd.DataFrame:
    # different drifts and enough spread that min-vol, max-Sharpe and equal weight are distinct portfolios
    prices = synthetic_prices(n_days=500, n_assets=4, seed=seed, drifts=[0.001, 0.0, 0.0005, -0.0005])
    scale = np.array([1.0, 0.5, 2.0, 1.5])  # per-asset volatility multipliers on the log returns
    log_p = np.log(prices.to_numpy())
    log_p = log_p[0] + np.cumsum(np.vstack([np.zeros(4), np.diff(log_p, axis=0)]) * scale, axis=0)
    return pd.DataFrame(np.exp(log_p), index=prices.index, columns=prices.columns)


def _runs(market: MarketData, split: str) -> dict:
    return run_baselines(lambda: PortfolioEnv(data=market, split=split, cost_bps=10.0), market, split)


def test_equal_weight_holds_exactly_one_over_n_and_no_cash():
    market = _market(_prices())
    ew = _runs(market, "test")[EQUAL_WEIGHT]
    assert ew.weights.shape == (99, 5)  # 100 test rows -> 99 trading days, 4 assets + cash
    np.testing.assert_array_equal(ew.weights, np.tile([0.25, 0.25, 0.25, 0.25, 0.0], (99, 1)))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_classical_weights_come_from_the_training_split_only(split):
    prices = _prices()
    shocked = prices.copy()
    rng = np.random.default_rng(0)
    shocked.iloc[300:] *= rng.uniform(0.6, 1.5, shocked.iloc[300:].shape)  # validation and test rows only
    clean_runs, shocked_runs = _runs(_market(prices), split), _runs(_market(shocked), split)
    train_fit = fit_classical(split_returns(_market(prices), "train"))
    for name, fitted in ((MIN_VOLATILITY, train_fit.min_volatility), (MAX_SHARPE, train_fit.max_sharpe)):
        clean, moved = clean_runs[name].weights, shocked_runs[name].weights
        np.testing.assert_array_equal(clean, moved, err_msg=name)  # untouched by the evaluated prices
        np.testing.assert_array_equal(clean, np.tile(np.append(fitted, 0.0), (len(clean), 1)), err_msg=name)
    # the look-ahead variants do see the evaluated split, so the shock moves them (the check above can fail)
    for name in (MIN_VOLATILITY_LOOKAHEAD, MAX_SHARPE_LOOKAHEAD):
        assert not np.allclose(clean_runs[name].weights, shocked_runs[name].weights, atol=1e-3), name


def test_classical_fits_are_optimal_on_their_returns():
    returns = split_returns(_market(_prices()), "train")
    fit = fit_classical(returns)
    cov, mu = np.cov(returns, rowvar=False), returns.mean(axis=0)

    def vol(w):
        return float(np.sqrt(w @ cov @ w))

    def sharpe(w):
        return float(mu @ w) / vol(w)

    candidates = [np.full(4, 0.25), fit.max_sharpe, *np.eye(4), np.array([0.4, 0.3, 0.2, 0.1])]
    for w in (fit.min_volatility, fit.max_sharpe):
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    for w in candidates:
        assert vol(fit.min_volatility) <= vol(w) * (1 + 1e-6)
    for w in [*candidates, fit.min_volatility]:
        assert sharpe(fit.max_sharpe) >= sharpe(w) - 1e-6
    assert vol(fit.min_volatility) < 0.99 * vol(np.full(4, 0.25))  # distinct from equal weight
    assert not np.allclose(fit.min_volatility, fit.max_sharpe, atol=1e-3)


def test_split_returns_are_the_returns_inside_the_split():
    market = toy_market()
    rows = {"train": (0, 2), "validation": (1, 3), "test": (0, 3)}
    idx = market.dates
    splits = {n: SplitRange(n, a, b, idx[a], idx[b]) for n, (a, b) in rows.items()}
    market = MarketData(market.data, market.features, market.simple_returns, splits, market.feature_config)
    # A 10, 11, 11, 12.1; B 20, 20, 18, 18; C 5, 5, 5.5, 5.5: the first day's return is outside its split
    np.testing.assert_allclose(split_returns(market, "train"), [[0.1, 0, 0], [0, -0.1, 0.1]], atol=1e-15)
    np.testing.assert_allclose(split_returns(market, "validation"), [[0, -0.1, 0.1], [0.1, 0, 0]], atol=1e-15)
    assert split_returns(market, "test").shape == (3, 3)


def test_every_strategy_has_a_description_and_look_ahead_ones_say_so():
    runs = _runs(_market(_prices()), "validation")
    assert set(DESCRIPTIONS) == set(runs)
    assert {MIN_VOLATILITY_LOOKAHEAD, MAX_SHARPE_LOOKAHEAD} == LOOKAHEAD
    for name, text in DESCRIPTIONS.items():
        assert text.startswith("LOOK-AHEAD:") == (name in LOOKAHEAD), name
    for name in (MIN_VOLATILITY, MAX_SHARPE):
        assert "fitted on the training split" in DESCRIPTIONS[name]
    for run in runs.values():
        assert run.weights.shape == (99, 5) and (run.weights >= 0).all()
        np.testing.assert_allclose(run.weights.sum(axis=1), 1.0, atol=1e-12)


def test_classical_fits_under_a_cap_are_optimal_within_it():
    returns = split_returns(_market(_prices()), "train")
    cap = 0.3
    free, fit = fit_classical(returns), fit_classical(returns, max_weight=cap)
    assert free.min_volatility.max() > cap and free.max_sharpe.max() > cap  # the cap binds both
    cov, mu = np.cov(returns, rowvar=False), returns.mean(axis=0)

    def vol(w):
        return float(np.sqrt(w @ cov @ w))

    def sharpe(w):
        return float(mu @ w) / vol(w)

    rng = np.random.default_rng(0)
    capped = [
        np.full(4, 0.25),
        *(project_capped_simplex(rng.dirichlet([0.5] * 4), np.full(4, cap)) for _ in range(200)),
    ]
    for w in (fit.min_volatility, fit.max_sharpe):
        assert (w >= 0).all() and (w <= cap).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert all(vol(fit.min_volatility) <= vol(w) * (1 + 1e-6) for w in capped)
    assert all(sharpe(fit.max_sharpe) >= sharpe(w) - 1e-6 for w in capped)
    # a cap under which the assets cannot be fully invested leaves one portfolio: every asset at the cap
    low = fit_classical(returns, max_weight=0.2)
    np.testing.assert_array_equal(low.min_volatility, np.full(4, 0.2))
    np.testing.assert_array_equal(low.max_sharpe, np.full(4, 0.2))


def test_every_baseline_and_the_agent_trade_within_the_limits():
    market = _market(_prices())
    limits = {"max_weight": 0.3, "max_turnover": 0.3}

    def make_env():
        return PortfolioEnv(data=market, split="test", **limits)

    runs = dict(run_baselines(make_env, market, "test"))
    rng = np.random.default_rng(0)
    runs["agent"] = run_policy(make_env(), lambda obs: rng.uniform(-1, 1, 5).astype(np.float32))
    members = [lambda obs, s=s: np.random.default_rng(s).uniform(-1, 1, 5).astype(np.float32) for s in range(3)]
    runs["ensemble"] = run_ensemble(make_env(), members)
    for name, run in runs.items():
        assert run.weights.shape == (99, 5), name
        assert (run.weights >= 0).all() and (run.weights[:, :4] <= 0.3).all(), name
        np.testing.assert_allclose(run.weights.sum(axis=1), 1.0, atol=1e-12, err_msg=name)
        assert run.turnovers.max() <= 0.3 + 1e-12, name
    # Equal Weight and Buy-and-Hold buy 0.3 a day from cash up to 0.25 each, then Equal Weight rebalances and
    # Buy-and-Hold holds (the drift trimmed back under the cap when it crosses it)
    ew = runs[EQUAL_WEIGHT]
    np.testing.assert_allclose(ew.turnovers[:3], 0.3, atol=1e-12)
    np.testing.assert_allclose(ew.weights[3:, :4], 0.25, atol=1e-12)  # the fourth day completes the purchase
    bh = runs[BUY_AND_HOLD]
    np.testing.assert_allclose(bh.turnovers[:3], 0.3, atol=1e-12)
    assert bh.weights[4:, 4].max() < 1e-3 and bh.turnovers[5:].max() < 0.05  # invested, then (mostly) held
    fitted = fit_classical(split_returns(market, "train"), max_weight=0.3).min_volatility
    np.testing.assert_allclose(runs[MIN_VOLATILITY].weights[-1, :4], fitted, atol=1e-12)


def test_descriptions_say_what_the_limits_do():
    assert descriptions(False) == DESCRIPTIONS
    limited = descriptions(True)
    for name, text in limited.items():
        assert text.startswith(DESCRIPTIONS[name]) and "under the position limits" in text, name
        assert text.startswith("LOOK-AHEAD:") == (name in LOOKAHEAD), name
    assert "max_weights" in limited[MIN_VOLATILITY] and "max_turnover" in limited[BUY_AND_HOLD]
