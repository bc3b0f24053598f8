"""The portfolio env's settings as one typed, validated value: every default is declared here, once.

``PortfolioSettings`` travels from the experiment schema (``trainer.experiment.config.DataConfig`` takes its defaults
from this class) to :class:`envs.portfolio.PortfolioEnv`; Ray passes it as the flat, small ``env_config``
dict, which :meth:`PortfolioSettings.from_mapping` turns back into this class. Every setting is validated
on construction; a bad value raises a one-line ``ValueError`` that names the setting.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from envs.rewards import REWARD_NAMES

# Costs are a sanity-checked fraction of the traded value: 1000 bp (10% of every trade) is far beyond any
# real market's costs, so a larger value is a unit mistake (percent or a fraction typed as basis points).
MAX_COST_BPS = 1000.0
# Turnover is the L1 distance between asset weights (cash is the other side of every trade): 0 .. 2.
MAX_TURNOVER = 2.0

ACTION_SOFTMAX = "softmax"
ACTION_TILT = "tilt"
ACTIONS = (ACTION_SOFTMAX, ACTION_TILT)
TILT_EQUAL_WEIGHT = "equal_weight"
TILT_PREVIOUS = "previous"
TILT_REFERENCES = (TILT_EQUAL_WEIGHT, TILT_PREVIOUS)
# The feature sets (``envs.features``): the per-asset set, always observed, plus cross-sectional ranks and/or
# market-wide features. One value names the combination: a plain string, so ``--set data.features=asset+rank``,
# YAML and Tune's grid_search all carry it unchanged.
FEATURES_ASSET = "asset"
FEATURES_RANK = "rank"
FEATURES_MARKET = "market"
FEATURE_SEPARATOR = "+"
FEATURE_SETS = (
    FEATURES_ASSET,
    FEATURES_ASSET + FEATURE_SEPARATOR + FEATURES_RANK,
    FEATURES_ASSET + FEATURE_SEPARATOR + FEATURES_MARKET,
    FEATURE_SEPARATOR.join((FEATURES_ASSET, FEATURES_RANK, FEATURES_MARKET)),
)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_cost_bps(v: Any) -> str | None:
    if _is_real(v) and 0 <= v <= MAX_COST_BPS:
        return None
    return f"cost_bps must be a finite number in [0, {MAX_COST_BPS:g}] basis points, got {v!r}"


def _check_episode_len(v: Any) -> str | None:
    return None if _is_int(v) and v >= 1 else f"episode_len must be an integer >= 1, got {v!r}"


def _check_reward(v: Any) -> str | None:
    return None if v in REWARD_NAMES else f"unknown reward {v!r}; choose one of {', '.join(REWARD_NAMES)}"


def _positive(name: str) -> Any:
    def check(v: Any) -> str | None:
        return None if _is_real(v) and v > 0 else f"{name} must be a finite number > 0, got {v!r}"

    return check


def _one_of(name: str, choices: tuple[str, ...]) -> Any:
    def check(v: Any) -> str | None:
        return None if v in choices else f"{name} must be one of {', '.join(choices)}, got {v!r}"

    return check


def _check_no_trade_band(v: Any) -> str | None:
    if _is_real(v) and 0 <= v < MAX_TURNOVER:
        return None
    return f"no_trade_band must be a finite number in [0, {MAX_TURNOVER:g}) (a turnover), got {v!r}"


def _check_rebalance_fraction(v: Any) -> str | None:
    return None if _is_real(v) and 0 < v <= 1 else f"rebalance_fraction must be a finite number in (0, 1], got {v!r}"


def _check_max_weight(v: Any) -> str | None:
    if v is None or (_is_real(v) and 0 < v <= 1):
        return None
    return f"max_weight must be null (no cap) or a number in (0, 1] (the largest weight of one asset), got {v!r}"


def _check_max_cash(v: Any) -> str | None:
    if v is None or (_is_real(v) and 0 <= v <= 1):
        return None
    return f"max_cash must be null (no cap) or a number in [0, 1] (the largest cash weight), got {v!r}"


def _check_max_turnover(v: Any) -> str | None:
    if v is None or (_is_real(v) and 0 < v <= MAX_TURNOVER):
        return None
    return (
        f"max_turnover must be null (no limit) or a number in (0, {MAX_TURNOVER:g}] (a turnover per day: the L1 "
        f"distance of the asset weights), got {v!r}"
    )


_CHECKS = {
    "cost_bps": _check_cost_bps,
    "episode_len": _check_episode_len,
    "reward": _check_reward,
    "temperature": _positive("temperature"),
    "action": _one_of("action", ACTIONS),
    "tilt_reference": _one_of("tilt_reference", TILT_REFERENCES),
    "tilt_scale": _positive("tilt_scale"),
    "no_trade_band": _check_no_trade_band,
    "rebalance_fraction": _check_rebalance_fraction,
    "max_weight": _check_max_weight,
    "max_cash": _check_max_cash,
    "max_turnover": _check_max_turnover,
    "features": _one_of("features", FEATURE_SETS),
}
_FLOATS = (
    "cost_bps",
    "temperature",
    "tilt_scale",
    "no_trade_band",
    "rebalance_fraction",
    "max_weight",
    "max_cash",
    "max_turnover",
)


@dataclass(frozen=True)
class PortfolioSettings:
    """How the env trades and what it rewards (see :class:`envs.portfolio.PortfolioEnv` for the semantics).

    Attributes:
        cost_bps: transaction costs in basis points of the traded value, in ``[0, MAX_COST_BPS]``.
        episode_len: training episode length in days (evaluation splits are one full pass).
        reward: a name of ``envs.rewards.REWARD_NAMES``.
        temperature: softmax temperature of ``action="softmax"``.
        action: ``"softmax"`` (scores -> weights) or ``"tilt"`` (scores tilt a reference portfolio).
        tilt_reference: ``"equal_weight"`` or ``"previous"`` (the current drifted weights); tilt only.
        tilt_scale: log-weight change of a score of 1; tilt only.
        no_trade_band: turnover (L1 distance of asset weights) within which the env does not trade;
            beyond it only the part of the move outside the band is traded.
        rebalance_fraction: the fraction of the (remaining) move that is traded each day, in ``(0, 1]``.
        max_weight: position limit: each asset's weight is at most this, in ``(0, 1]``; ``None``: no cap.
        max_cash: position limit: the cash weight is at most this, in ``[0, 1]``; ``None``: no cap. Caps under
            which no weights sum to 1 (``N * max_weight + max_cash < 1``) are refused when the env is built,
            where ``N`` is known (``envs.limits.check_feasible``).
        max_turnover: position limit: the day's turnover (as ``no_trade_band``: the L1 distance of the asset
            weights) is at most this, in ``(0, 2]``; ``None``: no limit. The caps win over it when the drift
            has pushed the portfolio over a cap (``envs.limits``).
        features: the observed feature sets, one of ``FEATURE_SETS`` (``envs.features``): ``"asset"`` (each
            asset's own features), ``"+rank"`` adds their cross-sectional ranks, ``"+market"`` the market-wide
            features every asset shares. It selects the market's arrays, so an env built on a ``MarketData``
            must be given that market's set.
    """

    cost_bps: float = 10.0
    episode_len: int = 252
    reward: str = "default"
    temperature: float = 3.0
    action: str = ACTION_SOFTMAX
    tilt_reference: str = TILT_EQUAL_WEIGHT
    tilt_scale: float = 1.0
    no_trade_band: float = 0.0
    rebalance_fraction: float = 1.0
    max_weight: float | None = None
    max_cash: float | None = None
    max_turnover: float | None = None
    features: str = FEATURES_ASSET

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            self.check(f.name, value)
            if f.name in _FLOATS and value is not None:
                object.__setattr__(self, f.name, float(value))  # 10 and 10.0 are the same setting

    @staticmethod
    def check(name: str, value: Any) -> Any:
        """Validate one setting; returns it unchanged or raises a ValueError naming the setting."""
        problem = _CHECKS[name](value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PortfolioSettings:
        """Settings from a plain dict (e.g. Ray's ``env_config``); unknown keys are errors."""
        unknown = sorted(set(values) - set(SETTING_NAMES))
        if unknown:
            raise ValueError(f"unknown env setting(s) {', '.join(unknown)}; valid: {', '.join(SETTING_NAMES)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> PortfolioSettings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PortfolioSettings))
LIMIT_NAMES = ("max_weight", "max_cash", "max_turnover")  # the position limits among them (envs.limits)
