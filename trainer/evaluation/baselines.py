"""Classical portfolios via skfolio, simulated through the same env (same costs, same daily rebalancing).

Minimum Volatility and Maximum Sharpe are fitted on the *training* split's daily returns only; the
look-ahead variants are fitted on the evaluated split itself and are labelled as such (what a naive
comparison would use). A portfolio that cannot be fitted on a window (Maximum Sharpe when every asset lost
money there: no long-only portfolio has a positive Sharpe ratio) is reported as not fitted, with the reason,
and the other strategies are run as usual.

Under position limits (``data.max_weight``, ``max_cash``, ``max_turnover``) every baseline trades through the
env's limits like the agent; Minimum Volatility and Maximum Sharpe are also fitted under the same cap
(skfolio's ``max_weights``), so they are the best portfolios the caps allow, not capped after the fact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skfolio import RiskMeasure
from skfolio.exceptions import SkfolioError
from skfolio.optimization import MeanRisk, ObjectiveFunction

from envs.limits import TOLERANCE, project_capped_simplex
from envs.market import MarketData
from trainer.evaluation.runs import EvalRun, run_weights

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
# What each baseline does under position limits (added to its description when the env has limits).
UNDER_LIMITS = {
    EQUAL_WEIGHT: (
        "1/N per asset, or max_weight where that is lower with the rest in cash; under max_turnover the first "
        "purchase takes several days"
    ),
    BUY_AND_HOLD: (
        "bought as far as max_turnover allows each day until it holds Equal Weight (capped), then held; a weight "
        "that drifts over its cap is trimmed back to it by the env's projection (the excess spread equally over "
        "the other positions and cash)"
    ),
    MIN_VOLATILITY: "fitted with each weight at most max_weight (skfolio max_weights)",
    MAX_SHARPE: "fitted with each weight at most max_weight (skfolio max_weights)",
    MIN_VOLATILITY_LOOKAHEAD: "fitted with each weight at most max_weight",
    MAX_SHARPE_LOOKAHEAD: "fitted with each weight at most max_weight",
}


def descriptions(limited: bool) -> dict[str, str]:
    """Each baseline's description; with ``limited`` (the env has position limits), what the limits do to it."""
    if not limited:
        return dict(DESCRIPTIONS)
    return {name: f"{text}; under the position limits: {UNDER_LIMITS[name]}" for name, text in DESCRIPTIONS.items()}


@dataclass(frozen=True)
class FittedWeights:
    """Long-only, fully invested weights; ``None`` where the fit failed (the reason is in ``not_fitted``)."""

    min_volatility: NDArray[np.float64] | None
    max_sharpe: NDArray[np.float64] | None
    not_fitted: dict[str, str] = field(default_factory=dict)  # MIN_VOLATILITY / MAX_SHARPE -> why


class BaselineRuns(dict[str, EvalRun]):
    """The baselines' runs by name, and ``not_fitted``: the baselines that could not be fitted, with why."""

    def __init__(self, runs: dict[str, EvalRun], not_fitted: dict[str, str]) -> None:
        super().__init__(runs)
        self.not_fitted = not_fitted


def split_returns(market: MarketData, split: str) -> NDArray[np.float64]:
    """Daily simple returns *inside* a split: rows ``start+1 .. end`` (row t is the return t-1 -> t)."""
    rng = market.splits[split]
    return np.asarray(market.simple_returns[rng.start + 1 : rng.end + 1])


def _clean(w: NDArray, max_weight: float | None) -> NDArray[np.float64]:
    w = np.asarray(w, dtype=np.float64)
    if max_weight is not None:  # solver noise can leave -1e-9 or the cap + 1e-9: the exact projection
        return project_capped_simplex(w, np.full(w.size, max_weight))
    w = np.clip(w, 0.0, None)  # solver noise can leave -1e-9
    return w / w.sum()


