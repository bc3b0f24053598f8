"""trainer.rl.policy_export: the policy files give RLlib's deterministic actions (tanh of the mean) for every
network the schema allows, a single agent's and each agent of a population's; on real checkpoints the safe
policy acts and backtests as the pickled module did; a conversion writes exactly what a save writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import checkpoints
from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter
from trainer.evaluation.policy import deterministic_action, load_policy, make_agent_policy, make_policy
from trainer.evaluation.policy_file import POLICY_JSON, POLICY_WEIGHTS, read_policy_files, write_policy_files
from trainer.evaluation.policy_net import PolicyNetwork
from trainer.experiment.loading import load_experiment
from trainer.rl.policy_export import actor_layers, convert_checkpoint
from trainer.rl.sac_config import build_sac_config
from trainer.runtime.checkpoint import MANIFEST_FILE, OBS_FILTER_DIR, POLICY_DIR, write_manifest

OBS_DIM, ACT_DIM = 7, 4
INFO = {"filter_count": 9, "tickers": ["A"], "env_config": {}, "windows": {}, "diverged": None, "training_iteration": 1}


def _module(overrides: dict, population: int | None = None):
    """The RL module the trainer builds for ``overrides`` (a population's when ``population``), no cluster."""
    exp = load_experiment("smoke", {**overrides, **({"sac.population": population} if population else {})}, sweep=False)
    config = build_sac_config(exp)
    k = population or 1
    spec = config.rl_module_spec
    spec.observation_space = gym.spaces.Box(-np.inf, np.inf, (k * OBS_DIM,), np.float32)
    spec.action_space = gym.spaces.Box(-1.0, 1.0, (k * ACT_DIM,), np.float32)
    spec.model_config = config.model_config
    with torch.random.fork_rng():  # the same weights whatever ran (or was collected) before
        torch.manual_seed(0)
        module = spec.build()
    with torch.no_grad():  # larger outputs, so that tanh saturates for some observations
        for p in module.pi.parameters():
            p.mul_(10.0)
    return module


def _filter(k: int) -> FrozenObsFilter:
    rng = np.random.default_rng(7)
    dim = k * OBS_DIM
    return FrozenObsFilter(rng.normal(0, 2, dim).astype(np.float32), rng.uniform(0.2, 3, dim).astype(np.float32), 4.0)


def _policy_files(tmp_path: Path, module, filt: FrozenObsFilter, seeds):
    layers, activation = actor_layers(module, module.get_state())
    write_policy_files(tmp_path, layers, activation, filt, {**INFO, "seeds": seeds})
    return read_policy_files(tmp_path, [POLICY_JSON, POLICY_WEIGHTS])


def _observations(n: int = 500) -> np.ndarray:
    return np.random.default_rng(8).normal(0, 5, (n, OBS_DIM)).astype(np.float32)


NETWORKS = [
    {"model.hidden": [32, 32], "model.activation": "relu"},
    {"model.hidden": [16], "model.activation": "tanh"},
    {"model.hidden": [8, 12, 8], "model.activation": "silu"},
    {"model.hidden": [24, 8], "model.activation": "elu"},
]


@pytest.mark.parametrize("overrides", NETWORKS, ids=lambda o: f"{o['model.activation']}{o['model.hidden']}")
def test_a_single_agents_policy_file_acts_as_rllibs_module(tmp_path, overrides):
    module = _module(overrides)
    filt = _filter(1)
    files = _policy_files(tmp_path, module, filt, None)
    assert files.network["layer_sizes"] == [OBS_DIM, *overrides["model.hidden"], 2 * ACT_DIM]
    obs = _observations()
    with torch.no_grad():
        ours = PolicyNetwork(files)(torch.from_numpy(obs)).numpy()
    rllib = deterministic_action(module, filt(obs))  # tanh of the mean of RLlib's forward_inference
    np.testing.assert_allclose(ours, rllib, rtol=0, atol=1e-6)
    assert (np.abs(rllib) > 0.99).any() and (np.abs(rllib) < 0.5).any()  # saturated and linear regions both seen


@pytest.mark.parametrize("overrides", NETWORKS[:2], ids=lambda o: o["model.activation"])
def test_each_agent_of_a_population_file_acts_as_its_slice_of_the_module(tmp_path, overrides):
    k = 3
    module = _module(overrides, population=k)
    filt = _filter(k)
    files = _policy_files(tmp_path, module, filt, module.seeds)
    assert files.seeds == module.seeds and files.n_agents == k
    obs = _observations()
    side_by_side = np.concatenate([obs] * k, axis=1)
    # RLlib's own output for the population: the agents' means side by side, then their log-stds
    rllib = deterministic_action(module, filt(side_by_side)).reshape(len(obs), k, ACT_DIM)
    actions = []
    for agent in range(k):
        with torch.no_grad():
            ours = PolicyNetwork(files, agent)(torch.from_numpy(obs)).numpy()
        np.testing.assert_allclose(ours, rllib[:, agent], rtol=0, atol=1e-6)
        live = make_agent_policy(module, filt, agent)  # the live population's per-agent policy (validation)
        np.testing.assert_allclose(ours[:20], np.stack([live(o) for o in obs[:20]]), rtol=0, atol=1e-6)
        actions.append(ours)
    assert not np.allclose(actions[0], actions[1])  # own seeds: a wrong slice would not pass


class _Stub:
    def __init__(self, activation: str, *layers: nn.Module) -> None:
        self.model_config = {"fcnet_activation": activation}
        self.pi_encoder, self.pi = nn.Sequential(*layers[:-1]), nn.Sequential(layers[-1])
        self.weights = {
            name: p.detach().numpy()
            for prefix, net in (("pi_encoder", self.pi_encoder), ("pi", self.pi))
            for name, p in net.named_parameters(prefix=prefix)
        }


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            lambda: _Stub("relu", nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)),
            f"the actor's layer pi_encoder.1 ({nn.LayerNorm(4)!r}) cannot be written to a policy file",
        ),
        (
            lambda: _Stub("relu", nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
            "the actor's layer pi_encoder.1 (Tanh()) cannot be written to a policy file",
        ),
        (
            lambda: _Stub("elu", nn.Linear(3, 4), nn.ELU(alpha=0.5), nn.Linear(4, 2)),
            "the actor's layer pi_encoder.1 (ELU(alpha=0.5)) cannot be written to a policy file",
        ),
        (
            lambda: _Stub("relu", nn.Linear(3, 4), nn.Linear(4, 2)),
            "the actor is not linear layers with relu between them: ['linear', 'linear']",
        ),
        (
            lambda: _Stub("gelu", nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)),
            "a policy file cannot hold activation 'gelu' (one of relu, tanh, silu, elu)",
        ),
    ],
    ids=["layernorm", "other activation", "elu alpha", "no activation", "unknown activation"],
)
def test_an_actor_the_format_cannot_express_is_refused(layers, message):
    stub = layers()  # built in the test, not at collection: no draws from torch's global generator there
    with pytest.raises(ValueError) as err:
        actor_layers(stub, stub.weights)
    assert str(err.value) == message


