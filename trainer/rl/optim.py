"""Optimizer steps for the fused SAC learner: all Adam optimizers in one fused call, gradient averaging."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adam import adam


class MergedAdam:
    """``opt.step()`` for every optimizer, as one fused Adam call per set of hyper-parameters.

    RLlib's SAC has four Adam optimizers (critic, twin critic, policy, alpha), usually with equal settings;
    ``Adam.step`` costs ~0.4 ms of Python per call on a CPU, a tenth of a small update step. The states
    (moments, step counts) stay in the optimizers, so their ``state_dict`` and checkpoints are unchanged.
    The argument lists of the fused calls are built once and reused while the optimizers' state dicts,
    parameter groups and settings are the same objects and values (a restored checkpoint or a learning-rate
    schedule rebuilds them). Anything unusual (first step, non-Adam, non-fused, AMSGrad, tensor learning
    rates, a parameter without a gradient) makes every optimizer go through ``opt.step()``.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)
        self._signature: tuple | None = None
        self._keep: list[Any] = []  # the objects whose ids are in the signature, kept alive so ids stay unique
        self._calls: list[tuple[tuple, list, list, list, list]] = []

    def params(self) -> list[torch.Tensor]:
        """Every parameter of every optimizer's groups."""
        return [p for opt in self.optimizers for group in opt.param_groups for p in group["params"]]

    def zero_grad(self) -> None:
        """``opt.zero_grad(set_to_none=True)`` for every optimizer."""
        for p in self.params():
            p.grad = None

    def _current_signature(self) -> tuple:
        return tuple(
            (id(opt), id(opt.state), id(g), id(g["params"]), len(g["params"]), *self._settings(opt, g))
            for opt in self.optimizers
            for g in opt.param_groups
        )

    @staticmethod
    def _settings(opt: torch.optim.Optimizer, group: dict) -> tuple:
        mergeable = (
            isinstance(opt, torch.optim.Adam)
            and group.get("fused")
            and not (group["amsgrad"] or group["capturable"] or group["differentiable"])
            and not torch.is_tensor(group["lr"])
        )
        if not mergeable:
            return (None,)
        return (
            group["lr"],
            *group["betas"],
            group["eps"],
            group["weight_decay"],
            group["maximize"],
            group["decoupled_weight_decay"],
        )

    def _build(self, signature: tuple) -> bool:
        calls: dict[tuple, tuple[list, list, list, list]] = {}
        for opt in self.optimizers:
            for group in opt.param_groups:
                key = self._settings(opt, group)
                if key == (None,) or not all(opt.state[p] for p in group["params"]):
                    return False  # not Adam-like, or before the first step (states not made yet)
                params, exp_avgs, exp_avg_sqs, steps = calls.setdefault(key, ([], [], [], []))
                for p in group["params"]:
                    state = opt.state[p]
                    params.append(p)
                    exp_avgs.append(state["exp_avg"])
                    exp_avg_sqs.append(state["exp_avg_sq"])
                    steps.append(state["step"])
        self._calls = [(key, *lists) for key, lists in calls.items()]
        self._signature = signature
        self._keep = [(opt, opt.state, g, g["params"]) for opt in self.optimizers for g in opt.param_groups]
        return True

    def is_current(self) -> bool:
        """True while the fused calls are built and still match the optimizers (same state tensors, parameter
        groups and settings): a CUDA graph that captured ``step`` may then be replayed."""
        return self._signature is not None and self._signature == self._current_signature()

    def step(self) -> None:
        signature = self._current_signature()
        if signature != self._signature and not self._build(signature):
            self._signature = None
            for opt in self.optimizers:
                opt.step()
            return
        grads = [[p.grad for p in params] for _, params, _, _, _ in self._calls]
        if any(g is None for gs in grads for g in gs):
            for opt in self.optimizers:
                opt.step()
            return
        for (settings, params, exp_avgs, exp_avg_sqs, steps), gs in zip(self._calls, grads, strict=True):
            lr, beta1, beta2, eps, weight_decay, maximize, decoupled = settings
            with torch.no_grad():
                adam(
                    params,
                    gs,
                    exp_avgs,
                    exp_avg_sqs,
                    [],
                    steps,
                    fused=True,
                    decoupled_weight_decay=decoupled,
                    amsgrad=False,
                    beta1=beta1,
                    beta2=beta2,
                    lr=lr,
                    weight_decay=weight_decay,
                    eps=eps,
                    maximize=maximize,
                )


def all_reduce_mean(grads: list[torch.Tensor | None]) -> None:
    """Average gradients over the learners (one all-reduce of the flattened tensors).

    With ``num_learners > 1`` RLlib wraps the module in DDP, whose gradient hooks only fire after a forward
    pass through the DDP wrapper; the fused step calls the layers directly, so it averages the gradients
    itself, log-alpha's included (RLlib's own SAC leaves log-alpha unsynchronised across learners).
    """
    present = [g for g in grads if g is not None]
    flat = torch.cat([g.reshape(-1) for g in present])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for g in present:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
