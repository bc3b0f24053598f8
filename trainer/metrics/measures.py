"""Portfolio performance measures, one definition each.

Measures come from ``skfolio.measures`` where skfolio has them; annualisation uses ``TRADING_DAYS``.
Returns are daily *simple* net returns (after costs).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skfolio import measures as skm

TRADING_DAYS = 252


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
