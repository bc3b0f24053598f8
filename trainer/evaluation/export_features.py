"""The last row of ``envs.features.compute_features`` in torch, for an exported policy.

``LastRowFeatures`` computes, in float64 from a window of prices ``[W, N]`` (rows oldest first, ``W`` at least
the lookback + 1), each asset's features on the window's last row, in ``FeatureConfig.names`` order: log returns
over each horizon, the rolling volatility (standard deviation, ``ddof=1``, of daily log returns), price over its
moving average minus 1, and Cutler's RSI (simple means of gains and losses, a flat window neutral) mapped to
``[-1, 1]``. Every value uses the window's last ``lookback + 1`` rows only, as the env's rolling windows do;
the env's pandas rolling sums reach the same numbers to rounding (their running sums are over the whole series).

With ``rank`` in the feature set each asset's row continues with the cross-sectional ranks of those features,
taken, as the env takes them, of their float32 values (``envs.cross_features``: ties averaged, scaled to
``[-1, 1]``, by comparisons, so exact). ``LastRowShared`` computes the ``market`` set's shared features on the
last row: the Equal Weight index's log returns, volatilities and drawdown, and the average pairwise correlation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from envs.features import FeatureConfig
from envs.settings import FEATURES_MARKET, FEATURES_RANK


class LastRowFeatures(nn.Module):
    """``forward(prices float64 [W, N]) -> features float64 [N, F]`` for the last row."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.return_horizons = [int(h) for h in config.return_horizons]
        self.vol_windows = [int(w) for w in config.vol_windows]
        self.ma_windows = [int(w) for w in config.ma_windows]
        self.rsi_window = int(config.rsi_window)
        self.ranks = FEATURES_RANK in config.sets
        self.rows = int(config.lookback) + 1

    def forward(self, prices: Tensor) -> Tensor:
        log_p = torch.log(prices)
        columns: list[Tensor] = []
        for h in self.return_horizons:
            columns.append(log_p[-1] - log_p[-1 - h])
        daily = log_p[1:] - log_p[:-1]
        for w in self.vol_windows:
            window = daily[-w:]
            columns.append(torch.sqrt(((window - window.mean(0)) ** 2).sum(0) / (w - 1)))
        for w in self.ma_windows:
            columns.append(prices[-1] / prices[-w:].mean(0) - 1.0)
        change = prices[-self.rsi_window :] - prices[-self.rsi_window - 1 : -1]
        gain = torch.clamp(change, min=0.0).mean(0)
        loss = (-torch.clamp(change, max=0.0)).mean(0)
        total = gain + loss
        # RSI = 100 * gain / (gain + loss); a flat window (no moves) is neutral (50 -> 0)
        rsi = torch.where(total > 0.0, gain / total, torch.full_like(total, 0.5))
        columns.append(rsi * 2.0 - 1.0)
        features = torch.stack(columns, dim=-1)
        if self.ranks:
            features = torch.cat([features, cross_sectional_ranks(features.to(torch.float32))], dim=-1)
        return features


def cross_sectional_ranks(values: Tensor) -> Tensor:
    """The ranks ``[N, F]`` (float64, in ``[-1, 1]``, ties averaged) of ``values [N, F]`` among the ``N`` rows:
    ``(2 * less + equal - 1) / (N - 1) - 1``, the env's formula (``envs.cross_features``)."""
    n = values.shape[0]
    if n == 1:
        return torch.zeros(values.shape, dtype=torch.float64)
    others, own = values.unsqueeze(0), values.unsqueeze(1)  # [1, N, F] against [N, 1, F]
    less = (others < own).to(torch.float64).sum(1)
    equal = (others == own).to(torch.float64).sum(1)
    return (2.0 * less + equal - 1.0) / (n - 1) - 1.0


class LastRowShared(nn.Module):
    """``forward(prices float64 [W, N]) -> shared features float64 [S]`` for the last row (``S = 0`` without
    ``market``), in ``FeatureConfig.shared_names`` order (``envs.cross_features`` defines them)."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.market = FEATURES_MARKET in config.sets
        self.windows = [int(w) for w in config.market_windows]
        self.drawdown_window = int(config.drawdown_window)
        self.correlation_window = int(config.correlation_window)

    def forward(self, prices: Tensor) -> Tensor:
        if not self.market:
            return torch.zeros(0, dtype=torch.float64)
        ew = torch.log1p((prices[1:] / prices[:-1] - 1.0).mean(1))  # the index's daily log returns
        columns: list[Tensor] = []
        for w in self.windows:
            columns.append(ew[-w:].sum())
        for w in self.windows:
            window = ew[-w:]
            columns.append(torch.sqrt(((window - window.mean()) ** 2).sum() / (w - 1)))
        # the log level over the last drawdown_window days, relative to the first of them
        level = torch.cumsum(ew[-self.drawdown_window + 1 :], 0)
        high = torch.clamp(level.max(), min=0.0)
        columns.append(torch.exp(level[-1] - high) - 1.0)
        columns.append(self.average_correlation(torch.log(prices[-self.correlation_window - 1 :])))
        return torch.stack(columns)

    def average_correlation(self, log_p: Tensor) -> Tensor:
        daily = log_p[1:] - log_p[:-1]  # [c, N]
        n = daily.shape[1]
        if n < 2:
            return torch.zeros((), dtype=torch.float64)
        centred = daily - daily.mean(0)
        norm = torch.sqrt((centred**2).sum(0))
        moved = norm > 0.0
        z = torch.where(moved, centred / torch.where(moved, norm, torch.ones_like(norm)), torch.zeros_like(centred))
        total = (z.sum(1) ** 2).sum()
        return (total - moved.to(torch.float64).sum()) / (n * (n - 1))
