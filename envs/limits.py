"""Position limits: a cap on each weight and on the day's turnover, applied to target weights exactly.

Weights are ``N`` assets then cash (length ``N + 1``), ``>= 0`` and summing to 1; ``caps`` has the same length,
``inf`` where there is no cap. Turnover is the env's: ``sum_{i<N} |w_i - w0_i|`` over the assets only (cash is
the other side of every trade), from 0 to 2; going from all cash to fully invested is a turnover of 1.

**Caps** (``project_capped_simplex``). A target ``v`` becomes the closest weights (Euclidean) in the capped
simplex ``C = {w >= 0, sum w = 1, w_i <= c_i}``: ``w_i = clip(v_i - tau, 0, c_i)`` with the one ``tau`` that makes
them sum to 1 (the KKT conditions of the projection). ``sum_i clip(v_i - tau, 0, c_i)`` is piecewise linear and
non-increasing in ``tau`` with kinks at ``v_i`` and ``v_i - c_i``, so sorting the kinks gives the segment that
holds ``tau`` and ``tau`` itself in closed form: exact to rounding, in ``O(N log N)``. Clipping at the cap and
renormalising is not this projection: renormalising pushes a clipped weight back over its cap
(``[0.7, 0.2, 0.1]`` with caps 0.5 gives ``[0.625, 0.25, 0.125]``; the projection gives ``[0.5, 0.3, 0.2]``).

**Turnover** (``limit_turnover``), relative to the current (drifted) weights ``w0``, for a capped target ``u``:

1. If the drift has pushed ``w0`` outside the caps, the least trading that brings it back inside is forced
   (``repair``): each asset over its cap sells the excess, the proceeds go to cash, and cash above its cap
   buys assets, as close to the target as the assets' room under their caps allows. Its turnover ``d`` is the
   least any portfolio within the caps needs (0 when ``w0`` is within them).
2. The day's budget is ``max(max_turnover, d)``: **the caps win**. When no portfolio within the caps is within
   ``max_turnover`` of ``w0``, the forced sales and purchases are made anyway and nothing else is traded.
3. If ``u`` is within the budget it is traded to. Otherwise the weights move from the repaired portfolio
   toward ``u`` by the largest fraction ``k`` whose turnover (from ``w0``) fits the budget: every order toward
   the target is scaled by the same ``k``, as the env's no-trade band and partial rebalancing scale the move.

So the result is within the caps, within ``max_turnover`` whenever some portfolio within the caps is, equals
the target when the target is within all limits, and applying the limits again leaves it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Rounding: a sum or a turnover within this of its limit is within it (so the limits are idempotent).
TOLERANCE = 1e-12


def asset_turnover(weights: NDArray[np.float64], current: NDArray[np.float64], n_assets: int) -> float:
    """The env's turnover from ``current`` to ``weights``: the L1 distance of the asset weights."""
    return float(np.abs(weights[:n_assets] - current[:n_assets]).sum())


def within_caps(weights: NDArray[np.float64], caps: NDArray[np.float64]) -> bool:
    """Whether ``weights`` lie in the capped simplex (the sum to 1 within ``TOLERANCE``)."""
    return bool((weights >= 0.0).all() and (weights <= caps).all() and abs(weights.sum() - 1.0) <= TOLERANCE)


