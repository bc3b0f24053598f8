"""trainer.experiment.memory: the estimate matches what the buffers, markets and envs really allocate, and a run
or sweep that cannot fit is refused with the figure and the setting to change (the suggested setting fits)."""

from __future__ import annotations

import dataclasses

import pytest

from envs.market import load_market
from envs.population import PopulationEnv
from envs.portfolio import PortfolioEnv
from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.experiment.memory import (
    MemoryEstimate,
    check_memory,
    estimate_memory,
    fmt_bytes,
    observation_size,
    transition_bytes,
)
from trainer.rl.buffer import FlatReplayBuffer, PopulationReplayBuffer
from trainer.runtime.resources import trials_at_once

GB = 10**9


def _buffer_bytes(buffer) -> int:
    return sum(a.nbytes for a in (buffer.obs, buffer.next_obs, buffer.actions, buffer.rewards, buffer.terminateds))


def test_sizes_by_hand():
    # 20 assets x 9 features + 21 weights; actions 21; obs, next_obs, actions, reward, terminated as float32
    assert observation_size(20) == 201
    assert transition_bytes(20) == (201 + 201 + 21 + 1 + 1) * 4 == 1700
    est = estimate_memory(load_experiment("smoke", sweep=False), n_days=8313, n_assets=20)
    assert est.buffer == 5000 * 1700
    assert est.market == 8313 * 20 * (9 * 4 + 8 + 8)  # features float32, returns and prices float64
    assert est.env_copy == 8313 * 23 * 8  # growth [T, N + 1], Equal Weight's gross and turnover [T]
    assert est.main_envs == 2 and est.env_runners == 0  # the evaluation env and the local sampling env
    assert est.trial() == est.buffer + est.market + 2 * est.env_copy

    # every feature set: 18 per-asset values (9 and their ranks) and 6 shared ones; a sweep counts its largest
    assert observation_size(20, "asset+rank+market") == 20 * 18 + 6 + 21 == 387
    rich = estimate_memory(
        load_experiment("smoke", {"sweep.search_space": {"data.features": {"grid_search": ["asset", "asset+rank"]}}}),
        n_days=8313,
        n_assets=20,
    )
    assert rich.features == "asset+rank" and rich.buffer == 5000 * (2 * (20 * 18 + 21) + 21 + 2) * 4
    assert rich.market == 8313 * 20 * (18 * 4 + 8 + 8)


def test_the_estimate_is_what_the_buffers_markets_and_envs_allocate():
    market = load_market()
    n_days, n_assets = market.features.shape[:2]
    est = estimate_memory(load_experiment("smoke", sweep=False), n_days, n_assets)
    env = PortfolioEnv(split="train")
    assert env.observation_space.shape == (observation_size(n_assets),)
    assert _buffer_bytes(FlatReplayBuffer(5000, observation_size(n_assets), n_assets + 1, seed=0)) == est.buffer
    prices = market.data.prices.to_numpy()
    assert market.features.nbytes + market.simple_returns.nbytes + prices.nbytes == est.market
    assert env._growth.nbytes + env._ew_gross.nbytes + env._ew_turnover.nbytes == est.env_copy

    k = 3
    pop = estimate_memory(load_experiment("smoke", {"sac.population": k}, sweep=False), n_days, n_assets)
    penv = PopulationEnv(population_seeds=[0, 1, 2], split="train")
    assert _buffer_bytes(PopulationReplayBuffer(5000, penv.obs_dim, penv.act_dim, [0, 1, 2])) == pop.buffer
    assert pop.buffer == k * est.buffer and pop.main_envs == 2 * k


def test_remote_env_runners_each_hold_a_market_and_their_envs():
    exp = load_experiment("smoke", {"resources.num_env_runners": 2, "resources.num_envs_per_env_runner": 3})
    est = estimate_memory(exp, 1000, 4)
    assert (est.env_runners, est.envs_per_runner, est.main_envs) == (2, 3, 1)
    assert est.rest() == 3 * est.market + (1 + 2 * 3) * est.env_copy


def test_a_swept_buffer_size_counts_at_its_largest():
    exp = load_experiment("smoke", {"sweep.search_space": {"sac.buffer_size": {"grid_search": [1000, 70000, 5000]}}})
    assert estimate_memory(exp, 100, 2).transitions == 70000
    exp = load_experiment("smoke", {"sweep.search_space": {"sac.buffer_size": {"randint": [1000, 9000]}}})
    assert estimate_memory(exp, 100, 2).transitions == 8999  # randint's upper end is exclusive


def test_a_run_that_cannot_fit_is_refused_with_the_figure_and_a_buffer_size_that_fits():
    exp = load_experiment("smoke", {"sac.buffer_size": 10**12}, sweep=False)
    est = estimate_memory(exp, 8313, 20)
    with pytest.raises(ExperimentError) as info:
        check_memory(est, 16 * GB, "this machine")
    fits = (16 * GB - est.rest()) // 1700  # the buffer beside the market and the two env copies
    assert str(info.value) == (
        "this run needs about 1.7 PB of memory (replay buffer 1.7 PB: sac.buffer_size 1,000,000,000,000 transitions "
        "x 1,700 bytes; features 8.6 MB (8,313 days x 20 assets, 1 process); 2 env copies 3.1 MB) but this machine "
        f"has 16.0 GB available; lower sac.buffer_size (at most {fits:,} transitions fit)"
    )
    # the suggested size is the largest that passes
    check_memory(dataclasses.replace(est, transitions=fits), 16 * GB, "this machine")
    with pytest.raises(ExperimentError):
        check_memory(dataclasses.replace(est, transitions=fits + 1), 16 * GB, "this machine")


