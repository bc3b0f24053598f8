"""Position limits inside envs.portfolio: every path that trades (step, step_target, step_weights, Equal Weight beside
the agent, a population) pays the same limits; hand-computed P&L on the projected trade; limits that cannot bind leave
every trade unchanged; infeasible caps refused on construction and by the data check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.limits import asset_turnover, project_capped_simplex
from envs.market import load_market_for
from envs.population import PopulationEnv
from envs.portfolio import PortfolioEnv
from tests.conftest import toy_market

EW3 = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])


def test_hand_computed_step_under_a_cap():
    env = PortfolioEnv(data=toy_market(), split="test", max_weight=0.5, cost_bps=10.0)
    env.reset(seed=0)
    # [0.7, 0.2, 0.1, 0] over caps 0.5 (cash uncapped): the excess 0.2 is spread over the three others
    _, _, _, _, info = env.step_weights(np.array([0.7, 0.2, 0.1, 0.0]))
    expected = np.array([0.5, 0.2 + 0.2 / 3, 0.1 + 0.2 / 3, 0.2 / 3])
    np.testing.assert_allclose(info["weights"], expected, rtol=0, atol=1e-15)
    turnover = 1 - 0.2 / 3  # from all cash: the assets bought
    assert info["turnover"] == pytest.approx(turnover, abs=1e-15)
    assert info["cost"] == pytest.approx(turnover * 1e-3, abs=1e-18)  # costs on the trade actually made
    # day 0 -> 1: A +10%, B and C flat: gross 0.5 * 0.1
    assert info["net_return"] == pytest.approx((1 - turnover * 1e-3) * 1.05 - 1, abs=1e-15)


def test_the_agent_trades_the_projection_of_its_target():
    env = PortfolioEnv(data=toy_market(), split="test", max_weight=0.4, max_cash=0.1, temperature=3.0)
    env.reset(seed=0)
    action = np.array([1.0, -1.0, 0.2, 0.5], np.float32)
    target = env.weights_from_action(action)
    assert target[0] > 0.4 and target[3] > 0.1  # the softmax breaks both caps
    _, _, _, _, info = env.step(action)
    np.testing.assert_array_equal(info["weights"], project_capped_simplex(target, env.limits.caps))
    assert info["weights"][:3].max() <= 0.4 and info["weights"][3] <= 0.1


def test_band_then_limits():
    env = PortfolioEnv(data=toy_market(), split="test", no_trade_band=0.1, max_turnover=0.3, temperature=1.0)
    env.reset(seed=0)
    # the band moves (1 - 0.1 / 0.75) of the way to 0.25 each (turnover 0.65); the limit scales that to 0.3
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    np.testing.assert_allclose(info["weights"], [0.1, 0.1, 0.1, 0.7], rtol=0, atol=1e-15)
    assert info["turnover"] == pytest.approx(0.3, abs=1e-15)


@pytest.mark.parametrize(
    "options",
    [
        {"max_weight": 0.4},
        {"max_weight": 0.35, "max_cash": 0.0},
        {"max_turnover": 0.25},
        {"max_weight": 0.4, "max_cash": 0.2, "max_turnover": 0.3, "no_trade_band": 0.05},
        {"action": "tilt", "tilt_reference": "previous", "max_weight": 0.45, "max_turnover": 0.1},
    ],
)
def test_every_trade_is_within_the_limits(price_csv, options):
    env = PortfolioEnv(data=price_csv, episode_len=40, **options)
    caps = np.append(np.full(3, options.get("max_weight", math.inf)), options.get("max_cash", math.inf))
    limit = options.get("max_turnover", math.inf)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    first = True
    for i in range(200):
        before = env.current_weights
        act = rng.uniform(-1.5, 1.5, 4) * (i % 5 != 0)
        _, _, _, trunc, info = env.step(act.astype(np.float32)) if i % 3 else env.step_weights(rng.dirichlet([1] * 4))
        w = info["weights"]
        assert (w >= 0).all() and (w <= caps).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
        assert info["turnover"] == asset_turnover(w, before, 3)
        if not first or "max_cash" not in options:  # the first day from all cash must invest 1 - max_cash
            assert info["turnover"] <= limit + 1e-12
        first = trunc
        if trunc:
            env.reset()


def test_limits_that_cannot_bind_change_no_trade(price_csv):
    free = PortfolioEnv(data=price_csv, episode_len=30, reward="excess_log_return")
    loose = PortfolioEnv(data=price_csv, episode_len=30, reward="excess_log_return", max_weight=1.0, max_turnover=2.0)
    assert free.limits is None and loose.limits is not None
    rng = np.random.default_rng(1)
    for env in (free, loose):
        env.reset(seed=3)
    for _ in range(30):
        act = rng.uniform(-1, 1, 4).astype(np.float32)
        a, b = free.step(act), loose.step(act)
        np.testing.assert_array_equal(a[0], b[0])  # observations, hence weights, bitwise
        np.testing.assert_array_equal(a[4]["weights"], b[4]["weights"])
        assert a[4]["portfolio_value"] == b[4]["portfolio_value"]
        # Equal Weight beside the agent: simulated under the limits vs the stateless formula without them
        assert b[4]["ew_net_return"] == pytest.approx(a[4]["ew_net_return"], abs=1e-15)
        assert b[1] == pytest.approx(a[1], abs=1e-12)


def test_equal_weight_beside_the_agent_pays_the_same_limits(price_csv):
    limits = {"max_weight": 0.3, "max_turnover": 0.2}  # 1/3 is over the cap: Equal Weight holds 0.1 cash
    env = PortfolioEnv(data=price_csv, episode_len=20, reward="excess_log_return", **limits)
    baseline = PortfolioEnv(data=price_csv, episode_len=20, **limits)
    for seed in (0, 1):
        env.reset(seed=seed)
        baseline.reset(seed=seed)
        for day in range(20):
            info = env.step(np.zeros(4, np.float32))[-1]
            base = baseline.step_weights(EW3)[-1]
            assert info["ew_net_return"] == base["net_return"]
            if day >= 5:  # bought by now: 0.2 a day from all cash
                np.testing.assert_allclose(base["weights"][:3], 0.3, atol=1e-12)
        assert baseline.current_weights[3] > 0.05  # Equal Weight under a cap of 0.3 keeps cash


def test_a_population_trades_under_the_limits(price_csv):
    env = PopulationEnv([0, 1], data=price_csv, episode_len=10, max_weight=0.4)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        info = env.step(rng.uniform(-1, 1, 8).astype(np.float32))[-1]
        for agent in info["agents"]:
            assert agent["weights"][:3].max() <= 0.4


def test_infeasible_caps_are_refused_by_the_env_and_the_data_check():
    message = (
        "max_weight=0.3 and max_cash=0 cannot hold a whole portfolio of 3 assets (3 * 0.3 + 0 = 0.9 < 1): raise "
        "max_weight to at least 0.333334 or max_cash to at least 0.1"
    )
    with pytest.raises(ValueError) as info:
        PortfolioEnv(data=toy_market(), max_weight=0.3, max_cash=0.0)
    assert str(info.value) == message
    PortfolioEnv(data=toy_market(), max_weight=0.3, max_cash=0.1)  # feasible
    with pytest.raises(ValueError) as info:
        load_market_for({"data": "sp500", "max_weight": 0.04, "max_cash": 0.1})
    assert str(info.value) == (
        "max_weight=0.04 and max_cash=0.1 cannot hold a whole portfolio of 20 assets (20 * 0.04 + 0.1 = 0.9 < 1): "
        "raise max_weight to at least 0.045 or max_cash to at least 0.2"
    )
