"""Metric names (defined once) and portfolio performance measures (one definition each).

Measures come from ``skfolio.measures`` where skfolio has them; annualisation uses ``TRADING_DAYS``.
Returns are daily *simple* net returns (after costs).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skfolio import measures as skm

TRADING_DAYS = 252

# --- keys in every training result (RLlib's nested result dict; Tune flattens with "/") -------------
PORTFOLIO = "portfolio"  # our top-level result section
TRAIN_SHARPE = "train_episode_sharpe"  # annualised Sharpe of training episodes (mean over recent ones)
TRAIN_FINAL_VALUE = "train_episode_final_value"
TRAIN_TURNOVER = "train_episode_turnover"
VALIDATION = "validation"  # sub-section of PORTFOLIO holding the deterministic evaluation pass
SHARPE = "sharpe"
TOTAL_RETURN = "total_return"
MAX_DRAWDOWN = "max_drawdown"
TURNOVER = "turnover"
CRITIC_LOSS = "critic_loss"
ACTOR_LOSS = "actor_loss"
ALPHA = "alpha"
ENTROPY = "entropy"
ENV_STEPS = "env_steps"
ENV_STEPS_PER_S = "env_steps_per_s"
TRAINED_SAMPLES_PER_S = "trained_samples_per_s"
EPISODE_RETURN = "episode_return_mean"
DIVERGED = "diverged"
DIVERGED_REASON = "diverged_reason"
BUFFER_SIZE = "buffer_size"
FILTER_COUNT = "obs_filter_count"

# Tune metric strings (flattened paths).
VALIDATION_SHARPE_METRIC = f"{PORTFOLIO}/{VALIDATION}/{SHARPE}"
ENV_STEPS_METRIC = f"{PORTFOLIO}/{ENV_STEPS}"
DIVERGED_METRIC = f"{PORTFOLIO}/{DIVERGED}"


def _arr(returns: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(returns, dtype=np.float64).reshape(-1)


def total_return(returns: ArrayLike) -> float:
    """Compounded return over the whole series."""
    r = _arr(returns)
    return float(np.prod(1.0 + r) - 1.0) if r.size else 0.0


def annualized_return(returns: ArrayLike) -> float:
    """Arithmetic mean daily return x TRADING_DAYS (skfolio's convention for annualised mean)."""
    r = _arr(returns)
    return float(skm.mean(r)) * TRADING_DAYS if r.size else 0.0


def annualized_volatility(returns: ArrayLike) -> float:
    """Sample standard deviation x sqrt(TRADING_DAYS)."""
    r = _arr(returns)
    return float(skm.standard_deviation(r)) * math.sqrt(TRADING_DAYS) if r.size > 1 else 0.0


def sharpe_annualized(returns: ArrayLike) -> float:
    """mean / sample std x sqrt(TRADING_DAYS), risk-free rate 0; 0 when undefined (< 2 returns, no spread)."""
    r = _arr(returns)
    if r.size < 2:
        return 0.0
    std = float(skm.standard_deviation(r))
    if std <= 1e-12:
        return 0.0
    return float(skm.mean(r)) / std * math.sqrt(TRADING_DAYS)


def sortino_annualized(returns: ArrayLike) -> float:
    """mean / semi-deviation below 0 x sqrt(TRADING_DAYS); 0 when undefined."""
    r = _arr(returns)
    if r.size < 2:
        return 0.0
    semi = float(skm.semi_deviation(r, min_acceptable_return=0.0))
    if semi <= 1e-12:
        return 0.0
    return float(skm.mean(r)) / semi * math.sqrt(TRADING_DAYS)


def max_drawdown(returns: ArrayLike) -> float:
    """Largest peak-to-trough loss of the compounded value, as a positive fraction (0.25 = -25%)."""
    r = _arr(returns)
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


def summarize(net_returns: ArrayLike, turnovers: ArrayLike, costs: ArrayLike | None = None) -> dict[str, float]:
    """The compact set of measures reported for an evaluation pass."""
    t = _arr(turnovers)
    out = {
        SHARPE: sharpe_annualized(net_returns),
        TOTAL_RETURN: total_return(net_returns),
        MAX_DRAWDOWN: max_drawdown(net_returns),
        TURNOVER: float(t.mean()) if t.size else 0.0,
    }
    if costs is not None:
        out["total_costs"] = float(np.sum(_arr(costs)))
    return out


def performance(
    net_returns: ArrayLike, turnovers: ArrayLike, costs: ArrayLike, values: ArrayLike, weights: ArrayLike
) -> dict[str, float]:
    """Every backtest measure of one strategy.

    ``costs`` are per-step fractions of the portfolio value paid at the rebalance; ``values`` the portfolio
    value after each step (starting value 1); ``weights`` the target weights per step (assets, then cash).
    """
    r = _arr(net_returns)
    v = _arr(values)
    before = np.concatenate([[1.0], v[:-1]]) if v.size else v
    w = np.asarray(weights, dtype=np.float64)
    return {
        TOTAL_RETURN: total_return(r),
        "annualized_return": annualized_return(r),
        "annualized_volatility": annualized_volatility(r),
        SHARPE: sharpe_annualized(r),
        "sortino": sortino_annualized(r),
        MAX_DRAWDOWN: max_drawdown(r),
        "calmar": calmar(r),
        "avg_daily_turnover": float(_arr(turnovers).mean()) if r.size else 0.0,
        "total_costs": float(np.sum(_arr(costs) * before)),
        "effective_number_assets": effective_number_assets(w[:, :-1]) if w.size else 0.0,
        "final_value": float(v[-1]) if v.size else 1.0,
        "n_days": int(r.size),
    }
