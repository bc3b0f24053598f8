"""``PortfolioEnvRunner`` against RLlib's ``SingleAgentEnvRunner``: the same training run bit for bit (replay
buffer, learned weights, filter statistics) and the same episode metrics, with episodes that end inside
sampling rounds; whole-episode sampling and unknown pipelines use RLlib's loop."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

from trainer.experiment.loading import load_experiment
from trainer.metrics import registry as M
from trainer.rl.callbacks import PortfolioCallbacks
from trainer.rl.env_runner import PortfolioEnvRunner, Transitions
from trainer.rl.sac_config import build_sac_config

# short episodes: several end inside a sampling round, so resets and finished chunks are compared too
SMALL = {
    "sac.learning_starts": 60,
    "stopping.steps_per_iteration": 90,
    "model.hidden": [32, 32],
    "data.episode_len": 7,
}
# episode metrics RLlib's runner reports, and ours from PortfolioCallbacks
METRICS = [
    "episode_return_mean",
    "episode_return_min",
    "episode_return_max",
    "episode_len_mean",
    "num_episodes",
    "num_episodes_lifetime",
    "num_env_steps_sampled_lifetime",
    M.TRAIN_SHARPE,
    M.TRAIN_FINAL_VALUE,
    M.TRAIN_TURNOVER,
]


def _train(overrides: dict, runner: type) -> tuple[dict, dict, list, list]:
    exp = load_experiment("smoke", {**SMALL, **overrides}, sweep=False)
    algo = build_sac_config(exp).env_runners(env_runner_cls=runner).build_algo()
    try:
        assert type(algo.env_runner_group.local_env_runner) is runner
        results = [algo.train()[ENV_RUNNER_RESULTS] for _ in range(2)]
        assert algo.updates_lifetime > 0
        learner = algo.learner_group._learner.module[DEFAULT_MODULE_ID]
        weights = {k: v.detach().numpy().copy() for k, v in learner.state_dict().items()}
        buffer = {k: np.asarray(v).copy() for k, v in algo.buffer.state().items() if k != "rng_state"}
        filt = algo.obs_filter()
        metrics = [[r.get(key) for key in METRICS] for r in results]
        return weights, buffer, list(filt.stats()[:2]) if filt is not None else [], metrics
    finally:
        algo.stop()


@pytest.mark.parametrize(
    "overrides",
    [
        {"resources.num_envs_per_env_runner": 3, "sac.rollout_fragment_length": 4},
        {"resources.num_envs_per_env_runner": 8, "sac.rollout_fragment_length": 1, "obs_filter.enabled": False},
        {"sac.population": 2},
    ],
    ids=["three envs, fragment 4", "eight envs, fragment 1, no filter", "population of 2"],
)
def test_training_is_the_same_run_as_with_rllibs_env_runner(ray_session, overrides):
    ours, rllibs = _train(overrides, PortfolioEnvRunner), _train(overrides, SingleAgentEnvRunner)
    for got, expected in zip(ours[:3], rllibs[:3], strict=True):
        assert got.keys() == expected.keys() if isinstance(got, dict) else len(got) == len(expected)
        for key in got if isinstance(got, dict) else range(len(got)):
            np.testing.assert_array_equal(got[key], expected[key], err_msg=str(key))
    assert len(ours[1]["rewards"]) >= 180  # two iterations of transitions were compared
    assert ours[3] == rllibs[3]  # episode metrics, iteration by iteration
    assert ours[3][-1][METRICS.index("num_episodes_lifetime")] >= 20  # many episodes ended inside rounds
    assert None not in ours[3][-1][:7]  # a population's env reports no portfolio steps to the callback


def test_a_round_is_one_transitions_of_the_rounds_env_steps(ray_session):
    exp = load_experiment(
        "smoke", {**SMALL, "resources.num_envs_per_env_runner": 3, "sac.rollout_fragment_length": 4}, sweep=False
    )
    algo = build_sac_config(exp).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        assert type(runner) is PortfolioEnvRunner and runner._pieces is not None
        for _ in range(5):
            (round_,) = runner.sample()
            # 12 env steps, or up to 2 more where an env spent a step resetting (as RLlib's loop)
            assert isinstance(round_, Transitions) and 12 <= round_.env_steps() <= 14
            obs_dim = runner.env.single_observation_space.shape[0]
            assert round_.obs.shape == round_.next_obs.shape == (len(round_), obs_dim)
            assert round_.actions.dtype == np.float32 and len(round_.infos) == len(round_)
        episodes = runner.sample(num_episodes=2)  # whole episodes: RLlib's loop
        assert all(isinstance(ep, SingleAgentEpisode) and ep.is_done for ep in episodes)
        (round_,) = runner.sample()  # and rounds again, from fresh resets
        assert isinstance(round_, Transitions)
    finally:
        algo.stop()


def test_other_pipelines_use_rllibs_loop(ray_session):
    from tests.trainer.rl.test_connector_pipelines import _with_rllibs_pieces

    exp = load_experiment("smoke", SMALL, sweep=False)
    algo = _with_rllibs_pieces(build_sac_config(exp), exp.obs_filter.clip).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        assert runner._pieces is None
        assert all(isinstance(ep, SingleAgentEpisode) for ep in runner.sample())
    finally:
        algo.stop()


class _Chunk:
    def __init__(self, infos):
        self.infos = infos

    def get_infos(self):
        return self.infos


class _Logger:
    def __init__(self):
        self.values = {}

    def log_value(self, key, value, **kwargs):
        self.values[key] = value


def test_episode_callback_counts_each_step_once_across_chunks():
    values = [(0.01, 1.01, 0.5), (-0.02, 0.99, 0.1), (0.03, 1.02, 0.2)]
    step = [{"net_return": r, "portfolio_value": v, "turnover": t} for r, v, t in values]
    reset = {"portfolio_value": 1.0}
    whole, chunked = _Logger(), _Logger()
    # one uncut episode: the reset's info, then every step's
    PortfolioCallbacks().on_episode_end(episode=_Chunk([reset, *step]), metrics_logger=whole)
    # RLlib's chunks: each starts with the previous chunk's last info
    chunks = [_Chunk([reset, step[0]]), _Chunk([step[0], step[1]])]
    last = _Chunk([step[1], step[2]])
    PortfolioCallbacks().on_episode_end(episode=last, prev_episode_chunks=chunks, metrics_logger=chunked)
    assert whole.values == chunked.values
    assert whole.values[M.TRAIN_FINAL_VALUE] == 1.02
    assert whole.values[M.TRAIN_TURNOVER] == pytest.approx((0.5 + 0.1 + 0.2) / 3)
    assert whole.values[M.TRAIN_SHARPE] == M.sharpe_annualized([0.01, -0.02, 0.03])
