"""The portfolio environment: daily long-only allocation with costs paid in the P&L."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from envs.data import SP500, SPLITS, TRAIN
from envs.folds import FoldSpec
from envs.layout import ObservationLayout
from envs.limits import PositionLimits
from envs.market import MarketData, describe_selection, load_market, selection_key
from envs.rewards import EpisodeStats, get_reward, update_stats
from envs.settings import ACTION_TILT, TILT_PREVIOUS, PortfolioSettings

# How far from 1 the sum of weights handed to the env (held or traded to) may be: rounding, not a mistake.
WEIGHT_SUM_TOLERANCE = 1e-6


class PortfolioEnv(gym.Env):
    """Daily long-only allocation over ``N`` assets plus cash, with transaction costs paid in the P&L.

    ## Description
    Each step is one trading day ``t``. The agent sees the causal features of day ``t`` and its current
    (drifted) weights, chooses target weights, pays costs on the turnover, and earns the assets' returns
    from ``t`` to ``t+1``. Weights then drift with prices.

    ## Action Space
    ``Box(-1, 1, (N + 1,), float32)``: one score per asset, the last one for cash, clipped to ``[-1, 1]``.
    ``action`` selects how scores become target weights:

    - ``"softmax"`` (default): ``softmax(temperature * a)``. With ``N + 1`` components the most
      concentrated reachable portfolio puts ``e^(2T) / (e^(2T) + N)`` on one asset (temperature ``T``):
      with the default ``T = 3`` and 20 assets that is 0.95, whereas a plain softmax (``T = 1``) caps any
      weight at 0.27.
    - ``"tilt"``: a tilt around a reference portfolio, ``w = softmax(log(w_ref) + tilt_scale * a)``: a
      score of ``a`` multiplies a weight by ``e^(tilt_scale * a)`` before renormalising, and a zero action
      gives exactly ``w_ref``. ``tilt_reference="equal_weight"``: ``1/N`` on each asset, no cash, so the
      portfolio is always fully invested and the cash score is unused. ``tilt_reference="previous"``: the
      current drifted weights, so a zero action does not trade; from the all-cash start (where there is
      nothing to tilt) the reference is equal weight.

    The target is then executed (``step`` only; ``step_weights`` trades to its target exactly, within the
    position limits below):
    ``no_trade_band`` ``b`` is a turnover: if the target is within ``b`` of the current weights (turnover
    ``u <= b``) nothing is traded, otherwise only the part of the move beyond the band is, i.e. the weights
    move ``(1 - b / u)`` of the way. ``rebalance_fraction`` ``f`` then trades only ``f`` of that move.
    Together: ``w = (1 - k) * w_drift + k * w_target`` with ``k = f * max(0, 1 - b / u)``, a convex
    combination, so weights stay ``>= 0`` and sum to 1, and the turnover paid is ``k * u``. Defaults
    (``b = 0``, ``f = 1``) trade to the target.

    ## Position limits
    ``max_weight`` (each asset), ``max_cash`` and ``max_turnover`` (per day, the turnover defined under
    Rewards) apply last, to every trade: ``step`` and ``step_target`` after the band and partial rebalancing,
    ``step_weights`` (the baselines) to its target, and Equal Weight beside the agent. The target is projected
    onto the capped simplex (the closest weights, Euclidean, that are ``>= 0``, sum to 1 and are within their
    caps: ``clip(w - tau, 0, cap)``, not clip-and-renormalise, which breaks the cap). Then the turnover from the
    current drifted weights is limited: if the target is within ``max_turnover`` it is traded to, otherwise
    every order toward it is scaled by the largest common fraction that fits. The caps win: when the drift has
    pushed the portfolio over a cap, the least trading that brings it back within the caps is made even if it
    exceeds ``max_turnover`` (the excess of an asset over its cap is sold to cash; cash over its cap buys the
    assets the target wants most), and then only what is left of ``max_turnover``. A target already within all
    limits is traded to unchanged; costs are paid on the trade actually made. ``envs.limits`` has the details;
    caps under which no weights sum to 1 (``N * max_weight + max_cash < 1``) are refused on construction.

    ## Observation Space
    ``Box(-inf, inf, (N * F + S + N + 1,), float32)``, laid out by ``self.layout`` (``envs.layout``): the ``F``
    features of each asset at day ``t`` (``envs.features``, asset-major: with ``features="asset+rank"`` each
    asset's block is its own features, then their cross-sectional ranks), then the ``S`` features shared by all
    assets (``features`` with ``market``: the Equal Weight index's returns, volatilities and drawdown and the
    assets' average pairwise correlation; ``S = 0`` otherwise), then the current weights (assets, then cash).
    No normalisation here: the trainer's observation filter does that.

    ## Rewards
    ``reward`` selects a function of ``envs.rewards``; the default is
    ``100 * net_return + 0.1 * sharpe_so_far - 0.1 * max(0, turnover - 0.5)``, clipped to ``[-20, 20]``.
    ``turnover = sum_i |w_i - w_drift_i|`` over the assets (cash is the other side of every trade),
    ``cost = turnover * cost_bps / 1e4`` as a fraction of the portfolio value, and
    ``net_return = (1 - cost) * (1 + sum_i w_i r_i) - 1``. ``"excess_log_return"`` is
    ``100 * (log(1 + net_return) - log(1 + ew_net_return))`` where ``ew_net_return`` is the same day's net
    return of Equal Weight (``1/N`` per asset, no cash), rebalanced daily with the same costs and position
    limits from the same all-cash start, which the env tracks beside the agent.

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
    portfolio value paid this step), ``weights`` (the weights traded to this step: the target, or with a
    band / partial rebalancing the part of the move that was traded, within the position limits),
    ``ew_net_return`` (Equal Weight's net return on the same day), ``step_index`` (row in the price table of
    the day the weights were chosen).

    ## Arguments
    ``data`` ("sp500", a CSV/Parquet path, or a loaded ``MarketData``), ``split`` ("train" |
    "validation" | "test"), ``settings`` (:class:`envs.settings.PortfolioSettings` or its dict; each of its
    fields may also be given as a keyword: ``cost_bps``, ``episode_len``, ``reward``, ``temperature``,
    ``action``, ``tilt_reference``, ``tilt_scale``, ``no_trade_band``, ``rebalance_fraction``,
    ``max_weight``, ``max_cash``, ``max_turnover``), and the
    windows: ``split_dates`` (``{"train": [start, end], ...}``) or a walk-forward ``fold`` of ``folds``
    (:class:`envs.folds.FoldSpec` or its dict). With a ``MarketData``, window arguments, when given, must
    be the ones it was loaded with.

    ## Version History
    - v0: initial version; the tilt action, the no-trade band, partial rebalancing and the
      ``excess_log_return`` reward were added as options whose defaults keep the initial behaviour.
    - v0: position limits (``max_weight``, ``max_cash``, ``max_turnover``) added as options; off by default,
      which keeps every number of the initial behaviour.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium convention

    def __init__(
        self,
        data: str | MarketData = SP500,
        split: str = TRAIN,
        settings: PortfolioSettings | Mapping[str, Any] | None = None,
        split_dates: Mapping[str, Any] | None = None,
        folds: FoldSpec | Mapping[str, Any] | None = None,
        fold: int | None = None,
        render_mode: str | None = None,
        date_format: str | None = None,
        sort_dates: bool = False,
        **setting_overrides: Any,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(settings, PortfolioSettings) and not setting_overrides:
            s = settings
        else:
            base = settings.as_dict() if isinstance(settings, PortfolioSettings) else dict(settings or {})
            s = PortfolioSettings.from_mapping({**base, **setting_overrides})
        self.settings = s
        self._reward_fn = get_reward(s.reward)
        # A MarketData instance is accepted for in-process use (tests, backtests); RLlib configs pass the
        # source string so every env runner loads the arrays itself (design: small env configs only).
        if isinstance(data, MarketData):
            self.market = data
            if data.feature_config.features != s.features:
                raise ValueError(
                    f"data: the MarketData holds the features {data.feature_config.features!r} but the env's "
                    f"features setting is {s.features!r}; load it with load_market(..., features={s.features!r})"
                )
            if data.selection is not None and (split_dates, folds, fold) != (None, None, None):
                wanted = selection_key(split_dates, folds, fold)
                if wanted != data.selection:
                    raise ValueError(
                        f"data: the MarketData holds the windows of {describe_selection(data.selection)} but the "
                        f"env was given {describe_selection(wanted)}; load it with load_market(source, "
                        "split_dates, folds, fold) using the env's values"
                    )
        else:
            self.market = load_market(
                str(data), split_dates, folds, fold, date_format=date_format, sort_dates=sort_dates, features=s.features
            )
        self.split = split
        self.cost_bps = s.cost_bps
        self.temperature = s.temperature
        self.render_mode = render_mode
        if split not in self.market.splits:
            raise ValueError(
                f"split {split!r}: these windows have no {split} window (only {', '.join(self.market.splits)}: "
                f"split_dates without {split}); evaluate another split, or give {split} dates"
            )
        rng = self.market.splits[split]
        self._first, self._last = rng.start, rng.end
        n_steps_split = rng.end - rng.start
        self.episode_len = min(s.episode_len, n_steps_split) if split == TRAIN else n_steps_split

        n_assets = len(self.market.tickers)
        self.n_assets = n_assets
        t_rows = self.market.features.shape[0]
        self._feat = np.ascontiguousarray(self.market.features.reshape(t_rows, -1))
        cfg = self.market.feature_config
        self.layout = ObservationLayout(n_assets, tuple(cfg.names), tuple(cfg.shared_names))
        self._shared = self.market.shared
        # growth[t] = [1 + r_{t-1 -> t} per asset, 1 for cash]: one dot product gives 1 + gross return.
        growth = np.ones((t_rows, n_assets + 1))
        growth[:, :n_assets] += self.market.simple_returns
        self._growth = growth
        # Equal Weight needs no state beyond "first step of the episode": its gross factor on day t is the
        # mean asset growth, and the turnover to rebalance it on day t depends only on day t's returns.
        asset_growth = growth[:, :n_assets]
        self._ew_gross = asset_growth.mean(axis=1)
        self._ew_turnover = np.abs(1.0 - asset_growth / self._ew_gross[:, None]).sum(axis=1) / n_assets
        self._n_feat = self._feat.shape[1]
        self._n_obs_feat = self._n_feat + self._shared.shape[1]  # then the shared block, then the weights
        self._cost_rate = self.cost_bps * 1e-4

        self._tilt = s.action == ACTION_TILT
        self._tilt_previous = s.tilt_reference == TILT_PREVIOUS
        self._tilt_scale = s.tilt_scale
        self._equal_weight = np.append(np.full(n_assets, 1.0 / n_assets), 0.0)
        with np.errstate(divide="ignore"):
            self._log_equal_weight = np.log(self._equal_weight)  # -inf on cash: never held
        self._band = s.no_trade_band
        self._fraction = s.rebalance_fraction
        self._partial = self._band > 0.0 or self._fraction < 1.0
        # None without limits: every trade then takes the paths it took before limits existed
        self.limits = PositionLimits.build(n_assets, s.max_weight, s.max_cash, s.max_turnover)

        self.action_space = spaces.Box(-1.0, 1.0, (n_assets + 1,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.layout.size,), np.float32)
        self._cash_only = np.zeros(n_assets + 1)
        self._cash_only[n_assets] = 1.0
        self._t = self._first
        self._start = self._first
        self._end = self._first + self.episode_len
        self._w = self._cash_only.copy()
        self._ew_w = self._cash_only.copy()  # Equal Weight's drifted weights, tracked under position limits
        self._value = 1.0
        self._stats = EpisodeStats()

    def _obs(self) -> NDArray[np.float32]:
        obs = np.empty(self._n_obs_feat + self.n_assets + 1, np.float32)
        obs[: self._n_feat] = self._feat[self._t]
        if self._n_obs_feat > self._n_feat:  # the shared block (envs.layout); none in the default set
            obs[self._n_feat : self._n_obs_feat] = self._shared[self._t]
        obs[self._n_obs_feat :] = self._w
        return obs

    def weights_from_action(self, action: NDArray) -> NDArray[np.float64]:
        """Target weights (assets, then cash) for an action; raises on non-finite actions.

        Under ``action="tilt"`` with ``tilt_reference="previous"`` the target depends on the current
        weights, i.e. on the env's state.
        """
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
        if self._tilt:
            return self._tilted(z)
        z *= self.temperature
        z -= z.max()
        np.exp(z, out=z)
        z /= z.sum()
        return z

    def _tilted(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``softmax(log(w_ref) + tilt_scale * z)`` for clipped scores ``z`` (overwritten)."""
        if self._tilt_previous and self._w[self.n_assets] != 1.0:
            reference = self._w
            with np.errstate(divide="ignore"):
                log_reference = np.log(reference)
        else:
            reference, log_reference = self._equal_weight, self._log_equal_weight
        if not z.any():
            return reference.copy()  # exactly the reference: renormalising could move it by rounding
        z *= self._tilt_scale
        z += log_reference
        z -= z.max()  # the reference holds something, so the maximum is finite
        np.exp(z, out=z)
        z /= z.sum()
        return z

    def _execute(self, target: NDArray[np.float64]) -> NDArray[np.float64]:
        """The weights actually traded to: the no-trade band, then partial rebalancing (class docstring)."""
        current = self._w
        k = self._fraction
        if self._band > 0.0:
            turnover = float(np.abs(target[: self.n_assets] - current[: self.n_assets]).sum())
            if turnover <= self._band:
                return current.copy()
            k *= 1.0 - self._band / turnover
        # Written as a convex combination (not current + k * move) so rounding cannot make a weight negative.
        return (1.0 - k) * current + k * target

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if self.split == TRAIN:
            self._t = int(self.np_random.integers(self._first, self._last - self.episode_len + 1))
        else:
            self._t = self._first
        self._start = self._t
        self._end = self._t + self.episode_len
        self._w = self._cash_only.copy()
        self._ew_w = self._cash_only.copy()
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
        return self.step_target(self.weights_from_action(action))

    def step_target(self, target: NDArray[np.float64]) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Step towards target weights as the agent trades: the no-trade band, partial rebalancing, then the
        position limits apply.

        ``step(action)`` is ``step_target(weights_from_action(action))``; a seed ensemble averages the
        members' targets and steps with this, so it trades under the same rules as each member.
        """
        if self._t >= self._end:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        _, traded = self.traded_weights(np.asarray(target, dtype=np.float64))
        return self._step_weights(traded)

    def traded_weights(self, target: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """What a step toward ``target`` trades to from the weights held now: ``(after the no-trade band and
        partial rebalancing, after the position limits too)``; each is its input when that rule does not apply.
        ``step_target`` trades the second; a decision (``place``, then this) reports both."""
        banded = self._execute(target) if self._partial else target
        return banded, (banded if self.limits is None else self.limits.apply(banded, self._w))

    def place(self, t: int, weights: NDArray) -> NDArray[np.float32]:
        """Put the env on row ``t`` holding ``weights`` (drifted, assets then cash), as a pass through the data
        is on that day before it trades, and return that day's observation. A decision for day ``t`` then takes
        the step's own path: ``weights_from_action``, then ``traded_weights``. Nothing is traded."""
        w = np.array(weights, dtype=np.float64).reshape(-1)
        if (
            w.shape[0] != self.n_assets + 1
            or not np.isfinite(w).all()
            or (w < 0).any()
            or abs(w.sum() - 1) > WEIGHT_SUM_TOLERANCE
        ):
            raise ValueError(f"weights must be {self.n_assets + 1} finite values >= 0 summing to 1 (assets + cash)")
        if not 0 <= t < self._feat.shape[0]:
            raise ValueError(f"row {t} is outside the data's {self._feat.shape[0]} rows")
        self._t = self._start = int(t)
        self._end = self._t + 1
        self._w = w  # as given, not renormalised: a backtest's drifted weights reproduce its decision bit for bit
        return self._obs()

    def step_weights(self, weights: NDArray) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Step with explicit target weights (assets, then cash) instead of an action.

        Classical baselines use this so they are simulated by exactly the same P&L, cost and drift code
        as the agent. The target is traded to exactly (no band, no partial rebalancing: those belong to
        the agent's action), except that the position limits apply as to every trade. Weights must be
        finite, >= 0 and sum to 1.
        """
        if self._t >= self._end:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        w = np.array(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != self.n_assets + 1 or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {self.n_assets + 1} finite values >= 0 (assets + cash)")
        if abs(w.sum() - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"weights must sum to 1, got {w.sum()}")
        w /= w.sum()
        return self._step_weights(w if self.limits is None else self.limits.apply(w, self._w))

    def _equal_weight_step(self) -> tuple[float, float]:
        """Equal Weight's turnover today (day ``t``) and its gross factor to tomorrow."""
        if self.limits is None:  # stateless (see __init__)
            turnover = 1.0 if self._t == self._start else float(self._ew_turnover[self._t])
            return turnover, float(self._ew_gross[self._t + 1])
        ew = self.limits.apply(self._equal_weight, self._ew_w)
        turnover = float(np.abs(ew[: self.n_assets] - self._ew_w[: self.n_assets]).sum())
        g = self._growth[self._t + 1]
        gross = float(ew @ g)
        self._ew_w = ew * g / gross
        return turnover, gross

    def _step_weights(self, w: NDArray[np.float64]) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        n = self.n_assets
        turnover = float(np.abs(w[:n] - self._w[:n]).sum())
        cost = turnover * self._cost_rate
        ew_turnover, ew_gross = self._equal_weight_step()
        self._t += 1
        g = self._growth[self._t]
        gross_factor = float(w @ g)
        net_return = (1.0 - cost) * gross_factor - 1.0
        ew_net_return = (1.0 - ew_turnover * self._cost_rate) * ew_gross - 1.0
        self._value *= 1.0 + net_return
        self._w = w * g
        self._w /= gross_factor  # weights drift with prices until the next rebalance
        prev = self._stats
        self._stats = update_stats(prev, net_return)
        reward = self._reward_fn(net_return, turnover, prev, self._stats, ew_net_return)
        truncated = self._t >= self._end
        info = {
            "portfolio_value": self._value,
            "net_return": net_return,
            "gross_return": gross_factor - 1.0,
            "turnover": turnover,
            "cost": cost,
            "weights": w,
            "ew_net_return": ew_net_return,
            "step_index": self._t - 1,
        }
        return self._obs(), reward, False, truncated, info