def project_capped_simplex(target: NDArray, caps: NDArray[np.float64]) -> NDArray[np.float64]:
    """The closest point (Euclidean) to ``target`` with weights in ``[0, caps]`` summing to 1.

    Args:
        target: any finite vector (need not be weights).
        caps: the upper bound of each component, ``>= 0``; ``inf`` for none. Their sum must reach 1.

    Returns:
        ``clip(target - tau, 0, caps)`` for the ``tau`` that makes it sum to 1; ``target`` itself (a copy)
        when it already lies in the capped simplex.
    """
    v = np.asarray(target, dtype=np.float64).reshape(-1)
    if within_caps(v, caps):
        return v.copy()
    finite = np.isfinite(caps)
    if finite.all() and caps.sum() <= 1.0 + TOLERANCE:
        if caps.sum() < 1.0 - TOLERANCE:
            raise ValueError(f"caps {caps.tolist()} sum to {caps.sum():g} < 1: no weights within them sum to 1")
        return caps.copy()  # the only weights within these caps
    # f(tau) = sum_i clip(v_i - tau, 0, c_i) grows by one unit of slope below each v_i and loses it below each
    # v_i - c_i. Walk the kinks downwards from max(v), where f = 0, to the segment where f reaches 1.
    kinks = np.concatenate([v, (v - caps)[finite]])
    steps = np.concatenate([np.ones(v.size), -np.ones(int(finite.sum()))])
    order = np.argsort(-kinks, kind="stable")
    kinks, slopes = kinks[order], np.cumsum(steps[order])
    values = np.concatenate([[0.0], np.cumsum(slopes[:-1] * (kinks[:-1] - kinks[1:]))])  # f at each kink
    j = int(np.searchsorted(values, 1.0))  # the first kink where f >= 1 (f is non-decreasing along the walk)
    j = min(j, kinks.size) - 1  # tau lies below kink j; past the last kink the slope stays (uncapped weights)
    tau = kinks[j] - (1.0 - values[j]) / slopes[j]
    w = np.clip(v - tau, 0.0, caps)
    # tau again from the weights strictly between their bounds (the KKT form, free of the walk's rounding)
    free = (w > 0.0) & (w < caps)
    if free.any():
        tau = (v[free].sum() + caps[w == caps].sum() - 1.0) / free.sum()
        w = np.clip(v - tau, 0.0, caps)
    return w


def repair(
    current: NDArray[np.float64], caps: NDArray[np.float64], n_assets: int, target: NDArray[np.float64]
) -> tuple[NDArray[np.float64], float]:
    """The least trading that brings drifted weights within the caps, and its turnover.

    Each asset over its cap sells the excess and the proceeds go to cash; cash above its cap (after those
    sales) buys assets, the purchases as close to ``target`` as each asset's room under its cap allows. No
    portfolio within the caps is nearer ``current`` in turnover. Weights already within the caps are returned
    unchanged (turnover 0).
    """
    if within_caps(current, caps):
        return current.copy(), 0.0
    n = n_assets
    repaired = np.minimum(current, caps)
    cash = float(current[n]) + float((current[:n] - repaired[:n]).sum())
    if cash <= caps[n]:
        repaired[n] = cash
        return repaired, asset_turnover(repaired, current, n)
    excess = cash - float(caps[n])
    repaired[n] = caps[n]
    room = np.minimum(caps[:n], 1.0) - repaired[:n]  # no asset weight can exceed 1 anyway
    if excess < TOLERANCE:  # rounding-sized: spread it, a projection scaled by 1 / excess would overflow
        bought = excess * room / room.sum()
    else:  # the purchases x >= 0, sum x = excess, x <= room, closest to target - repaired: a scaled projection
        bought = excess * project_capped_simplex((target[:n] - repaired[:n]) / excess, room / excess)
    repaired[:n] += bought
    repaired = np.minimum(repaired, caps)
    return repaired, asset_turnover(repaired, current, n)