def test_a_population_names_both_settings():
    exp = load_experiment("smoke", {"sac.buffer_size": 10**8, "sac.population": 4}, sweep=False)
    with pytest.raises(ExperimentError) as info:
        check_memory(estimate_memory(exp, 8313, 20), 8 * GB, "this machine")
    message = str(info.value)
    assert message.startswith(
        "this run needs about 680.0 GB of memory (replay buffer 680.0 GB: sac.buffer_size 100,000,000 transitions x "
        "4 agents (sac.population) x 1,700 bytes; "
    )
    assert message.endswith(" transitions fit) or lower sac.population")


def test_trials_at_once_add_up_and_fewer_at_once_is_offered():
    exp = load_experiment("quick", {"sac.buffer_size": 2_000_000})
    est = estimate_memory(exp, 8313, 20)
    assert est.trial() == 2_000_000 * 1700 + est.rest()
    available = 5 * GB  # one trial (3.4 GB) fits, two do not
    check_memory(est, available, "this machine", trials=1)
    with pytest.raises(ExperimentError) as info:
        check_memory(est, available, "this machine", trials=2, why_trials="sweep.max_concurrent_trials=2")
    fits = (available - est.market - 2 * est.rest()) // (2 * 1700)
    assert str(info.value) == (
        f"the sweep needs about {fmt_bytes(est.total(2))} of memory: 2 trial(s) at once "
        "(sweep.max_concurrent_trials=2) of about 3.4 GB each (replay buffer 3.4 GB: sac.buffer_size 2,000,000 "
        "transitions x 1,700 bytes; features 8.6 MB (8,313 days x 20 assets, 1 process); 2 env copies 3.1 MB) but "
        f"this machine has 5.0 GB available; lower sac.buffer_size (at most {fits:,} transitions fit) or set "
        "sweep.max_concurrent_trials=1"
    )


def test_env_copies_that_leave_no_room_for_a_buffer_name_their_settings():
    exp = load_experiment("smoke", {"resources.num_envs_per_env_runner": 100_000}, sweep=False)
    est = estimate_memory(exp, 8313, 20)
    assert est.env_copies == 100_001 and est.rest() == est.market + 100_001 * est.env_copy
    with pytest.raises(ExperimentError) as info:
        check_memory(est, 16 * GB, "this machine")
    assert str(info.value) == (
        "this run needs about 153.0 GB of memory (replay buffer 8.5 MB: sac.buffer_size 5,000 transitions x 1,700 "
        "bytes; features 8.6 MB (8,313 days x 20 assets, 1 process); 100,001 env copies 153.0 GB) but this machine "
        "has 16.0 GB available; lower resources.num_envs_per_env_runner"
    )
    exp = load_experiment(
        "smoke",
        {"resources.num_envs_per_env_runner": 1000, "resources.num_env_runners": 2, "sac.population": 50},
        sweep=False,
    )
    with pytest.raises(ExperimentError) as info:
        check_memory(estimate_memory(exp, 8313, 20), 16 * GB, "this machine")
    assert str(info.value).endswith(
        "features 25.9 MB (8,313 days x 20 assets, 3 processes); 100,050 env copies 153.0 GB) but this machine has "
        "16.0 GB available; lower sac.population, lower resources.num_envs_per_env_runner or lower "
        "resources.num_env_runners"
    )


def test_price_data_too_large_for_any_buffer_says_so():
    est = MemoryEstimate(
        transitions=1000, agents=1, n_days=20_000, n_assets=50_000, env_runners=0, envs_per_runner=1, main_envs=2
    )
    with pytest.raises(ExperimentError) as info:
        check_memory(est, 8 * GB, "this machine")
    assert str(info.value).endswith(
        "; the price data alone (20,000 days x 50,000 assets) does not fit: use fewer assets or a shorter history"
    )
    # computing the features once is the peak of a run on such data (before its buffer exists)
    assert est.total(None) == est.market + est.feature_build > est.trial()


def test_trials_at_once_follow_every_resource_a_trial_asks_for():
    assert trials_at_once({"CPU": 1.0}, {"CPU": 16.0, "GPU": 1.0}, n_trials=12, limit=None) == 12
    assert trials_at_once({"CPU": 1.0, "GPU": 0.5}, {"CPU": 16.0, "GPU": 1.0}, n_trials=12, limit=None) == 2
    assert trials_at_once({"CPU": 1.0}, {"CPU": 16.0}, n_trials=12, limit=3) == 3
    assert trials_at_once({"CPU": 3.0}, {"CPU": 2.0}, n_trials=4, limit=None) == 1  # never fits: at least one
    assert trials_at_once({"CPU": 0.1}, {"CPU": 0.3}, n_trials=9, limit=None) == 3  # float division kept exact


def test_fmt_bytes():
    assert [fmt_bytes(n) for n in (999, 1000, 11_700_000, 1.7e15, 2e18)] == [
        "999 B",
        "1.0 KB",
        "11.7 MB",
        "1.7 PB",
        "2000.0 PB",
    ]
