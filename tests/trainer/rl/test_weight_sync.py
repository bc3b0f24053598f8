"""The learner's weights reach the local env runner by a tensor copy in-process: the same weights, sequence
number and training run as RLlib's sync_weights path, which remote runners keep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config
from trainer.rl.weight_sync import WeightSync

SMALL = {"sac.learning_starts": 100, "stopping.steps_per_iteration": 150, "model.hidden": [32, 32]}


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _train(overrides: dict, in_process: bool, monkeypatch) -> tuple[dict, dict, int, float]:
    """Learner weights, runner weights, runner sequence number and the runner's action on a fixed input after
    two iterations, with the in-process copy on or off."""
    with monkeypatch.context() as m:
        if not in_process:
            m.setattr(WeightSync, "in_process", lambda self: False)
        algo = build_sac_config(load_experiment("smoke", {**SMALL, **overrides}, sweep=False)).build_algo()
        try:
            assert algo._weight_sync.in_process() is in_process
            algo.train()
            algo.train()
            assert algo.updates_lifetime > 0
            runner = algo.env_runner_group.local_env_runner
            learner = algo.learner_group._learner
            obs = torch.linspace(-1, 1, algo._eval_env.observation_space.shape[0]).reshape(1, -1)
            with torch.no_grad():
                action = runner.module.forward_inference({"obs": obs})["action_dist_inputs"].sum().item()
            return _state(learner.module[DEFAULT_MODULE_ID]), _state(runner.module), runner._weights_seq_no, action
        finally:
            algo.stop()


@pytest.mark.parametrize("overrides", [{}, {"sac.population": 2}], ids=["one agent", "population of 2"])
def test_in_process_sync_trains_exactly_as_rllibs_path(ray_session, monkeypatch, overrides):
    fast = _train(overrides, True, monkeypatch)
    slow = _train(overrides, False, monkeypatch)
    learner_fast, runner_fast, seq_fast, action_fast = fast
    learner_slow, runner_slow, seq_slow, action_slow = slow
    assert learner_fast.keys() == learner_slow.keys()
    for key in learner_fast:  # the same run, bit for bit: the runner acted with the same weights every round
        np.testing.assert_array_equal(learner_fast[key], learner_slow[key], err_msg=key)
    assert runner_fast.keys() == runner_slow.keys() and len(runner_fast) < len(learner_fast)  # inference-only
    for key, value in runner_fast.items():
        np.testing.assert_array_equal(value, runner_slow[key], err_msg=key)
        np.testing.assert_array_equal(value, learner_fast[key], err_msg=key)  # the latest learner weights
    assert seq_fast == seq_slow > 0
    assert action_fast == action_slow


def test_remote_runners_keep_rllibs_path(ray_session):
    algo = build_sac_config(
        load_experiment("smoke", {**SMALL, "resources.num_env_runners": 1}, sweep=False)
    ).build_algo()
    try:
        assert not algo._weight_sync.in_process()
        algo.train()
        algo.train()
        learner = _state(algo.learner_group._learner.module[DEFAULT_MODULE_ID])
        remote = algo.env_runner_group.foreach_env_runner(lambda r: _state(r.module), local_env_runner=False)[0]
        for key, value in remote.items():
            np.testing.assert_array_equal(value, learner[key], err_msg=key)
    finally:
        algo.stop()
