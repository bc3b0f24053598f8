"""The position limits of ``envs.limits`` in torch, without data-dependent branches, for an exported policy.

Each function computes what its namesake in ``envs.limits`` computes (that module's docstring is the
specification), in float64, on one weight vector (``N`` assets, then cash). Where the numpy code branches on the
data (weights already within the caps, the all-caps simplex, cash over its cap, a rounding-sized excess, no
knot past the turnover budget), both sides are computed and ``torch.where`` picks one, and the variable-length
selections of the numpy code (the finite caps' kinks, the terms that turn round) become fixed-length arrays
padded with entries that add nothing: the same numbers to rounding, in one graph of fixed shape that
TorchScript scripts and the ONNX exporter traces faithfully (a traced branch would be frozen at the example's
side). A value computed on the side not taken may be ``inf`` or NaN; ``torch.where`` never lets it through.

Sorting by ``torch.sort`` need not be stable: tied kinks are ``0`` apart, so the order within a tie changes no
value the walk reads (the last kink before the crossing is the last of its tie, whose slope counts all of it).
The caps' feasibility (``envs.limits.check_feasible``) is checked when the limits are built, not here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _clip(x: Tensor, caps: Tensor) -> Tensor:
    """``np.clip(x, 0, caps)``: ``minimum(maximum(x, 0), caps)``."""
    return torch.minimum(torch.clamp(x, min=0.0), caps)


def asset_turnover(weights: Tensor, current: Tensor, n_assets: int) -> Tensor:
    """The env's turnover: the L1 distance of the asset weights (a 0-dim tensor)."""
    return (weights[:n_assets] - current[:n_assets]).abs().sum()


def within_caps(weights: Tensor, caps: Tensor, tolerance: float) -> Tensor:
    """Whether ``weights`` lie in the capped simplex (a 0-dim bool tensor)."""
    return (weights >= 0.0).all() & (weights <= caps).all() & ((weights.sum() - 1.0).abs() <= tolerance)


def project_capped_simplex(target: Tensor, caps: Tensor, tolerance: float) -> Tensor:
    """``envs.limits.project_capped_simplex``: ``clip(target - tau, 0, caps)`` summing to 1.

    An infinite cap has no kink; its place in the walk is a kink at the lowest real kink with no slope
    change, which ties with it and so changes nothing.
    """
    v = target
    finite = torch.isfinite(caps)
    finite_caps = torch.where(finite, caps, torch.zeros_like(caps))
    capped_kinks = v - finite_caps
    kinks = torch.cat([v, torch.where(finite, capped_kinks, capped_kinks.min())])
    steps = torch.cat([torch.ones_like(v), -finite.to(v.dtype)])
    kinks, order = torch.sort(kinks, descending=True)
    slopes = torch.cumsum(steps[order], 0)
    values = torch.cat([torch.zeros(1, dtype=v.dtype), torch.cumsum(slopes[:-1] * (kinks[:-1] - kinks[1:]), 0)])
    # numpy's searchsorted(values, 1.0) on the non-decreasing f at the kinks: how many are below 1 (>= 1, as
    # values[0] = 0), so the kink above tau is the last of them
    j = (values < 1.0).sum() - 1
    tau = kinks[j] - (1.0 - values[j]) / slopes[j]
    w = _clip(v - tau, caps)
    # tau again from the weights strictly between their bounds (the KKT form, free of the walk's rounding)
    free = (w > 0.0) & (w < caps)
    n_free = free.sum()
    at_cap = torch.where(w == caps, caps, torch.zeros_like(caps)).sum()
    kkt_tau = (torch.where(free, v, torch.zeros_like(v)).sum() + at_cap - 1.0) / torch.clamp(n_free, min=1)
    w = torch.where(n_free > 0, _clip(v - kkt_tau, caps), w)
    only_caps = finite.all() & (finite_caps.sum() <= 1.0 + tolerance)  # the caps are the only weights within them
    return torch.where(within_caps(v, caps, tolerance), v, torch.where(only_caps, caps, w))


