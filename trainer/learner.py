"""``FusedSACTorchLearner``: RLlib's SAC learner with a cheaper update step, same losses and gradients.

RLlib's SAC update (``SACTorchLearner``) runs the module's generic ``forward_train``, then one backward pass
per optimizer (critic, twin critic, policy, alpha) with ``retain_graph``. For the MLP critics of
``trainer.catalog`` this learner computes exactly the same losses with less work:

- the first critic layer ``W [obs | action]`` is split into ``W_obs obs + W_act action``; ``W_obs obs`` is
  computed once per critic and shared by the critic-loss pass (replayed actions) and the actor-loss pass
  (re-sampled actions);
- the actor-loss pass uses detached critic weights (RLlib switches ``requires_grad`` off for the same
  effect), so backward computes no critic weight gradients there and input gradients only for the action
  columns;
- one backward pass over the summed losses gives every parameter the gradient of its own loss: the critic
  losses reach only the critics, the actor loss only the policy (detached alpha and critic weights), the
  alpha loss only log-alpha (detached log-probabilities). This equals the four separate backward passes;
- the Polyak target update runs after every gradient step (``torch._foreach_lerp_``), inside the update, so
  several minibatches can go through one ``learner_group.update`` call (``PortfolioSAC`` sends all the
  gradient steps of a sampling round at once) without changing how often targets move.

Anything this fast path does not cover (discrete actions, no twin Q, gradient clipping, critics with
parameterised normalisation layers) falls back to RLlib's own update, still with per-step target updates.
``tests/trainer/test_learner.py`` checks that one fused step and one RLlib step from the same state and
random numbers give the same parameters.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES

from trainer.catalog import ConcatObsActionEncoder

_LOSS_KEYS = ("policy_loss", "qf_loss", "qf_twin_loss", "alpha_loss")


def _ops(*parts: torch.nn.Module) -> list[torch.nn.Module]:
    """The leaf modules of MLP parts in call order (Linear layers and activations)."""
    out: list[torch.nn.Module] = []
    for part in parts:
        out += [m for m in part.modules() if not list(m.children())]
    return out


def _forward(x: torch.Tensor, ops: list[torch.nn.Module], detach: bool) -> torch.Tensor:
    for op in ops:
        if isinstance(op, torch.nn.Linear):
            w, b = (op.weight.detach(), op.bias.detach()) if detach else (op.weight, op.bias)
            x = F.linear(x, w, b)
        else:
            x = op(x)
    return x


class FusedSACTorchLearner(SACTorchLearner):
    """SAC learner with the fused update step described in the module docstring."""

    def build(self) -> None:
        super().build()
        self._fused_cache: dict[str, dict[str, Any]] = {}
        # Adam's fused kernel (one pass over all tensors of a group) instead of the per-tensor loop: the same
        # update rule; several times fewer ops for the ~20 parameter tensors of each SAC optimizer.
        for opt in self._named_optimizers.values():
            if isinstance(opt, torch.optim.Adam):
                for group in opt.param_groups:
                    group["fused"], group["foreach"] = True, False

    # --- which modules take the fast path -----------------------------------------------------------
    def _fused_plan(self, module_id: str) -> dict[str, Any] | None:
        if module_id in self._fused_cache:
            return self._fused_cache[module_id]
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        plan = None
        encoders = (module.qf_encoder, getattr(module, "qf_twin_encoder", None))
        if (
            config.twin_q
            and isinstance(module.action_space, gym.spaces.Box)
            and all(isinstance(e, ConcatObsActionEncoder) for e in encoders)
            and config.grad_clip is None
        ):
            q1, q2 = _ops(module.qf_encoder, module.qf), _ops(module.qf_twin_encoder, module.qf_twin)
            t1 = _ops(module.target_qf_encoder, module.target_qf)
            t2 = _ops(module.target_qf_twin_encoder, module.target_qf_twin)
            parameterised = [op for op in q1 + q2 if not isinstance(op, torch.nn.Linear) and list(op.parameters())]
            if not parameterised and isinstance(q1[0], torch.nn.Linear):
                pairs = module.get_target_network_pairs()
                plan = {
                    "q": (q1, q2),
                    "target": (t1, t2),
                    "obs_dim": int(module.observation_space.shape[0]),
                    "main_params": [p for main, _ in pairs for p in main.parameters()],
                    "target_params": [p for _, target in pairs for p in target.parameters()],
                }
        self._fused_cache[module_id] = plan
        return plan

    # --- the update ---------------------------------------------------------------------------------
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        if any(self._fused_plan(mid) is None for mid in batch):
            out = super()._update(batch, **kwargs)
            for mid in batch:
                self._polyak(mid)
            return out
        losses = {mid: self._fused_step(mid, b) for mid, b in batch.items()}
        return {}, losses, {}

    def _fused_step(self, module_id: str, batch: dict[str, Any]) -> torch.Tensor:
        plan = self._fused_plan(module_id)
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        actions = batch[Columns.ACTIONS]
        log_alpha = self.curr_log_alpha[module_id]
        alpha = torch.exp(log_alpha)
        dist_cls = module.get_train_action_dist_cls()

        # Same order of random draws as DefaultSACTorchRLModule._forward_train_continuous.
        logits = module.pi(module.pi_encoder({Columns.OBS: obs})[ENCODER_OUT])
        with torch.no_grad():
            logits_next = module.pi(module.pi_encoder({Columns.OBS: next_obs})[ENCODER_OUT])
        actions_pi, logp = dist_cls.from_logits(logits).rsample_and_logp()
        with torch.no_grad():
            actions_next, logp_next = dist_cls.from_logits(logits_next).sample_and_logp()
            x_next = torch.cat([next_obs, actions_next], dim=-1)
            t1, t2 = plan["target"]
            q_target = torch.min(_forward(x_next, t1, False), _forward(x_next, t2, False)).squeeze(-1)
            terminated = batch[Columns.TERMINATEDS].float()
            q_next = (1.0 - terminated) * (q_target - alpha * logp_next)
            target = batch[Columns.REWARDS] + (config.gamma ** batch["n_step"]) * q_next

        n_obs = plan["obs_dim"]
        q_replay, q_policy = [], []
        for ops in plan["q"]:
            first = ops[0]
            w_obs, w_act = first.weight[:, :n_obs], first.weight[:, n_obs:]
            h_obs = F.linear(obs, w_obs, first.bias)  # shared by both passes
            q_replay.append(_forward(h_obs + F.linear(actions, w_act), ops[1:], detach=False).squeeze(-1))
            h_pi = h_obs.detach() + F.linear(actions_pi, w_act.detach())
            q_policy.append(_forward(h_pi, ops[1:], detach=True).squeeze(-1))

        weights = batch["weights"]
        huber = torch.nn.HuberLoss(reduction="none", delta=1.0)
        qf_loss = torch.mean(weights * huber(q_replay[0], target))
        qf_twin_loss = torch.mean(weights * huber(q_replay[1], target))
        q_curr = torch.min(q_policy[0], q_policy[1])
        policy_loss = torch.mean(alpha.detach() * logp - q_curr)
        target_entropy = self.target_entropy[module_id]
        alpha_loss = -torch.mean(log_alpha * (logp.detach() + target_entropy))
        total = policy_loss + qf_loss + qf_twin_loss + alpha_loss

        optimizers = [opt for _, opt in self.get_optimizers_for_module(module_id)]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in optimizers:
            opt.step()
        self._polyak(module_id)

        with torch.no_grad():
            td_error = 0.5 * (torch.abs(q_replay[0] - target) + torch.abs(q_replay[1] - target))
            self.metrics.log_dict(
                {
                    "policy_loss": policy_loss.detach(),
                    "qf_loss": qf_loss.detach(),
                    "qf_twin_loss": qf_twin_loss.detach(),
                    "alpha_loss": alpha_loss.detach(),
                    "alpha_value": alpha.detach()[0],
                    "log_alpha_value": log_alpha.detach()[0],
                    "target_entropy": target_entropy,
                    "logps": torch.mean(logp.detach()),
                    "qf_mean": torch.mean(q_curr.detach()),
                    "qf_max": torch.max(q_curr.detach()),
                    "qf_min": torch.min(q_curr.detach()),
                    "td_error_mean": torch.mean(td_error),
                },
                key=module_id,
                window=1,
            )
        return total.detach()

    # --- state --------------------------------------------------------------------------------------
    # RLlib 2.60's SACLearner keeps log(alpha) outside the module and outside get_state(): checkpoints hold
    # the alpha optimizer's moments but not alpha itself, so a restored run restarts at initial_alpha. We
    # add it to the learner state (tests/trainer/test_learner.py checks the round trip).
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state["curr_log_alpha"] = {mid: float(v.detach().cpu()[0]) for mid, v in self.curr_log_alpha.items()}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        for mid, value in (state.get("curr_log_alpha") or {}).items():
            with torch.no_grad():
                self.curr_log_alpha[mid].fill_(value)

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
