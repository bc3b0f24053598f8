"""Population training: K independent SAC agents of one configuration in stacked tensors.

``PopulationSACModule`` is the RLlib module of a population. Every layer holds the K agents' weights stacked,
``[K, in, out]``, and runs as one batched matrix product (``torch.baddbmm``), so the K actors, twin critics and
targets cost one kernel per layer instead of K. Agents never mix: agent ``i`` reads only slice ``i`` of every
layer, of the observation (``envs.population.PopulationEnv`` puts the agents' observations side by side; the
observation filter's statistics are per component, hence per agent) and of the action.

What keeps an agent's numbers independent of its population (tested: an agent trained inside a population of
three gives the learning curve it gives in a population of one, to float tolerance):

- initial weights drawn layer by layer from a generator seeded with the agent's seed (PyTorch's default
  ``Linear`` initialisation, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases);
- exploration noise from one generator per agent (seeded with its seed and the env runner's noise stream);
- its own env copy (``PopulationEnv``), replay sampling RNG (``trainer.rl.buffer.PopulationReplayBuffer``) and
  the learner's Gaussian draws (``FusedSACTorchLearner``; saved with checkpoints), each from a generator of
  its own (except inside a captured CUDA graph, ``resources.compile`` on a GPU, where the learner's draws
  come from the device's generator);
- its own log-alpha (a vector of K), target entropy (``-act_dim`` per agent) and Adam moments (Adam is
  elementwise, so one fused Adam over stacked tensors is K Adams), and the loss is the sum of the agents'
  losses, so each agent's gradient is its own loss's.

The agents' seeds travel in the module's model config and in the env config (``population_seeds``), both set
from the trial's resolved seed by ``trainer.rl.algorithm``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.models.utils import get_activation_fn
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT
from torch import nn

from envs.population import SEEDS_KEY, agent_seeds  # model config key: the same name as the env config's
from trainer.rl.acting import ActsWithoutGrad
from trainer.rl.set_modules import build_set_networks, is_set_module, model_type

__all__ = ["SEEDS_KEY", "PopulationLinear", "PopulationSACModule", "agent_seeds", "derived_seed", "population_size"]


class PopulationLinear(nn.Module):
    """K linear layers in one: ``y[k] = x[k] @ weight[k] + bias[k]`` for ``x`` of shape ``[K, B, in]``.

    Args:
        n_agents: K.
        in_features: input size of each agent's layer.
        out_features: output size of each agent's layer.
    """

    def __init__(self, n_agents: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_agents, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_agents, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    @torch.no_grad()
    def init_agent(self, agent: int, generator: torch.Generator) -> None:
        """PyTorch's default ``nn.Linear`` initialisation of agent ``agent``'s slice, from ``generator``."""
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight[agent].uniform_(-bound, bound, generator=generator)
        self.bias[agent].uniform_(-bound, bound, generator=generator)


def population_mlp(n_agents: int, sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    """``PopulationLinear`` layers of ``sizes`` with ``activation`` between them (and after the last one)."""
    # the activation class RLlib's MLP encoders build for the same name (model.activation's choices)
    act = get_activation_fn(activation, framework="torch")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(PopulationLinear(n_agents, a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(act())
    return nn.Sequential(*layers)


def agent_major(x: torch.Tensor, n_agents: int) -> torch.Tensor:
    """``[B, K * D]`` (agents side by side) -> ``[K, B, D]``."""
    return x.reshape(x.shape[0], n_agents, -1).transpose(0, 1)


def side_by_side(x: torch.Tensor) -> torch.Tensor:
    """``[K, B, D]`` -> ``[B, K * D]`` (the inverse of ``agent_major``)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class PopulationSACModule(ActsWithoutGrad, TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI):
    """SAC networks (actor, twin critics, their targets) of K agents, stacked; see the module docstring.

    The attribute names are those of RLlib's ``DefaultSACTorchRLModule`` (``pi_encoder``, ``pi``,
    ``qf_encoder``, ``qf``, ``qf_twin_encoder``, ``qf_twin`` and the targets), which RLlib's SAC learner reads
    to build its optimizers. The action distribution inputs are the agents' means then the agents'
    log-standard-deviations, ``[B, 2 * K * A]``, so RLlib's squashed Gaussian over the flat action is the
    agents' Gaussians side by side.
    """

    framework: str = "torch"

    def setup(self) -> None:
        mc = self.model_config
        self.seeds = [int(s) for s in mc[SEEDS_KEY]]
        k = self.n_agents = len(self.seeds)
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError("a population needs a continuous (Box) action space")
        self.obs_dim = int(self.observation_space.shape[0]) // k
        self.act_dim = int(self.action_space.shape[0]) // k
        self.noise_stream = 0
        self._noise: list[torch.Generator] | None = None
        if model_type(mc) != "mlp":  # per-asset or attention networks, stacked (trainer.rl.set_modules)
            build_set_networks(self, [derived_seed(seed, "init") for seed in self.seeds])
            return
        hidden = list(mc["fcnet_hiddens"])
        activation = mc["fcnet_activation"]
        self.twin_q = bool(mc.get("twin_q", True))
        # encoder = every layer but the last (with its activation), head = the last layer: RLlib's split
        self.pi_encoder = population_mlp(k, [self.obs_dim, *hidden], activation, last_activation=True)
        self.pi = population_mlp(k, [hidden[-1], 2 * self.act_dim], activation, last_activation=False)
        if not self.inference_only:
            critic_in = self.obs_dim + self.act_dim
            self.qf_encoder = population_mlp(k, [critic_in, *hidden], activation, last_activation=True)
            self.qf = population_mlp(k, [hidden[-1], 1], activation, last_activation=False)
            if self.twin_q:
                self.qf_twin_encoder = population_mlp(k, [critic_in, *hidden], activation, last_activation=True)
                self.qf_twin = population_mlp(k, [hidden[-1], 1], activation, last_activation=False)
        # The actor's layers are drawn first, so an agent's actor weights are the same whether or not the
        # critics are built here (env runners build the actor only).
        parts = [self.pi_encoder, self.pi]
        if not self.inference_only:
            parts += [self.qf_encoder, self.qf] + ([self.qf_twin_encoder, self.qf_twin] if self.twin_q else [])
        for agent, seed in enumerate(self.seeds):
            generator = torch.Generator().manual_seed(derived_seed(seed, "init"))
            for net in parts:
                for layer in net:
                    if isinstance(layer, PopulationLinear):
                        layer.init_agent(agent, generator)

    # --- RLlib APIs ---------------------------------------------------------------------------------------
    def make_target_networks(self) -> None:
        self.target_qf_encoder = make_target_network(self.qf_encoder)
        self.target_qf = make_target_network(self.qf)
        if self.twin_q:
            self.target_qf_twin_encoder = make_target_network(self.qf_twin_encoder)
            self.target_qf_twin = make_target_network(self.qf_twin)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.qf_encoder, self.target_qf_encoder), (self.qf, self.target_qf)]
        if self.twin_q:
            pairs += [(self.qf_twin_encoder, self.target_qf_twin_encoder), (self.qf_twin, self.target_qf_twin)]
        return pairs

    def get_non_inference_attributes(self) -> list[str]:
        out = ["qf", "target_qf", "qf_encoder", "target_qf_encoder"]
        if self.twin_q:
            out += ["qf_twin", "target_qf_twin", "qf_twin_encoder", "target_qf_twin_encoder"]
        return out

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError("a population is trained by FusedSACTorchLearner's batched update only")

    def get_exploration_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    def get_inference_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    def get_train_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    # --- forward passes -----------------------------------------------------------------------------------
    def _loc_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each agent's Gaussian mean and clamped log-std on its observation slice, ``[K, B, A]`` each."""
        x = agent_major(obs, self.n_agents)
        out = self.pi_encoder.call(x) if is_set_module(self) else self.pi(self.pi_encoder(x))
        loc, log_std = out.chunk(2, dim=-1)
        return loc, torch.clamp(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        loc, log_std = self._loc_log_std(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: torch.cat([side_by_side(loc), side_by_side(log_std)], dim=-1)}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # The action is sampled here, not by RLlib's GetActions connector, so that each agent's noise comes
        # from its own generator: tanh(loc + std * eps), RLlib's squashed Gaussian on [-1, 1].
        loc, log_std = self._loc_log_std(batch[Columns.OBS])
        if self._noise is None:
            self._noise = [
                torch.Generator().manual_seed(derived_seed(seed, f"noise{self.noise_stream}")) for seed in self.seeds
            ]
        eps = torch.stack([torch.randn(loc.shape[1:], generator=g) for g in self._noise]).to(loc)
        actions = torch.tanh(torch.addcmul(loc, eps, log_std.exp()))
        return {
            Columns.ACTION_DIST_INPUTS: torch.cat([side_by_side(loc), side_by_side(log_std)], dim=-1),
            Columns.ACTIONS: side_by_side(actions),
        }

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError("a population is trained by FusedSACTorchLearner's batched update only")

    def set_noise_stream(self, stream: int) -> None:
        """Draw exploration noise from stream ``stream`` (one per env runner: their noise must differ)."""
        self.noise_stream, self._noise = int(stream), None

    @torch.no_grad()
    def agent_action(self, agent: int, norm_obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """Agent ``agent``'s deterministic action, ``tanh(mean)``, for normalised observations ``[B, D]``."""
        x = torch.as_tensor(np.atleast_2d(norm_obs), dtype=torch.float32)
        if is_set_module(self):
            return torch.tanh(self.pi_encoder.agent(agent, x)[:, : self.act_dim]).numpy()
        for layer in (*self.pi_encoder, *self.pi):
            if isinstance(layer, PopulationLinear):
                x = torch.addmm(layer.bias[agent], x, layer.weight[agent])
            else:
                x = layer(x)
        return torch.tanh(x[:, : self.act_dim]).numpy()


def population_size(module: Any) -> int:
    """K for a population module, 0 for anything else."""
    return int(module.n_agents) if isinstance(module, PopulationSACModule) else 0


def derived_seed(seed: int, purpose: str) -> int:
    """An independent seed for one use (``"init"``, ``"learner"``, ``"noise<stream>"``) of an agent's seed.

    Generators seeded with the same integer would repeat each other's numbers; ``numpy.random.SeedSequence``
    hashes (seed, purpose) into well-separated streams.
    """
    words = [int(seed) & 0xFFFFFFFF, *purpose.encode()]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)