def _largest_fraction(delta: NDArray[np.float64], move: NDArray[np.float64], budget: float) -> float:
    """The largest ``k`` in ``[0, 1]`` with ``g(k) = sum_i |delta_i + k move_i| <= budget``, given ``g(0) <= budget``.

    ``g`` is convex and piecewise linear, with kinks where a term crosses zero: sorting them gives the segment
    where ``g`` passes the budget, and ``k`` in closed form there.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = -delta / move
    turning = (delta * move < 0.0) & (crossing > 0.0) & (crossing < 1.0)
    order = np.argsort(crossing[turning])
    knots = np.concatenate([[0.0], crossing[turning][order], [1.0]])
    # slope right of 0: terms moving away from zero add |move|, terms moving toward it subtract it; each
    # turns round at its crossing (slope change 2 |move|)
    start = float(np.where(delta == 0.0, np.abs(move), np.sign(delta) * move).sum())
    slopes = start + np.concatenate([[0.0], np.cumsum(2.0 * np.abs(move[turning][order]))])
    values = float(np.abs(delta).sum()) + np.concatenate([[0.0], np.cumsum(slopes * np.diff(knots))])
    budget = max(budget, values[0])  # g(0) is within it but for rounding
    past = values > budget
    if not past.any():
        return 1.0
    # g is convex and within the budget at 0, so the knots past the budget are all those after some point: the
    # budget is reached on the segment that ends at the first of them, where g rises (slope > 0)
    j = int(np.argmax(past)) - 1
    return float(min(knots[j + 1], knots[j] + (budget - values[j]) / slopes[j]))


def limit_turnover(
    target: NDArray[np.float64],
    current: NDArray[np.float64],
    caps: NDArray[np.float64],
    max_turnover: float,
    n_assets: int,
) -> NDArray[np.float64]:
    """Weights within ``caps`` toward a capped ``target`` whose turnover from ``current`` fits ``max_turnover``.

    The caps win (module docstring): the day's budget is ``max(max_turnover, d)`` where ``d`` is the least
    turnover that brings ``current`` within the caps; within it, every order from the repaired portfolio toward
    ``target`` is scaled by the largest common fraction that fits.

    Args:
        target: weights within ``caps`` (e.g. from ``project_capped_simplex``).
        current: the current (drifted) weights.
        caps: each weight's cap (``inf``: none).
        max_turnover: the day's turnover limit (the env's turnover: asset weights only).
        n_assets: ``N``; the last component is cash.
    """
    base, forced = repair(current, caps, n_assets, target)
    budget = max(max_turnover, forced)
    if asset_turnover(target, current, n_assets) <= budget + TOLERANCE:
        return target
    n = n_assets
    k = _largest_fraction(base[:n] - current[:n], target[:n] - base[:n], budget)
    # a convex combination of two points within the caps is within them; the clip only removes rounding
    return np.clip((1.0 - k) * base + k * target, 0.0, caps)


def smallest(value: float) -> float:
    """``value`` rounded up to 6 decimals: a bound to print that, typed back in, is on the right side."""
    return math.ceil(value * 1e6 - 1e-6) / 1e6


def check_feasible(n_assets: int, max_weight: float | None, max_cash: float | None) -> None:
    """Refuse caps under which no weights sum to 1: ``n_assets * max_weight + max_cash < 1``.

    Raises:
        ValueError: one line naming both settings and the smallest value of each that works.
    """
    if max_weight is None or max_cash is None or n_assets * max_weight + max_cash >= 1.0 - TOLERANCE:
        return
    raise ValueError(
        f"max_weight={max_weight:g} and max_cash={max_cash:g} cannot hold a whole portfolio of {n_assets} assets "
        f"({n_assets} * {max_weight:g} + {max_cash:g} = {n_assets * max_weight + max_cash:g} < 1): raise "
        f"max_weight to at least {smallest((1.0 - max_cash) / n_assets):g} or max_cash to at least "
        f"{smallest(1.0 - n_assets * max_weight):g}"
    )


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare the caps themselves
class PositionLimits:
    """The limits of one env: each weight's cap (assets, then cash) and the daily turnover limit."""

    caps: NDArray[np.float64]
    max_turnover: float | None

    @property
    def n_assets(self) -> int:
        return self.caps.size - 1

    @classmethod
    def build(
        cls, n_assets: int, max_weight: float | None, max_cash: float | None, max_turnover: float | None
    ) -> PositionLimits | None:
        """The limits of these settings over ``n_assets`` assets; ``None`` when there are none.

        Raises:
            ValueError: caps under which no weights sum to 1 (``check_feasible``).
        """
        if max_weight is None and max_cash is None and max_turnover is None:
            return None
        check_feasible(n_assets, max_weight, max_cash)
        caps = np.full(n_assets + 1, math.inf)
        if max_weight is not None:
            caps[:n_assets] = max_weight
        if max_cash is not None:
            caps[n_assets] = max_cash
        caps.flags.writeable = False
        return cls(caps, max_turnover)

    def capped(self, target: NDArray) -> NDArray[np.float64]:
        """``target`` projected onto the caps (no turnover limit)."""
        return project_capped_simplex(target, self.caps)

    def apply(self, target: NDArray, current: NDArray[np.float64]) -> NDArray[np.float64]:
        """The weights traded to from ``current`` for ``target``: the caps, then the turnover limit."""
        capped = self.capped(target)
        if self.max_turnover is None:
            return capped
        return limit_turnover(capped, current, self.caps, self.max_turnover, self.n_assets)

    def reaches(self, target: NDArray, current: NDArray[np.float64]) -> bool:
        """Whether today's trade from ``current`` gets all the way to the capped ``target``."""
        return bool(np.array_equal(self.apply(target, current), self.capped(target)))
