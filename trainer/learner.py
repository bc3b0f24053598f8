"""``FusedSACTorchLearner``: RLlib's SAC learner with a cheaper update step, same losses and gradients.

RLlib's SAC update (``SACTorchLearner``) runs the module's generic ``forward_train``, then one backward pass
per optimizer (critic, twin critic, policy, alpha) with ``retain_graph``. For the MLP critics of
``trainer.catalog`` this learner computes exactly the same losses with less work:

- the first critic layer is linear, so the actor-loss pass gets ``W [obs, a_pi] + b`` from the critic-loss
  pass's ``W [obs, a] + b`` plus ``W_act (a_pi - a)``: the obs part of the layer (most of its compute) is
  evaluated once per critic;
- the actor-loss pass uses detached critic weights (RLlib switches ``requires_grad`` off for the same
  effect), so backward computes no critic weight gradients there and input gradients only for the action
  columns;
- one backward pass over the summed losses gives every parameter the gradient of its own loss: the critic
  losses reach only the critics, the actor loss only the policy (detached alpha and critic weights), the
  alpha loss only log-alpha (detached log-probabilities). This equals the four separate backward passes;
- the four Adam optimizers step as one fused Adam call per set of hyper-parameters (``trainer.optim.MergedAdam``, whose
  argument lists are built once), gradients are reset by setting them to None directly;
- the squashed-Gaussian log-probability uses the identities RLlib's general formulas reduce to here
  (``_squashed_gaussian``), and every ReLU whose input no one else reads runs in place;
- the Polyak target update runs after every gradient step (``torch._foreach_lerp_``), inside the update;
- a batch of k x ``train_batch_size_per_learner`` rows is k gradient steps in one ``learner_group.update``
  call (``PortfolioSAC`` sends all the gradient steps of a sampling round at once), each on its own slice,
  with the logged metrics (window 1) computed on the last one only;
- with several learners, gradients (log-alpha's too) are averaged with one all-reduce
  (``trainer.optim.all_reduce_mean``: the fused step never goes through DDP's forward, so DDP's own hooks
  would not fire).

Tried and dropped (measured on a 2-core CPU, one thread, ``benchmarks/README.md``): ``torch.compile`` of the
loss (Inductor's C++ kernels were no faster than eager here), twin critics as one ``baddbmm`` per layer (no
faster than two matmuls), ``mm`` + in-place bias instead of ``addmm`` (no change).

With ``resources.compile`` the same step runs through ``torch.compile``, on a GPU as one captured CUDA graph
(``trainer.compiled``).

Anything this fast path does not cover (discrete actions, no twin Q, gradient clipping, critics with
parameterised normalisation layers) falls back to RLlib's own update, still with per-step target updates.
``tests/trainer/test_learner.py`` checks that one fused step and one RLlib step from the same state and
random numbers give the same parameters, that one call with k batches equals k calls, and that two learners
stay identical.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from ray.rllib.algorithms.sac.sac_learner import (
    LOGPS_KEY,
    QF_LOSS_KEY,
    QF_MAX_KEY,
    QF_MEAN_KEY,
    QF_MIN_KEY,
    QF_TWIN_LOSS_KEY,
    TD_ERROR_MEAN_KEY,
)
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, Learner
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

from trainer.catalog import ConcatObsActionEncoder
from trainer.config import ResourcesConfig
from trainer.optim import MergedAdam, all_reduce_mean
from trainer.population import PopulationLinear, PopulationSACModule, derived_seed

_LINEAR = (torch.nn.Linear, PopulationLinear)


def _ops(*parts: torch.nn.Module) -> list[torch.nn.Module]:
    """The leaf modules of MLP parts in call order (Linear layers and activations)."""
    out: list[torch.nn.Module] = []
    for part in parts:
        out += [m for m in part.modules() if not list(m.children())]
    return out


def _linear(x: torch.Tensor, op: torch.nn.Module, detach: bool = False) -> torch.Tensor:
    """A ``Linear`` layer, or a population's stacked layers (``[K, B, in] -> [K, B, out]``, one ``baddbmm``)."""
    w, b = (op.weight.detach(), op.bias.detach()) if detach else (op.weight, op.bias)
    return torch.baddbmm(b, x, w) if isinstance(op, PopulationLinear) else F.linear(x, w, b)


