"""``model.type`` in RLlib: the per-asset and attention networks (``trainer.evaluation.networks``) as SAC modules.

- ``PortfolioSACModule`` is the single agent's module for every type: RLlib's ``DefaultSACTorchRLModule``
  unchanged for ``mlp`` (the same layers, drawn in the same order: a default run's numbers do not change), and
  for the other types the same attribute names holding ``SetNet`` wrappers: ``pi_encoder`` the whole actor
  (``pi`` an identity), ``qf_encoder`` / ``qf_twin_encoder`` the whole critics (``qf`` / ``qf_twin`` identities),
  so RLlib's forward passes, optimizers, target networks and checkpoints work as for an MLP. One class for all
  types, so that ``model.type`` can be swept (Tune resolves it inside the model config).
- A population (``trainer.rl.population``) of these types keeps each network once as a template whose
  parameters are the K agents' stacked, ``[K, ...]`` (``torch.func.stack_module_state``), and runs it with
  ``torch.func.vmap`` over ``torch.func.functional_call``: one batched pass for the K agents, each reading its
  own slice; the parameters keep the template's names, with the agent first.
- The network needs the observation's layout (``envs.layout.ObservationLayout``): ``with_layout`` puts the
  trial's env layout into the model config (``LAYOUT_KEY``) before RLlib builds the module, so a checkpoint's
  module config rebuilds the same network.

The fused learner update (``trainer.rl.learner``, ``trainer.rl.losses``) trains these types too, through
``SetNet.call`` (the actor-loss pass with detached critic parameters); ``resources.compile`` is not applied
to them (the eager fused step runs, with a warning).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from envs.layout import ObservationLayout
from envs.population import SEEDS_KEY
from trainer.evaluation.networks import SET_TYPES, SetActor, SetCritic, SetSpec
from trainer.experiment.config import ATTENTION_LAYERS_KEY, LAYOUT_KEY, MODEL_TYPE_KEY
from trainer.rl.acting import ActsWithoutGrad


def model_type(model_config: dict[str, Any]) -> str:
    """The model config's ``model.type`` (``mlp`` when absent: modules of older checkpoints)."""
    return str(model_config.get(MODEL_TYPE_KEY) or "mlp")


def set_spec(model_config: dict[str, Any]) -> SetSpec:
    """The network settings of a per-asset or attention model config."""
    if LAYOUT_KEY not in model_config:
        raise ValueError(f"model.type {model_type(model_config)} needs the observation layout ({LAYOUT_KEY})")
    return SetSpec(
        model_type(model_config),
        ObservationLayout.from_dict(model_config[LAYOUT_KEY]),
        tuple(model_config["fcnet_hiddens"]),
        str(model_config["fcnet_activation"]).lower(),
        int(model_config.get(ATTENTION_LAYERS_KEY) or 1),
    )


