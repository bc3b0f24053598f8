"""Portfolio performance measures, one definition each.

Measures come from ``skfolio.measures`` where skfolio has them; annualisation uses ``TRADING_DAYS``.
Returns are daily *simple* net returns (after costs).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skfolio import measures as skm

TRADING_DAYS = 252


class Run(Protocol):
    """An evaluation run (``trainer.evaluation.policy.EvalRun``): per-day arrays of one strategy."""

    net_returns: NDArray[np.float64]
    turnovers: NDArray[np.float64]
    costs: NDArray[np.float64]
    values: NDArray[np.float64]
    weights: NDArray[np.float64]


def as_array(returns: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(returns, dtype=np.float64).reshape(-1)


def total_return(returns: ArrayLike) -> float:
    """Compounded return over the whole series."""
    r = as_array(returns)
    return float(np.prod(1.0 + r) - 1.0) if r.size else 0.0


def annualized_return(returns: ArrayLike) -> float:
    """Arithmetic mean daily return x TRADING_DAYS (skfolio's convention for annualised mean)."""
    r = as_array(returns)
    return float(skm.mean(r)) * TRADING_DAYS if r.size else 0.0


def annualized_volatility(returns: ArrayLike) -> float:
    """Sample standard deviation x sqrt(TRADING_DAYS)."""
    r = as_array(returns)
    return float(skm.standard_deviation(r)) * math.sqrt(TRADING_DAYS) if r.size > 1 else 0.0


def sharpe_annualized(returns: ArrayLike) -> float:
    """mean / sample std x sqrt(TRADING_DAYS), risk-free rate 0; 0 when undefined (< 2 returns, no spread)."""
    r = as_array(returns)
    if r.size < 2:
        return 0.0
    std = float(skm.standard_deviation(r))
    if std <= 1e-12:
        return 0.0
    return float(skm.mean(r)) / std * math.sqrt(TRADING_DAYS)


def sortino_annualized(returns: ArrayLike) -> float:
    """mean / semi-deviation below 0 x sqrt(TRADING_DAYS); 0 when undefined."""
    r = as_array(returns)
    if r.size < 2:
        return 0.0
    semi = float(skm.semi_deviation(r, min_acceptable_return=0.0))
    if semi <= 1e-12:
        return 0.0
    return float(skm.mean(r)) / semi * math.sqrt(TRADING_DAYS)


def max_drawdown(returns: ArrayLike) -> float:
    """Largest peak-to-trough loss of the compounded value, as a positive fraction (0.25 = -25%)."""
    r = as_array(returns)
    if not r.size:
        return 0.0
    return float(skm.max_drawdown(skm.get_drawdowns(r, compounded=True)))


def calmar(returns: ArrayLike) -> float:
    """Annualised return / max drawdown; 0 when there was no drawdown."""
    mdd = max_drawdown(returns)
    return annualized_return(returns) / mdd if mdd > 1e-12 else 0.0


def effective_number_assets(weights: ArrayLike) -> float:
    """Mean over days of 1 / sum(w^2) (inverse Herfindahl) of the risky weights, normalised to sum 1."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    sums = w.sum(axis=1, keepdims=True)
    w = np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)
    values = [skm.effective_number_assets(row) for row in w if row.sum() > 0]
    return float(np.mean(values)) if values else 0.0


# --- of an evaluation run (its per-day arrays) -----------------------------------------------------------------


def run_turnover_per_day(run: Run) -> float:
    t = as_array(run.turnovers)
    return float(t.mean()) if t.size else 0.0


def run_total_costs(run: Run) -> float:
    """Costs paid, as a fraction of the starting value: each day's cost rate times the value before it."""
    v = as_array(run.values)
    before = np.concatenate([[1.0], v[:-1]]) if v.size else v
    return float(np.sum(as_array(run.costs) * before))


def run_effective_n(run: Run) -> float:
    w = np.asarray(run.weights, dtype=np.float64)
    return effective_number_assets(w[:, :-1]) if w.size else 0.0


def run_final_value(run: Run) -> float:
    v = as_array(run.values)
    return float(v[-1]) if v.size else 1.0


# --- relative to a benchmark: ``returns`` and ``benchmark`` are daily simple returns over the same days -------
# skfolio's measures are of one return series; it has no tracking error, information ratio or beta (its
# tracking error is an optimisation constraint, not a measure), so the difference series goes through skfolio's
# mean and standard deviation and beta is numpy's sample covariance over skfolio's sample variance (both ddof 1).


def _paired(returns: ArrayLike, benchmark: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r, b = as_array(returns), as_array(benchmark)
    if r.shape != b.shape:
        raise ValueError(f"returns and benchmark must cover the same days, got {r.size} and {b.size}")
    return r, b


def sharpe_difference(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """Sharpe ratio minus the benchmark's over the same days (``sharpe_annualized`` of each)."""
    r, b = _paired(returns, benchmark)
    return sharpe_annualized(r) - sharpe_annualized(b)


def excess_return(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """Mean daily (return - benchmark return) x TRADING_DAYS: arithmetic, like ``annualized_return``, so it is
    exactly the difference of the two annualised returns."""
    r, b = _paired(returns, benchmark)
    return float(skm.mean(r - b)) * TRADING_DAYS if r.size else 0.0


def tracking_error(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """Sample standard deviation (ddof 1) of the daily differences x sqrt(TRADING_DAYS); 0 under 2 days."""
    r, b = _paired(returns, benchmark)
    return float(skm.standard_deviation(r - b)) * math.sqrt(TRADING_DAYS) if r.size > 1 else 0.0


def information_ratio(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """Annualised excess return / tracking error; NaN (shown n/a) when the tracking error is zero."""
    te = tracking_error(returns, benchmark)
    return excess_return(returns, benchmark) / te if te > 1e-12 else math.nan


def beta(returns: ArrayLike, benchmark: ArrayLike) -> float:
    """cov(returns, benchmark) / var(benchmark), both sample (ddof 1); NaN when the benchmark has no spread."""
    r, b = _paired(returns, benchmark)
    if r.size < 2:
        return math.nan
    var = float(skm.variance(b))
    return float(np.cov(r, b, ddof=1)[0, 1]) / var if var > 1e-18 else math.nan
