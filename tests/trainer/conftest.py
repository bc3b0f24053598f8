"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import numpy as np
import pytest

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


TINY_TRAIN = {
    "sac.population": 2,
    "seed": 4,
    "model.hidden": [16],
    "sac.learning_starts": 100,
    "stopping.steps_per_iteration": 200,
}


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
