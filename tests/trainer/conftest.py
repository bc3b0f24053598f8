"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import checkpoints, synthetic_prices, train_cli, write_wide_csv
from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


@pytest.fixture(scope="module")
def algo(ray_session):
    """A smoke-sized ``PortfolioSAC`` after one iteration (buffer and filter statistics filled, some updates
    done), one per test module."""
    exp = load_experiment("smoke", {"sac.learning_starts": 100, "stopping.steps_per_iteration": 200})
    algo = build_sac_config(exp).build_algo()
    algo.train()
    yield algo
    algo.stop()


# every rule between the action and the trade: tilt around the drifted weights, a no-trade band, partial
# rebalancing and position limits on weights and turnover
SETTINGS = {
    "data.action": "tilt",
    "data.tilt_reference": "previous",
    "data.no_trade_band": 0.02,
    "data.rebalance_fraction": 0.8,
    "data.max_weight": 0.35,
    "data.max_turnover": 0.3,
}

TINY_TRAIN = {
    "sac.population": 2,
    "seed": 4,
    "model.hidden": [16],
    "sac.learning_starts": 100,
    "stopping.steps_per_iteration": 200,
}


@pytest.fixture(scope="session")
def limited_run(ray_session, tmp_path_factory):
    """A short real run on 4 synthetic assets with every trading rule on; its price file."""
    base = tmp_path_factory.mktemp("decide")
    data = write_wide_csv(base / "prices.csv", synthetic_prices(n_days=900, n_assets=4, seed=1))
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    res = train_cli(base / "run", ray_session, "--exp", "smoke", "--data", data, "--steps", "600", *sets)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return checkpoints(base / "run"), data


# every feature set at once: per-asset features and their ranks, and the market features as the shared block
ALL_FEATURES = "asset+rank+market"


@pytest.fixture(scope="session")
def rich_run(ray_session, tmp_path_factory):
    """``limited_run`` with every feature set (``data.features``): a history long enough for the 252-day purge
    gaps (2,400 days: 108 validation and test days); its price file."""
    base = tmp_path_factory.mktemp("rich")
    data = write_wide_csv(base / "prices.csv", synthetic_prices(n_days=2400, n_assets=4, seed=2))
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    sets += ["--set", f"data.features={ALL_FEATURES}"]
    res = train_cli(base / "run", ray_session, "--exp", "smoke", "--data", data, "--steps", "600", *sets)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return checkpoints(base / "run"), data


@pytest.fixture(scope="session")
def population_run(ray_session, tmp_path_factory):
    """A population of 2 (seeds 4, 5) trained one iteration in process, saved, and its live deterministic
    actions along a validation episode (side-by-side raw observations and the population policy's actions)."""
    from trainer.evaluation.policy import policy_from_algorithm

    exp = load_experiment("smoke", TINY_TRAIN, sweep=False)
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        ckpt = tmp_path_factory.mktemp("population") / "checkpoint_000001"
        algo.save_to_path(str(ckpt))
        policy, env = policy_from_algorithm(algo), algo._eval_env
        obs, _ = env.reset(seed=0)
        observations, actions = [], []
        for _ in range(20):
            action = policy(obs)
            observations.append(obs)
            actions.append(action)
            obs, *_ = env.step(action)
        dims = (env.envs[0].observation_space.shape[0], env.envs[0].action_space.shape[0])
    finally:
        algo.stop()
    return ckpt, np.array(observations), np.array(actions), dims