def repair(current: Tensor, caps: Tensor, n_assets: int, target: Tensor, tolerance: float) -> tuple[Tensor, Tensor]:
    """``envs.limits.repair``: the least trading that brings drifted weights within the caps, and its turnover."""
    n = n_assets
    clipped = torch.minimum(current, caps)
    cash = current[n] + (current[:n] - clipped[:n]).sum()
    cash_fits = torch.cat([clipped[:n], cash.reshape(1)])
    # cash over its cap buys assets, as close to the target as their room allows
    excess = cash - caps[n]
    room = torch.clamp(caps[:n], max=1.0) - clipped[:n]
    tiny = excess < tolerance
    safe = torch.where(tiny, torch.ones_like(excess), excess)
    spread = excess * room / room.sum()
    projected = excess * project_capped_simplex((target[:n] - clipped[:n]) / safe, room / safe, tolerance)
    bought = torch.where(tiny, spread, projected)
    cash_buys = torch.minimum(torch.cat([clipped[:n] + bought, caps[n:]]), caps)
    repaired = torch.where(cash <= caps[n], cash_fits, cash_buys)
    inside = within_caps(current, caps, tolerance)
    repaired = torch.where(inside, current, repaired)
    forced = torch.where(inside, torch.zeros_like(cash), asset_turnover(repaired, current, n))
    return repaired, forced


def largest_fraction(delta: Tensor, move: Tensor, budget: Tensor) -> Tensor:
    """``envs.limits._largest_fraction``: the largest ``k`` in ``[0, 1]`` with ``sum |delta + k move| <= budget``.

    The terms that do not turn round inside ``(0, 1)`` become knots at 1 that add no slope: past the last
    turning knot ``g`` is then constant, as it is linear to 1 in the numpy code's shorter walk.
    """
    crossing = -delta / move
    turning = (delta * move < 0.0) & (crossing > 0.0) & (crossing < 1.0)
    one = torch.ones_like(delta)
    crossing = torch.where(turning, crossing, one)
    turns = torch.where(turning, 2.0 * move.abs(), torch.zeros_like(move))
    crossing, order = torch.sort(crossing)
    zero = torch.zeros(1, dtype=delta.dtype)
    knots = torch.cat([zero, crossing, one[:1]])
    start = torch.where(delta == 0.0, move.abs(), torch.sign(delta) * move).sum()
    slopes = start + torch.cat([zero, torch.cumsum(turns[order], 0)])
    values = delta.abs().sum() + torch.cat([zero, torch.cumsum(slopes * (knots[1:] - knots[:-1]), 0)])
    budget = torch.maximum(budget, values[0])
    past = values > budget
    # g is convex and within the budget at 0: the knots past it are a suffix, so the first is how many are not
    j = torch.clamp((~past).sum() - 1, max=slopes.shape[0] - 1)
    k = torch.minimum(knots[j + 1], knots[j] + (budget - values[j]) / slopes[j])
    return torch.where(past.any(), k, torch.ones_like(k))


def limit_turnover(
    target: Tensor, current: Tensor, caps: Tensor, max_turnover: float, n_assets: int, tolerance: float
) -> Tensor:
    """``envs.limits.limit_turnover``: toward a capped ``target`` within the day's turnover (the caps win)."""
    n = n_assets
    base, forced = repair(current, caps, n, target, tolerance)
    budget = torch.clamp(forced, min=max_turnover)
    k = largest_fraction(base[:n] - current[:n], target[:n] - base[:n], budget)
    limited = _clip((1.0 - k) * base + k * target, caps)
    return torch.where(asset_turnover(target, current, n) <= budget + tolerance, target, limited)


def apply_limits(
    target: Tensor, current: Tensor, caps: Tensor, max_turnover: float, n_assets: int, tolerance: float
) -> Tensor:
    """``envs.limits.PositionLimits.apply``: the caps, then the turnover limit (``max_turnover <= 0``: none)."""
    capped = project_capped_simplex(target, caps, tolerance)
    if max_turnover <= 0.0:  # a setting, not data: fixed when the module is built
        return capped
    return limit_turnover(capped, current, caps, max_turnover, n_assets, tolerance)
