"""The features that look across assets: cross-sectional ranks (per asset) and market-wide figures (shared).

Both are causal like every feature (the value at row ``t`` uses prices at rows ``<= t`` only) and are
computed for every row here; ``envs.features`` zeroes the rows before its lookback, as for the per-asset set.

- **Ranks** (:func:`rank_features`): on each day, each per-asset feature's rank among the ``N`` assets, ties
  averaged (the 1-based "average" rank), scaled to ``[-1, 1]``: ``2 * (rank - 1) / (N - 1) - 1``, so the
  lowest value is -1, the highest 1 and a tie of all assets 0; with one asset, 0.
- **Market** (:func:`market_features`), from the Equal Weight index: equal weights rebalanced daily, no costs,
  i.e. the index's daily return is the mean of the assets' simple returns, ``R_t = mean_i(p_i,t / p_i,t-1 - 1)``
  (the gross return of the env's Equal Weight baseline), and its log level ``L_t = sum_{s <= t} log(1 + R_s)``:

  - ``ew_logret_{w}``: ``L_t - L_{t-w}``, the index's log return over ``w`` days;
  - ``ew_vol_{w}``: the standard deviation (``ddof=1``) of ``log(1 + R)`` over the last ``w`` days;
  - ``ew_drawdown_{d}``: ``exp(L_t - max(L_{t-d+1..t})) - 1``, the index's fall from its high over the last
    ``d`` days (today included), in ``(-1, 0]``;
  - ``avg_corr_{c}``: the mean, over the ``N (N - 1) / 2`` pairs of assets, of the correlation of their daily
    log returns over the last ``c`` days (``numpy.corrcoef`` of the window); an asset that did not move in the
    window has no correlation and counts 0 in each of its pairs; with one asset, 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

_CORRELATION_CHUNK = 256  # windows per batch: bounds the [chunk, window, N] temporaries


def average_ranks(values: NDArray, axis: int) -> NDArray[np.float64]:
    """``rank - 1`` of each value along ``axis`` (0-based, ties averaged: ``less + (equal - 1) / 2``)."""
    x = np.moveaxis(values, axis, -1)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=-1)
    position = np.broadcast_to(np.arange(n), x.shape)
    starts = np.ones(x.shape, bool)  # the first of each run of equal values
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(x.shape, bool)  # the last of each run
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), -1), axis=-1), -1)
    ranks = np.empty(x.shape, np.float64)
    # first + last = 2 * less + equal - 1: the doubled average rank, exact in float64
    np.put_along_axis(ranks, order, (first + last).astype(np.float64) / 2.0, axis=-1)
    return np.moveaxis(ranks, -1, axis)


def rank_features(per_asset: NDArray[np.float32]) -> NDArray[np.float32]:
    """The cross-sectional ranks ``[T, N, F]`` in ``[-1, 1]`` of the per-asset features ``[T, N, F]``."""
    n = per_asset.shape[1]
    if n == 1:
        return np.zeros_like(per_asset)
    return (2.0 * average_ranks(per_asset, axis=1) / (n - 1) - 1.0).astype(np.float32)


def equal_weight_log_returns(prices: pd.DataFrame) -> pd.Series:
    """``log(1 + R_t)`` of the Equal Weight index (module docstring); row 0 is 0."""
    values = prices.to_numpy(dtype=np.float64)
    daily = np.zeros(len(values))
    daily[1:] = np.log1p((values[1:] / values[:-1] - 1.0).mean(axis=1))
    return pd.Series(daily, index=prices.index)


def average_correlation(log_returns: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Row ``t``: the mean pairwise correlation of the columns of ``log_returns[t - window + 1 .. t]``; rows
    before the first full window are 0 (module docstring)."""
    t_rows, n = log_returns.shape
    out = np.zeros(t_rows)
    if n < 2 or t_rows < window:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(log_returns, window, axis=0)  # [T - w + 1, N, w]
    for lo in range(0, len(windows), _CORRELATION_CHUNK):
        chunk = windows[lo : lo + _CORRELATION_CHUNK]
        centred = chunk - chunk.mean(axis=-1, keepdims=True)
        norm = np.sqrt((centred**2).sum(axis=-1, keepdims=True))
        moved = norm > 0.0
        z = np.divide(centred, norm, out=np.zeros_like(centred), where=moved)  # unit vectors: <z_i, z_j> = corr
        total = (z.sum(axis=1) ** 2).sum(axis=-1)  # the sum of the correlation matrix of the assets that moved
        out[window - 1 + lo : window - 1 + lo + len(chunk)] = (total - moved[..., 0].sum(axis=1)) / (n * (n - 1))
    return out


def market_features(
    prices: pd.DataFrame, windows: tuple[int, ...], drawdown_window: int, correlation_window: int
) -> NDArray[np.float64]:
    """The shared features ``[T, S]`` (float64), in the order ``ew_logret_{w}`` and ``ew_vol_{w}`` for each of
    ``windows``, ``ew_drawdown_{drawdown_window}``, ``avg_corr_{correlation_window}``; incomplete windows NaN
    (or 0 for the correlation), which the caller zeroes."""
    ew = equal_weight_log_returns(prices)
    level = ew.cumsum()
    columns = [level - level.shift(w) for w in windows]
    columns += [ew.rolling(w, min_periods=w).std(ddof=1) for w in windows]
    columns.append(np.exp(level - level.rolling(drawdown_window, min_periods=drawdown_window).max()) - 1.0)
    out = np.stack([c.to_numpy() for c in columns], axis=-1)
    daily = np.diff(np.log(prices.to_numpy(dtype=np.float64)), axis=0, prepend=np.nan)
    correlation = np.zeros(len(prices))
    correlation[1:] = average_correlation(daily[1:], correlation_window)
    return np.concatenate([out, correlation[:, None]], axis=-1)
