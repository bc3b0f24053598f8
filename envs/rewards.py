"""Reward functions: pure functions of one step's outcome and the episode's running statistics.

Every reward has the signature ``f(net_return, turnover, prev, new, ew_net_return) -> float`` where
``prev`` and ``new`` are the :class:`EpisodeStats` before and after this step's net return was added and
``ew_net_return`` is the same day's net return of Equal Weight rebalanced daily with the same costs (the
env tracks it). All rewards are clipped to ``[-REWARD_CLIP, REWARD_CLIP]``.

- ``"default"`` (the design's formula): ``100 * net_return + 0.1 * sharpe_so_far - 0.1 * max(0,
  turnover - 0.5)``, where ``sharpe_so_far`` is mean/std (sample std, not annualised) of the episode's net
  returns up to and including this step, 0 while fewer than two returns or zero spread.
- ``"log_return"``: ``100 * log(1 + net_return)``.
- ``"excess_log_return"``: ``100 * (log(1 + net_return) - log(1 + ew_net_return))``: the log return in
  excess of Equal Weight over the same day after costs, so only what beats the naive portfolio is rewarded.
- ``"differential_sharpe"``: Moody & Saffell's differential Sharpe ratio (1998, eq. 4) with EMA rate
  ``DSR_ETA``, 0 while the EMA variance is not yet positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

REWARD_CLIP = 20.0
RETURN_SCALE = 100.0
SHARPE_WEIGHT = 0.1
TURNOVER_WEIGHT = 0.1
TURNOVER_FREE = 0.5
DSR_ETA = 0.01


class EpisodeStats(NamedTuple):
    """Running statistics of an episode's net returns."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    ema_mean: float = 0.0  # Moody & Saffell's A_t
    ema_sq: float = 0.0  # Moody & Saffell's B_t


def update_stats(stats: EpisodeStats, net_return: float, eta: float = DSR_ETA) -> EpisodeStats:
    """Statistics after one more net return."""
    return EpisodeStats(
        stats.n + 1,
        stats.total + net_return,
        stats.total_sq + net_return * net_return,
        stats.ema_mean + eta * (net_return - stats.ema_mean),
        stats.ema_sq + eta * (net_return * net_return - stats.ema_sq),
    )


def sharpe_so_far(stats: EpisodeStats) -> float:
    """mean / sample std of the returns so far (not annualised); 0 with < 2 returns or no spread."""
    if stats.n < 2:
        return 0.0
    mean = stats.total / stats.n
    var = (stats.total_sq - stats.n * mean * mean) / (stats.n - 1)
    if var <= 1e-18:
        return 0.0
    return mean / math.sqrt(var)


def _clip(x: float) -> float:
    return -REWARD_CLIP if x < -REWARD_CLIP else (REWARD_CLIP if x > REWARD_CLIP else x)


def default_reward(
    net_return: float, turnover: float, prev: EpisodeStats, new: EpisodeStats, ew_net_return: float
) -> float:
    """The design's reward: scaled return + Sharpe bonus - excess-turnover penalty, clipped."""
    excess = turnover - TURNOVER_FREE
    penalty = TURNOVER_WEIGHT * excess if excess > 0.0 else 0.0
    return _clip(RETURN_SCALE * net_return + SHARPE_WEIGHT * sharpe_so_far(new) - penalty)


def log_return_reward(
    net_return: float, turnover: float, prev: EpisodeStats, new: EpisodeStats, ew_net_return: float
) -> float:
    """Scaled log return, clipped."""
    return _clip(RETURN_SCALE * math.log1p(net_return))


def differential_sharpe_reward(
    net_return: float, turnover: float, prev: EpisodeStats, new: EpisodeStats, ew_net_return: float
) -> float:
    """Differential Sharpe ratio D_t = (B dA - A dB / 2) / (B - A^2)^1.5 with the previous EMAs A, B."""
    a, b = prev.ema_mean, prev.ema_sq
    var = b - a * a
    if prev.n < 2 or var <= 1e-18:
        return 0.0
    d_a = net_return - a
    d_b = net_return * net_return - b
    return _clip((b * d_a - 0.5 * a * d_b) / var**1.5)


def excess_log_return_reward(
    net_return: float, turnover: float, prev: EpisodeStats, new: EpisodeStats, ew_net_return: float
) -> float:
    """Scaled log return in excess of Equal Weight's on the same day, clipped."""
    return _clip(RETURN_SCALE * (math.log1p(net_return) - math.log1p(ew_net_return)))


RewardFn = Callable[[float, float, EpisodeStats, EpisodeStats, float], float]

REWARDS: dict[str, RewardFn] = {
    "default": default_reward,
    "log_return": log_return_reward,
    "differential_sharpe": differential_sharpe_reward,
    "excess_log_return": excess_log_return_reward,
}
# The valid reward names, in one place: the env's settings and the experiment schema read this tuple.
REWARD_NAMES: tuple[str, ...] = tuple(REWARDS)


def get_reward(name: str) -> RewardFn:
    """The reward function called ``name``; a ValueError lists the valid names."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARD_NAMES)}") from None
