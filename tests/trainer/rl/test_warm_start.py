"""A warm start (model.init_from): the new run starts with the checkpoint's networks, learner and env runners alike,
and nothing else of it; networks that do not fit are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config
from trainer.runtime.checkpoint import CheckpointError

SMOKE = {"sac.learning_starts": 100, "stopping.steps_per_iteration": 200}


def _weights(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def test_a_warm_start_loads_the_networks_and_nothing_else(algo, tmp_path):
    ckpt = tmp_path / "checkpoint_000001"
    algo.save_to_path(str(ckpt))
    trained = _weights(algo.learner_group._learner.module[DEFAULT_MODULE_ID])
    cold = build_sac_config(load_experiment("smoke", SMOKE, sweep=False)).build_algo()
    warm = build_sac_config(load_experiment("smoke", {**SMOKE, "model.init_from": str(ckpt)}, sweep=False)).build_algo()
    try:
        learner = _weights(warm.learner_group._learner.module[DEFAULT_MODULE_ID])
        assert learner.keys() == trained.keys() and any("qf" in k for k in learner)  # Q nets and targets too
        for key, value in trained.items():
            np.testing.assert_array_equal(learner[key], value, err_msg=key)
        fresh = _weights(cold.learner_group._learner.module[DEFAULT_MODULE_ID])
        assert any(not np.array_equal(fresh[k], trained[k]) for k in trained)  # a cold start is not the checkpoint
        # the env runners act with the loaded policy: the same action as the checkpoint's module on any input
        runner, source = warm.env_runner_group.local_env_runner.module, algo.learner_group._learner.module
        obs = torch.randn(4, warm._eval_env.observation_space.shape[0])
        with torch.no_grad():
            a = runner.forward_inference({"obs": obs})["action_dist_inputs"]
            b = source[DEFAULT_MODULE_ID].forward_inference({"obs": obs})["action_dist_inputs"]
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=0)
        # everything else starts fresh: counters, replay buffer, filter statistics
        assert warm.iteration == 0 and len(warm.buffer) == 0 and warm.obs_filter().stats().count == 0
        assert algo.obs_filter().stats().count > 0
    finally:
        cold.stop()
        warm.stop()


def test_networks_that_do_not_fit_are_refused_by_name(algo, tmp_path):
    ckpt = tmp_path / "checkpoint_000001"
    algo.save_to_path(str(ckpt))
    exp = load_experiment("smoke", {**SMOKE, "model.hidden": [16], "model.init_from": str(ckpt)}, sweep=False)
    with pytest.raises(CheckpointError) as err:
        build_sac_config(exp).build_algo()
    message = str(err.value)
    assert message.startswith(f"model.init_from {ckpt}: its networks do not fit this run's (")
    assert message.endswith(
        "); a warm start needs the same tickers (in the same order), features, model.hidden, model.activation and "
        "number of agents"
    )
    with pytest.raises(CheckpointError) as err:
        build_sac_config(
            load_experiment("smoke", {"model.init_from": str(tmp_path / "gone")}, sweep=False)
        ).build_algo()
    assert str(err.value) == (
        f"model.init_from {tmp_path / 'gone'}: {tmp_path / 'gone'}: checkpoint not found; pass a checkpoint directory "
        "(runs/.../checkpoint_NNNNNN)"
    )