def fit_classical(
    returns: NDArray[np.float64], window: str = "on these returns", max_weight: float | None = None
) -> FittedWeights:
    """Minimum-variance and maximum-Sharpe long-only weights (fully invested) from daily returns.

    Args:
        returns: daily simple returns, ``[days, assets]``.
        window: where the returns come from, for the reasons of a failed fit (e.g. "in the training window
            2010-01-04 .. 2012-12-31").
        max_weight: each weight's cap (the env's ``max_weight``), a constraint of the fit; ``None``: none. A cap
            under which the assets cannot be fully invested (``N * max_weight < 1``) leaves one portfolio, every
            asset at its cap (the rest is cash, see ``_with_cash``).
    """
    n_assets = returns.shape[1]
    if max_weight is not None and n_assets * max_weight < 1.0 - TOLERANCE:
        capped = np.full(n_assets, max_weight)
        return FittedWeights(capped, capped.copy())
    bounds = {} if max_weight is None else {"max_weights": max_weight}
    objectives = {MIN_VOLATILITY: ObjectiveFunction.MINIMIZE_RISK, MAX_SHARPE: ObjectiveFunction.MAXIMIZE_RATIO}
    weights: dict[str, NDArray[np.float64] | None] = {}
    not_fitted: dict[str, str] = {}
    for name, objective in objectives.items():
        if name == MAX_SHARPE and returns.size and (returns.mean(axis=0) <= 0).all():
            weights[name] = None
            not_fitted[name] = (
                f"every asset's mean daily return {window} is <= 0, so no long-only portfolio has a positive "
                "Sharpe ratio to maximise"
            )
            continue
        try:
            model = MeanRisk(objective_function=objective, risk_measure=RiskMeasure.VARIANCE, **bounds)
            weights[name] = _clean(model.fit(returns).weights_, max_weight)
        except (ValueError, SkfolioError) as exc:
            weights[name] = None
            not_fitted[name] = f"the optimiser failed {window}: {str(exc).splitlines()[0]}"
    return FittedWeights(weights[MIN_VOLATILITY], weights[MAX_SHARPE], not_fitted)


def _with_cash(asset_weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Assets, then cash: none when fully invested; what the assets cannot hold under a cap otherwise."""
    invested = float(asset_weights.sum())
    return np.append(asset_weights, 0.0 if invested >= 1.0 - TOLERANCE else 1.0 - invested)


def _constant(weights: NDArray[np.float64]) -> Callable[[Any], NDArray[np.float64]]:
    full = _with_cash(weights)
    return lambda env: full


def equal_weight_rule(n_assets: int) -> Callable[[Any], NDArray[np.float64]]:
    """Equal Weight over the assets (no cash), rebalanced every day: the benchmark every result is paired with."""
    return _constant(np.full(n_assets, 1.0 / n_assets))


def _buy_and_hold(n_assets: int) -> Callable[[Any], NDArray[np.float64]]:
    initial = _with_cash(np.full(n_assets, 1.0 / n_assets))
    buying = [True]

    def rule(env: Any) -> NDArray[np.float64]:
        current = env.current_weights
        if current[-1] == 1.0:  # an episode starts in cash: buy
            buying[0] = True
        if not buying[0]:
            return current  # hold the drift (the env's limits trim a weight that drifts over its cap)
        # buy Equal Weight once; under a turnover limit that takes as many days as the limit needs
        buying[0] = env.limits is not None and not env.limits.reaches(initial, current)
        return initial

    return rule


def _window(market: MarketData, split: str) -> str:
    rng = market.splits[split]
    return f"{rng.start_date.date()} .. {rng.end_date.date()}"


def run_baselines(env_factory: Callable[[], Any], market: MarketData, split: str) -> BaselineRuns:
    """Every baseline over ``split`` through fresh envs from ``env_factory``; unfittable ones are listed in
    ``not_fitted`` with their reason instead of run. The classical fits take the envs' ``max_weight``."""
    n = len(market.tickers)
    cap = env_factory().settings.max_weight
    train_fit = fit_classical(split_returns(market, "train"), f"in the training window {_window(market, 'train')}", cap)
    own_fit = fit_classical(
        split_returns(market, split), f"in the evaluated {split} window {_window(market, split)}", cap
    )
    rules: dict[str, Callable[[Any], NDArray[np.float64]]] = {
        EQUAL_WEIGHT: equal_weight_rule(n),
        BUY_AND_HOLD: _buy_and_hold(n),
    }
    not_fitted: dict[str, str] = {}
    fits = {
        MIN_VOLATILITY: (train_fit, MIN_VOLATILITY),
        MAX_SHARPE: (train_fit, MAX_SHARPE),
        MIN_VOLATILITY_LOOKAHEAD: (own_fit, MIN_VOLATILITY),
        MAX_SHARPE_LOOKAHEAD: (own_fit, MAX_SHARPE),
    }
    for name, (fit, objective) in fits.items():
        weights = getattr(fit, objective)
        if weights is None:
            not_fitted[name] = fit.not_fitted[objective]
        else:
            rules[name] = _constant(weights)
    return BaselineRuns({name: run_weights(env_factory(), rule) for name, rule in rules.items()}, not_fitted)
