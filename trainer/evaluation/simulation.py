"""A checkpoint's deterministic policy and the classical baselines run over one window, through the same env
and costs as training: the one evaluation of a checkpoint, used by ``trainer.backtest`` and the sweep report.

An evaluated window that overlaps the checkpoint's training window (other data, or another fold: the agent saw
those days) is reported in ``Simulation.warnings``; a baseline that cannot be fitted, in ``not_fitted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from envs.fingerprint import WINDOWS_KEY, changed_windows
from envs.market import MarketData, load_market_for
from envs.population import SEEDS_KEY
from envs.portfolio import PortfolioEnv
from envs.settings import PortfolioSettings
from trainer.evaluation.baselines import run_baselines
from trainer.evaluation.policy import load_policy, population_seeds
from trainer.evaluation.runs import EvalRun, run_policy
from trainer.evaluation.universe import align
from trainer.runtime.checkpoint import DATA_KEY, CheckpointError

SAC = "sac"


class BacktestError(ValueError):
    """A bad checkpoint or data for a backtest; the message says which and how to fix it."""


@dataclass
class Simulation:
    """A checkpoint's deterministic policy (and optionally the baselines) run over one split.

    ``not_fitted`` names the baselines that could not be fitted, with the reason; ``warnings`` says what
    makes the result not out-of-sample (an evaluated window that overlaps the training window).
    """

    checkpoint: Path
    split: str
    state: dict[str, Any]
    env_config: dict[str, Any]
    market: MarketData
    runs: dict[str, EvalRun]
    not_fitted: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    agent: int | None = None  # which agent of a population checkpoint (None: a single agent)
    seed: int | None = None  # that agent's seed


def _window(market: MarketData, split: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    rng = market.splits[split]
    return market.dates[rng.start], market.dates[rng.end]


def _span(window: tuple[pd.Timestamp, pd.Timestamp]) -> str:
    return f"{window[0].date()} .. {window[1].date()}"


def _describe(env_cfg: dict[str, Any]) -> str:
    fold = env_cfg.get("fold")
    return f"{env_cfg.get('data')}" + (f", fold {fold}" if fold is not None else "")


def training_overlap(state: dict[str, Any], env_cfg: dict[str, Any], market: MarketData, split: str) -> str | None:
    """A warning when the evaluated window overlaps the checkpoint's training window, else None.

    The training window is the one the checkpoint recorded when it was trained (its dates), or for a
    checkpoint without that record the one its env config gives on its data today; the evaluated one is
    ``split`` of ``market`` (maybe other data or another fold). Days in both were seen in training, so the
    result is not out-of-sample.
    """
    from envs.data import DataError

    train_cfg = dict(state["env_config"])
    recorded = ((state.get(DATA_KEY) or {}).get(WINDOWS_KEY) or {}).get("train")
    if recorded:
        trained = (pd.Timestamp(recorded["start"]), pd.Timestamp(recorded["end"]))
    else:
        try:
            trained = _window(market if _same_windows(train_cfg, env_cfg) else load_market_for(train_cfg), "train")
        except (DataError, ValueError) as exc:
            return (
                f"cannot check that the {split} window is outside the checkpoint's training window: its training "
                f"data cannot be loaded ({exc})"
            )
    evaluated = _window(market, split)
    if evaluated[0] > trained[1] or evaluated[1] < trained[0]:
        return None
    return (
        f"the {split} window {_span(evaluated)} ({_describe(env_cfg)}) overlaps the checkpoint's training window "
        f"{_span(trained)} ({_describe(train_cfg)}): the agent was trained on some of these days, so this is "
        f"NOT an out-of-sample result; evaluate on days after {trained[1].date()} or before {trained[0].date()}"
    )


def _same_windows(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("data", "split_dates", "folds", "fold", "date_format", "sort_dates")
    return all(a.get(k) == b.get(k) for k in keys)


def simulate(
    checkpoint: Path | str,
    split: str = "test",
    data: str | None = None,
    cost_bps: float | None = None,
    baselines: bool = True,
    fold: int | None = None,
    agent: int | None = None,
    split_dates: dict[str, list[str]] | None = None,
) -> Simulation:
    """Run the checkpoint's policy (frozen filter, tanh of the mean) and, with ``baselines``, every baseline.

    The one evaluation of a checkpoint: ``run_backtest`` and the sweep report both use it.

    Args:
        checkpoint: a checkpoint directory.
        split: the window to evaluate (``"test"`` or ``"validation"``).
        data: other prices with the same tickers (default: the training data).
        cost_bps: other transaction costs (default: the training costs).
        baselines: also run the classical baselines.
        fold: evaluate on this walk-forward fold's windows (of the checkpoint's fold layout) instead of the
            checkpoint's own windows.
        agent: of a population checkpoint (``sac.population``), the agent to run (0 .. K-1); required there,
            refused for a single agent.
        split_dates: evaluate on these windows (``{"train": [start, end], "validation": [...], ...}``; a
            rolling round's) instead of the checkpoint's own; not with ``fold``.
    """
    from envs.data import DataError

    checkpoint = Path(checkpoint).resolve()
    if cost_bps is not None:
        try:
            PortfolioSettings.check("cost_bps", cost_bps)
        except ValueError as exc:
            raise BacktestError(f"--cost-bps {cost_bps!r}: {exc}") from None
    try:
        # verified (manifest: sizes and hashes) and restored once for the policy and its state
        policy, state = load_policy(checkpoint, usable=True, agent=agent)
    except CheckpointError as exc:
        raise BacktestError(str(exc)) from None
    env_cfg = dict(state["env_config"])
    env_cfg.pop(SEEDS_KEY, None)  # a population's agent runs alone, in one env of its own
    if data is not None:
        env_cfg["data"] = data
    if cost_bps is not None:
        env_cfg["cost_bps"] = float(cost_bps)
    if fold is not None:
        env_cfg["fold"], env_cfg["split_dates"] = fold, None  # a fold's windows replace the split dates
    elif split_dates is not None:
        env_cfg["fold"], env_cfg["split_dates"] = None, split_dates
    env_cfg["split"] = split
    try:
        market = load_market_for(env_cfg)
    except (DataError, ValueError) as exc:
        raise BacktestError(f"{checkpoint}: {exc}" if fold is not None else str(exc)) from None
    if split not in market.splits:
        raise BacktestError(
            f"{checkpoint}: its windows have no {split} window (only {', '.join(market.splits)}: it was trained with "
            f"split dates without {split}, as a rolling round is); evaluate another split, or other windows (--fold)"
        )
    try:
        market = align(market, state["tickers"], str(env_cfg["data"]))
    except ValueError as exc:
        raise BacktestError(str(exc)) from None
    env_kwargs = {k: v for k, v in env_cfg.items() if k != "data"}

    def make_env() -> PortfolioEnv:
        return PortfolioEnv(data=market, **env_kwargs)

    runs = {SAC: run_policy(make_env(), policy)}
    not_fitted: dict[str, str] = {}
    if baselines:
        baseline_runs = run_baselines(make_env, market, split)
        runs.update(baseline_runs)
        not_fitted = baseline_runs.not_fitted
    overlap = training_overlap(state, env_cfg, market, split)
    changed = changed_windows(state[DATA_KEY], market) if state.get(DATA_KEY) else []
    seeds = population_seeds(state)
    return Simulation(
        checkpoint,
        split,
        state,
        env_cfg,
        market,
        runs,
        not_fitted,
        [*([overlap] if overlap else []), *changed],
        agent,
        seeds[agent] if seeds and agent is not None else None,
    )
