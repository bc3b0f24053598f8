"""envs.limits: the capped-simplex projection (hand-computed, KKT and an independent QP solver), the turnover rule
(hand-computed, the least repair against an LP, the largest fraction), identity inside the limits, idempotence,
and infeasible caps refused with the fix."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from envs.limits import (
    TOLERANCE,
    PositionLimits,
    asset_turnover,
    check_feasible,
    limit_turnover,
    project_capped_simplex,
    repair,
)

INF = math.inf


@pytest.mark.parametrize(
    ("target", "caps", "expected"),
    [
        # the excess 0.2 over the cap is spread equally over the two others: tau = -0.1
        ([0.7, 0.2, 0.1], [0.5, 0.5, 0.5], [0.5, 0.3, 0.2]),
        ([0.7, 0.2, 0.1], [0.5, 0.5, INF], [0.5, 0.3, 0.2]),  # cash uncapped: the same point
        ([0.9, 0.4, -0.3], [0.6, 0.6, INF], [0.6, 0.4, 0.0]),  # tau = 0: the negative score clips to 0
        ([0.2, 0.2, 0.6], [INF, INF, 0.0], [0.5, 0.5, 0.0]),  # max_cash 0: the cash goes to the assets
        ([0.7, 0.2, 0.1, 0.0], [0.5, 0.5, 0.5, INF], [0.5, 0.2 + 0.2 / 3, 0.1 + 0.2 / 3, 0.2 / 3]),
        ([0.1, 0.1, 0.8], [0.4, 0.4, 0.2], [0.4, 0.4, 0.2]),  # caps summing to 1: the only point
        ([3.0, -1.0, 0.2], [INF, INF, INF], [1.0, 0.0, 0.0]),  # no caps: the plain simplex projection
    ],
)
def test_hand_computed_projections(target, caps, expected):
    w = project_capped_simplex(np.array(target), np.array(caps))
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)


def test_clip_and_renormalise_breaks_the_cap_and_the_projection_does_not():
    v, caps = np.array([0.7, 0.2, 0.1]), np.full(3, 0.5)
    clipped = np.minimum(v, caps) / np.minimum(v, caps).sum()
    assert clipped[0] == pytest.approx(0.625)  # over the cap again
    assert (project_capped_simplex(v, caps) <= caps).all()


def _random_caps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Caps over n assets + cash whose sum reaches 1: a common asset cap (or none) and a cash cap (or none)."""
    max_weight = rng.choice([INF, rng.uniform(1.0 / n, 0.6)])
    cash = rng.choice([INF, rng.uniform(0.0, 0.5)])
    if math.isfinite(max_weight) and math.isfinite(cash) and n * max_weight + cash < 1.0:
        cash = 1.0 - n * max_weight + rng.uniform(0.0, 0.1)
    return np.append(np.full(n, max_weight), cash)


def _kkt_tau(v: np.ndarray, w: np.ndarray, caps: np.ndarray) -> float:
    """The tau of ``w = clip(v - tau, 0, caps)`` if ``w`` is the projection of ``v`` (its KKT conditions)."""
    free = (w > 1e-12) & (w < caps - 1e-12)
    if free.any():
        taus = v[free] - w[free]
        assert np.ptp(taus) < 1e-12  # one tau for every weight strictly inside its bounds
        return float(taus.mean())
    # every weight at a bound: any tau between the bounds' conditions works
    low = max([*(v[w <= 1e-12]), -INF])  # w_i = 0 needs v_i - tau <= 0
    high = min([*(v - caps)[w >= caps - 1e-12], INF])  # w_i = c_i needs v_i - tau >= c_i
    assert low <= high + 1e-12
    return float(min(max(low, -1e9), high))


