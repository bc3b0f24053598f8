"""The portfolio environment and the market data it runs on."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from envs.data import SPLITS, PriceData, SplitRange, load_prices, split_ranges
from envs.features import FeatureConfig, load_features
from envs.rewards import EpisodeStats, get_reward, update_stats

DEFAULT_COST_BPS = 10.0
DEFAULT_EPISODE_LEN = 252
DEFAULT_TEMPERATURE = 3.0


@dataclass(frozen=True)
class MarketData:
    """Everything an env needs, as read-only arrays (no pandas on the step path).

    Attributes:
        prices: the validated prices (pandas, for reports and baselines only).
        features: ``[T, n_assets, n_features]`` float32, causal.
        simple_returns: ``[T, n_assets]`` float64; row ``t`` is the return from ``t-1`` to ``t`` (row 0 is 0).
        splits: row ranges of train / validation / test.
    """

    data: PriceData
    features: NDArray[np.float32]
    simple_returns: NDArray[np.float64]
    splits: dict[str, SplitRange]
    feature_config: FeatureConfig

    @property
    def tickers(self) -> list[str]:
        return self.data.tickers

    @property
    def dates(self):
        return self.data.prices.index


def _freeze_splits(split_dates: Mapping[str, Any] | None) -> tuple | None:
    if split_dates is None:
        return None
    return tuple(sorted((str(k), tuple(str(d) for d in v)) for k, v in split_dates.items()))


@functools.lru_cache(maxsize=8)
def _load_market_cached(source: str, stamp: tuple, split_key: tuple | None) -> MarketData:
    del stamp  # part of the cache key only: a changed file is reloaded
    cfg = FeatureConfig()
    data = load_prices(source)
    splits = split_ranges(data, cfg.lookback, dict(split_key) if split_key else None)
    features, _ = load_features(data.prices, cfg)
    prices = data.prices.to_numpy()
    rets = np.zeros_like(prices)
    rets[1:] = prices[1:] / prices[:-1] - 1.0
    for arr in (features, rets):
        arr.setflags(write=False)
    return MarketData(data, features, rets, splits, cfg)


def load_market(source: str = "sp500", split_dates: Mapping[str, Any] | None = None) -> MarketData:
    """Load prices, splits and features once per process (memoised on the file's size and mtime)."""
    stamp: tuple = ()
    if source != "sp500" and os.path.exists(source):
        st = Path(source).stat()
        stamp = (st.st_size, st.st_mtime_ns)
    return _load_market_cached(str(source), stamp, _freeze_splits(split_dates))


class PortfolioEnv(gym.Env):
    """Daily long-only allocation over ``N`` assets plus cash, with transaction costs paid in the P&L.

    ## Description
    Each step is one trading day ``t``. The agent sees the causal features of day ``t`` and its current
    (drifted) weights, chooses target weights, pays costs on the turnover, and earns the assets' returns
    from ``t`` to ``t+1``. Weights then drift with prices.

    ## Action Space
    ``Box(-1, 1, (N + 1,), float32)``: one score per asset, the last one for cash. Scores are mapped to
    long-only weights by ``softmax(temperature * clip(action, -1, 1))``. With ``N + 1`` components the
    most concentrated reachable portfolio puts ``e^(2T) / (e^(2T) + N)`` on one asset (temperature ``T``):
    with the default ``T = 3`` and 20 assets that is 0.95, whereas a plain softmax (``T = 1``) caps any
    weight at 0.27.

    ## Observation Space
    ``Box(-inf, inf, (N * F + N + 1,), float32)``: the ``F`` features of each asset at day ``t``
    (``envs.features``, asset-major), then the current weights (assets, then cash). No normalisation here:
    the trainer's observation filter does that.

    ## Rewards
    ``reward`` selects a function of ``envs.rewards``; the default is
    ``100 * net_return + 0.1 * sharpe_so_far - 0.1 * max(0, turnover - 0.5)``, clipped to ``[-20, 20]``.
    ``turnover = sum_i |w_i - w_drift_i|`` over the assets (cash is the other side of every trade),
    ``cost = turnover * cost_bps / 1e4`` as a fraction of the portfolio value, and
    ``net_return = (1 - cost) * (1 + sum_i w_i r_i) - 1``.

    ## Starting State
    All cash, portfolio value 1. In the ``train`` split an episode starts on a random day drawn from
    ``self.np_random``; in ``validation`` and ``test`` it starts on the split's first day.

    ## Episode End
    Never terminated (a long-only portfolio cannot go bust). Truncated after ``episode_len`` steps in
    ``train`` (shortened to the split's length if that is shorter), or at the end of the split in
    ``validation`` / ``test`` (one pass over all of it). A split's last day is never traded from: its
    return would come from outside the split.

    ## Info
    ``portfolio_value``, ``net_return``, ``gross_return``, ``turnover``, ``cost`` (fraction of the
    portfolio value paid this step), ``weights`` (the target weights chosen this step), ``step_index``
    (row in the price table of the day the weights were chosen).

    ## Arguments
    ``data`` ("sp500", a CSV/Parquet path, or a loaded ``MarketData``), ``split`` ("train" |
    "validation" | "test"), ``cost_bps``, ``episode_len``, ``reward``, ``temperature``, ``split_dates``
    (``{"train": [start, end], ...}``).

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium convention

    def __init__(
        self,
        data: str | MarketData = "sp500",
        split: str = "train",
        cost_bps: float = DEFAULT_COST_BPS,
        episode_len: int = DEFAULT_EPISODE_LEN,
        reward: str = "default",
        temperature: float = DEFAULT_TEMPERATURE,
        split_dates: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not (isinstance(cost_bps, int | float) and math.isfinite(cost_bps) and cost_bps >= 0):
            raise ValueError(f"cost_bps must be a finite number >= 0, got {cost_bps!r}")
        if not (isinstance(episode_len, int) and episode_len >= 1):
            raise ValueError(f"episode_len must be an integer >= 1, got {episode_len!r}")
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self._reward_fn = get_reward(reward)
        # A MarketData instance is accepted for in-process use (tests, backtests); RLlib configs pass the
        # source string so every env runner loads the arrays itself (design: small env configs only).
        self.market = data if isinstance(data, MarketData) else load_market(str(data), split_dates)
        self.split = split
        self.cost_bps = float(cost_bps)
        self.temperature = float(temperature)
        self.render_mode = render_mode
        rng = self.market.splits[split]
        self._first, self._last = rng.start, rng.end
        n_steps_split = rng.end - rng.start
        self.episode_len = min(episode_len, n_steps_split) if split == "train" else n_steps_split

        n_assets = len(self.market.tickers)
        self.n_assets = n_assets
        t_rows = self.market.features.shape[0]
        self._feat = np.ascontiguousarray(self.market.features.reshape(t_rows, -1))
        # growth[t] = [1 + r_{t-1 -> t} per asset, 1 for cash]: one dot product gives 1 + gross return.
        growth = np.ones((t_rows, n_assets + 1))
        growth[:, :n_assets] += self.market.simple_returns
        self._growth = growth
        self._n_feat = self._feat.shape[1]
        self._cost_rate = self.cost_bps * 1e-4

        self.action_space = spaces.Box(-1.0, 1.0, (n_assets + 1,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self._n_feat + n_assets + 1,), np.float32)
        self._cash_only = np.zeros(n_assets + 1)
        self._cash_only[n_assets] = 1.0
        self._t = self._first
        self._end = self._first + self.episode_len
        self._w = self._cash_only.copy()
        self._value = 1.0
        self._stats = EpisodeStats()

    def _obs(self) -> NDArray[np.float32]:
        obs = np.empty(self._n_feat + self.n_assets + 1, np.float32)
        obs[: self._n_feat] = self._feat[self._t]
        obs[self._n_feat :] = self._w
        return obs

    def weights_from_action(self, action: NDArray) -> NDArray[np.float64]:
        """Long-only weights (assets, then cash) for an action; raises on non-finite actions."""
        z = np.array(action, dtype=np.float64).reshape(-1)  # a copy: the caller's action is not modified
        if z.shape[0] != self.n_assets + 1:
            raise ValueError(f"action must have {self.n_assets + 1} values (assets + cash), got {z.shape[0]}")
        # The sum of finite float64 values this small cannot overflow, so NaN/inf anywhere shows in it.
        if not math.isfinite(z.sum()):
            raise ValueError(
                f"non-finite action {z.tolist()}: the policy produced NaN/inf, which means training "
                "diverged; restore an earlier checkpoint or lower the learning rates"
            )
        # minimum/maximum with out= instead of np.clip: same result, a third of the call overhead.
        np.minimum(z, 1.0, out=z)
        np.maximum(z, -1.0, out=z)
        z *= self.temperature
        z -= z.max()
        np.exp(z, out=z)
        z /= z.sum()
        return z

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if self.split == "train":
            self._t = int(self.np_random.integers(self._first, self._last - self.episode_len + 1))
        else:
            self._t = self._first
        self._end = self._t + self.episode_len
        self._w = self._cash_only.copy()
        self._value = 1.0
        self._stats = EpisodeStats()
        return self._obs(), {"portfolio_value": 1.0, "weights": self._w.copy(), "step_index": self._t}

    @property
    def current_weights(self) -> NDArray[np.float64]:
        """The drifted weights held now (assets, then cash), before this step's rebalance."""
        return self._w.copy()

    def step(self, action: NDArray) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        if self._t >= self._end:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        return self._step_weights(self.weights_from_action(action))

    def step_weights(self, weights: NDArray) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Step with explicit target weights (assets, then cash) instead of an action.

        Classical baselines use this so they are simulated by exactly the same P&L, cost and drift code
        as the agent. Weights must be finite, >= 0 and sum to 1.
        """
        if self._t >= self._end:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        w = np.array(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != self.n_assets + 1 or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {self.n_assets + 1} finite values >= 0 (assets + cash)")
        if abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {w.sum()}")
        return self._step_weights(w / w.sum())

    def _step_weights(self, w: NDArray[np.float64]) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        n = self.n_assets
        turnover = float(np.abs(w[:n] - self._w[:n]).sum())
        cost = turnover * self._cost_rate
        self._t += 1
        g = self._growth[self._t]
        gross_factor = float(w @ g)
        net_return = (1.0 - cost) * gross_factor - 1.0
        self._value *= 1.0 + net_return
        self._w = w * g
        self._w /= gross_factor  # weights drift with prices until the next rebalance
        prev = self._stats
        self._stats = update_stats(prev, net_return)
        reward = self._reward_fn(net_return, turnover, prev, self._stats)
        truncated = self._t >= self._end
        info = {
            "portfolio_value": self._value,
            "net_return": net_return,
            "gross_return": gross_factor - 1.0,
            "turnover": turnover,
            "cost": cost,
            "weights": w,
            "step_index": self._t - 1,
        }
        return self._obs(), reward, False, truncated, info
