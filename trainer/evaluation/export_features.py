"""The last row of ``envs.features.compute_features`` in torch, for an exported policy.

``LastRowFeatures`` computes, in float64 from a window of prices ``[W, N]`` (rows oldest first, ``W`` at least
the lookback + 1), each asset's features on the window's last row, in ``FeatureConfig.names`` order: log returns
over each horizon, the rolling volatility (standard deviation, ``ddof=1``, of daily log returns), price over its
moving average minus 1, and Cutler's RSI (simple means of gains and losses, a flat window neutral) mapped to
``[-1, 1]``. Every value uses the window's last ``lookback + 1`` rows only, as the env's rolling windows do;
the env's pandas rolling sums reach the same numbers to rounding (their running sums are over the whole series).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from envs.features import FeatureConfig


class LastRowFeatures(nn.Module):
    """``forward(prices float64 [W, N]) -> features float64 [N, F]`` for the last row."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.return_horizons = [int(h) for h in config.return_horizons]
        self.vol_windows = [int(w) for w in config.vol_windows]
        self.ma_windows = [int(w) for w in config.ma_windows]
        self.rsi_window = int(config.rsi_window)
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
        return torch.stack(columns, dim=-1)