@pytest.mark.parametrize("seed", range(40))
def test_projection_is_exact_against_kkt_and_a_qp_solver(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    caps = _random_caps(rng, n)
    v = rng.normal(0.0, 0.5, n + 1) if seed % 2 else rng.dirichlet(np.full(n + 1, 0.3))
    w = project_capped_simplex(v, caps)
    assert (w >= 0).all() and (w <= caps).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    tau = _kkt_tau(v, w, caps)
    np.testing.assert_allclose(w, np.clip(v - tau, 0.0, caps), rtol=0, atol=1e-12)
    x = cp.Variable(n + 1)
    finite = np.isfinite(caps)
    constraints = [x >= 0, cp.sum(x) == 1, x[finite] <= caps[finite]] if finite.any() else [x >= 0, cp.sum(x) == 1]
    tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)), constraints).solve(solver=cp.CLARABEL, **tight)
    # an interior-point solver stops near the optimum: ours is at least as close to v, and at most 1e-6 away
    assert ((w - v) ** 2).sum() <= ((x.value - v) ** 2).sum() + 1e-12
    np.testing.assert_allclose(w, x.value, rtol=0, atol=1e-6)


def _least_turnover(current: np.ndarray, caps: np.ndarray, n: int) -> float:
    """min sum_{i<n} |w_i - current_i| over weights within the caps: an LP in (w, t) with t >= |w - current|."""
    size = n + 1
    cost = np.concatenate([np.zeros(size), np.ones(n)])
    a_ub, b_ub = [], []
    for i in range(n):  # w_i - t_i <= current_i and -w_i - t_i <= -current_i
        for sign in (1.0, -1.0):
            row = np.zeros(size + n)
            row[i], row[size + i] = sign, -1.0
            a_ub.append(row)
            b_ub.append(sign * current[i])
    a_eq = [np.concatenate([np.ones(size), np.zeros(n)])]
    bounds = [(0.0, None if math.isinf(c) else c) for c in caps] + [(0.0, None)] * n
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    assert res.status == 0
    return float(res.fun)


def _drifted(rng: np.random.Generator, caps: np.ndarray) -> np.ndarray:
    """Weights near the caps after a day's drift: some over their cap (assets or cash), or all cash."""
    if rng.random() < 0.15:
        return np.append(np.zeros(caps.size - 1), 1.0)
    w = project_capped_simplex(rng.dirichlet(np.full(caps.size, 0.5)), caps)
    w = w * rng.uniform(0.6, 1.6, w.size)
    return w / w.sum()


@pytest.mark.parametrize("seed", range(60))
def test_turnover_rule_invariants_over_random_cases(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 10))
    caps = _random_caps(rng, n)
    current = _drifted(rng, caps)
    limit = float(rng.uniform(0.02, 1.0))
    target = project_capped_simplex(rng.dirichlet(np.full(n + 1, 0.4)), caps)
    w = limit_turnover(target, current, caps, limit, n)
    assert (w >= 0).all() and (w <= caps).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    # the repair is the least turnover any weights within the caps need (an independent LP)
    base, forced = repair(current, caps, n, target)
    least = _least_turnover(current, caps, n)
    assert forced == pytest.approx(least, abs=1e-7)  # the LP solver's own tolerance
    assert (base >= 0).all() and (base <= caps).all() and base.sum() == pytest.approx(1.0, abs=1e-12)
    budget = max(limit, forced)
    turnover = asset_turnover(w, current, n)
    assert turnover <= budget + 1e-12
    if least <= limit - 1e-7:  # feasible: within max_turnover itself
        assert turnover <= limit + 1e-12
    if asset_turnover(target, current, n) <= budget + TOLERANCE:
        np.testing.assert_array_equal(w, target)  # the target fits: traded to unchanged
        return
    # otherwise w is on the segment from the repair toward the target, at the largest fraction that fits
    move = target - base
    k = float(move @ (w - base) / (move @ move))
    np.testing.assert_allclose(w, base + k * move, rtol=0, atol=1e-12)
    assert 0.0 <= k < 1.0 and turnover == pytest.approx(budget, abs=1e-12)
    assert asset_turnover(base + (k + 1e-9) * move, current, n) > budget


