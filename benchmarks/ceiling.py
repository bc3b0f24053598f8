"""The matrix-product ceiling of one SAC update: its GEMMs, their FLOPs, and how fast this machine runs them.

``sac_update_gemms`` lists every matrix product of one fused update of ``trainer.rl.learner`` (forward and
backward) for an MLP actor and twin MLP critics on [obs, action]; ``time_gemms`` runs exactly those products,
in the layouts the update uses, and ``ceiling`` turns the time into updates/s: the speed of an update that did
nothing but its matrix products. Everything else an update does (activations, Adam, target updates, the
framework around it) is what separates the learner from this ceiling.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

# How a product reads its operands in the update (torch.nn.functional.linear and its autograd):
# forward y = x W^T (+ b); input gradient dx = dy W; weight gradient dW = dy^T x.
FORWARD, INPUT_GRAD, WEIGHT_GRAD = "forward", "input_grad", "weight_grad"


@dataclass(frozen=True)
class Gemm:
    """One matrix product of a Linear layer (in_features -> out_features) on ``rows`` rows, ``count`` times.

    Attributes:
        kind: ``FORWARD``, ``INPUT_GRAD`` or ``WEIGHT_GRAD``.
        rows: the batch rows.
        in_features: the layer's input width.
        out_features: the layer's output width.
        count: how many times the update runs this product.
    """

    kind: str
    rows: int
    in_features: int
    out_features: int
    count: int = 1

    @property
    def flops(self) -> int:
        """Multiply-adds x 2, times ``count``."""
        return 2 * self.rows * self.in_features * self.out_features * self.count


def _mlp(kind: str, rows: int, widths: list[int], count: int, skip_first: bool = False) -> list[Gemm]:
    """``kind`` products of every layer of an MLP with layer ``widths`` (skipping the first layer if asked)."""
    layers = list(itertools.pairwise(widths))[1 if skip_first else 0 :]
    return [Gemm(kind, rows, i, o, count) for i, o in layers]


def sac_update_gemms(obs_dim: int, act_dim: int, hidden: list[int], batch: int) -> list[Gemm]:
    """Every matrix product of one fused SAC gradient step (``trainer.rl.losses.sac_losses`` and its backward).

    Forward: the actor on obs (with gradients) and on next obs (without), both target critics on
    [next obs, next action], each critic's first layer once on [obs, action] and its action columns on the
    policy's action shift (``W_act (a_pi - a)``), then each critic's other layers twice (replay and policy
    actions). Backward: the critics' weight gradients on the replay pass (no input gradient for the first
    layer: [obs, action] needs none), input gradients only on the policy pass down to the action shift (its
    weights are detached), and the actor's weight and input gradients (no input gradient for the first layer).

    Args:
        obs_dim: observation width.
        act_dim: action width (the actor outputs mean and log-std, 2 x act_dim).
        hidden: hidden layer widths of the actor and of each critic.
        batch: rows per gradient step.

    Returns:
        The products, each with how often it runs.
    """
    pi = [obs_dim, *hidden, 2 * act_dim]
    q = [obs_dim + act_dim, *hidden, 1]
    return [
        # forward
        *_mlp(FORWARD, batch, pi, 2),  # actor on obs and on next obs
        *_mlp(FORWARD, batch, q, 2),  # the two target critics
        *_mlp(FORWARD, batch, q[:2], 2),  # each critic's first layer on [obs, action]
        Gemm(FORWARD, batch, act_dim, hidden[0], 2),  # ... plus W_act (a_pi - a) for the policy pass
        *_mlp(FORWARD, batch, q, 4, skip_first=True),  # each critic's other layers, replay and policy pass
        # backward
        *_mlp(WEIGHT_GRAD, batch, q, 2),  # critics, replay pass
        *_mlp(INPUT_GRAD, batch, q, 2, skip_first=True),
        *_mlp(INPUT_GRAD, batch, q, 2, skip_first=True),  # critics, policy pass (detached weights) ...
        Gemm(INPUT_GRAD, batch, act_dim, hidden[0], 2),  # ... down to the action shift
        *_mlp(WEIGHT_GRAD, batch, pi, 1),  # actor
        *_mlp(INPUT_GRAD, batch, pi, 1, skip_first=True),
    ]


def update_flops(gemms: list[Gemm]) -> int:
    """FLOPs of all the products of one update."""
    return sum(g.flops for g in gemms)


def _operands(g: Gemm, device: str, agents: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Operands in the update's layout: ``mm(a, b)`` (``addmm`` with a bias for the forward product); with
    ``agents`` > 1, a population's: one leading dimension of ``agents`` (``bmm`` / ``baddbmm``)."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*((agents,) if agents > 1 else ()), *shape, device=device)

    weight = rand(g.out_features, g.in_features)
    if g.kind == FORWARD and agents > 1:  # a population's weights are stored [K, in, out] (PopulationLinear)
        return rand(g.rows, g.in_features), rand(g.in_features, g.out_features), rand(1, g.out_features)
    if g.kind == FORWARD:
        return rand(g.rows, g.in_features), weight.t(), rand(g.out_features)
    if g.kind == INPUT_GRAD:
        return rand(g.rows, g.out_features), weight, None
    return rand(g.rows, g.out_features).mT, rand(g.rows, g.in_features), None


def time_gemms(gemms: list[Gemm], threads: int, device: str = "cpu", repeats: int = 20, agents: int = 1) -> float:
    """Seconds this machine takes for all the products of one update (of ``agents`` agents batched as a
    population's update batches them), at ``threads`` torch threads.

    Each distinct product is timed ``repeats`` times after a warm-up and its median time is counted
    ``count`` times. The caller's thread setting is restored.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    total = 0.0
    mm, addmm = (torch.bmm, torch.baddbmm) if agents > 1 else (torch.mm, torch.addmm)
    try:
        for g in gemms:
            a, b, bias = _operands(g, device, agents)

            def run(a: torch.Tensor = a, b: torch.Tensor = b, bias: torch.Tensor | None = bias) -> torch.Tensor:
                return mm(a, b) if bias is None else addmm(bias, a, b)

            for _ in range(3):
                run()
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - t0)
            total += sorted(times)[len(times) // 2] * g.count
    finally:
        torch.set_num_threads(saved)
    return total


def ceiling(gemms: list[Gemm], threads: int, device: str = "cpu") -> dict[str, float]:
    """The update's GEMM rate and the updates/s of an update that only ran its products.

    Returns:
        ``gemm_gflops`` (the measured rate over these products) and ``ceiling_updates_per_s``.
    """
    seconds = time_gemms(gemms, threads, device)
    return {"gemm_gflops": update_flops(gemms) / seconds / 1e9, "ceiling_updates_per_s": 1.0 / seconds}
