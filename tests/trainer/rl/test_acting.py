"""Env runners act through ActsWithoutGrad: the same actions, episodes and training as RLlib's own
forward_exploration and GetActions connector, without autograd and the per-step log-probability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from trainer.experiment.loading import load_experiment
from trainer.rl.acting import ActsWithoutGrad
from trainer.rl.sac_config import build_sac_config

SMALL = {"sac.learning_starts": 100, "stopping.steps_per_iteration": 150, "model.hidden": [32, 32]}


def _run(overrides: dict, ours: bool, monkeypatch) -> tuple[dict, np.ndarray]:
    """Learner weights and the replay buffer's actions after two iterations, acting through ours or RLlib's."""
    with monkeypatch.context() as m:
        if not ours:
            m.setattr(ActsWithoutGrad, "forward_exploration", TorchRLModule.forward_exploration)
        algo = build_sac_config(load_experiment("smoke", {**SMALL, **overrides}, sweep=False)).build_algo()
        try:
            algo.train()
            algo.train()
            module = algo.learner_group._learner.module[DEFAULT_MODULE_ID]
            weights = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
            return weights, algo.buffer.actions[: len(algo.buffer)].copy()
        finally:
            algo.stop()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"sac.population": 2}, {"model.type": "per_asset", "model.hidden": [8]}],
    ids=["mlp", "population of 2", "per_asset"],
)
def test_acting_without_grad_trains_exactly_as_rllibs_path(ray_session, monkeypatch, overrides):
    ours, actions = _run(overrides, True, monkeypatch)
    theirs, their_actions = _run(overrides, False, monkeypatch)
    assert len(actions) >= 300 and np.abs(actions).max() <= 1.0
    np.testing.assert_array_equal(actions, their_actions)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, theirs[key], err_msg=key)


def test_an_action_is_drawn_without_a_graph_and_the_module_stays_in_eval_mode(algo):
    module = algo.env_runner_group.local_env_runner.module
    obs = torch.zeros(1, algo._eval_env.observation_space.shape[0])
    torch.manual_seed(3)
    out = module.forward_exploration({Columns.OBS: obs})
    torch.manual_seed(3)
    expected = TorchRLModule.forward_exploration(module, {Columns.OBS: obs})  # RLlib's, then GetActions' draw
    dist = module.get_exploration_action_dist_cls().from_logits(expected[Columns.ACTION_DIST_INPUTS])
    assert not out[Columns.ACTIONS].requires_grad and Columns.ACTION_LOGP not in out
    torch.testing.assert_close(out[Columns.ACTIONS], dist.sample(), rtol=0, atol=0)
    assert not module.training
