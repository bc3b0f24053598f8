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
        ({"cost_bps": -1}, "cost_bps must be a finite number in [0, 1000] basis points, got -1"),
        ({"episode_len": 0}, "episode_len must be an integer >= 1, got 0"),
        ({"temperature": 0}, "temperature must be a finite number > 0, got 0"),
        (
            {"reward": "sortino"},
            "unknown reward 'sortino'; choose one of default, log_return, differential_sharpe, excess_log_return",
        ),
    ],
)
def test_bad_env_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        PortfolioEnv(**kwargs)
    assert str(info.value) == message


# --- cost-aware options: tilt actions, no-trade band, partial rebalancing, reward vs Equal Weight ---------

EW3 = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])  # Equal Weight over the toy market's 3 assets, no cash


def test_tilt_zero_action_is_exactly_equal_weight():
    env = PortfolioEnv(data=toy_market(), split="test", action="tilt")
    env.reset(seed=0)
    for _ in range(3):
        _, _, _, _, info = env.step(np.zeros(4, np.float32))
        np.testing.assert_array_equal(info["weights"], EW3)  # bit for bit, every day (EW is rebalanced)
    # on the bundled data too: 1/20 per asset exactly, nothing in cash
    big = PortfolioEnv(action="tilt", split="validation")
    big.reset(seed=0)
    np.testing.assert_array_equal(big.weights_from_action(np.zeros(21)), np.append(np.full(20, 1 / 20), 0.0))


def test_tilt_hand_computed():
    env = PortfolioEnv(data=toy_market(), split="test", action="tilt", tilt_scale=0.5)
    env.reset(seed=0)
    a = np.array([1.0, -0.4, 0.2, 1.0])  # the cash score has no effect: the reference holds no cash
    w = np.array([np.exp(0.5), np.exp(-0.2), np.exp(0.1), 0.0])
    np.testing.assert_allclose(env.weights_from_action(a), w / w.sum(), rtol=1e-15)
    # scores are clipped to [-1, 1] like the softmax action's
    np.testing.assert_array_equal(env.weights_from_action(np.array([5.0, -0.4, 0.2, 1.0])), env.weights_from_action(a))


def test_tilt_previous_zero_action_never_trades():
    env = PortfolioEnv(data=toy_market(), split="test", action="tilt", tilt_reference="previous", cost_bps=10.0)
    env.reset(seed=0)
    # from all cash there is nothing to tilt: the reference is Equal Weight (turnover 1)
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    np.testing.assert_array_equal(info["weights"], EW3)
    assert info["turnover"] == 1.0
    for _ in range(2):
        drifted = env.current_weights
        _, _, _, _, info = env.step(np.zeros(4, np.float32))
        np.testing.assert_array_equal(info["weights"], drifted)
        assert info["turnover"] == 0.0 and info["cost"] == 0.0
    # a nonzero action tilts the drifted weights: w_i proportional to drift_i * e^(a_i)
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))
    drifted = env.current_weights
    a = np.array([0.3, -1.0, 0.0, 0.0])
    expected = drifted * np.exp(a)
    np.testing.assert_allclose(env.weights_from_action(a), expected / expected.sum(), rtol=1e-14)


def test_no_trade_band_inside_and_outside():
    market = toy_market()
    env = PortfolioEnv(data=market, split="test", no_trade_band=0.1, temperature=1.0)
    env.reset(seed=0)
    # day 0 from all cash: target 0.25 each, turnover 0.75 > 0.1: move (1 - 0.1 / 0.75) of the way
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    k = 1 - 0.1 / 0.75
    expected = (1 - k) * np.array([0, 0, 0, 1.0]) + k * np.full(4, 0.25)
    np.testing.assert_allclose(info["weights"], expected, rtol=1e-15)
    assert info["turnover"] == pytest.approx(0.75 - 0.1, abs=1e-15)  # only the part beyond the band
    assert info["cost"] == pytest.approx(0.65 * 1e-3, abs=1e-15)
    # day 1: a target within 0.1 of the drifted weights is not traded at all
    drifted = env.current_weights
    target = drifted.copy()
    target[0] += 0.04
    target[1] -= 0.04  # turnover 0.08 <= 0.1
    scores = np.log(target)  # softmax(log(w)) = w at temperature 1
    _, _, _, _, info = env.step(scores.astype(np.float32) - scores.max())
    np.testing.assert_array_equal(info["weights"], drifted)
    assert info["turnover"] == 0.0
    # the baselines' path trades to the exact target whatever the band
    before = env.current_weights
    _, _, _, _, info = env.step_weights(EW3)
    np.testing.assert_array_equal(info["weights"], EW3 / EW3.sum())
    assert info["turnover"] == pytest.approx(np.abs(EW3[:3] - before[:3]).sum(), abs=1e-15)