@pytest.mark.parametrize("seed", range(30))
def test_limits_are_idempotent_and_the_identity_inside(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(2, 8))
    caps = _random_caps(rng, n)
    max_weight = None if math.isinf(caps[0]) else float(caps[0])
    max_cash = None if math.isinf(caps[-1]) else float(caps[-1])
    limit = float(rng.uniform(0.05, 1.0))
    limits = PositionLimits.build(n, max_weight, max_cash, limit)
    current = _drifted(rng, caps)
    once = limits.apply(rng.dirichlet(np.full(n + 1, 0.4)), current)
    np.testing.assert_array_equal(limits.apply(once, current), once)  # bitwise
    # a target within the caps and within max_turnover of (undrifted) current weights is traded to unchanged
    held = project_capped_simplex(current, caps)
    other = project_capped_simplex(rng.dirichlet(np.full(n + 1, 0.4)), caps)
    step = min(1.0, 0.99 * limit / max(asset_turnover(other, held, n), 1e-300))
    inside = (1.0 - step) * held + step * other
    inside = np.minimum(inside, caps)  # a convex combination of weights within the caps, rounding removed
    assert asset_turnover(inside, held, n) <= limit
    np.testing.assert_array_equal(limits.apply(inside, held), inside)
    np.testing.assert_array_equal(limits.apply(held, held), held)  # holding never trades


def test_turnover_rule_by_hand():
    caps = np.array([0.5, 0.5, INF])
    # no drift: the move [0.3, -0.1] (turnover 0.4) is scaled by 0.2 / 0.4
    w = limit_turnover(np.array([0.6, 0.2, 0.2]), np.array([0.3, 0.3, 0.4]), np.full(3, INF), 0.2, 2)
    np.testing.assert_allclose(w, [0.45, 0.25, 0.3], rtol=0, atol=1e-15)
    # drift put asset 0 at 0.6 > 0.5: selling the excess 0.1 is forced, then 0.3 of turnover is left toward
    # u = [0.3, 0.5, 0.2]: g(k) = |-0.1 - 0.2 k| + 0.3 k = 0.1 + 0.5 k <= 0.4 -> k = 0.6
    u = project_capped_simplex(np.array([0.2, 0.7, 0.1]), caps)
    np.testing.assert_allclose(u, [0.3, 0.5, 0.2], atol=1e-15)
    w = limit_turnover(u, np.array([0.6, 0.2, 0.2]), caps, 0.4, 2)
    np.testing.assert_allclose(w, [0.38, 0.38, 0.24], rtol=0, atol=1e-15)
    # the caps win: the forced sale (0.3) exceeds max_turnover 0.2: it is made, and nothing else is traded
    w = limit_turnover(u, np.array([0.8, 0.1, 0.1]), caps, 0.2, 2)
    np.testing.assert_allclose(w, [0.5, 0.1, 0.4], rtol=0, atol=1e-15)
    # from all cash with max_cash 0.1: 0.9 must be invested whatever max_turnover; the purchases are the
    # ones closest to the target (its capped weights [0.6, 0.3])
    caps = np.array([0.6, 0.6, 0.1])
    u = project_capped_simplex(np.array([0.9, 0.0, 0.1]), caps)
    np.testing.assert_allclose(u, [0.6, 0.3, 0.1], atol=1e-15)
    w = limit_turnover(u, np.array([0.0, 0.0, 1.0]), caps, 0.2, 2)
    np.testing.assert_allclose(w, [0.6, 0.3, 0.1], rtol=0, atol=1e-15)
    assert asset_turnover(w, np.array([0.0, 0.0, 1.0]), 2) == pytest.approx(0.9, abs=1e-15)


def test_infeasible_caps_are_refused_with_the_fix():
    with pytest.raises(ValueError) as info:
        check_feasible(3, 0.3, 0.0)
    assert str(info.value) == (
        "max_weight=0.3 and max_cash=0 cannot hold a whole portfolio of 3 assets (3 * 0.3 + 0 = 0.9 < 1): raise "
        "max_weight to at least 0.333334 or max_cash to at least 0.1"
    )
    check_feasible(3, 0.333334, 0.0)  # the bounds printed are enough
    check_feasible(3, 0.3, 0.1)
    check_feasible(3, 0.3, None)  # uncapped cash takes the rest
    check_feasible(3, None, 0.0)
    assert PositionLimits.build(3, None, None, None) is None  # no limits: the env's old paths
    with pytest.raises(ValueError, match=r"sum to 0.6 < 1: no weights within them sum to 1"):
        project_capped_simplex(np.array([0.5, 0.5]), np.array([0.3, 0.3]))
