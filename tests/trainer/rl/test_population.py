"""Population training: K agents in stacked tensors behave as K independent agents."""

from __future__ import annotations

import dataclasses
import math
import typing

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from envs.population import SEEDS_KEY
from trainer.experiment.config import ModelConfig
from trainer.experiment.loading import load_experiment
from trainer.metrics import registry as M
from trainer.rl.catalog import ConcatQSACCatalog
from trainer.rl.losses import sac_losses
from trainer.rl.population import PopulationLinear, PopulationSACModule, derived_seed
from trainer.rl.sac_config import build_sac_config

OBS, ACT = 5, 3
TINY = {
    "model.hidden": [32, 32],
    "sac.batch_size": 64,
    "sac.learning_starts": 100,
    "sac.training_intensity": 64,
    "stopping.steps_per_iteration": 100,
    "evaluation.interval": 1,
}


_ACTIVATION_CLASS = {"relu": "ReLU", "tanh": "Tanh", "silu": "SiLU", "elu": "ELU"}


def _module(seeds: list[int], inference_only: bool = False, activation: str = "relu") -> PopulationSACModule:
    k = len(seeds)
    module = PopulationSACModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (k * OBS,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (k * ACT,), np.float32),
        inference_only=inference_only,
        model_config={"fcnet_hiddens": [8, 8], "fcnet_activation": activation, "twin_q": True, SEEDS_KEY: seeds},
    )
    if not inference_only:
        module.make_target_networks()
    return module


def _agent_slices(module: PopulationSACModule, agent: int) -> dict[str, torch.Tensor]:
    return {name: p[agent] for name, p in module.named_parameters()}


def test_an_agents_initial_weights_do_not_depend_on_its_population():
    alone, crowd = _module([7]), _module([3, 7, 11])
    for name, p in _agent_slices(alone, 0).items():
        torch.testing.assert_close(p, _agent_slices(crowd, 1)[name], rtol=0, atol=0)
    # the env runners' inference-only module has the same actor
    actor = _module([3, 7, 11], inference_only=True)
    for name, p in _agent_slices(actor, 1).items():
        torch.testing.assert_close(p, _agent_slices(crowd, 1)[name], rtol=0, atol=0)
    # different seeds, different weights; PyTorch's Linear bound 1/sqrt(fan_in)
    assert not torch.equal(crowd.pi_encoder[0].weight[0], crowd.pi_encoder[0].weight[1])
    assert crowd.pi_encoder[0].weight.abs().max() <= 1 / math.sqrt(OBS)


def test_actions_are_each_agents_own_network_on_its_own_slice():
    crowd = _module([3, 7])
    obs = torch.randn(4, 2 * OBS, generator=torch.Generator().manual_seed(0))
    from ray.rllib.core.columns import Columns

    inputs = crowd.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    assert inputs.shape == (4, 2 * 2 * ACT)
    mean = inputs[:, : 2 * ACT]
    for agent in range(2):
        own = crowd.agent_action(agent, obs[:, agent * OBS : (agent + 1) * OBS].numpy())
        np.testing.assert_allclose(np.tanh(mean[:, agent * ACT : (agent + 1) * ACT].detach().numpy()), own, atol=1e-6)
    # exploration noise: an agent's actions are the same alone as in a population, for the same observation
    alone = _module([7])
    out_alone = alone.forward_exploration({Columns.OBS: obs[:, OBS:]})[Columns.ACTIONS]
    out_crowd = crowd.forward_exploration({Columns.OBS: obs})[Columns.ACTIONS]
    torch.testing.assert_close(out_alone, out_crowd[:, ACT:], rtol=0, atol=1e-6)
    assert ((out_crowd >= -1) & (out_crowd <= 1)).all()


def _population_plan(module: PopulationSACModule) -> dict:
    from trainer.rl.losses import leaf_ops as _ops

    m = module
    return {
        "pi": _ops(m.pi_encoder, m.pi),
        "q": (_ops(m.qf_encoder, m.qf), _ops(m.qf_twin_encoder, m.qf_twin)),
        "target": (_ops(m.target_qf_encoder, m.target_qf), _ops(m.target_qf_twin_encoder, m.target_qf_twin)),
        "population": True,
        "obs_dim": OBS,
        "act_dim": ACT,
    }


def _single_plan(module: PopulationSACModule, agent: int) -> dict:
    """Agent ``agent`` of a population as the single-agent fused plan (plain Linear layers, same weights)."""

    def own(layer: torch.nn.Module) -> torch.nn.Module:
        if not isinstance(layer, PopulationLinear):
            return type(layer)()
        lin = torch.nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[agent].t())
            lin.bias.copy_(layer.bias[agent, 0])
        return lin

    plan = _population_plan(module)
    return {
        **plan,
        "pi": [own(op) for op in plan["pi"]],
        "q": tuple([own(op) for op in ops] for ops in plan["q"]),
        "target": tuple([own(op) for op in ops] for ops in plan["target"]),
        "population": False,
    }