class SetNet(nn.Module):
    """A per-asset or attention network (``net``), of one agent or of K stacked ones (``n_agents``).

    ``forward(batch)`` is RLlib's encoder interface (one agent); ``call(*inputs, detach=...)`` what the
    learner and a population use: inputs ``[B, ...]`` for one agent, ``[K, B, ...]`` for K.
    """

    def __init__(self, net: nn.Module, n_agents: int = 0, critic: bool = False) -> None:
        super().__init__()
        self.net, self.n_agents, self.critic = net, n_agents, critic

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        inputs = (batch[Columns.OBS], batch[Columns.ACTIONS]) if self.critic else (batch[Columns.OBS],)
        return {ENCODER_OUT: self.net(*inputs)}

    def call(self, *inputs: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """The network on ``inputs``; with ``detach`` its parameters take no gradient (the actor-loss pass)."""
        if not self.n_agents and not detach:
            return self.net(*inputs)
        params = {name: p.detach() if detach else p for name, p in self.net.named_parameters()}
        if not self.n_agents:
            return functional_call(self.net, params, inputs)
        return vmap(lambda p, *x: functional_call(self.net, p, x))(params, *inputs)

    def agent(self, agent: int, *inputs: torch.Tensor) -> torch.Tensor:
        """Agent ``agent``'s network alone on ``inputs`` ``[B, ...]``."""
        if not self.n_agents:
            return self.net(*inputs)
        return functional_call(self.net, {n: p[agent] for n, p in self.net.named_parameters()}, inputs)


def build_set_networks(module: Any, seeds: list[int] | None = None) -> None:
    """Give ``module`` (an RLlib SAC module) the actor and critics of its model config's type, RLlib's names.

    Args:
        module: a ``PortfolioSACModule`` or ``PopulationSACModule`` in its ``setup``.
        seeds: a population's per-agent initialisation seeds (the actor's, then each critic's, are drawn
            one after the other from each), or None for a single agent (torch's global generator).
    """
    spec = set_spec(module.model_config)
    module.twin_q = bool(module.model_config.get("twin_q", True))
    parts: list[tuple[str, type[nn.Module]]] = [("pi_encoder", SetActor)]
    if not module.inference_only:
        parts += [("qf_encoder", SetCritic)] + ([("qf_twin_encoder", SetCritic)] if module.twin_q else [])
    if seeds is None:
        for name, cls in parts:
            setattr(module, name, SetNet(cls(spec), critic=cls is SetCritic))
    else:
        # one generator state per agent carried across its networks (the actor first: env runners, which
        # build the actor only, get the same actor weights)
        states = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                states.append(torch.random.get_rng_state())
        for name, cls in parts:
            nets = []
            for i, state in enumerate(states):
                with torch.random.fork_rng(devices=[]):
                    torch.random.set_rng_state(state)
                    nets.append(cls(spec))
                    states[i] = torch.random.get_rng_state()
            setattr(module, name, _stack(nets))
    module.pi = nn.Identity()
    if not module.inference_only:
        module.qf = nn.Identity()
        if module.twin_q:
            module.qf_twin = nn.Identity()


def _stack(nets: list[nn.Module]) -> SetNet:
    params, _ = stack_module_state(nets)
    template = nets[0]
    for name, value in params.items():
        owner, _, leaf = name.rpartition(".")
        setattr(template.get_submodule(owner), leaf, nn.Parameter(value.detach().clone()))
    return SetNet(template, len(nets), critic=isinstance(template, SetCritic))


class PortfolioSACModule(ActsWithoutGrad, DefaultSACTorchRLModule):
    """RLlib's SAC module for ``mlp``; the per-asset or attention networks for the other ``model.type``."""

    def setup(self) -> None:
        if model_type(self.model_config) == "mlp":
            super().setup()
        else:
            build_set_networks(self)


def is_set_module(module: Any) -> bool:
    """The module's networks are per-asset or attention ones."""
    return isinstance(getattr(module, "pi_encoder", None), SetNet)


def with_layout(config: Any) -> Any:
    """The config with the trial's observation layout in its model config, for a per-asset or attention
    model (an ``AlgorithmConfig`` or Tune's resolved dict); an ``mlp``'s is returned as it is."""
    from envs.portfolio import PortfolioEnv

    as_dict = isinstance(config, dict)
    model_config = (config.get("_model_config") if as_dict else getattr(config, "_model_config", None)) or {}
    if model_type(model_config) not in SET_TYPES or LAYOUT_KEY in model_config:
        return config
    env_config = config.get("env_config") if as_dict else config.env_config
    env = PortfolioEnv(**{k: v for k, v in (env_config or {}).items() if k != SEEDS_KEY})
    model_config = {**model_config, LAYOUT_KEY: env.layout.to_dict()}
    if as_dict:
        return {**config, "_model_config": model_config}
    config = config.copy(copy_frozen=False)
    config._model_config = model_config
    return config