def test_rebalance_fraction_and_band_together():
    env = PortfolioEnv(data=toy_market(), split="test", rebalance_fraction=0.5, temperature=1.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    np.testing.assert_allclose(info["weights"], [0.125, 0.125, 0.125, 0.625], rtol=1e-15)
    assert info["turnover"] == pytest.approx(0.375, abs=1e-15)
    both = PortfolioEnv(data=toy_market(), split="test", rebalance_fraction=0.5, no_trade_band=0.15, temperature=1.0)
    both.reset(seed=0)
    _, _, _, _, info = both.step(np.zeros(4, np.float32))
    k = 0.5 * (1 - 0.15 / 0.75)  # the fraction of the part beyond the band: 0.4
    np.testing.assert_allclose(info["weights"], [0.25 * k] * 3 + [1 - 0.75 * k], rtol=1e-15)
    assert info["turnover"] == pytest.approx(0.5 * (0.75 - 0.15), abs=1e-15)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"action": "tilt"},
        {"action": "tilt", "tilt_reference": "previous", "tilt_scale": 3.0},
        {"no_trade_band": 0.3},
        {"rebalance_fraction": 0.2},
        {"action": "tilt", "tilt_reference": "previous", "no_trade_band": 0.05, "rebalance_fraction": 0.7},
    ],
)
def test_weights_stay_valid_under_random_actions(price_csv, options):
    env = PortfolioEnv(data=price_csv, episode_len=40, **options)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for i in range(300):
        act = rng.uniform(-1.5, 1.5, 4) * (i % 7 != 0)  # some zero actions, some clipped scores
        _, _, _, trunc, info = env.step(act.astype(np.float32))
        w = info["weights"]
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
        held = env.current_weights
        assert (held >= 0).all() and held.sum() == pytest.approx(1.0, abs=1e-12)
        assert info["turnover"] <= 2.0 + 1e-12
        if trunc:
            env.reset()


def test_excess_log_return_against_hand_computation():
    env = PortfolioEnv(data=toy_market(), split="test", reward="excess_log_return", cost_bps=10.0, temperature=2.0)
    env.reset(seed=0)
    third = 1 / 3
    # Equal Weight beside the agent (as in the Equal Weight baseline): day 0 buys 1/3 each from cash
    ew1 = (1 - 0.001) * (1 + 0.1 / 3) - 1
    drift1 = np.array([third * 1.1, third, third]) / (1 + 0.1 / 3)
    ew2 = (1 - 0.001 * np.abs(third - drift1).sum()) * 1.0 - 1  # day 1: B -10%, C +10%
    ew3 = (1 - 0.001 * (0.2 / 3)) * (1 + 0.1 / 3) - 1  # day 2 rebalances from [1/3, 0.3, 0.3667]
    # the agent holds 0.25 each (the softmax of a zero action): day 0 net 0.02423125 (see above)
    nets = []
    for ew in (ew1, ew2, ew3):
        _, reward, _, _, info = env.step(np.zeros(4, np.float32))
        assert info["ew_net_return"] == pytest.approx(ew, abs=1e-15)
        assert reward == pytest.approx(100 * (math.log1p(info["net_return"]) - math.log1p(ew)), abs=1e-12)
        nets.append(info["net_return"])
    assert nets[0] == pytest.approx(0.02423125, abs=1e-12)
    # Equal Weight's return does not depend on the agent's actions, and equals the Equal Weight baseline's
    other = PortfolioEnv(data=toy_market(), split="test", reward="excess_log_return")
    other.reset(seed=0)
    baseline = PortfolioEnv(data=toy_market(), split="test")
    baseline.reset(seed=0)
    for act in (np.array([1, -1, 0, 0.5]), np.array([-1, 1, 1, -1]), np.zeros(4)):
        info = other.step(act.astype(np.float32))[-1]
        base = baseline.step_weights(EW3)[-1]
        assert info["ew_net_return"] == pytest.approx(base["net_return"], abs=1e-15)


def test_ew_net_return_restarts_with_each_episode(price_csv):
    env = PortfolioEnv(data=price_csv, episode_len=5)
    baseline = PortfolioEnv(data=price_csv, episode_len=5)
    for seed in (0, 1):
        env.reset(seed=seed)
        baseline.reset(seed=seed)
        for _ in range(5):
            info = env.step(np.zeros(4, np.float32))[-1]
            assert info["ew_net_return"] == pytest.approx(baseline.step_weights(EW3)[-1]["net_return"], abs=1e-15)
