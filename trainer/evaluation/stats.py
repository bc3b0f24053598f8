"""Statistics of a study: paired comparisons with Equal Weight across seeds and folds.

Daily returns are autocorrelated and volatility clusters, so intervals resample whole blocks of days
(skfolio's stationary bootstrap, Politis & Romano 1994) rather than single days, and every resample is
*paired*: the agent and Equal Weight of a fold are resampled on the same days, and all seeds of a fold share
the resample (they traded the same market). The correction for picking the best of several configurations
is skfolio's deflated Sharpe ratio (Bailey & Lopez de Prado 2014).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from skfolio import measures as skm
from skfolio.utils.bootstrap import stationary_bootstrap

from trainer.metrics.measures import TRADING_DAYS

DEFAULT_BLOCK_DAYS = 20.0  # mean block length of the stationary bootstrap: about a trading month


def sharpe_rows(returns: NDArray[np.float64]) -> NDArray[np.float64]:
    """Annualised Sharpe ratio along the last axis (0 where the spread is zero), like ``sharpe_annualized``."""
    mean = returns.mean(axis=-1)
    std = returns.std(axis=-1, ddof=1)
    out = np.zeros_like(mean)
    np.divide(mean, std, out=out, where=std > 1e-12)
    return out * math.sqrt(TRADING_DAYS)


def quantiles(values: Sequence[float]) -> dict[str, float | int]:
    """Median, interquartile range (25th and 75th percentile), mean and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "mean": math.nan, "n": 0}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "mean": float(v.mean()), "n": int(v.size)}


def median_sharpe_difference_ci(
    runs_by_fold: Mapping[object, tuple[NDArray[np.float64], Sequence[NDArray[np.float64]]]],
    n_samples: int,
    block_days: float = DEFAULT_BLOCK_DAYS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% block-bootstrap interval of the median, over runs, of (agent Sharpe - Equal Weight Sharpe).

    Args:
        runs_by_fold: ``{fold: (equal_weight_returns [T], [agent_returns [T] of each seed])}``: daily net
            returns over the fold's test days.
        n_samples: bootstrap replicates.
        block_days: mean block length of the stationary bootstrap.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``; NaN when there are no runs.
    """
    diffs = []
    for i, (ew, agents) in enumerate(runs_by_fold.values()):
        if not len(agents):
            continue
        table = np.column_stack([ew, *agents])  # [T, 1 + seeds]: one resample of days for the whole fold
        boot = stationary_bootstrap(table, n_samples, block_size=block_days, seed=seed + i)  # [n, T, 1 + seeds]
        sharpe = sharpe_rows(np.moveaxis(boot, 1, 2))  # [n, 1 + seeds]
        diffs.append(sharpe[:, 1:] - sharpe[:, :1])
    if not diffs:
        return math.nan, math.nan
    medians = np.median(np.concatenate(diffs, axis=1), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def deflated_sharpe(selected_excess: NDArray[np.float64], trial_excess: Sequence[NDArray[np.float64]]) -> float:
    """Probability that the selected configuration's true Sharpe ratio over Equal Weight is above zero,
    given that it was the best of ``len(trial_excess)`` configurations (deflated Sharpe ratio).

    Args:
        selected_excess: daily returns of the selected configuration minus Equal Weight's.
        trial_excess: the same series for every configuration tried (the selected one included).

    Returns:
        The DSR in [0, 1]; with a single configuration, the probabilistic Sharpe ratio against 0. NaN when
        undefined (fewer than 3 days).
    """
    x = np.asarray(selected_excess, dtype=np.float64)
    if x.size < 3:
        return math.nan
    annual = math.sqrt(TRADING_DAYS)
    per_period = [float(sharpe_rows(np.asarray(t, dtype=np.float64))) / annual for t in trial_excess if len(t) > 2]
    if len(per_period) < 2:
        return float(skm.probabilistic_sharpe_ratio(x, 0.0))
    return float(skm.deflated_sharpe_ratio(x, np.asarray(per_period)))
