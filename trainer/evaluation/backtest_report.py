"""A backtest's files: ``backtest.json``, daily values and weights (Parquet), plots and the Markdown/HTML report.

See ``trainer.backtest`` (the command) for the list of files; ``run_backtest`` also serves the sweep report's
backtest of the best configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.settings import LIMIT_NAMES
from trainer.evaluation import report as R
from trainer.evaluation.baselines import LOOKAHEAD, descriptions
from trainer.evaluation.policy import population_seeds
from trainer.evaluation.relative import benchmark_section, report_section
from trainer.evaluation.simulation import SAC, BacktestError, Simulation, simulate
from trainer.metrics import registry as M


def default_report_name(
    checkpoint: Path, split: str, data: str | None, cost_bps: float | None, fold: int | None, agent: int | None
) -> str:
    """The report folder's name in the run directory: what was backtested, so that backtests of other
    checkpoints, agents, folds, costs or data sit side by side instead of replacing one another
    (``backtest_test_checkpoint_000010``, ``..._agent1``, ``..._cost5bps``, ``..._fold2``, ``..._data-<file>``)."""
    name = f"backtest_{split}_{checkpoint.name}"
    if agent is not None:
        name += f"_agent{agent}"
    if fold is not None:
        name += f"_fold{fold}"
    if cost_bps is not None:
        name += f"_cost{cost_bps:g}bps"
    if data is not None:
        name += f"_data-{Path(data).stem}"
    return name


def run_backtest(
    checkpoint: Path,
    split: str = "test",
    data: str | None = None,
    cost_bps: float | None = None,
    out_dir: Path | None = None,
    fold: int | None = None,
    agent: int | None = None,
    benchmark: str | None = None,
) -> dict[str, Any]:
    """Backtest ``checkpoint`` on ``split``, write the report; returns the ``backtest.json`` content.

    ``agent`` picks one agent of a population checkpoint (see ``simulate``). Without ``out_dir`` the report goes
    to ``<run dir>/<default_report_name(...)>``. ``benchmark`` (``sp500`` or ``FILE:COLUMN``, ``envs.benchmark``)
    adds every strategy's figures against that series over the same days; a benchmark that cannot be read or
    does not cover the window is refused before anything is written.
    """
    from envs.benchmark import benchmark_returns, load_benchmark, window_days
    from envs.data import DataError

    try:
        bench = load_benchmark(benchmark) if benchmark is not None else None
    except DataError as exc:
        raise BacktestError(str(exc)) from None
    sim = simulate(checkpoint, split, data, cost_bps, fold=fold, agent=agent)
    checkpoint, state, env_cfg, market, runs = sim.checkpoint, sim.state, sim.env_config, sim.market, sim.runs
    strategies = {name: M.performance(r) for name, r in runs.items()}
    relative = None
    if bench is not None:
        try:
            bench_returns = benchmark_returns(bench, window_days(market, split))
        except DataError as exc:
            raise BacktestError(str(exc)) from None
        relative = benchmark_section(bench, bench_returns, {name: r.net_returns for name, r in runs.items()})
    limits = {name: env_cfg[name] for name in LIMIT_NAMES if env_cfg.get(name) is not None}
    for name in strategies:
        strategies[name]["lookahead"] = name in LOOKAHEAD

    out_dir = (
        Path(out_dir)
        if out_dir
        else checkpoint.parent.parent / default_report_name(checkpoint, split, data, cost_bps, fold, agent)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    sac_run = runs[SAC]
    dates = market.dates[sac_run.step_indices + 1]  # value after holding from day t to t+1
    values = pd.DataFrame({name: r.values for name, r in runs.items()}, index=dates)
    values.index.name = "date"
    values.to_parquet(out_dir / "values.parquet")
    weights = pd.DataFrame(sac_run.weights, columns=[*market.tickers, "cash"], index=market.dates[sac_run.step_indices])
    weights.index.name = "date"
    weights.to_parquet(out_dir / "weights.parquet")

    rng = market.splits[split]
    first, last = market.dates[rng.start], market.dates[rng.end]
    bench_values = None
    if relative is not None:
        bench_values = pd.Series(np.cumprod(1.0 + bench_returns), index=dates, name=f"benchmark: {bench.label}")
    plots = {
        "Equity curves": R.plot_equity(
            values, out_dir / "equity.png", f"{split} split, after costs", bench_values
        ).name,
        "Drawdowns": R.plot_drawdowns(values, out_dir / "drawdowns.png").name,
        "Agent weights": R.plot_weights(weights, out_dir / "weights.png").name,
        "Training curves": R.plot_training(state.get("history") or [], out_dir / "training.png").name,
    }
    facts = [
        *(f"WARNING: {w}" for w in sim.warnings),
        f"checkpoint: {checkpoint}",
        *([_agent_line(sim)] if sim.agent is not None else []),
        f"data: {env_cfg['data']} ({len(market.tickers)} assets); split: {split}, {first.date()} .. {last.date()} "
        f"({rng.n_rows - 1} trading days)",
        f"costs: {env_cfg['cost_bps']:g} bp on turnover, paid from the portfolio value; daily rebalancing for all",
        *([_limits_line(limits)] if limits else []),
        f"agent: deterministic SAC policy (tanh of the Gaussian mean), observation filter frozen at the "
        f"checkpoint ({state.get('obs_filter_count', 0):,} observations)",
        "baselines min_volatility / max_sharpe were fitted on the training split only; the *_lookahead "
        "variants were fitted on this split itself and SAW THE FUTURE (shown for reference, not a fair comparison)",
        *(f"{name}: NOT FITTED, {reason}" for name, reason in sim.not_fitted.items()),
    ]
    R.write_report(
        out_dir,
        title=f"Backtest ({split})" + (" - OVERLAPS THE TRAINING WINDOW" if sim.warnings else ""),
        facts=facts,
        strategies=strategies,
        descriptions={SAC: "the trained agent", **descriptions(bool(limits))},
        plots=plots,
        relative=report_section(relative, rng.n_rows - 1) if relative is not None else None,
    )
    result = {
        "strategies": strategies,
        "split": split,
        "dates": {"start": str(first.date()), "end": str(last.date()), "n_days": int(rng.n_rows - 1)},
        "checkpoint": str(checkpoint),
        "data": env_cfg["data"],
        "cost_bps": env_cfg["cost_bps"],
        "limits": limits,
        "tickers": list(market.tickers),
        "fold": env_cfg.get("fold"),
        "agent": sim.agent,
        "seed": sim.seed,
        "not_fitted": sim.not_fitted,
        "benchmark": relative,
        "warnings": sim.warnings,
        "out_dir": str(out_dir),
    }
    (out_dir / "backtest.json").write_text(json.dumps(R.nan_to_none(result), indent=2))
    return result


def _limits_line(limits: dict[str, float]) -> str:
    values = ", ".join(f"{name} {value:g}" for name, value in limits.items())
    return f"position limits: {values}; every strategy trades through them (the env's projection)"


def _agent_line(sim: Simulation) -> str:
    n = len(population_seeds(sim.state) or [])
    return f"agent {sim.agent} (seed {sim.seed}) of a population of {n} trained together (sac.population)"