def test_batched_losses_and_gradients_are_each_agents_single_agent_ones():
    k, b = 3, 16
    module = _module([1, 2, 3])
    g = torch.Generator().manual_seed(0)
    batch = {
        "obs": torch.randn(k, b, OBS, generator=g),
        "next_obs": torch.randn(k, b, OBS, generator=g),
        "actions": torch.rand(k, b, ACT, generator=g) * 2 - 1,
        "rewards": torch.randn(k, b, generator=g),
        "terminated": (torch.rand(k, b, generator=g) < 0.1).float(),
        "discount": torch.full((k, b), 0.99),
        "weights": torch.ones(k, b),
        "eps": torch.randn(k, b, ACT, generator=g),
        "eps_next": torch.randn(k, b, ACT, generator=g),
    }
    log_alpha = torch.tensor([-1.0, -0.5, 0.2], requires_grad=True)
    plan = _population_plan(module)
    total, metrics = sac_losses(plan, *batch.values(), log_alpha, -float(ACT), with_metrics=True)
    total.backward()
    per_agent_totals = []
    for agent in range(k):
        single = _single_plan(module, agent)
        own_alpha = log_alpha.detach()[agent : agent + 1].clone().requires_grad_(True)
        own_total, own_metrics = sac_losses(
            single, *(v[agent] for v in batch.values()), own_alpha, -float(ACT), with_metrics=True
        )
        own_total.backward()
        per_agent_totals.append(own_total.item())
        for batched, own in zip(metrics, own_metrics, strict=True):
            torch.testing.assert_close(batched[agent], own, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(log_alpha.grad[agent : agent + 1], own_alpha.grad, rtol=1e-5, atol=1e-6)
        first = module.qf_encoder[0]
        torch.testing.assert_close(first.weight.grad[agent], single["q"][0][0].weight.grad.t(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            module.pi[0].weight.grad[agent], single["pi"][-1].weight.grad.t(), rtol=1e-4, atol=1e-6
        )
    assert total.item() == pytest.approx(sum(per_agent_totals), rel=1e-5)


def test_derived_seeds_are_distinct_per_use_and_stable():
    assert derived_seed(3, "init") == derived_seed(3, "init")
    assert len({derived_seed(s, use) for s in (0, 1, -1) for use in ("init", "learner", "noise0")}) == 9


def _run(seed: int, k: int, iterations: int = 3):
    exp = load_experiment("smoke", {**TINY, "seed": seed, "sac.population": k}, sweep=False)
    algo = build_sac_config(exp).build_algo()
    curve = []
    for _ in range(iterations):
        agents = algo.train()[M.PORTFOLIO][M.AGENTS]
        curve.append([(a[M.AGENT_SEED], a[M.CRITIC_LOSS], a[M.ALPHA], a[M.VALIDATION][M.SHARPE]) for a in agents])
    return algo, curve


def test_an_agent_learns_the_same_alone_and_inside_a_population(ray_session):
    alone, curve_alone = _run(seed=1, k=1)
    crowd, curve_crowd = _run(seed=0, k=3)
    try:
        for it_alone, it_crowd in zip(curve_alone, curve_crowd, strict=True):
            assert [a[0] for a in it_crowd] == [0, 1, 2]
            np.testing.assert_allclose(it_alone[0][1:], it_crowd[1][1:], rtol=1e-5)
            assert it_crowd[0][1] != it_crowd[1][1]  # different agents, different numbers
        learner_alone = alone.learner_group._learner
        learner_crowd = crowd.learner_group._learner
        for (name, p), (_, q) in zip(
            learner_alone.module["default_policy"].named_parameters(),
            learner_crowd.module["default_policy"].named_parameters(),
            strict=True,
        ):
            torch.testing.assert_close(p[0], q[1], rtol=1e-4, atol=1e-6, msg=name)
        # one log-alpha per agent, target entropy -act_dim per agent (RLlib's "auto" would be -K * act_dim)
        act_dim = crowd._single_eval_env.action_space.shape[0]
        assert learner_crowd.curr_log_alpha["default_policy"].shape == (3,)
        assert float(learner_crowd.target_entropy["default_policy"]) == -act_dim
    finally:
        alone.stop()
        crowd.stop()


def test_a_population_checkpoint_restores_every_agent(ray_session, tmp_path):
    from trainer.evaluation.policy import policy_from_algorithm

    exp = load_experiment("smoke", {**TINY, "sac.population": 2}, sweep=False)
    algo = build_sac_config(exp).build_algo()
    algo.train()
    path = algo.save_to_path(tmp_path / "ck")
    obs = np.stack([algo._eval_env.reset(seed=0)[0]] * 2)
    before = policy_from_algorithm(algo)(obs[0])
    alpha = algo.learner_group._learner.curr_log_alpha["default_policy"].detach().clone()
    noise = [g.get_state() for g in algo.learner_group._learner._agent_generators["default_policy"]]
    evaluations = algo.agent_evaluations
    sample_before = algo.buffer.sample(8)
    algo.stop()

    restored = build_sac_config(exp).build_algo()
    try:
        restored.restore_from_path(path)
        np.testing.assert_allclose(policy_from_algorithm(restored)(obs[0]), before, atol=1e-6)
        torch.testing.assert_close(restored.learner_group._learner.curr_log_alpha["default_policy"], alpha)
        restored_noise = restored.learner_group._learner._agent_generators["default_policy"]
        assert all(torch.equal(g.get_state(), state) for g, state in zip(restored_noise, noise, strict=True))
        assert restored.agent_evaluations == evaluations
        np.testing.assert_array_equal(restored.buffer.sample(8)["obs"], sample_before["obs"])
    finally:
        restored.stop()


def test_a_diverged_agent_is_marked_and_the_others_train_on(ray_session):
    exp = load_experiment("smoke", {**TINY, "sac.population": 3}, sweep=False)
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        module = algo.learner_group._learner.module["default_policy"]
        with torch.no_grad():
            module.qf_encoder[0].weight[1].fill_(float("nan"))  # agent 1's critic breaks
        section = algo.train()[M.PORTFOLIO]
        agents = section[M.AGENTS]
        assert [a[M.DIVERGED] for a in agents] == [False, True, False]
        assert agents[1][M.DIVERGED_REASON] == "qf_loss is nan (non-finite)"
        assert agents[1][M.VALIDATION][M.SHARPE_MINUS_EW] == -math.inf
        assert all(math.isfinite(agents[i][M.CRITIC_LOSS]) for i in (0, 2))
        assert not section[M.DIVERGED]  # the population goes on: its median ranks it
        assert math.isfinite(section[M.VALIDATION][M.SHARPE])
        assert section[M.VALIDATION][M.SHARPE] == pytest.approx(np.median([a[M.VALIDATION][M.SHARPE] for a in agents]))
    finally:
        algo.stop()


def test_a_population_trains_on_a_remote_learner(ray_session):
    """Batches travel rows first ([rows, K, ...]), so RLlib counts (and, with several learners, shards) rows,
    not agents; the learner makes them agent-major itself."""
    from ray.rllib.utils.metrics import ALL_MODULES, LEARNER_RESULTS, NUM_ENV_STEPS_TRAINED_LIFETIME

    exp = load_experiment("smoke", {**TINY, "sac.population": 3, "resources.num_learners": 1}, sweep=False)
    algo = build_sac_config(exp).build_algo()
    try:
        result = algo.train()
        agents = result[M.PORTFOLIO][M.AGENTS]
        losses = [a[M.CRITIC_LOSS] for a in agents]
        assert all(math.isfinite(v) for v in losses) and len(set(losses)) == 3
        trained = result[LEARNER_RESULTS][ALL_MODULES][NUM_ENV_STEPS_TRAINED_LIFETIME]
        assert trained == algo.updates_lifetime * exp.sac.batch_size  # rows, not agents
    finally:
        algo.stop()


@pytest.mark.parametrize("activation", typing.get_args(ModelConfig.model_fields["activation"].annotation))
def test_every_activation_choice_builds_the_single_agents_layer_types(activation):
    """``model.activation`` means the same layers in a population as in RLlib's single-agent module."""
    spaces = {
        "observation_space": gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32),
        "action_space": gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32),
    }
    mc = {**dataclasses.asdict(DefaultModelConfig()), "fcnet_hiddens": [8, 8], "fcnet_activation": activation}
    single = DefaultSACTorchRLModule(**spaces, model_config={**mc, "twin_q": True}, catalog_class=ConcatQSACCatalog)
    crowd = _module([3], activation=activation)

    def layer_types(*nets: torch.nn.Module) -> list[str]:
        leaves = [m for net in nets for m in net.modules() if not list(m.children())]
        return ["Linear" if isinstance(m, torch.nn.Linear | PopulationLinear) else type(m).__name__ for m in leaves]

    expected = ["Linear", _ACTIVATION_CLASS[activation], "Linear", _ACTIVATION_CLASS[activation], "Linear"]
    for name in ("pi", "qf", "qf_twin"):
        population = layer_types(getattr(crowd, f"{name}_encoder"), getattr(crowd, name))
        assert population == layer_types(getattr(single, f"{name}_encoder"), getattr(single, name)) == expected
