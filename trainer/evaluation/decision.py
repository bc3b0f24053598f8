"""Tomorrow's portfolio from a trained policy: one backtest day, run on the prices up to today.

The decision is a backtest step without the step: the env is placed on the price file's last row holding
the current (drifted) weights (``PortfolioEnv.place``), the policy acts on that observation (features,
frozen filter, tanh of the Gaussian mean), and the action goes through the env's own ``weights_from_action``
(softmax or tilt) and ``traded_weights`` (no-trade band, partial rebalancing, position limits). So on every
day of a backtest window, deciding on the prices up to that day from the backtest's drifted weights gives
the backtest's weights exactly (``tests/trainer/evaluation/test_decision.py``). A seed ensemble averages its
members' targets before the band and limits, as the sweep report's ensemble does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.data import PriceData, load_prices
from envs.fingerprint import WINDOWS_KEY, changed_windows
from envs.market import MarketData, market_for_decision
from envs.portfolio import PortfolioEnv
from trainer.evaluation.holdings import Holdings
from trainer.evaluation.policy import Policy, load_policy, population_seeds
from trainer.evaluation.universe import universe_problem
from trainer.runtime.checkpoint import DATA_KEY, CheckpointError

DEFAULT_MAX_STALE_DAYS = 5  # business days between the last price and --as-of before a decision is refused
_WINDOW_KEYS = ("data", "split", "split_dates", "folds", "fold", "date_format", "sort_dates")


class DecisionError(ValueError):
    """A decision that cannot be made from these inputs; the message names the file, ticker or date and the fix."""


@dataclass(frozen=True)
class Member:
    """One policy of a decision: a checkpoint, and the agent of a population checkpoint (None: its one policy)."""

    checkpoint: Path
    agent: int | None = None


@dataclass
class Decision:
    """What to hold after trading on ``date`` (weights: the policy's assets in its order, then cash).

    ``mapped`` is the policy's target from its action (an ensemble's: the mean of its members'), ``banded`` that
    target after the no-trade band and partial rebalancing, ``target`` after the position limits too: the
    portfolio traded to. Turnover and cost follow the env's definitions.
    """

    date: pd.Timestamp
    tickers: list[str]
    current: NDArray[np.float64]
    mapped: NDArray[np.float64]
    banded: NDArray[np.float64]
    target: NDArray[np.float64]
    turnover: float
    cost_bps: float
    settings: dict[str, Any]
    members: list[Member]
    last_prices: NDArray[np.float64]
    warnings: list[str] = field(default_factory=list)

    @property
    def expected_cost(self) -> float:
        """The trade's cost as a fraction of the portfolio's value (turnover x cost_bps / 1e4)."""
        return self.turnover * self.cost_bps * 1e-4

    @property
    def holding_day(self) -> pd.Timestamp:
        """The next business day: the first day the new weights earn their return."""
        return self.date + pd.offsets.BDay(1)


def load_members(members: list[Member]) -> tuple[list[Policy], dict[str, Any]]:
    """Each member's deterministic policy (the safe policy files of its checkpoint) and the first's state.

    Raises:
        DecisionError: a checkpoint that cannot be used, or members trained on other universes or settings.
    """
    policies, states = [], []
    for m in members:
        try:
            policy, state = load_policy(m.checkpoint, usable=True, agent=m.agent)
        except CheckpointError as exc:
            raise DecisionError(str(exc)) from None
        policies.append(policy)
        states.append(state)
    first = states[0]
    for m, state in zip(members[1:], states[1:], strict=True):
        if state["tickers"] != first["tickers"] or env_settings(state) != env_settings(first):
            raise DecisionError(
                f"{m.checkpoint}: an ensemble's members must share one universe and one set of env settings; "
                f"{members[0].checkpoint} differs"
            )
    return policies, first


def env_settings(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's env settings (costs, action mapping, band, limits, ...) without its data windows."""
    env_config = dict(state["env_config"])
    return {k: v for k, v in env_config.items() if k not in (*_WINDOW_KEYS, "population_seeds")}


def read_prices(prices: Path | str | PriceData, state: dict[str, Any]) -> PriceData:
    """The price file through the training data's reader and validation (or prices already read that way),
    holding exactly the policy's tickers (in any column order).

    Raises:
        DecisionError: unreadable or invalid prices, or other tickers than the policy's.
    """
    from envs.data import DataError

    if isinstance(prices, PriceData):
        data = prices
    else:
        env_config = state["env_config"]
        try:
            data = load_prices(
                prices, date_format=env_config.get("date_format"), sort_dates=bool(env_config.get("sort_dates"))
            )
        except (DataError, ValueError) as exc:
            raise DecisionError(str(exc)) from None
    problem = universe_problem(list(state["tickers"]), data.tickers, data.source)
    if problem:
        raise DecisionError(problem)
    return data


def read_market(prices: Path | str | PriceData, state: dict[str, Any]) -> MarketData:
    """``read_prices``' prices as a market for a decision on their last day, columns in the policy's order,
    with the checkpoint's feature set (the columns ordered first: the shared features average over the assets in
    the training data's order, to the last bit).

    Raises:
        DecisionError: ``read_prices``' problems, or too little history for the features.
    """
    from envs.data import DataError

    data = read_prices(prices, state)
    tickers = list(state["tickers"])
    if data.tickers != tickers:
        data = PriceData(data.source, data.form, data.prices[tickers], data.warnings)
    try:
        return market_for_decision(data, state["env_config"].get("features"))
    except (DataError, ValueError) as exc:
        raise DecisionError(str(exc)) from None


def check_fresh(market: MarketData, where: str, as_of: pd.Timestamp, max_stale_days: int) -> None:
    """Refuse prices that end more than ``max_stale_days`` business days before ``as_of``, or after it."""
    last = market.dates[-1].normalize()
    as_of = pd.Timestamp(as_of).normalize()
    if last > as_of:
        raise DecisionError(
            f"{where}: the last price is on {last.date()}, after --as-of {as_of.date()}; a decision uses prices up "
            "to its date: cut the file there or pass a later --as-of"
        )
    stale = int(np.busday_count(last.date(), as_of.date()))
    if stale > max_stale_days:
        raise DecisionError(
            f"{where}: the last price is on {last.date()}, {stale} business days before {as_of.date()} (--as-of); "
            f"a decision needs the latest close (at most --max-stale-days {max_stale_days}): update the prices"
        )


def _warnings(state: dict[str, Any], market: MarketData) -> list[str]:
    record = state.get(DATA_KEY) or {}
    out = changed_windows(record, market) if record else []
    train = (record.get(WINDOWS_KEY) or {}).get("train")
    if train and market.dates[-1] <= pd.Timestamp(train["end"]):
        out.append(
            f"the decision date {market.dates[-1].date()} is inside the training window {train['start']} .. "
            f"{train['end']}: the policy was trained on this day"
        )
    return out


def decide(
    members: list[Member],
    prices: Path | str | PriceData,
    holdings: Holdings | None = None,
    *,
    as_of: pd.Timestamp | None = None,
    max_stale_days: int = DEFAULT_MAX_STALE_DAYS,
    loaded: tuple[list[Policy], dict[str, Any]] | None = None,
) -> Decision:
    """The portfolio to trade to on the price file's last date.

    Args:
        members: the policies (one, or a seed ensemble to average).
        prices: a price file ending on the decision date (CSV/Parquet, or ``"sp500"``), or prices read from one.
        holdings: the weights held now (None: all cash).
        as_of: today (default), for the staleness check; ``max_stale_days`` business days of slack.
        loaded: the members already loaded (``load_members``), to decide many days without reloading them.

    Raises:
        DecisionError: every input problem, in one line naming the file, ticker or date and the fix.
    """
    policies, state = loaded or load_members(members)
    market = read_market(prices, state)
    check_fresh(market, market.data.source, pd.Timestamp.today() if as_of is None else as_of, max_stale_days)
    n = len(market.tickers)
    current = holdings.weights if holdings is not None else np.append(np.zeros(n), 1.0)
    if current.shape != (n + 1,):
        raise DecisionError(f"holdings: {current.shape[0]} weights for a universe of {n} assets and cash")
    env = PortfolioEnv(data=market, split="test", **env_settings(state))
    t = len(market.dates) - 1
    obs = env.place(t, current)
    targets = [env.weights_from_action(policy(obs)) for policy in policies]
    mapped = targets[0] if len(targets) == 1 else np.mean(targets, axis=0)
    banded, target = env.traded_weights(mapped)
    turnover = float(np.abs(target[:n] - current[:n]).sum())
    return Decision(
        date=market.dates[t],
        tickers=list(market.tickers),
        current=np.asarray(current, dtype=np.float64),
        mapped=mapped,
        banded=banded,
        target=target,
        turnover=turnover,
        cost_bps=float(env.cost_bps),
        settings=env.settings.as_dict(),
        members=members,
        last_prices=market.data.prices.iloc[t].to_numpy(dtype=np.float64),
        warnings=_warnings(state, market),
    )


def population_members(checkpoint: Path, state: dict[str, Any]) -> list[Member]:
    """Every agent of a population checkpoint, as ensemble members (a single agent: the checkpoint itself)."""
    seeds = population_seeds(state)
    return [Member(checkpoint, i) for i in range(len(seeds))] if seeds else [Member(checkpoint)]
