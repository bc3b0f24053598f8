"""``FusedSACTorchLearner``: RLlib's SAC learner with a cheaper update step, same losses and gradients.

RLlib's SAC update (``SACTorchLearner``) runs the module's generic ``forward_train``, then one backward pass
per optimizer (critic, twin critic, policy, alpha) with ``retain_graph``. For the MLP critics of
``trainer.rl.catalog`` this learner computes exactly the same losses with less work:

- the first critic layer is linear, so the actor-loss pass gets ``W [obs, a_pi] + b`` from the critic-loss
  pass's ``W [obs, a] + b`` plus ``W_act (a_pi - a)``: the obs part of the layer (most of its compute) is
  evaluated once per critic;
- the actor-loss pass uses detached critic weights (RLlib switches ``requires_grad`` off for the same
  effect), so backward computes no critic weight gradients there and input gradients only for the action
  columns;
- one backward pass over the summed losses gives every parameter the gradient of its own loss: the critic
  losses reach only the critics, the actor loss only the policy (detached alpha and critic weights), the
  alpha loss only log-alpha (detached log-probabilities). This equals the four separate backward passes;
- the four Adam optimizers step as one fused Adam call per set of hyper-parameters
  (``trainer.rl.optim.MergedAdam``, whose argument lists are built once), gradients are reset by setting
  them to None directly;
- the squashed-Gaussian log-probability uses the identities RLlib's general formulas reduce to here
  (``trainer.rl.losses``), and every ReLU whose input no one else reads runs in place;
- the Polyak target update runs after every gradient step (``torch._foreach_lerp_``), inside the update;
- a batch of k x ``train_batch_size_per_learner`` rows is k gradient steps in one ``learner_group.update``
  call (``PortfolioSAC`` sends all the gradient steps of a sampling round at once), each on its own slice,
  with the logged metrics (window 1) computed on the last one only;
- with several learners, gradients (log-alpha's too) are averaged with one all-reduce
  (``trainer.rl.optim.all_reduce_mean``: the fused step never goes through DDP's forward, so DDP's own hooks
  would not fire).

Tried and dropped (measured on a 2-core CPU, one thread, ``benchmarks/README.md``): ``torch.compile`` of the
loss (Inductor's C++ kernels were no faster than eager here), twin critics as one ``baddbmm`` per layer (no
faster than two matmuls), ``mm`` + in-place bias instead of ``addmm`` (no change).

With ``resources.compile`` the same step runs through ``torch.compile``, on a GPU as one captured CUDA graph
(``trainer.rl.compiled``).

The per-asset and attention networks (``model.type``, ``trainer.rl.set_modules``) take the same fused step,
their forward passes through ``SetNet.call`` (no shared first-layer trick; the actor-loss pass uses the
critics' detached parameters), without ``resources.compile`` (the eager step runs; a warning says so).

Anything this fast path does not cover (discrete actions, no twin Q, gradient clipping, critics with
parameterised normalisation layers) falls back to RLlib's own update, still with per-step target updates.
``tests/trainer/rl/test_learner.py`` checks that one fused step and one RLlib step from the same state and
random numbers give the same parameters, that one call with k batches equals k calls, and that two learners
stay identical.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES

from trainer.experiment.resources import ResourcesConfig
from trainer.rl.catalog import ConcatObsActionEncoder
from trainer.rl.losses import (
    AGENT_METRIC_KEYS,
    AGENTS_KEY,
    LINEAR,
    METRIC_KEYS,
    leaf_ops,
    sac_losses,
)
from trainer.rl.optim import MergedAdam, all_reduce_mean
from trainer.rl.population import PopulationSACModule, derived_seed
from trainer.rl.set_modules import is_set_module
from trainer.runtime.threads import set_torch_threads

logger = logging.getLogger(__name__)


class FusedSACTorchLearner(SACTorchLearner):
    """SAC learner with the fused update step described in the module docstring."""

    def build(self) -> None:
        super().build()
        settings = getattr(self.config, "portfolio", None)
        if self.config.num_learners > 0 and settings:
            # A remote learner's process: as many torch threads as its bundle's CPUs (or resources.torch_threads).
            # A learner in the trial's main process gets its threads from PortfolioSAC.setup.
            set_torch_threads(ResourcesConfig.model_validate(settings["resources"]).learner_torch_threads())
        self._fused_cache: dict[str, dict[str, Any]] = {}
        self._merged_adam: dict[str, MergedAdam] = {}
        self._agent_generators: dict[str, list[torch.Generator]] = {}
        for mid, module in self.module.items():
            module = module.unwrapped()
            if isinstance(module, PopulationSACModule):
                # one log-alpha per agent (RLlib makes one per module); the alpha optimizer holds this tensor
                initial = math.log(self.config.get_config_for_module(mid).initial_alpha)
                alpha = self.curr_log_alpha[mid]
                alpha.data = torch.full((module.n_agents,), initial, dtype=alpha.dtype, device=alpha.device)
                self._agent_generators[mid] = [
                    torch.Generator(device=self._device).manual_seed(derived_seed(seed, "learner"))
                    for seed in module.seeds
                ]
        # Adam's fused kernel (one pass over all tensors of a group) instead of the per-tensor loop: the same
        # update rule; several times fewer ops for the ~20 parameter tensors of each SAC optimizer.
        for opt in self._named_optimizers.values():
            if isinstance(opt, torch.optim.Adam):
                for group in opt.param_groups:
                    group["fused"], group["foreach"] = True, False
        # resources.compile: the same step through torch.compile (a CUDA graph on a GPU), trainer.rl.compiled.
        # (imported here: trainer.rl.compiled builds on this module)
        from trainer.rl.compiled import COMPILE_KEY, CompiledSACStep, check_backend

        self._compiled_step = None
        if self.config.learner_config_dict.get(COMPILE_KEY):
            check_backend(self._device)
            self._compiled_step = CompiledSACStep(self)
            if any(is_set_module(m.unwrapped()) for _, m in self.module.items()):
                logger.warning(
                    "resources.compile: model.type per_asset/attention is trained by the eager fused step "
                    "(torch.compile is applied to mlp networks only)"
                )

    # --- which modules take the fast path -----------------------------------------------------------
    def _fused_plan(self, module_id: str) -> dict[str, Any] | None:
        if module_id in self._fused_cache:
            return self._fused_cache[module_id]
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        plan = None
        encoders = (module.qf_encoder, getattr(module, "qf_twin_encoder", None))
        population = isinstance(module, PopulationSACModule)
        fits = config.twin_q and isinstance(module.action_space, gym.spaces.Box) and config.grad_clip is None
        if fits and is_set_module(module):
            # per-asset or attention networks (trainer.rl.set_modules): the same losses through SetNet.call
            pairs = module.get_target_network_pairs()
            plan = {
                "set": True,
                "pi": module.pi_encoder,
                "q": (module.qf_encoder, module.qf_twin_encoder),
                "target": (module.target_qf_encoder, module.target_qf_twin_encoder),
                "population": population,
                "obs_dim": module.obs_dim if population else int(module.observation_space.shape[0]),
                "act_dim": module.act_dim if population else int(module.action_space.shape[0]),
                "main_params": [p for main, _ in pairs for p in main.parameters()],
                "target_params": [p for _, target in pairs for p in target.parameters()],
            }
        elif fits and (population or all(isinstance(e, ConcatObsActionEncoder) for e in encoders)):
            q1, q2 = leaf_ops(module.qf_encoder, module.qf), leaf_ops(module.qf_twin_encoder, module.qf_twin)
            t1 = leaf_ops(module.target_qf_encoder, module.target_qf)
            t2 = leaf_ops(module.target_qf_twin_encoder, module.target_qf_twin)
            pi = leaf_ops(module.pi_encoder, module.pi)
            parameterised = [op for op in pi + q1 + q2 if not isinstance(op, LINEAR) and list(op.parameters())]
            if not parameterised and isinstance(q1[0], LINEAR):
                pairs = module.get_target_network_pairs()
                plan = {
                    "pi": pi,
                    "q": (q1, q2),
                    "target": (t1, t2),
                    "population": population,
                    "obs_dim": module.obs_dim if population else int(module.observation_space.shape[0]),
                    "act_dim": module.act_dim if population else int(module.action_space.shape[0]),
                    "main_params": [p for main, _ in pairs for p in main.parameters()],
                    "target_params": [p for _, target in pairs for p in target.parameters()],
                }
        if plan is None and population:
            raise ValueError("a population trains with twin critics and without gradient clipping only")
        self._fused_cache[module_id] = plan
        return plan

    def _get_target_entropy(self, module_id: str) -> float:
        # RLlib's "auto" is -(action size); a population's action holds K agents' actions, each its own -act_dim
        target = super()._get_target_entropy(module_id)
        module = self.module[module_id].unwrapped()
        config_value = self.config.get_config_for_module(module_id).target_entropy
        if isinstance(module, PopulationSACModule) and config_value in (None, "auto"):
            target = target / module.n_agents
        return target

    # --- the update ---------------------------------------------------------------------------------
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        # A batch of k x train_batch_size_per_learner rows is k gradient steps, each on its own slice (views,
        # no copies): PortfolioSAC sends all the gradient steps of a sampling round in one call without
        # RLlib's minibatch iterator, whose per-minibatch slicing, tensor conversion and metrics bookkeeping
        # cost ~1-2 ms per step on a CPU. Anything else is one step on the whole batch, as in RLlib.
        # A population's columns arrive as [rows, K, ...] (rows first, so that RLlib counts and shards rows);
        # its update takes them agent-major, [K, rows, ...] (one copy per call), and its steps are slices of
        # the second axis.
        populations = {m for m in batch if self._agent_generators.get(m)}
        batch = {
            m: {k: v.transpose(0, 1).contiguous() for k, v in b.items()} if m in populations else b
            for m, b in batch.items()
        }
        size = self.config.train_batch_size_per_learner
        axis = {m: 1 if m in populations else 0 for m in batch}
        mid, columns = next(iter(batch.items()))
        rows = next(iter(columns.values())).shape[axis[mid]]
        steps = rows // size if rows > size and rows % size == 0 else 1
        out: tuple[Any, Any, Any] = ({}, {}, {})
        for i in range(steps):
            part = (
                batch
                if steps == 1
                else {m: {k: v.narrow(axis[m], i * size, size) for k, v in b.items()} for m, b in batch.items()}
            )
            # RLlib keeps these metrics with window=1 (the last step's values): compute them only there.
            out = self._step(part, with_metrics=i == steps - 1, **kwargs)
        return out

    def _step(self, batch: dict[str, Any], with_metrics: bool = True, **kwargs: Any) -> tuple[Any, Any, Any]:
        if any(self._fused_plan(mid) is None for mid in batch):
            out = super()._update(batch, **kwargs)
            for mid in batch:
                self._polyak(mid)
            return out
        step = self._compiled_step or self._fused_step
        if self._compiled_step is not None and any(self._fused_plan(mid).get("set") for mid in batch):
            step = self._fused_step  # not compiled for these networks (logged at build)
        losses = {mid: step(mid, b, with_metrics) for mid, b in batch.items()}
        return {}, losses, {}

    def _fused_step(self, module_id: str, batch: dict[str, Any], with_metrics: bool = True) -> torch.Tensor:
        plan = self._fused_plan(module_id)
        config = self.config.get_config_for_module(module_id)
        obs = batch[Columns.OBS]
        log_alpha = self.curr_log_alpha[module_id]
        # The two Gaussian draws of DefaultSACTorchRLModule._forward_train_continuous, in its order (the
        # re-sampled action for obs, then the next action), made here so the loss function has no random ops.
        eps, eps_next = self._noise(module_id, obs, plan["act_dim"])
        discount = config.gamma ** batch["n_step"]
        total, metrics = sac_losses(
            plan,
            obs,
            batch[Columns.NEXT_OBS],
            batch[Columns.ACTIONS],
            batch[Columns.REWARDS],
            batch[Columns.TERMINATEDS].float(),
            discount,
            batch["weights"],
            eps,
            eps_next,
            log_alpha,
            float(self.target_entropy[module_id]),
            with_metrics,
        )
        optimizers = [opt for _, opt in self.get_optimizers_for_module(module_id)]
        merged = self._merged_adam.get(module_id)
        if merged is None or merged.optimizers != optimizers:
            merged = self._merged_adam[module_id] = MergedAdam(optimizers)
        merged.zero_grad()
        total.backward()
        if self.config.num_learners > 1 and torch.distributed.is_initialized():
            all_reduce_mean([p.grad for p in merged.params()])
        merged.step()
        self._polyak(module_id)
        if metrics is not None:
            self._log_step_metrics(module_id, metrics)
        return total.detach()

    def _noise(
        self, module_id: str, obs: torch.Tensor, act_dim: int, agent_generators: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two standard-normal draws of a gradient step (the re-sampled action for obs, then the next
        action), in DefaultSACTorchRLModule._forward_train_continuous's order: ``[B, act_dim]`` each, or for a
        population ``[K, B, act_dim]`` with each agent's draws from its own generator (unless
        ``agent_generators`` is False: then from the device's default generator, as a CUDA graph needs)."""
        generators = self._agent_generators.get(module_id)
        if generators and agent_generators:
            shape = (obs.shape[1], act_dim)
            eps = torch.stack([torch.randn(shape, generator=g, device=obs.device) for g in generators])
            eps_next = torch.stack([torch.randn(shape, generator=g, device=obs.device) for g in generators])
            return eps, eps_next
        shape = (*obs.shape[:-1], act_dim)
        return (
            torch.randn(shape, dtype=obs.dtype, device=obs.device),
            torch.randn(shape, dtype=obs.dtype, device=obs.device),
        )

    def _log_step_metrics(self, module_id: str, metrics: tuple[torch.Tensor, ...]) -> None:
        """Log a step's metrics (``METRIC_KEYS`` order); a population's per agent too."""
        logged = dict(zip(METRIC_KEYS, metrics, strict=True))
        if self._agent_generators.get(module_id):
            # a population: each agent's own values under (module, "agents", index), their means as usual
            for i in range(len(self._agent_generators[module_id])):
                self.metrics.log_dict(
                    {k: logged[k][i] for k in AGENT_METRIC_KEYS}, key=(module_id, AGENTS_KEY, str(i)), window=1
                )
            # over the agents whose values are finite: one diverged agent must not hide the others' figures
            logged = {k: torch.nanmean(torch.where(torch.isfinite(v), v, torch.nan)) for k, v in logged.items()}
        logged["target_entropy"] = self.target_entropy[module_id]
        self.metrics.log_dict(logged, key=module_id, window=1)

    # --- state --------------------------------------------------------------------------------------
    # RLlib 2.60's SACLearner keeps log(alpha) outside the module and outside get_state(): checkpoints hold
    # the alpha optimizer's moments but not alpha itself, so a restored run restarts at initial_alpha. We
    # add it to the learner state (tests/trainer/rl/test_learner.py checks the round trip).
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        # one float per module; a list of K for a population of K > 1 agents
        state["curr_log_alpha"] = {
            mid: float(v.detach().cpu()[0]) if v.numel() == 1 else v.detach().cpu().tolist()
            for mid, v in self.curr_log_alpha.items()
        }
        # a population's per-agent noise generators, so that a resumed run draws what it would have drawn
        state["agent_generators"] = {
            mid: [g.get_state().numpy() for g in gens] for mid, gens in self._agent_generators.items()
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        for mid, value in (state.get("curr_log_alpha") or {}).items():
            param = self.curr_log_alpha[mid]
            with torch.no_grad():
                param.copy_(torch.as_tensor(value, dtype=param.dtype).expand_as(param))
        for mid, saved in (state.get("agent_generators") or {}).items():
            for generator, value in zip(self._agent_generators.get(mid, []), saved, strict=False):
                generator.set_state(torch.as_tensor(value, dtype=torch.uint8))

    # --- target networks ----------------------------------------------------------------------------
    @torch.no_grad()
    def _polyak(self, module_id: str) -> None:
        plan = self._fused_plan(module_id)
        tau = self.config.get_config_for_module(module_id).tau
        if plan is not None:
            torch._foreach_lerp_(plan["target_params"], plan["main_params"], tau)
        else:
            from ray.rllib.core.learner.utils import update_target_network

            for main, target in self.module[module_id].unwrapped().get_target_network_pairs():
                update_target_network(main_net=main, target_net=target, tau=tau)
        self.metrics.log_value((module_id, NUM_TARGET_UPDATES), 1, reduce="lifetime_sum")

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        # Targets were updated after every gradient step in _update; skip DQNLearner's once-per-call update
        # and keep the generic bookkeeping (learning-rate schedules, ...).
        Learner.after_gradient_based_update(self, timesteps=timesteps)
