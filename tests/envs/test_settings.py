"""envs.settings: one validated settings object; exact errors; the env built from a dict or the dataclass."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.portfolio import PortfolioEnv
from envs.settings import MAX_COST_BPS, SETTING_NAMES, PortfolioSettings
from tests.conftest import toy_market


def test_defaults_declared_once_are_the_reference():
    s = PortfolioSettings()
    assert (s.cost_bps, s.episode_len, s.reward, s.temperature) == (10.0, 252, "default", 3.0)
    assert (s.action, s.tilt_reference, s.tilt_scale, s.no_trade_band, s.rebalance_fraction) == (
        "softmax",
        "equal_weight",
        1.0,
        0.0,
        1.0,
    )
    assert (s.max_weight, s.max_cash, s.max_turnover) == (None, None, None)  # no position limits
    assert MAX_COST_BPS == 1000.0
    env = PortfolioEnv(data=toy_market())
    assert env.settings == s and env.cost_bps == 10.0 and env.temperature == 3.0


MAX_WEIGHT_WHAT = "(the largest weight of one asset)"
TURNOVER_WHAT = "(a turnover per day: the L1 distance of the asset weights)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost_bps": -1}, "cost_bps must be a finite number in [0, 1000] basis points, got -1"),
        ({"cost_bps": 1000.5}, "cost_bps must be a finite number in [0, 1000] basis points, got 1000.5"),
        ({"cost_bps": float("inf")}, "cost_bps must be a finite number in [0, 1000] basis points, got inf"),
        ({"cost_bps": float("nan")}, "cost_bps must be a finite number in [0, 1000] basis points, got nan"),
        ({"cost_bps": "10"}, "cost_bps must be a finite number in [0, 1000] basis points, got '10'"),
        ({"episode_len": 0}, "episode_len must be an integer >= 1, got 0"),
        ({"episode_len": 2.5}, "episode_len must be an integer >= 1, got 2.5"),
        ({"episode_len": True}, "episode_len must be an integer >= 1, got True"),
        (
            {"reward": "sortino"},
            "unknown reward 'sortino'; choose one of default, log_return, differential_sharpe, excess_log_return",
        ),
        ({"temperature": 0}, "temperature must be a finite number > 0, got 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0, got inf"),
        ({"action": "argmax"}, "action must be one of softmax, tilt, got 'argmax'"),
        ({"tilt_reference": "cash"}, "tilt_reference must be one of equal_weight, previous, got 'cash'"),
        ({"tilt_scale": -1.0}, "tilt_scale must be a finite number > 0, got -1.0"),
        ({"no_trade_band": -0.1}, "no_trade_band must be a finite number in [0, 2) (a turnover), got -0.1"),
        ({"no_trade_band": 2.0}, "no_trade_band must be a finite number in [0, 2) (a turnover), got 2.0"),
        ({"rebalance_fraction": 0.0}, "rebalance_fraction must be a finite number in (0, 1], got 0.0"),
        ({"rebalance_fraction": 1.5}, "rebalance_fraction must be a finite number in (0, 1], got 1.5"),
        ({"max_weight": 0}, f"max_weight must be null (no cap) or a number in (0, 1] {MAX_WEIGHT_WHAT}, got 0"),
        ({"max_weight": 1.5}, f"max_weight must be null (no cap) or a number in (0, 1] {MAX_WEIGHT_WHAT}, got 1.5"),
        ({"max_weight": "10%"}, f"max_weight must be null (no cap) or a number in (0, 1] {MAX_WEIGHT_WHAT}, got '10%'"),
        (
            {"max_weight": float("nan")},
            f"max_weight must be null (no cap) or a number in (0, 1] {MAX_WEIGHT_WHAT}, got nan",
        ),
        (
            {"max_cash": -0.1},
            "max_cash must be null (no cap) or a number in [0, 1] (the largest cash weight), got -0.1",
        ),
        (
            {"max_cash": True},
            "max_cash must be null (no cap) or a number in [0, 1] (the largest cash weight), got True",
        ),
        ({"max_turnover": 0.0}, f"max_turnover must be null (no limit) or a number in (0, 2] {TURNOVER_WHAT}, got 0.0"),
        ({"max_turnover": 2.5}, f"max_turnover must be null (no limit) or a number in (0, 2] {TURNOVER_WHAT}, got 2.5"),
    ],
)
def test_every_bad_setting_is_an_exact_error(kwargs, message):
    with pytest.raises(ValueError) as info:
        PortfolioSettings(**kwargs)
    assert str(info.value) == message
    with pytest.raises(ValueError) as info:  # the env, from keywords as Ray's dict passes them
        PortfolioEnv(data=toy_market(), **kwargs)
    assert str(info.value) == message


def test_unknown_setting_is_an_error_naming_it():
    with pytest.raises(ValueError) as info:
        envs.make_env({"data": toy_market(), "cost_bp": 5})
    assert str(info.value) == f"unknown env setting(s) cost_bp; valid: {', '.join(SETTING_NAMES)}"


def test_numbers_are_normalised():
    s = PortfolioSettings(cost_bps=5, tilt_scale=2, rebalance_fraction=1)
    assert isinstance(s.cost_bps, float) and isinstance(s.tilt_scale, float)
    assert s == PortfolioSettings(cost_bps=5.0, tilt_scale=2.0)
    assert PortfolioSettings(episode_len=np.int64(30)).episode_len == 30  # numpy integers are integers
    limits = PortfolioSettings(max_weight=1, max_cash=0, max_turnover=np.float32(0.5))
    assert (limits.max_weight, limits.max_cash, limits.max_turnover) == (1.0, 0.0, 0.5)
    assert all(type(v) is float for v in (limits.max_weight, limits.max_cash, limits.max_turnover))
    assert s.replace(action="tilt").action == "tilt" and s.action == "softmax"  # frozen: a copy


def test_env_from_dict_equals_env_from_dataclass(price_csv):
    values = {
        "cost_bps": 25.0,
        "episode_len": 40,
        "reward": "excess_log_return",
        "action": "tilt",
        "tilt_reference": "previous",
        "tilt_scale": 0.5,
        "no_trade_band": 0.05,
        "rebalance_fraction": 0.5,
        "max_weight": 0.45,
        "max_cash": 0.5,
        "max_turnover": 0.4,
    }
    settings = PortfolioSettings(**values)
    from_dict = envs.make_env({"data": price_csv, "split": "train", **values})
    from_dataclass = PortfolioEnv(data=price_csv, settings=settings)
    from_gym = gym.make("Portfolio-v0", data=price_csv, **values).unwrapped
    mixed = PortfolioEnv(data=price_csv, settings=settings.as_dict())  # the dict as one argument
    assert from_dict.settings == from_dataclass.settings == from_gym.settings == mixed.settings == settings
    # a keyword overrides the settings object
    assert PortfolioEnv(data=price_csv, settings=settings, cost_bps=1.0).settings == settings.replace(cost_bps=1.0)
    actions = np.random.default_rng(0).uniform(-1, 1, (60, 4)).astype(np.float32)
    trajectories = []
    for env in (from_dict, from_dataclass, from_gym):
        obs, _ = env.reset(seed=7)
        rows = [obs]
        for a in actions:
            obs, reward, _, trunc, info = env.step(a)
            rows.append(np.concatenate([obs, [reward, info["portfolio_value"]]]))
            if trunc:
                obs, _ = env.reset()
        trajectories.append(np.concatenate(rows))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])
    np.testing.assert_array_equal(trajectories[0], trajectories[2])
