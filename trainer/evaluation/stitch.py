"""A replayed history of rolling rounds as if it had been live: the live models' decisions stitched day by day.

The window runs from the close of the first day a model was live to the data's last date, in one pass through
the env (so holdings, drift and costs carry over when the live model changes, as they would in an account). On
each day the action comes from the model that was live after that day's round (each round decides at its
date's close, with prices up to that date only), through that model's own frozen observation filter. Two
references over the same days, costs and env: Equal Weight, and never retraining (the first live model kept
throughout). The paired statistics are the study's: Sharpe differences with 95% block-bootstrap intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from envs.data import PriceData
from envs.portfolio import PortfolioEnv
from trainer.evaluation import stats
from trainer.evaluation.baselines import EQUAL_WEIGHT, equal_weight_rule
from trainer.evaluation.policy import load_policy
from trainer.evaluation.runs import EvalRun, run_policy, run_weights
from trainer.evaluation.simulation import SAC, simulate
from trainer.metrics import registry as M
from trainer.runtime import registry as R
from trainer.runtime.run_dir import write_atomic

STITCHED = "live_models"
NEVER_RETRAINED = "never_retrained"
SIMULATION_FILE = "simulation.json"  # in the registry: the replay's rounds, live models and figures
SIMULATION_RETURNS = "simulation_returns.csv"  # the three daily return series


@dataclass(frozen=True)
class LivePeriod:
    """A model that went live at the close of ``date`` (a round's date), until the next one did."""

    date: str
    round: str
    checkpoint: Path
    agent: int | None


def _stitched_run(env: PortfolioEnv, periods: list[LivePeriod], dates: Any, first_row: int) -> EvalRun:
    """One pass through ``env`` (from ``first_row``) whose action each day comes from the model live at that
    day's close."""
    policies = [load_policy(p.checkpoint, usable=True, agent=p.agent)[0] for p in periods]
    starts = [int(dates.searchsorted(p.date)) for p in periods]  # the row of each model's first decision
    row = [first_row]  # run_policy asks for one action per day, in order

    def live_policy(obs: Any) -> Any:
        current = max(i for i, start in enumerate(starts) if start <= row[0])
        row[0] += 1
        return policies[current](obs)

    return run_policy(env, live_policy)


def track_record(
    periods: list[LivePeriod], data: str, split_dates: dict[str, list[str]], n_boot: int
) -> tuple[dict[str, Any], dict[str, EvalRun]]:
    """The stitched live models, Equal Weight and the first live model kept, over the validation window of
    ``split_dates`` (the first live date to the data's end), and their paired comparisons.

    Args:
        periods: the live models in the order they went live; the first one's date starts the window.
        data: the full prices.
        split_dates: windows whose validation window is the replayed one (its training window: the first
            live model's, which ends before it).
        n_boot: bootstrap replicates of the intervals.

    Returns:
        ``(figures, runs)``: JSON-ready figures, and the three daily runs by name.
    """
    first = periods[0]
    sim = simulate(
        first.checkpoint, "validation", data=data, baselines=False, agent=first.agent, split_dates=split_dates
    )
    kwargs = {k: v for k, v in sim.env_config.items() if k != "data"}

    def env() -> PortfolioEnv:
        return PortfolioEnv(data=sim.market, **kwargs)

    runs = {
        STITCHED: _stitched_run(env(), periods, sim.market.dates, sim.market.splits["validation"].start),
        NEVER_RETRAINED: sim.runs[SAC],
        EQUAL_WEIGHT: run_weights(env(), equal_weight_rule(len(sim.market.tickers))),
    }
    window = sim.market.splits["validation"]
    figures: dict[str, Any] = {
        "window": [str(window.start_date.date()), str(window.end_date.date())],
        "days": int(runs[STITCHED].net_returns.size),
        **{name: {k: float(v) for k, v in M.performance(run).items()} for name, run in runs.items()},
    }
    for other in (EQUAL_WEIGHT, NEVER_RETRAINED):
        a, b = runs[STITCHED], runs[other]
        low, high = stats.median_sharpe_difference_ci({0: (b.net_returns, [a.net_returns])}, n_boot)
        diff = M.performance(a)[M.SHARPE] - M.performance(b)[M.SHARPE]
        figures[f"sharpe_minus_{other}"] = float(diff)
        figures[f"sharpe_minus_{other}_ci95"] = [low, high]
    return figures, runs


def track_record_text(figures: dict[str, Any], rounds: int, promotions: int) -> str:
    """The replay's table and paired comparisons, as printed."""
    names = {STITCHED: "live models (stitched)", NEVER_RETRAINED: "never retrained", EQUAL_WEIGHT: "Equal Weight"}
    lines = [
        f"replayed {figures['window'][0]} .. {figures['window'][1]} ({figures['days']} days): {rounds} round(s), "
        f"{promotions} promotion(s)",
        f"  {'':24} {'Sharpe':>8} {'return':>9} {'max DD':>8} {'turnover/d':>11} {'costs':>8}",
    ]
    for key, label in names.items():
        f = figures[key]
        lines.append(
            f"  {label:24} {f[M.SHARPE]:+8.3f} {f[M.TOTAL_RETURN]:+9.2%} {f[M.MAX_DRAWDOWN]:8.2%} "
            f"{f[M.TURNOVER]:11.4f} {f[M.TOTAL_COSTS]:8.2%}"
        )
    for other in (EQUAL_WEIGHT, NEVER_RETRAINED):
        lo, hi = figures[f"sharpe_minus_{other}_ci95"]
        lines.append(f"  Sharpe - {names[other]}: {figures[f'sharpe_minus_{other}']:+.3f} (95% {lo:+.3f} .. {hi:+.3f})")
    return "\n".join(lines)


def live_periods(registry: Path) -> list[LivePeriod]:
    """The models that went live in a registry's rounds, in order: each promoted round's (rollbacks aside)."""
    return [
        LivePeriod(str(rec["date"]), rid, (registry / str(rec["checkpoint"])).resolve(), rec.get("agent"))
        for rid, rec in R.rounds(registry)
        if rec.get("status") == R.STATUS_DECIDED and rec.get("promoted")
    ]


def replay_report(registry: Path, data: PriceData, n_rounds: int, n_boot: int) -> str:
    """The track record of a replay's live models (``track_record``) over ``data``, from the first live date to
    its end: written to the registry (``simulation.json``, ``simulation_returns.csv``) and returned as text."""
    periods = live_periods(registry)
    rounds = [
        {"round": rid, "date": rec["date"], "promoted": rec["promoted"], "reason": rec["reason"]}
        for rid, rec in R.rounds(registry)
        if rec.get("status") == R.STATUS_DECIDED
    ]
    summary: dict[str, Any] = {"data": data.source, "rounds": rounds}
    if not periods:
        text = f"no round of the {n_rounds} was promoted: no model was ever live, so there is no track record"
    else:
        first = R.read_round(registry, periods[0].round)
        last = str(data.prices.index[-1].date())
        windows = {"train": first["windows"]["train"], "validation": [periods[0].date, last]}
        figures, runs = track_record(periods, data.source, windows, n_boot)
        summary.update(figures=figures, live=[[p.date, p.round] for p in periods])
        text = track_record_text(figures, n_rounds, len(periods))
        index = data.prices.index[runs[STITCHED].step_indices + 1].rename("date")  # the day each return is earned
        pd.DataFrame({name: run.net_returns for name, run in runs.items()}, index=index).to_csv(
            registry / SIMULATION_RETURNS
        )
    write_atomic(registry / SIMULATION_FILE, json.dumps(summary, indent=2, default=str) + "\n")
    return f"{text}\nsummary: {registry / SIMULATION_FILE}"
