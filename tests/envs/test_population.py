"""PopulationEnv: K portfolio envs side by side, each agent's episodes independent of its population."""

from __future__ import annotations

import numpy as np
import pytest

from envs.population import AGENTS_INFO, REWARDS_INFO, PopulationEnv, make_population_env
from envs.portfolio import PortfolioEnv

CONFIG = {"episode_len": 20}


def test_observations_and_steps_are_the_agents_envs_side_by_side():
    pop = PopulationEnv([3, 5], **CONFIG)
    alone = [PortfolioEnv(**CONFIG), PortfolioEnv(**CONFIG)]
    obs, info = pop.reset(seed=3 + 10)  # RLlib's offset (10) is kept for every agent
    expected = [alone[0].reset(seed=3 + 10)[0], alone[1].reset(seed=5 + 10)[0]]
    np.testing.assert_array_equal(obs, np.concatenate(expected))
    assert len(info[AGENTS_INFO]) == 2
    d = pop.obs_dim
    assert pop.observation_space.shape == (2 * d,) and pop.action_space.shape == (2 * pop.act_dim,)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, pop.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = pop.step(action)
        steps = [env.step(a) for env, a in zip(alone, action.reshape(2, -1), strict=True)]
        np.testing.assert_array_equal(obs, np.concatenate([s[0] for s in steps]))
        np.testing.assert_array_equal(info[REWARDS_INFO], [s[1] for s in steps])
        assert reward == pytest.approx(np.mean([s[1] for s in steps]))
        assert truncated == steps[0][3] == steps[1][3] and not terminated
        for i in range(2):
            assert info[AGENTS_INFO][i]["portfolio_value"] == steps[i][4]["portfolio_value"]
    assert truncated  # 20 steps: both copies end together


def test_an_agents_episodes_do_not_depend_on_the_other_agents():
    alone = PopulationEnv([5], **CONFIG)
    crowd = PopulationEnv([0, 5, 9], **CONFIG)
    for offset in (0, 7):
        a, _ = alone.reset(seed=5 + offset)
        c, _ = crowd.reset(seed=0 + offset)
        np.testing.assert_array_equal(a, c[crowd.obs_dim : 2 * crowd.obs_dim])
    # different agents start on different days (their own seeds)
    c, _ = crowd.reset(seed=0)
    assert not np.array_equal(c[: crowd.obs_dim], c[crowd.obs_dim : 2 * crowd.obs_dim])


def test_a_non_finite_agent_action_is_traded_as_zero_and_flagged_without_touching_the_others():
    pop = PopulationEnv([1, 2], **CONFIG)
    ref = PopulationEnv([1, 2], **CONFIG)
    pop.reset(seed=1)
    ref.reset(seed=1)
    action = np.full(pop.action_space.shape, 0.3, np.float32)
    bad = action.copy()
    bad[0] = np.nan
    zeroed = action.copy()
    zeroed[: pop.act_dim] = 0.0
    obs, _, _, _, info = pop.step(bad)
    ref_obs, *_ = ref.step(zeroed)
    np.testing.assert_array_equal(obs, ref_obs)
    assert info[AGENTS_INFO][0]["invalid_action"] is True
    assert "invalid_action" not in info[AGENTS_INFO][1]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"population_seeds": []}, "population_seeds must name at least one agent seed"),
        ({"population_seeds": [1, 1]}, "population_seeds must be distinct, got [1, 1]"),
        ({}, "a population env config needs population_seeds (the agents' seeds)"),
    ],
)
def test_bad_population_configs_are_refused(config, message):
    with pytest.raises(ValueError) as err:
        make_population_env(config)
    assert str(err.value) == message