# --- real checkpoints -----------------------------------------------------------------------------------------
def _pickled_policy(ckpt: Path, agent: int | None = None):
    """The policy as it was loaded before the policy files: RLlib's pickles (trusted here: our own test run)."""
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(ckpt / "learner_group" / "learner" / "rl_module" / "default_policy")
    filt = FrozenObsFilter.of(find_obs_filter(EnvToModulePipeline.from_checkpoint(ckpt / OBS_FILTER_DIR)))
    assert filt is not None
    return make_policy(module, filt) if agent is None else make_agent_policy(module, filt, agent)


def _test_env(ckpt: Path):
    from envs.market import load_market_for
    from envs.population import SEEDS_KEY
    from envs.portfolio import PortfolioEnv

    state = json.loads((ckpt / "portfolio_state.json").read_text())
    cfg = {k: v for k, v in state["env_config"].items() if k != SEEDS_KEY} | {"split": "test"}
    market = load_market_for(cfg)
    return lambda: PortfolioEnv(data=market, **{k: v for k, v in cfg.items() if k != "data"})


def _same_policy_and_backtest(ckpt: Path, agent: int | None) -> None:
    from trainer.evaluation.runs import run_policy

    safe, _ = load_policy(ckpt, agent=agent)
    pickled = _pickled_policy(ckpt, agent)
    make_env = _test_env(ckpt)
    env = make_env()
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    observations = [obs]
    for _ in range(100):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        observations.append(obs)
    observations += list((np.stack(observations) * rng.uniform(0.5, 2.0, (len(observations), 1))).astype(np.float32))
    for o in observations:
        np.testing.assert_allclose(safe(o), pickled(o), rtol=0, atol=1e-6)
    ours, before = run_policy(make_env(), safe), run_policy(make_env(), pickled)
    # a single agent's layers run as RLlib's nn.Linear (the same numbers); a population agent's as its slice of
    # the stacked layers, another kernel: float32 rounding in the actions
    np.testing.assert_allclose(ours.values, before.values, rtol=1e-9 if agent is None else 1e-6)
    np.testing.assert_allclose(ours.weights, before.weights, rtol=0, atol=1e-6)
    assert ours.turnovers.sum() > 0  # the policy trades: a constant policy would pass trivially


def test_the_smoke_checkpoints_policy_file_acts_and_backtests_as_its_pickles(smoke_run):
    _same_policy_and_backtest(checkpoints(smoke_run[0])[-1], None)


def test_each_agent_of_a_population_checkpoint_acts_and_backtests_as_its_pickles(population_run):
    for agent in (0, 1):
        _same_policy_and_backtest(population_run[0], agent)


def _older_version(ckpt: Path, dest: Path) -> Path:
    """A copy of ``ckpt`` as the previous version wrote it: no policy files, a manifest without them."""
    shutil.copytree(ckpt, dest)
    shutil.rmtree(dest / POLICY_DIR)
    write_manifest(dest)
    return dest


@pytest.mark.parametrize("which", ["single", "population"])
def test_a_conversion_writes_what_a_save_writes_and_only_once(smoke_run, population_run, tmp_path, which):
    ckpt = checkpoints(smoke_run[0])[-1] if which == "single" else population_run[0]
    old = _older_version(ckpt, tmp_path / ckpt.name)
    assert convert_checkpoint(old) == old / POLICY_DIR
    assert json.loads((old / POLICY_JSON).read_text()) == json.loads((ckpt / POLICY_JSON).read_text())
    with np.load(old / POLICY_WEIGHTS) as converted, np.load(ckpt / POLICY_WEIGHTS) as saved:
        assert sorted(converted.files) == sorted(saved.files)
        for name in saved.files:
            np.testing.assert_array_equal(converted[name], saved[name], err_msg=name)
    files = json.loads((old / MANIFEST_FILE).read_text())["files"]
    assert {POLICY_JSON, POLICY_WEIGHTS} <= set(files)  # the new manifest covers them
    before = (old / MANIFEST_FILE).read_text()
    assert convert_checkpoint(old) is None  # already converted: nothing read, nothing written
    assert (old / MANIFEST_FILE).read_text() == before
