"""The SAC losses of the fused learner step, as one function of tensors: RLlib's continuous twin-Q SAC losses
(``SACTorchLearner.compute_loss_for_module``) summed, with the metrics RLlib logs.

``trainer.rl.learner`` calls it eagerly; ``trainer.rl.compiled`` compiles the same function. It draws no
random numbers (the Gaussian noise comes in as arguments), so both give the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

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
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

from trainer.rl.population import PopulationLinear

LINEAR = (torch.nn.Linear, PopulationLinear)


def leaf_ops(*parts: torch.nn.Module) -> list[torch.nn.Module]:
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
        if isinstance(op, LINEAR):
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
METRIC_KEYS = (
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


def _mlp_critics(
    plan: dict[str, Any], obs: torch.Tensor, actions: torch.Tensor, actions_pi: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each MLP critic's Q of the replayed actions, and (with detached weights) of the policy's actions."""
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
    return q_replay, q_policy


def sac_losses(
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
    set_nets = bool(plan.get("set"))  # per-asset or attention networks (trainer.rl.set_modules.SetNet)
    actor = plan["pi"].call if set_nets else lambda x: _forward(x, plan["pi"])
    actions_pi, logp = _squashed_gaussian(actor(obs), eps)
    with torch.no_grad():
        actions_next, logp_next = _squashed_gaussian(actor(next_obs), eps_next)
        t1, t2 = plan["target"]
        if set_nets:
            q_next = (t1.call(next_obs, actions_next), t2.call(next_obs, actions_next))
        else:
            x_next = torch.cat([next_obs, actions_next], dim=-1)
            q_next = (_forward(x_next, t1), _forward(x_next, t2))
        q_target = torch.min(*q_next).squeeze(-1)
        target = rewards + discount * ((1.0 - terminated) * (q_target - alpha_b * logp_next))

    if set_nets:
        # the actor-loss pass through each critic with its parameters detached (RLlib freezes them)
        q_replay = [q.call(obs, actions).squeeze(-1) for q in plan["q"]]
        q_policy = [q.call(obs, actions_pi, detach=True).squeeze(-1) for q in plan["q"]]
    else:
        q_replay, q_policy = _mlp_critics(plan, obs, actions, actions_pi)

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
