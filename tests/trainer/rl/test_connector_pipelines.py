"""Our env runner pipelines (``ObsToModule``, ``ActionsToEnv``) against RLlib's default pieces: the same batch
for the module, the same actions for the env, and the same training run bit for bit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.connectors.module_to_env import (
    GetActions,
    ListifyDataForVectorEnv,
    NormalizeAndClipActions,
    RemoveSingleTsTimeRankFromBatch,
    TensorToNumpy,
    UnBatchToIndividualItems,
)
from ray.rllib.connectors.module_to_env.module_to_env_pipeline import ModuleToEnvPipeline
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from trainer.experiment.loading import load_experiment
from trainer.rl.connectors import ActionsToEnv, ObsToModule, RawObsMeanStdFilter
from trainer.rl.sac_config import build_sac_config

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
SMALL = {"sac.learning_starts": 100, "stopping.steps_per_iteration": 150, "model.hidden": [32, 32]}


class _Module:
    """What the pipelines ask of a module: the exploration distribution (a squashed Gaussian, as SAC's)."""

    def get_exploration_action_dist_cls(self):
        from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian

        return TorchSquashedGaussian


def _defaults(space: gym.Space, normalize: bool, clip: bool) -> ModuleToEnvPipeline:
    """RLlib's default module-to-env pieces for one agent (as AlgorithmConfig.build_module_to_env_connector)."""
    return ModuleToEnvPipeline(
        input_observation_space=OBS_SPACE,
        input_action_space=space,
        connectors=[
            GetActions(),
            TensorToNumpy(),
            UnBatchToIndividualItems(),
            RemoveSingleTsTimeRankFromBatch(),
            NormalizeAndClipActions(normalize_actions=normalize, clip_actions=clip),
            ListifyDataForVectorEnv(),
        ],
    )


def _ours(space: gym.Space, normalize: bool, clip: bool) -> ModuleToEnvPipeline:
    return ModuleToEnvPipeline(
        input_observation_space=OBS_SPACE,
        input_action_space=space,
        connectors=[ActionsToEnv(normalize_actions=normalize, clip_actions=clip)],
    )


def _module_output(n_envs: int, act_dim: int, draw: bool) -> dict:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(n_envs, 2 * act_dim, generator=gen) * 2.0
    out = {Columns.ACTION_DIST_INPUTS: logits}
    if draw:  # as our modules do (trainer.rl.acting): the action drawn in the forward pass, beyond the bounds
        out[Columns.ACTIONS] = torch.randn(n_envs, act_dim, generator=gen) * 1.5
    return out


def _episodes(n: int) -> list[SingleAgentEpisode]:
    return [SingleAgentEpisode(observations=[np.zeros(3, np.float32)], observation_space=OBS_SPACE) for _ in range(n)]


def _shared(episodes: list[SingleAgentEpisode]) -> dict:
    """What RLlib's env-to-module BatchIndividualItems leaves for its module-to-env pieces: the batch's episodes."""
    return {"memorized_map_structure": [ep.id_ for ep in episodes]}


@pytest.mark.parametrize("normalize, clip", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize(
    "space", [gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Box(0.0, 2.5, (4,), np.float32)]
)
@pytest.mark.parametrize("n_envs", [1, 3])
def test_actions_to_env_equals_rllibs_default_pieces(space, normalize, clip, n_envs):
    episodes = _episodes(n_envs)
    expected = _defaults(space, normalize, clip)(
        rl_module=_Module(),
        batch=_module_output(n_envs, 4, True),
        episodes=episodes,
        explore=True,
        shared_data=_shared(episodes),
    )
    got = _ours(space, normalize, clip)(
        rl_module=_Module(), batch=_module_output(n_envs, 4, True), episodes=episodes, explore=True, shared_data={}
    )
    assert set(got) == set(expected)
    for column in (Columns.ACTIONS, Columns.ACTIONS_FOR_ENV):
        if column in expected:
            np.testing.assert_array_equal(got[column], expected[column], err_msg=column)
            assert got[column].dtype == expected[column].dtype == np.float32
    for i in range(n_envs):  # the runner reads every other column per env index
        np.testing.assert_array_equal(got[Columns.ACTION_DIST_INPUTS][i], expected[Columns.ACTION_DIST_INPUTS][i])
    if normalize or clip:  # the env gets actions inside its space although the draws were outside [-1, 1]
        assert np.all(got[Columns.ACTIONS_FOR_ENV] >= space.low) and np.all(got[Columns.ACTIONS_FOR_ENV] <= space.high)
        assert not np.array_equal(got[Columns.ACTIONS_FOR_ENV], got[Columns.ACTIONS])


def test_actions_to_env_draws_where_the_module_did_not():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    episodes = _episodes(2)
    torch.manual_seed(11)
    expected = _defaults(space, True, False)(
        rl_module=_Module(),
        batch=_module_output(2, 2, False),
        episodes=episodes,
        explore=True,
        shared_data=_shared(episodes),
    )
    torch.manual_seed(11)
    got = _ours(space, True, False)(
        rl_module=_Module(), batch=_module_output(2, 2, False), episodes=episodes, explore=True, shared_data={}
    )
    np.testing.assert_array_equal(got[Columns.ACTIONS], expected[Columns.ACTIONS])
    np.testing.assert_array_equal(got[Columns.ACTION_LOGP], np.stack(expected[Columns.ACTION_LOGP]))


def test_obs_to_module_batches_each_episodes_latest_observation_as_a_float32_tensor():
    episodes = _episodes(3)
    for i, ep in enumerate(episodes):
        ep.add_env_step(np.full(3, i + 0.5, np.float32), np.zeros(1, np.float32), 0.0)
    piece = ObsToModule()
    raw = piece(rl_module=None, batch={}, episodes=episodes)
    assert set(raw) == {Columns.OBS} and raw[Columns.OBS].dtype == torch.float32
    np.testing.assert_array_equal(raw[Columns.OBS].numpy(), [[0.5] * 3, [1.5] * 3, [2.5] * 3])
    # after the filter: its normalised observations, in the episodes' order (float64 in, float32 out)
    filt = RawObsMeanStdFilter()
    filt.input_observation_space = OBS_SPACE
    batch = filt(rl_module=None, batch={}, episodes=episodes)
    expected = np.stack([items[0] for items in batch[Columns.OBS].values()]).astype(np.float32)
    out = piece(rl_module=None, batch=batch, episodes=episodes)
    np.testing.assert_array_equal(out[Columns.OBS].numpy(), expected)


def _with_rllibs_pieces(config, filter_clip: float | None):
    """The config with RLlib's default pipelines around our observation filter (how runs were built before)."""

    def filter_only(env=None, spaces=None, device=None):
        return RawObsMeanStdFilter(clip_by_value=filter_clip) if filter_clip is not None else []

    return config.env_runners(
        env_to_module_connector=filter_only,
        module_to_env_connector=None,
        add_default_connectors_to_env_to_module_pipeline=True,
        add_default_connectors_to_module_to_env_pipeline=True,
    )


def _train(overrides: dict, rllibs: bool) -> tuple[dict, dict, list]:
    exp = load_experiment("smoke", {**SMALL, **overrides}, sweep=False)
    config = build_sac_config(exp)
    if rllibs:
        config = _with_rllibs_pieces(config, exp.obs_filter.clip if exp.obs_filter.enabled else None)
    algo = config.build_algo()
    try:
        pieces = [type(c) for c in algo.env_runner_group.local_env_runner._env_to_module.connectors]
        assert (ObsToModule in pieces) is not rllibs
        algo.train()
        algo.train()
        assert algo.updates_lifetime > 0
        learner = algo.learner_group._learner.module[DEFAULT_MODULE_ID]
        weights = {k: v.detach().numpy().copy() for k, v in learner.state_dict().items()}
        buffer = {k: np.asarray(v).copy() for k, v in algo.buffer.state().items() if k != "rng_state"}
        filt = algo.obs_filter()
        return weights, buffer, list(filt.stats()[:2]) if filt is not None else []
    finally:
        algo.stop()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"obs_filter.enabled": False}, {"resources.num_envs_per_env_runner": 3}, {"sac.population": 2}],
    ids=["one agent", "no filter", "three envs", "population of 2"],
)
def test_training_is_the_same_run_as_with_rllibs_default_pieces(ray_session, overrides):
    ours, rllibs = _train(overrides, False), _train(overrides, True)
    for got, expected in zip(ours, rllibs, strict=True):
        assert got.keys() == expected.keys() if isinstance(got, dict) else len(got) == len(expected)
        for key in got if isinstance(got, dict) else range(len(got)):
            np.testing.assert_array_equal(got[key], expected[key], err_msg=str(key))
    assert len(ours[1]["rewards"]) >= 300  # two iterations of transitions were compared