def _forward(x: torch.Tensor, ops: list[torch.nn.Module], detach: bool = False, fresh: bool = False) -> torch.Tensor:
    # fresh: x is a Linear output no one else reads, so a ReLU may overwrite it (addmm's backward never reads it)
    for op in ops:
        if isinstance(op, _LINEAR):
            x, fresh = _linear(x, op, detach), True
        elif fresh and type(op) is torch.nn.ReLU:
            x, fresh = F.relu(x, inplace=True), False
        else:
            x, fresh = op(x), False
    return x


# RLlib's SAC learner logs these three under string literals (no constants to import).
ALPHA_LOSS_KEY = "alpha_loss"
ALPHA_VALUE_KEY = "alpha_value"
LOG_ALPHA_VALUE_KEY = "log_alpha_value"
AGENTS_KEY = "agents"  # a population's per-agent learner metrics: (module id, AGENTS_KEY, agent index, key)
_METRIC_KEYS = (
    POLICY_LOSS_KEY,
    QF_LOSS_KEY,
    QF_TWIN_LOSS_KEY,
    ALPHA_LOSS_KEY,
    ALPHA_VALUE_KEY,
    LOG_ALPHA_VALUE_KEY,
    LOGPS_KEY,
    QF_MEAN_KEY,
    QF_MAX_KEY,
    QF_MIN_KEY,
    TD_ERROR_MEAN_KEY,
)
AGENT_METRIC_KEYS = (POLICY_LOSS_KEY, QF_LOSS_KEY, QF_TWIN_LOSS_KEY, ALPHA_VALUE_KEY, LOGPS_KEY)


def _squashed_gaussian(logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RLlib's ``TorchSquashedGaussian.from_logits(logits)`` sample and log-prob for the standard-normal draw
    ``eps``, with RLlib's formulas simplified where they are identities: ``u - loc`` is ``eps * scale``, so
    the Normal log-density's quadratic term is ``-eps**2 / 2`` (no gradient: RLlib's two gradient paths
    through it cancel), ``log(exp(log_std))`` is ``log_std``, and the squash to [-1, 1], ``((tanh(u) + 1) / 2)
    * 2 - 1`` clamped, is ``tanh(u)``. Same values and gradients up to float rounding, fewer ops."""
    loc, log_std = logits.chunk(2, dim=-1)
    log_std = torch.clamp(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)
    u = torch.addcmul(loc, eps, log_std.exp())
    logp = (-0.5 * eps.square() - math.log(math.sqrt(2 * math.pi)) - log_std).sum(-1)
    logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), logp


def _sac_losses(
    plan: dict[str, Any],
    obs: torch.Tensor,
    next_obs: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    discount: torch.Tensor,
    weights: torch.Tensor,
    eps: torch.Tensor,
    eps_next: torch.Tensor,
    log_alpha: torch.Tensor,
    target_entropy: float,
    with_metrics: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """RLlib's continuous twin-Q SAC losses (``SACTorchLearner.compute_loss_for_module``), summed, and (when
    asked) the metrics it logs. The Gaussian noise comes in as ``eps``/``eps_next``, drawn by the caller in
    RLlib's order, so the function has no random ops of its own."""
    alpha = torch.exp(log_alpha)
    # log-alpha is [1] for one agent and [K] for a population, whose tensors are [K, B, ...]: broadcast over B
    log_alpha_b = log_alpha.unsqueeze(-1) if plan["population"] else log_alpha
    alpha_b = torch.exp(log_alpha_b)
    actions_pi, logp = _squashed_gaussian(_forward(obs, plan["pi"]), eps)
    with torch.no_grad():
        actions_next, logp_next = _squashed_gaussian(_forward(next_obs, plan["pi"]), eps_next)
        x_next = torch.cat([next_obs, actions_next], dim=-1)
        t1, t2 = plan["target"]
        q_target = torch.min(_forward(x_next, t1), _forward(x_next, t2)).squeeze(-1)
        target = rewards + discount * ((1.0 - terminated) * (q_target - alpha_b * logp_next))

    x = torch.cat([obs, actions], dim=-1)
    action_shift = actions_pi - actions
    q_replay, q_policy = [], []
    for ops in plan["q"]:
        first = ops[0]
        h = _linear(x, first)
        # The first layer is linear, so W [obs, a_pi] + b = (W [obs, a] + b) + W_act (a_pi - a): the obs part
        # (most of the layer's compute) is shared with the replay pass. Detached weights: RLlib computes the
        # actor loss with the critics frozen. h_pi is a new tensor, so both may then be activated in place.
        if plan["population"]:
            h_pi = torch.baddbmm(h.detach(), action_shift, first.weight.detach()[:, plan["obs_dim"] :])
        else:
            h_pi = torch.addmm(h.detach(), action_shift, first.weight.detach()[:, plan["obs_dim"] :].t())
        q_replay.append(_forward(h, ops[1:], fresh=True).squeeze(-1))
        q_policy.append(_forward(h_pi, ops[1:], detach=True, fresh=True).squeeze(-1))

    # Means over the batch (the last axis): one loss per agent in a population ([K]), the sum of which is
    # minimised, so each agent's parameters get the gradient of its own losses only.
    qf_loss = torch.mean(weights * F.huber_loss(q_replay[0], target, reduction="none", delta=1.0), dim=-1)
    qf_twin_loss = torch.mean(weights * F.huber_loss(q_replay[1], target, reduction="none", delta=1.0), dim=-1)
    q_curr = torch.min(q_policy[0], q_policy[1])
    policy_loss = torch.mean(alpha_b.detach() * logp - q_curr, dim=-1)
    alpha_loss = -torch.mean(log_alpha_b * (logp.detach() + target_entropy), dim=-1)
    total = (policy_loss + qf_loss + qf_twin_loss + alpha_loss).sum()
    if not with_metrics:
        return total, None
    with torch.no_grad():
        q = q_curr.detach()
        td_error = 0.5 * (torch.abs(q_replay[0] - target) + torch.abs(q_replay[1] - target))
        metrics = (
            policy_loss.detach(),
            qf_loss.detach(),
            qf_twin_loss.detach(),
            alpha_loss.detach(),
            alpha.detach() if plan["population"] else alpha.detach()[0],
            log_alpha.detach() if plan["population"] else log_alpha.detach()[0],
            torch.mean(logp.detach(), dim=-1),
            torch.mean(q, dim=-1),
            torch.amax(q, dim=-1),
            torch.amin(q, dim=-1),
            torch.mean(td_error, dim=-1),
        )
    return total, metrics


