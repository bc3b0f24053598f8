"""envs.rewards: each formula against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.rewards import (
    EpisodeStats,
    default_reward,
    differential_sharpe_reward,
    excess_log_return_reward,
    get_reward,
    log_return_reward,
    sharpe_so_far,
    update_stats,
)


def _stats(returns):
    s = EpisodeStats()
    for r in returns:
        s = update_stats(s, r)
    return s


def test_sharpe_so_far_matches_numpy():
    rets = [0.01, -0.02, 0.015, 0.003]
    assert sharpe_so_far(_stats(rets)) == pytest.approx(np.mean(rets) / np.std(rets, ddof=1), rel=1e-12)
    assert sharpe_so_far(_stats([0.01])) == 0.0
    assert sharpe_so_far(_stats([0.01, 0.01])) == 0.0  # no spread


def test_default_reward():
    prev = _stats([0.01, -0.01])
    new = update_stats(prev, 0.02)
    expected = 100 * 0.02 + 0.1 * (np.mean([0.01, -0.01, 0.02]) / np.std([0.01, -0.01, 0.02], ddof=1)) - 0.1 * 0.3
    assert default_reward(0.02, 0.8, prev, new, 0.0) == pytest.approx(expected, rel=1e-12)
    assert default_reward(0.02, 0.4, prev, new, 0.0) == pytest.approx(expected + 0.03, rel=1e-12)  # no penalty
    assert default_reward(0.5, 0.0, prev, update_stats(prev, 0.5), 0.0) == 20.0  # clipped
    assert default_reward(-0.5, 0.0, prev, update_stats(prev, -0.5), 0.0) == -20.0


def test_log_return_reward():
    s = EpisodeStats()
    assert log_return_reward(0.01, 0.0, s, s, 0.0) == pytest.approx(100 * math.log(1.01))
    assert log_return_reward(-0.9, 0.0, s, s, 0.0) == -20.0


def test_differential_sharpe_reward():
    prev = _stats([0.01, -0.01, 0.02])
    a, b = prev.ema_mean, prev.ema_sq
    r = 0.005
    expected = (b * (r - a) - 0.5 * a * (r * r - b)) / (b - a * a) ** 1.5
    assert differential_sharpe_reward(r, 0.0, prev, update_stats(prev, r), 0.0) == pytest.approx(
        max(-20, min(20, expected))
    )
    assert differential_sharpe_reward(r, 0.0, EpisodeStats(), EpisodeStats(), 0.0) == 0.0


def test_excess_log_return_reward():
    s = EpisodeStats()
    assert excess_log_return_reward(0.01, 0.3, s, s, 0.004) == pytest.approx(100 * (math.log(1.01) - math.log(1.004)))
    assert excess_log_return_reward(0.004, 0.0, s, s, 0.004) == 0.0  # matching Equal Weight earns nothing
    assert excess_log_return_reward(-0.5, 0.0, s, s, 0.1) == -20.0  # clipped
    # the other rewards do not depend on Equal Weight's return
    assert log_return_reward(0.01, 0.0, s, s, 0.05) == log_return_reward(0.01, 0.0, s, s, -0.05)


def test_unknown_reward_name():
    assert get_reward("default") is default_reward
    assert get_reward("excess_log_return") is excess_log_return_reward
    with pytest.raises(ValueError) as info:
        get_reward("x")
    assert (
        str(info.value)
        == "unknown reward 'x'; choose one of default, log_return, differential_sharpe, excess_log_return"
    )
