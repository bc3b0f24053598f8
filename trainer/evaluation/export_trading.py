"""From an action to the weights traded to, in torch: the env's action mapping, no-trade band, partial
rebalancing and position limits, for an exported policy.

``Trading`` computes, in float64 and for one day, what ``PortfolioEnv.weights_from_action`` followed by
``PortfolioEnv.traded_weights`` compute for an env holding ``current`` (``envs.portfolio``'s docstring is the
specification): clip to ``[-1, 1]``; ``softmax(temperature * a)``, or the tilt ``softmax(log(w_ref) +
tilt_scale * a)`` around equal weight or the current weights (all cash: equal weight; a zero action: the
reference itself); the band and partial rebalancing ``(1 - k) * current + k * target``; then the limits
(``trainer.evaluation.export_limits``). The settings are fixed when it is built; the branches on the data
(all cash, a zero action, a move within the band) are ``torch.where`` choices, so that the ONNX exporter's trace
keeps both sides.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from envs.limits import TOLERANCE, PositionLimits
from envs.settings import ACTION_TILT, TILT_PREVIOUS, PortfolioSettings
from trainer.evaluation.export_limits import apply_limits


class Trading(nn.Module):
    """``forward(action float32 [N + 1], current float64 [N + 1]) -> target float64 [N + 1]``."""

    def __init__(self, settings: PortfolioSettings, n_assets: int) -> None:
        """Raises ``ValueError`` for caps under which no weights sum to 1 (as the env does)."""
        super().__init__()
        self.n_assets = n_assets
        self.tilt = settings.action == ACTION_TILT
        self.tilt_previous = settings.tilt_reference == TILT_PREVIOUS
        self.temperature = float(settings.temperature)
        self.tilt_scale = float(settings.tilt_scale)
        self.band = float(settings.no_trade_band)
        self.fraction = float(settings.rebalance_fraction)
        self.partial = self.band > 0.0 or self.fraction < 1.0
        limits = PositionLimits.build(n_assets, settings.max_weight, settings.max_cash, settings.max_turnover)
        self.limited = limits is not None
        caps = limits.caps if limits is not None else np.full(n_assets + 1, math.inf)
        # 0 stands for "no turnover limit" (a limit is > 0): a float attribute TorchScript can hold
        self.max_turnover = float(limits.max_turnover or 0.0) if limits is not None else 0.0
        self.tolerance = TOLERANCE
        equal = np.append(np.full(n_assets, 1.0 / n_assets), 0.0)
        with np.errstate(divide="ignore"):
            log_equal = np.log(equal)  # -inf on cash: never held
        self.register_buffer("caps", torch.tensor(caps, dtype=torch.float64))
        self.register_buffer("equal_weight", torch.tensor(equal, dtype=torch.float64))
        self.register_buffer("log_equal_weight", torch.tensor(log_equal, dtype=torch.float64))

    def mapped(self, action: Tensor, current: Tensor) -> Tensor:
        """``PortfolioEnv.weights_from_action``: the target weights of an action."""
        z = torch.clamp(action.to(torch.float64), -1.0, 1.0)
        if not self.tilt:
            z = z * self.temperature
            z = torch.exp(z - z.max())
            return z / z.sum()
        reference, log_reference = self.equal_weight, self.log_equal_weight
        if self.tilt_previous:  # the current weights, unless all cash (nothing to tilt)
            holds = current[self.n_assets] != 1.0
            reference = torch.where(holds, current, reference)
            log_reference = torch.where(holds, torch.log(current), log_reference)
        y = z * self.tilt_scale + log_reference
        y = torch.exp(y - y.max())  # the reference holds something, so the maximum is finite
        return torch.where((z == 0.0).all(), reference, y / y.sum())

    def banded(self, target: Tensor, current: Tensor) -> Tensor:
        """``PortfolioEnv._execute``: the no-trade band, then partial rebalancing."""
        if not self.partial:
            return target
        k = torch.full_like(current[0], self.fraction)
        if self.band > 0.0:
            turnover = (target[: self.n_assets] - current[: self.n_assets]).abs().sum()
            moved = k * (1.0 - self.band / turnover)
            # a convex combination (not current + k * move) so rounding cannot make a weight negative
            return torch.where(turnover <= self.band, current, (1.0 - moved) * current + moved * target)
        return (1.0 - k) * current + k * target

    def forward(self, action: Tensor, current: Tensor) -> Tensor:
        banded = self.banded(self.mapped(action, current), current)
        if not self.limited:
            return banded
        return apply_limits(banded, current, self.caps, self.max_turnover, self.n_assets, self.tolerance)