class FusedSACTorchLearner(SACTorchLearner):
    """SAC learner with the fused update step described in the module docstring."""

    def build(self) -> None:
        super().build()
        settings = getattr(self.config, "portfolio", None)
        if self.config.num_learners > 0 and settings:
            # A remote learner's process: as many torch threads as its bundle's CPUs (or resources.torch_threads).
            # A learner in the trial's main process gets its threads from PortfolioSAC.setup.
            torch.set_num_threads(ResourcesConfig.model_validate(settings["resources"]).learner_torch_threads())
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
        # resources.compile: the same step through torch.compile (a CUDA graph on a GPU), trainer.compiled.
        # (imported here: trainer.compiled builds on this module)
        from trainer.compiled import COMPILE_KEY, CompiledSACStep, check_backend

        self._compiled_step = None
        if self.config.learner_config_dict.get(COMPILE_KEY):
            check_backend(self._device)
            self._compiled_step = CompiledSACStep(self)

    # --- which modules take the fast path -----------------------------------------------------------
    def _fused_plan(self, module_id: str) -> dict[str, Any] | None:
        if module_id in self._fused_cache:
            return self._fused_cache[module_id]
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        plan = None
        encoders = (module.qf_encoder, getattr(module, "qf_twin_encoder", None))
        population = isinstance(module, PopulationSACModule)
        if (
            config.twin_q
            and isinstance(module.action_space, gym.spaces.Box)
            and (population or all(isinstance(e, ConcatObsActionEncoder) for e in encoders))
            and config.grad_clip is None
        ):
            q1, q2 = _ops(module.qf_encoder, module.qf), _ops(module.qf_twin_encoder, module.qf_twin)
            t1 = _ops(module.target_qf_encoder, module.target_qf)
            t2 = _ops(module.target_qf_twin_encoder, module.target_qf_twin)
            pi = _ops(module.pi_encoder, module.pi)
            parameterised = [op for op in pi + q1 + q2 if not isinstance(op, _LINEAR) and list(op.parameters())]
            if not parameterised and isinstance(q1[0], _LINEAR):
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
        total, metrics = _sac_losses(
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
        """Log a step's metrics (``_METRIC_KEYS`` order); a population's per agent too."""
        logged = dict(zip(_METRIC_KEYS, metrics, strict=True))
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
    # add it to the learner state (tests/trainer/test_learner.py checks the round trip).
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
