"""envs.portfolio: gymnasium compliance, hand-computed P&L, invariants, no look-ahead, errors."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.portfolio import PortfolioEnv
from tests.conftest import synthetic_prices, toy_market, write_wide_csv


def _check(env: gym.Env) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space (min|max)imum value is.*")
        check_env(env, skip_render_check=True)


def test_check_env_bundled_and_user_csv(price_csv):
    _check(gym.make("Portfolio-v0").unwrapped)
    _check(PortfolioEnv(data=price_csv, episode_len=50))
    _check(PortfolioEnv(data=price_csv, split="test"))


def test_registered_for_gymnasium_and_ray():
    from ray.tune.registry import ENV_CREATOR, _global_registry

    assert envs.ENV_ID in gym.registry
    assert _global_registry.contains(ENV_CREATOR, envs.ENV_ID)
    env = envs.make_env({"split": "validation", "cost_bps": 5.0})
    assert env.split == "validation" and env.cost_bps == 5.0


def test_seeded_reset_is_reproducible():
    a, b = PortfolioEnv(), PortfolioEnv()
    oa, ia = a.reset(seed=123)
    ob, ib = b.reset(seed=123)
    np.testing.assert_array_equal(oa, ob)
    assert ia["step_index"] == ib["step_index"]
    acts = np.random.default_rng(0).uniform(-1, 1, (20, 21)).astype(np.float32)
    for act in acts:
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1] == rb[1]
    starts = {PortfolioEnv().reset(seed=s)[1]["step_index"] for s in range(10)}
    assert len(starts) > 1  # different seeds -> different random starts


def test_hand_computed_step_values():
    env = PortfolioEnv(data=toy_market(), split="validation", cost_bps=10.0, temperature=2.0)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs[-4:], [0, 0, 0, 1])  # starts in cash
    assert env.episode_len == 3

    # Step 1: equal scores -> 0.25 each. From all cash: turnover 0.75, cost 0.75 * 10bp = 0.00075.
    # Gross 0.25 * 10% (A) = 0.025; net = (1 - 0.00075) * 1.025 - 1 = 0.02423125.
    _, r1, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert not term and not trunc
    assert info["turnover"] == pytest.approx(0.75)
    assert info["cost"] == pytest.approx(0.00075)
    assert info["net_return"] == pytest.approx(0.02423125, abs=1e-12)
    assert info["portfolio_value"] == pytest.approx(1.02423125, abs=1e-12)
    # reward: 100 * net + 0.1 * sharpe(1 return = 0) - 0.1 * (0.75 - 0.5)
    assert r1 == pytest.approx(2.423125 - 0.025, abs=1e-10)
    drift = np.array([0.25 * 1.1, 0.25, 0.25, 0.25]) / 1.025
    np.testing.assert_allclose(env._w, drift, rtol=1e-12)

    # Step 2: back to 0.25 each. Turnover = (0.25*0.075 + 2*0.25*0.025)/1.025 = 0.03125/1.025.
    # Day 1->2: A 0%, B -10%, C +10% -> gross 0.
    _, r2, _, trunc, info = env.step(np.zeros(4, np.float32))
    turnover2 = 0.03125 / 1.025
    net2 = (1 - turnover2 * 1e-3) - 1
    assert info["turnover"] == pytest.approx(turnover2, abs=1e-12)
    assert info["net_return"] == pytest.approx(net2, abs=1e-12)
    assert info["portfolio_value"] == pytest.approx(1.02423125 * (1 + net2), abs=1e-12)
    n1 = 0.02423125
    sharpe = ((n1 + net2) / 2) / (abs(n1 - net2) / math.sqrt(2))  # mean / sample std of two returns
    assert r2 == pytest.approx(100 * net2 + 0.1 * sharpe, abs=1e-9)
    np.testing.assert_allclose(env._w, [0.25, 0.225, 0.275, 0.25], rtol=1e-12)
    assert not trunc

    # Step 3: all in A via a strong score: weights = softmax(2 * [1, -1, -1, -1]).
    e = np.exp(2 * np.array([1.0, -1, -1, -1]))
    w = e / e.sum()
    _, _, _, trunc, info = env.step(np.array([1, -1, -1, -1], np.float32))
    np.testing.assert_allclose(info["weights"], w, rtol=1e-12)
    turnover3 = abs(w[0] - 0.25) + abs(w[1] - 0.225) + abs(w[2] - 0.275)
    assert info["turnover"] == pytest.approx(turnover3, abs=1e-12)
    assert info["net_return"] == pytest.approx((1 - turnover3 * 1e-3) * (1 + w[0] * 0.1) - 1, abs=1e-12)
    assert trunc  # the split's last day ends the episode: no return from outside the split
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(4, np.float32))


def test_weights_valid_for_extreme_actions():
    env = PortfolioEnv()
    rng = np.random.default_rng(0)
    cases = [np.full(21, 1.0), np.full(21, -1.0), np.full(21, 1e6), np.full(21, -1e30)]
    cases += [rng.uniform(-5, 5, 21) for _ in range(50)]
    one_hot = -np.ones(21)
    one_hot[3] = 1.0
    cases.append(one_hot)
    env.reset(seed=0)
    for act in cases:
        w = env.weights_from_action(act)
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
        _, _, _, trunc, info = env.step(act.astype(np.float32))
        assert (info["weights"] >= 0).all() and info["weights"].sum() == pytest.approx(1.0, abs=1e-12)
        if trunc:
            env.reset()
    # the documented concentration: e^(2T) / (e^(2T) + N) with T=3, N=20
    assert env.weights_from_action(one_hot)[3] == pytest.approx(math.exp(6) / (math.exp(6) + 20))
    assert env.weights_from_action(one_hot)[3] > 0.95


def test_non_finite_action_raises_clear_error():
    env = PortfolioEnv()
    env.reset(seed=0)
    act = np.zeros(21, np.float32)
    act[2] = np.nan
    with pytest.raises(ValueError, match=r"^non-finite action .*training diverged; restore an earlier"):
        env.step(act)
    act[2] = np.inf
    with pytest.raises(ValueError, match="non-finite action"):
        env.step(act)


def test_no_look_ahead_in_observations(tmp_path):
    prices = synthetic_prices(n_days=800, seed=3)  # test split: rows 740..799
    t_cut = 760  # a day inside the test split
    shocked = prices.copy()
    noise = np.random.default_rng(2).uniform(0.8, 1.25, shocked.iloc[t_cut + 1 :].shape)
    shocked.iloc[t_cut + 1 :] *= noise
    p1 = write_wide_csv(tmp_path / "a.csv", prices)
    p2 = write_wide_csv(tmp_path / "b.csv", shocked)
    env1, env2 = PortfolioEnv(data=p1, split="test"), PortfolioEnv(data=p2, split="test")
    o1, i1 = env1.reset(seed=0)
    o2, _ = env2.reset(seed=0)
    acts = np.random.default_rng(1).uniform(-1, 1, (200, 4)).astype(np.float32)
    day = i1["step_index"]
    assert day < t_cut
    for act in acts:
        if day > t_cut:
            break
        np.testing.assert_array_equal(o1, o2)  # every observation of days <= t_cut is identical
        o1, *_, info = env1.step(act)
        o2, *_ = env2.step(act)
        day = info["step_index"] + 1
    assert day > t_cut  # the loop reached the perturbed region
    assert not np.array_equal(o1, o2)


def test_eval_split_is_one_full_pass(price_csv):
    env = PortfolioEnv(data=price_csv, split="validation", episode_len=5)
    _, info = env.reset(seed=0)
    rng = env.market.splits["validation"]
    assert info["step_index"] == rng.start
    steps, trunc = 0, False
    while not trunc:
        _, _, _, trunc, _ = env.step(np.zeros(4, np.float32))
        steps += 1
    assert steps == rng.end - rng.start  # episode_len does not apply to evaluation splits


def test_train_episode_len_and_bounds(price_csv):
    env = PortfolioEnv(data=price_csv, episode_len=30)
    rng = env.market.splits["train"]
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert rng.start <= info["step_index"] <= rng.end - 30
    long = PortfolioEnv(data=price_csv, episode_len=10_000)
    assert long.episode_len == rng.end - rng.start  # shortened to the split


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "dev"}, "split must be one of train, validation, test, got 'dev'"),
        ({"cost_bps": -1}, "cost_bps must be a finite number >= 0, got -1"),
        ({"episode_len": 0}, "episode_len must be an integer >= 1, got 0"),
        ({"temperature": 0}, "temperature must be a finite number > 0, got 0"),
        (
            {"reward": "sortino"},
            "unknown reward 'sortino'; choose one of default, log_return, differential_sharpe",
        ),
    ],
)
def test_bad_env_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        PortfolioEnv(**kwargs)
    assert str(info.value) == message
