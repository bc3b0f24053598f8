"""Classical portfolios via skfolio, simulated through the same env (same costs, same daily rebalancing).

Minimum Volatility and Maximum Sharpe are fitted on the *training* split's daily returns only; the
look-ahead variants are fitted on the evaluated split itself and are labelled as such (what a naive
comparison would use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skfolio import RiskMeasure
from skfolio.optimization import MeanRisk, ObjectiveFunction

from envs.market import MarketData
from trainer.evaluation import EvalRun, run_weights

EQUAL_WEIGHT = "equal_weight"
BUY_AND_HOLD = "buy_and_hold"
MIN_VOLATILITY = "min_volatility"
MAX_SHARPE = "max_sharpe"
MIN_VOLATILITY_LOOKAHEAD = "min_volatility_lookahead"
MAX_SHARPE_LOOKAHEAD = "max_sharpe_lookahead"

DESCRIPTIONS = {
    EQUAL_WEIGHT: "Equal Weight, rebalanced daily",
    BUY_AND_HOLD: "Equal Weight bought on day 1, then held (weights drift)",
    MIN_VOLATILITY: "Minimum Volatility (skfolio MeanRisk), fitted on the training split, rebalanced daily",
    MAX_SHARPE: "Maximum Sharpe (skfolio MeanRisk), fitted on the training split, rebalanced daily",
    MIN_VOLATILITY_LOOKAHEAD: "LOOK-AHEAD: Minimum Volatility fitted on the evaluated split itself",
    MAX_SHARPE_LOOKAHEAD: "LOOK-AHEAD: Maximum Sharpe fitted on the evaluated split itself",
}
LOOKAHEAD = {MIN_VOLATILITY_LOOKAHEAD, MAX_SHARPE_LOOKAHEAD}


@dataclass(frozen=True)
class FittedWeights:
    min_volatility: NDArray[np.float64]
    max_sharpe: NDArray[np.float64]


def split_returns(market: MarketData, split: str) -> NDArray[np.float64]:
    """Daily simple returns *inside* a split: rows ``start+1 .. end`` (row t is the return t-1 -> t)."""
    rng = market.splits[split]
    return np.asarray(market.simple_returns[rng.start + 1 : rng.end + 1])


def _clean(w: NDArray) -> NDArray[np.float64]:
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)  # solver noise can leave -1e-9
    return w / w.sum()


def fit_classical(returns: NDArray[np.float64]) -> FittedWeights:
    """Minimum-variance and maximum-Sharpe long-only weights (fully invested) from daily returns."""
    mv = MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK, risk_measure=RiskMeasure.VARIANCE)
    ms = MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO, risk_measure=RiskMeasure.VARIANCE)
    return FittedWeights(_clean(mv.fit(returns).weights_), _clean(ms.fit(returns).weights_))


def _with_cash(asset_weights: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.append(asset_weights, 0.0)


def _constant(weights: NDArray[np.float64]) -> Callable[[Any], NDArray[np.float64]]:
    full = _with_cash(weights)
    return lambda env: full


def equal_weight_rule(n_assets: int) -> Callable[[Any], NDArray[np.float64]]:
    """Equal Weight over the assets (no cash), rebalanced every day: the benchmark every result is paired with."""
    return _constant(np.full(n_assets, 1.0 / n_assets))


def _buy_and_hold(n_assets: int) -> Callable[[Any], NDArray[np.float64]]:
    initial = _with_cash(np.full(n_assets, 1.0 / n_assets))

    def rule(env: Any) -> NDArray[np.float64]:
        current = env.current_weights
        return initial if current[-1] == 1.0 else current  # buy once out of cash, then hold the drift

    return rule


def run_baselines(env_factory: Callable[[], Any], market: MarketData, split: str) -> dict[str, EvalRun]:
    """Every baseline over ``split`` through fresh envs from ``env_factory``."""
    n = len(market.tickers)
    train_fit = fit_classical(split_returns(market, "train"))
    own_fit = fit_classical(split_returns(market, split))
    rules = {
        EQUAL_WEIGHT: equal_weight_rule(n),
        BUY_AND_HOLD: _buy_and_hold(n),
        MIN_VOLATILITY: _constant(train_fit.min_volatility),
        MAX_SHARPE: _constant(train_fit.max_sharpe),
        MIN_VOLATILITY_LOOKAHEAD: _constant(own_fit.min_volatility),
        MAX_SHARPE_LOOKAHEAD: _constant(own_fit.max_sharpe),
    }
    return {name: run_weights(env_factory(), rule) for name, rule in rules.items()}
