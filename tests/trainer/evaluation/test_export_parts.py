"""The torch ports of an exported policy against the env's own code: the last row's features, the action mapping
with the band and partial rebalancing, and the position limits (eager and scripted)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from envs.data import PriceData
from envs.features import FeatureConfig, compute_features, compute_shared_features
from envs.limits import TOLERANCE, PositionLimits, repair
from envs.market import market_for_decision
from envs.portfolio import PortfolioEnv
from envs.settings import PortfolioSettings
from tests.conftest import synthetic_prices
from trainer.evaluation.export_features import LastRowFeatures, LastRowShared
from trainer.evaluation.export_limits import apply_limits, project_capped_simplex
from trainer.evaluation.export_trading import Trading


def _prices(n_days: int = 200) -> pd.DataFrame:
    prices = synthetic_prices(n_days=n_days, n_assets=3, seed=7)
    prices["FLAT"] = 50.0  # no moves at all: RSI neutral, volatility 0, price at its average
    prices.iloc[: n_days // 2, 3] = 40.0 + np.arange(n_days // 2)  # ... after a trend that ended long ago
    return prices


def test_last_row_features_are_the_envs_to_float32_rounding():
    prices = _prices()
    expected = compute_features(prices)
    features = torch.jit.script(LastRowFeatures(FeatureConfig()))
    values = prices.to_numpy()
    for t in range(FeatureConfig().lookback, len(prices)):
        window = torch.from_numpy(values[t + 1 - features.rows : t + 1])
        ours = features(window).numpy().astype(np.float32)
        ulp = np.spacing(np.abs(expected[t]))
        assert (np.abs(ours - expected[t]) <= ulp).all(), (t, ours - expected[t])
    last = features(torch.from_numpy(values)).numpy()  # any longer history: the last window decides
    p = values[:, 0]
    assert last[0, 0] == pytest.approx(np.log(p[-1] / p[-2]), abs=1e-15)
    assert last[0, 3] == pytest.approx(np.log(p[-1] / p[-61]), abs=1e-15)
    assert last[0, 6] == pytest.approx(p[-1] / p[-20:].mean() - 1, abs=1e-15)
    np.testing.assert_array_equal(last[3], [0, 0, 0, 0, 0, 0, 0, 0, 0])  # the flat asset


def test_ranks_and_market_features_are_the_envs_on_every_row():
    prices = _prices(400)
    prices["TWIN"] = prices.iloc[:, 0] * 2.0  # the same moves as the first asset: ties on every feature
    cfg = FeatureConfig.of("asset+rank+market")
    expected, expected_shared = compute_features(prices, cfg), compute_shared_features(prices, cfg)
    features, shared = torch.jit.script(LastRowFeatures(cfg)), torch.jit.script(LastRowShared(cfg))
    assert features.rows == 253
    values = prices.to_numpy()
    for t in range(cfg.lookback, len(prices)):
        window = torch.from_numpy(values[t + 1 - features.rows : t + 1])
        ours = features(window).numpy().astype(np.float32)
        # the ranks exactly (comparisons of the same float32 values), the rest to a float32 rounding
        np.testing.assert_array_equal(ours[:, 9:], expected[t, :, 9:])
        assert (np.abs(ours[:, :9] - expected[t, :, :9]) <= np.spacing(np.abs(expected[t, :, :9]))).all(), t
        np.testing.assert_allclose(shared(window).numpy().astype(np.float32), expected_shared[t], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ours[0, 9:], ours[4, 9:])  # the twins' ranks are equal
    assert shared(window).shape == (6,) and LastRowShared(FeatureConfig())(window).shape == (0,)


SETTINGS = {
    "softmax": {},
    "softmax, band and fraction": {"no_trade_band": 0.05, "rebalance_fraction": 0.5, "temperature": 2.0},
    "tilt equal weight": {"action": "tilt", "tilt_scale": 1.5},
    "tilt previous, every rule": {
        "action": "tilt",
        "tilt_reference": "previous",
        "no_trade_band": 0.02,
        "rebalance_fraction": 0.8,
        "max_weight": 0.4,
        "max_cash": 0.2,
        "max_turnover": 0.3,
    },
    "softmax, caps only": {"max_weight": 0.3},
    "softmax, turnover only": {"max_turnover": 0.1},
}


def _held(rng: np.random.Generator, n: int, i: int) -> np.ndarray:
    """Weights held: all cash, one asset only (over any cap), or random (often over a cap or cash cap)."""
    if i == 0:
        return np.append(np.zeros(n), 1.0)
    if i == 1:
        return np.eye(n + 1)[0]
    return rng.dirichlet(np.full(n + 1, 0.7))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_trading_is_the_envs_mapping_band_and_limits(name):
    prices = synthetic_prices(n_days=80, n_assets=4, seed=3)
    market = market_for_decision(PriceData("synthetic", "wide", prices))
    settings = PortfolioSettings.from_mapping(SETTINGS[name])
    env = PortfolioEnv(data=market, split="test", settings=settings)
    trading = Trading(settings, 4)
    scripted = torch.jit.script(trading)
    rng = np.random.default_rng(11)
    moved = 0
    for i in range(60):
        held = _held(rng, 4, i % 10)
        action = np.zeros(5, np.float32) if i % 7 == 3 else rng.uniform(-1.3, 1.3, 5).astype(np.float32)
        env.place(len(prices) - 1, held)
        _, expected = env.traded_weights(env.weights_from_action(action))
        for module in (trading, scripted):
            ours = module(torch.from_numpy(action), torch.from_numpy(held)).numpy()
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
        moved += not np.array_equal(expected, held)
    assert moved > 10


def _limits_cases(rng: np.random.Generator, n: int):
    for max_weight, max_cash, max_turnover in [
        (0.3, None, None),
        (None, 0.1, None),
        (0.25, 0.05, 0.2),
        (None, None, 0.15),
        (0.4, None, 0.5),
        (1.0 / n, 0.0, 0.3),  # only one portfolio within the caps: equal weight
    ]:
        limits = PositionLimits.build(n, max_weight, max_cash, max_turnover)
        for i in range(40):
            current = _held(rng, n, i % 12)
            target = rng.dirichlet(np.full(n + 1, 0.5)) if i % 3 else rng.normal(0.2, 0.4, n + 1)
            yield limits, target, current


def test_the_limits_are_envs_limits_for_any_target_and_drift():
    rng = np.random.default_rng(5)
    n = 5
    scripted = torch.jit.script(apply_limits)
    forced = 0
    for limits, target, current in _limits_cases(rng, n):
        expected = limits.apply(target, current)
        turnover = limits.max_turnover or 0.0
        args = (torch.from_numpy(target), torch.from_numpy(current), torch.from_numpy(limits.caps.copy()))
        for fn in (apply_limits, scripted):
            ours = fn(*args, turnover, n, TOLERANCE).numpy()
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
        forced += repair(current, limits.caps, n, target)[1] > 0
    assert forced > 20  # the drift over a cap (the caps win) is among the cases


def test_projection_is_not_clip_and_renormalise():
    caps = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    ours = project_capped_simplex(torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), caps, TOLERANCE)
    np.testing.assert_allclose(ours.numpy(), [0.5, 0.3, 0.2], rtol=0, atol=1e-15)
