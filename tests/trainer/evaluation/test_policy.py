"""trainer.evaluation.policy without Ray: tanh(mean) actions of a real SAC module, frozen normalisation, checkpoint
loading, and one-pass runs on the toy market against hand-computed value paths with costs."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import (
    COMPONENT_ENV_RUNNER,
    COMPONENT_ENV_TO_MODULE_CONNECTOR,
    COMPONENT_LEARNER,
    COMPONENT_LEARNER_GROUP,
    COMPONENT_RL_MODULE,
    DEFAULT_MODULE_ID,
)
from ray.rllib.core.columns import Columns

from envs.portfolio import PortfolioEnv
from tests.conftest import toy_market
from trainer.evaluation.policy import deterministic_action, load_policy, make_policy, policy_from_algorithm
from trainer.evaluation.runs import run_ensemble, run_policy, run_weights
from trainer.rl.connectors import FrozenObsFilter, RawObsMeanStdFilter, normalize_with

OBS_DIM, ACT_DIM = 4, 3
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


@pytest.fixture(scope="module")
def module():
    """The SAC RLModule the trainer builds (smoke experiment: [32, 32] ReLU), on tiny spaces, no cluster."""
    from trainer.experiment.loading import load_experiment
    from trainer.rl.sac_config import build_sac_config

    config = build_sac_config(load_experiment("smoke"))
    spec = config.rl_module_spec
    spec.observation_space, spec.action_space, spec.model_config = OBS_SPACE, ACT_SPACE, config.model_config
    with torch.random.fork_rng():  # the same weights whatever ran (or was collected) before
        torch.manual_seed(0)
        module = spec.build()
    with torch.no_grad():  # larger policy means, so that tanh and a clip to [-1, 1] clearly differ
        module.pi.net.mlp[-1].weight.mul_(30.0)
    return module


def _policy_mean_by_hand(module, obs: np.ndarray) -> np.ndarray:
    """Forward the policy net layer by layer in float64 numpy: Linear, ReLU, ..., Linear; first half = mean."""
    layers = [m for m in [*module.pi_encoder.modules(), *module.pi.modules()] if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(OBS_DIM, 32), (32, 32), (32, 2 * ACT_DIM)]
    x = np.atleast_2d(obs).astype(np.float64)
    for i, layer in enumerate(layers):
        x = x @ layer.weight.detach().numpy().astype(np.float64).T + layer.bias.detach().numpy()
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x[:, :ACT_DIM]


def test_deterministic_action_is_tanh_of_the_policy_mean(module):
    obs = np.random.default_rng(0).standard_normal((6, OBS_DIM)).astype(np.float32)
    mean = _policy_mean_by_hand(module, obs)
    action = deterministic_action(module, obs)
    assert action.shape == (6, ACT_DIM) and action.dtype == np.float32
    np.testing.assert_allclose(action, np.tanh(mean), rtol=1e-5, atol=1e-6)
    assert np.abs(mean).max() > 1.5  # so RLlib's explore=False (clip of the mean) would differ:
    assert not np.allclose(action, np.clip(mean, -1.0, 1.0), atol=1e-3)
    single = deterministic_action(module, obs[2])  # one observation -> a batch of one
    # a batch of one and a batch of six run through different float32 GEMM kernels: equal to a few ulps
    np.testing.assert_allclose(single, action[2:3], rtol=1e-5, atol=1e-6)


class _RecordingModule:
    """Stub RLModule: the Gaussian mean is the first ACT_DIM inputs; records what it was given."""

    def __init__(self):
        self.seen: list[np.ndarray] = []
        self.in_eval_mode = False

    def eval(self):
        self.in_eval_mode = True

    def forward_inference(self, batch):
        obs = batch[Columns.OBS]
        self.seen.append(obs.numpy().copy())
        return {Columns.ACTION_DIST_INPUTS: torch.cat([obs[:, :ACT_DIM], torch.zeros_like(obs[:, :ACT_DIM])], -1)}


def test_make_policy_normalises_with_frozen_statistics_then_takes_tanh_of_the_mean():
    stub = _RecordingModule()
    mean, std = np.array([1.0, -2.0, 0.5, 0.0]), np.array([0.5, 4.0, 0.01, 1.0], np.float32)
    policy = make_policy(stub, FrozenObsFilter(mean.astype(np.float32), std, 3.0))
    assert stub.in_eval_mode
    raw = np.array([2.0, 2.0, 0.6, 7.0], np.float32)
    action = policy(raw)
    # (2 - 1) / 0.5 = 2; (2 + 2) / 4 = 1; (0.6 - 0.5) / 0.01 = 10 -> clipped to 3; 7 / 1 -> clipped to 3
    np.testing.assert_allclose(stub.seen[0], [[2.0, 1.0, 3.0, 3.0]], rtol=1e-5)
    np.testing.assert_allclose(action, np.tanh([2.0, 1.0, 3.0]), rtol=1e-5)
    assert action.shape == (ACT_DIM,)
    for _ in range(3):  # frozen: the same raw observation always gives the same action
        np.testing.assert_array_equal(policy(raw), action)
    unnormalised = make_policy(_RecordingModule(), None)
    np.testing.assert_allclose(unnormalised(np.array([0.1, -0.2, 0.3, 9.0], np.float32)), np.tanh([0.1, -0.2, 0.3]))


def _trained_filter(clip: float = 5.0) -> RawObsMeanStdFilter:
    filt = RawObsMeanStdFilter(clip_by_value=clip)
    filt.input_observation_space, filt.input_action_space = OBS_SPACE, ACT_SPACE
    filt.stats()  # builds the inner filter
    rng = np.random.default_rng(1)
    for obs in (rng.standard_normal((20, OBS_DIM)) * [1.0, 10.0, 0.1, 3.0] + 5.0).astype(np.float32):
        filt._filters[None](obs, update=True)
    return filt


def test_policy_from_algorithm_uses_the_live_filter_statistics():
    class Algo:
        def __init__(self, filt):
            self.module, self.filt = _RecordingModule(), filt

        def get_module(self):
            return self.module

        def obs_filter(self):
            return self.filt

    filt = _trained_filter()
    algo = Algo(filt)
    raw = np.array([5.5, -3.0, 5.02, 9.0], np.float32)
    action = policy_from_algorithm(algo)(raw)
    stats = filt.stats()
    expected_obs = normalize_with(raw[None], stats.mean, stats.std, 5.0)
    np.testing.assert_array_equal(algo.module.seen[0], expected_obs)
    np.testing.assert_allclose(action, np.tanh(expected_obs[0, :ACT_DIM]), rtol=1e-6)
    assert filt.stats().count == 20  # evaluation never updates the statistics
    no_filter = Algo(None)
    policy_from_algorithm(no_filter)(raw)
    np.testing.assert_array_equal(no_filter.module.seen[0], raw[None])


def _write_checkpoint(path, module, filt, state) -> None:
    """A checkpoint of ``module`` as PortfolioSAC writes one, in miniature: RLlib's pickles, our state, the policy
    files (from the module's weights and the filter's statistics) and the manifest."""
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline

    from trainer.evaluation.policy_file import write_policy_files
    from trainer.rl.policy_export import actor_layers
    from trainer.runtime.checkpoint import RLLIB_CHECKPOINT_FILE, STATE_FILE, write_manifest

    module.save_to_path(path / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID)
    if filt is not None:
        pipeline = EnvToModulePipeline(
            input_observation_space=OBS_SPACE, input_action_space=ACT_SPACE, connectors=[filt]
        )
        pipeline.save_to_path(path / COMPONENT_ENV_RUNNER / COMPONENT_ENV_TO_MODULE_CONNECTOR)
    (path / STATE_FILE).write_text(json.dumps(state))
    (path / RLLIB_CHECKPOINT_FILE).write_text("{}")
    layers, activation = actor_layers(module, module.get_state())
    info = {"seeds": None, "filter_count": 20, "tickers": state["tickers"], "env_config": {}, "windows": {}}
    write_policy_files(path, layers, activation, FrozenObsFilter.of(filt), {**info, "training_iteration": 1})
    write_manifest(path)


def test_load_policy_reads_the_policy_files_and_the_frozen_filter(module, tmp_path):
    raw = np.array([6.0, 20.0, 6.0, -1.0], np.float32)
    _write_checkpoint(tmp_path / "raw", module, None, {"tickers": ["A", "B"]})
    policy, state = load_policy(tmp_path / "raw")  # no filter: raw observations go to the net
    assert state == {"tickers": ["A", "B"]}
    np.testing.assert_allclose(policy(raw), np.tanh(_policy_mean_by_hand(module, raw)[0]), rtol=1e-5, atol=1e-6)

    filt = _trained_filter(clip=5.0)
    _write_checkpoint(tmp_path / "filtered", module, filt, {"tickers": ["A", "B"], "obs_filter": True})
    policy, _ = load_policy(tmp_path / "filtered")
    stats = filt.stats()
    norm = normalize_with(raw[None], stats.mean, stats.std, 5.0)
    assert np.abs(norm).max() == 5.0  # the saved clip is applied too
    np.testing.assert_allclose(policy(raw), np.tanh(_policy_mean_by_hand(module, norm)[0]), rtol=1e-5, atol=1e-6)


# --- one-pass runs on the toy market (A +10%, 0, +10%; B 0, -10%, 0; C 0, +10%, 0) ----------------------


def test_run_policy_with_a_constant_action_by_hand():
    """Action 0 everywhere -> softmax weights 1/4 on A, B, C and cash every day; 10 bp costs."""
    seen: list[np.ndarray] = []

    def policy(obs):
        seen.append(obs.copy())
        return np.zeros(4, np.float32)

    run = run_policy(PortfolioEnv(data=toy_market(), split="test", cost_bps=10.0), policy)
    q = 0.25
    # day 1: buy 3/4 of assets out of cash; A +10% -> gross 1 + 0.1 q
    g1 = 1 + 0.1 * q
    drift1 = np.array([q * 1.1, q, q, q]) / g1
    t1 = 3 * q
    # day 2: B -10%, C +10% -> gross 1; turnover back from the day-1 drift
    t2 = abs(q - q * 1.1 / g1) + 2 * abs(q - q / g1)
    drift2 = np.array([q, q * 0.9, q * 1.1, q])
    # day 3: A +10%
    t3 = 0 + 0.1 * q + 0.1 * q
    nets = [(1 - 0.001 * t1) * g1 - 1, (1 - 0.001 * t2) * 1.0 - 1, (1 - 0.001 * t3) * g1 - 1]
    np.testing.assert_allclose(run.turnovers, [t1, t2, t3], rtol=0, atol=1e-14)
    np.testing.assert_allclose(run.costs, 0.001 * np.array([t1, t2, t3]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(run.net_returns, nets, rtol=0, atol=1e-14)
    np.testing.assert_allclose(run.values, np.cumprod(1 + np.array(nets)), rtol=1e-14)
    np.testing.assert_allclose(run.weights, np.full((3, 4), q), atol=1e-15)
    np.testing.assert_array_equal(run.step_indices, [0, 1, 2])
    # the policy saw the env's raw observations: 6 zero features, then the drifted weights held
    assert len(seen) == 3 and all(o.shape == (10,) and o.dtype == np.float32 for o in seen)
    np.testing.assert_array_equal(np.stack(seen)[:, :6], 0.0)
    np.testing.assert_allclose(seen[0][6:], [0, 0, 0, 1])
    np.testing.assert_allclose(seen[1][6:], drift1, rtol=1e-6)
    np.testing.assert_allclose(seen[2][6:], drift2, rtol=1e-6)


def test_run_weights_half_in_a_half_cash_by_hand():
    """Target 50% A, 50% cash every day with 25 bp costs: the value path, costs and the rule's inputs."""
    env = PortfolioEnv(data=toy_market(), split="validation", cost_bps=25.0)
    target = np.array([0.5, 0.0, 0.0, 0.5])
    held: list[np.ndarray] = []

    def rule(e):
        assert e is env  # the rule reads the live env (e.g. its drifted weights)
        held.append(e.current_weights)
        return target

    run = run_weights(env, rule)
    c = 0.0025
    t1, g1 = 0.5, 1.05  # out of cash into A, which gains 10%
    drift1 = np.array([0.55, 0, 0, 0.5]) / 1.05
    t2 = abs(0.5 - 0.55 / 1.05)  # A flat on day 2 -> gross 1
    t3 = 0.0  # nothing moved on day 2, so no trade on day 3; A +10%
    nets = np.array([(1 - c * t1) * g1 - 1, (1 - c * t2) - 1, 1.05 - 1])
    np.testing.assert_allclose(run.turnovers, [t1, t2, t3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(run.costs, [c * t1, c * t2, 0.0], rtol=0, atol=1e-16)
    np.testing.assert_allclose(run.net_returns, nets, rtol=0, atol=1e-14)
    v1 = (1 - c * 0.5) * 1.05
    v2 = v1 * (1 - c * t2)
    np.testing.assert_allclose(run.values, [v1, v2, v2 * 1.05], rtol=1e-14)
    np.testing.assert_array_equal(run.weights, np.tile(target, (3, 1)))
    np.testing.assert_array_equal(run.step_indices, [0, 1, 2])
    np.testing.assert_allclose(held, [[0, 0, 0, 1], drift1, target], atol=1e-15)


def test_seed_ensemble_trades_the_average_of_its_members_targets():
    """Two members on the toy market under the tilt: one says +1 on A, one says +1 on B; the ensemble trades
    the mean of their targets through the env's band, and two copies of one member equal that member."""
    market = toy_market()

    def env(**settings):
        return PortfolioEnv(data=market, split="test", action="tilt", **settings)

    a_member = lambda obs: np.array([1.0, 0.0, 0.0, 0.0], np.float32)  # noqa: E731
    b_member = lambda obs: np.array([0.0, 1.0, 0.0, 0.0], np.float32)  # noqa: E731
    ens = run_ensemble(env(), [a_member, b_member])
    # tilt around EW with scale 1: softmax(log(1/3) + [1, 0, 0]) = [e, 1, 1] / (e + 2) on the assets
    e = math.e
    target = np.array([(e + 1) / (e + 2) / 2, (e + 1) / (e + 2) / 2, 1 / (e + 2), 0.0])
    np.testing.assert_allclose(ens.weights[0], target, rtol=1e-12)
    twice = run_ensemble(env(no_trade_band=0.05), [a_member, a_member])
    alone = run_policy(env(no_trade_band=0.05), a_member)
    np.testing.assert_array_equal(twice.net_returns, alone.net_returns)
    np.testing.assert_array_equal(twice.weights, alone.weights)
    with pytest.raises(ValueError, match="an ensemble needs at least one policy"):
        run_ensemble(env(), [])
