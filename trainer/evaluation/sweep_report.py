"""The summary of a sweep or study: every trial backtested, paired with Equal Weight, statistics per configuration.

For each trial, its best checkpoint (by the sweep's selection metric, which reads validation windows only) is
evaluated on the validation and test windows of its fold by ``trainer.evaluation.simulation.simulate``, the same code as
``python -m trainer.backtest``. Every figure is paired with Equal Weight over the same days and costs. Per
configuration (the swept keys other than seed and fold) the summary gives, across seeds and folds: median
and interquartile range, a block-bootstrap 95% interval of the median Sharpe difference to Equal Weight
(``trainer.evaluation.stats``), and the fraction of runs that beat Equal Weight. The best configuration is chosen by its
median validation score; its deflated Sharpe ratio corrects for having picked the best of several.

A population trial (``sac.population``: K agents of one configuration) counts as K runs: one row per agent
(trial ``<trial>/agent<i>``, the agent's seed), scored by the kept checkpoint with the agent's own best
validation score and evaluated as that agent alone, so every statistic across seeds and folds is the same as
for K separate trials.

With ``sweep.benchmark`` every test window is also paired with a benchmark series, the same way
(``trainer.evaluation.sweep_benchmark``). The statistics per configuration are in ``sweep_stats``.

Writes ``trials.parquet``, ``test_returns.parquet`` (daily test returns of every trial and of Equal Weight, and of
the benchmark when there is one), ``summary.json``, ``summary.md`` and the plots into the experiment directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.evaluation import stats
from trainer.evaluation.baselines import EQUAL_WEIGHT, MAX_SHARPE, MIN_VOLATILITY, BaselineRuns, run_baselines
from trainer.evaluation.report import nan_to_none
from trainer.evaluation.sweep_benchmark import benchmark_trials, configuration_benchmark_stats
from trainer.evaluation.sweep_stats import (
    PAIRED,
    SPLITS,
    TRIAL_MEASURES,
    configuration_stats,
    ensemble_stats,
    select_best,
)
from trainer.evaluation.sweep_trials import (
    agent_best_checkpoint,
    agent_diverged,
    agent_trial_id,
    best_checkpoint,
    config_value,
    error_line,
    label,
    row_agent,
    stored_configs,
    trial_config,
    trial_members,
    trial_status,
)
from trainer.experiment.config import FOLD_KEY, SEED_KEY, SWEEPABLE, Experiment
from trainer.metrics import registry as M

SUMMARY_BASELINES = (EQUAL_WEIGHT, MIN_VOLATILITY, MAX_SHARPE)


@dataclass
class _Baselines:
    """Baseline runs per window, computed once per distinct env config (fold, costs)."""

    cache: dict[str, dict[str, BaselineRuns]] = field(default_factory=dict)
    fold_of: dict[str, Any] = field(default_factory=dict)  # cache key -> fold

    def runs(self, sim: Any) -> BaselineRuns:
        return self.runs_for(sim.env_config, sim.market)

    def runs_for(self, env_config: dict[str, Any], market: Any) -> BaselineRuns:
        """Every baseline on the window of ``env_config["split"]``, computed once per distinct config."""
        from envs.portfolio import PortfolioEnv

        split = env_config["split"]
        env_cfg = {k: v for k, v in env_config.items() if k != "split"}
        key = json.dumps(env_cfg, sort_keys=True, default=str)
        per_split = self.cache.setdefault(key, {})
        self.fold_of[key] = env_config.get("fold")
        if split not in per_split:
            kwargs = {k: v for k, v in env_cfg.items() if k != "data"}
            per_split[split] = run_baselines(lambda: PortfolioEnv(data=market, **kwargs, split=split), market, split)
        return per_split[split]


def _windows(market: Any) -> dict[str, list[str]]:
    """The ISO first and last day of each window of a market (a fold's, or the plain split)."""
    return {
        name: [str(market.dates[rng.start].date()), str(market.dates[rng.end].date())]
        for name, rng in market.splits.items()
    }


def collect_trials(
    results: Any, exp: Experiment, metric: str, mode: str, stored: dict[str, dict[str, Any]]
) -> tuple[pd.DataFrame, dict, dict]:
    """One row per trial (its best checkpoint evaluated on every split), daily test returns, fold windows.

    ``stored``: the trials' configurations as Tune stored them (``stored_configs``), for trials without results.
    """
    from trainer.evaluation.simulation import simulate

    swept = [k for k in exp.sweep.search_space if k not in (SEED_KEY, FOLD_KEY)]
    baselines = _Baselines()
    rows, returns, folds, test_envs = [], {}, {}, {}
    for result in results:
        config = trial_config(result, stored)
        values = {k: config_value(config, SWEEPABLE[k]) for k in swept}
        if exp.sweep.variants:
            values = {"variant": exp.variant_of(config.get("env_config") or {}), **values}
        metrics = result.metrics or {}
        fold = config_value(config, SWEEPABLE[FOLD_KEY])
        status = trial_status(result, exp)
        for agent, seed in trial_members(config):
            if agent is None:
                trial_id = Path(result.path).name
                ckpt, best_score = best_checkpoint(result, metric, mode)
            else:
                trial_id = agent_trial_id(Path(result.path).name, agent)
                ckpt, best_score = agent_best_checkpoint(result, agent, metric, mode)
            row: dict[str, Any] = {
                "trial": trial_id,
                "config": label(values),
                **{k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()},
                "seed": seed,
                "agent": agent,
                "fold": fold,
                "status": M.STATUS_DIVERGED if status != M.STATUS_ERROR and agent_diverged(metrics, agent) else status,
                "env_steps": int(metrics.get(M.PORTFOLIO, {}).get(M.ENV_STEPS, 0) or 0),
                "iterations": int(metrics.get(M.TRAINING_ITERATION, 0) or 0),
                "best_checkpoint": ckpt,
                "best_checkpoint_score": best_score if ckpt else math.nan,
                "error": error_line(result.error),
            }
            for split in SPLITS:
                for m in TRIAL_MEASURES:
                    row[M.split_key(split, m.key)] = math.nan
                for key in PAIRED:
                    row[M.split_key(split, f"{key}_minus_ew")] = math.nan
            if ckpt:
                for split in SPLITS:
                    sim = simulate(ckpt, split, baselines=False, agent=agent)
                    ew = baselines.runs(sim)[EQUAL_WEIGHT]
                    sac = M.performance(sim.runs["sac"])
                    ew_perf = M.performance(ew)
                    for m in TRIAL_MEASURES:
                        row[M.split_key(split, m.key)] = sac[m.key]
                    for key in PAIRED:
                        row[M.split_key(split, f"{key}_minus_ew")] = sac[key] - ew_perf[key]
                    folds.setdefault(fold, _windows(sim.market))
                    if split == "test":
                        returns[trial_id] = (fold, sim.runs["sac"].net_returns, ew.net_returns)
                        test_envs[trial_id] = (sim.env_config, sim.market)
            rows.append(row)
    trials = pd.DataFrame(rows).sort_values(["config", "fold", "seed", "trial"], na_position="first")
    extra = {"baselines": baselines, "windows": folds, "test_envs": test_envs}
    return trials.reset_index(drop=True), returns, extra


def _not_fitted(baselines: _Baselines) -> dict[str, list[str]]:
    """The summary baselines that could not be fitted on some window, with each distinct reason."""
    out: dict[str, list[str]] = {}
    for per_split in baselines.cache.values():
        for runs in per_split.values():
            for name, reason in runs.not_fitted.items():
                if name in SUMMARY_BASELINES and reason not in out.setdefault(name, []):
                    out[name].append(reason)
    return out


def _baseline_table(baselines: _Baselines) -> dict[str, dict[str, Any]]:
    """Each summary baseline's median (over folds) Sharpe and total return per split (the windows where it
    could be fitted)."""
    per: dict[str, dict[str, list[float]]] = {}
    for per_split in baselines.cache.values():
        for split, runs in per_split.items():
            for name in SUMMARY_BASELINES:
                if name not in runs:  # not fitted there: listed by _not_fitted
                    continue
                perf = M.performance(runs[name])
                for key in (M.SHARPE, M.TOTAL_RETURN):
                    per.setdefault(name, {}).setdefault(M.split_key(split, key), []).append(perf[key])
    return {name: {k: float(np.median(v)) for k, v in cols.items()} for name, cols in per.items()}


def _baselines_by_fold(baselines: _Baselines) -> list[dict[str, Any]]:
    """Each fold's baseline test Sharpe ratios (once per fold and distinct result, e.g. per cost level)."""
    out: list[dict[str, Any]] = []
    for key, per_split in baselines.cache.items():
        if "test" in per_split:
            runs = per_split["test"]
            sharpe = {name: M.performance(runs[name])[M.SHARPE] for name in SUMMARY_BASELINES if name in runs}
            entry = {"fold": baselines.fold_of[key], "test_sharpe": sharpe}
            if entry not in out:  # variants differing in agent-only settings share the baselines' results
                out.append(entry)
    return sorted(out, key=lambda x: str(x["fold"]))


def summarize_sweep(results: Any, exp: Experiment, exp_dir: Path) -> dict[str, Any]:
    """Evaluate every trial, compute the statistics, write the summary files; returns ``summary.json``."""
    from trainer.evaluation.sweep_tables import summary_markdown, sweep_plots

    sweep = exp.sweep
    stored = stored_configs(exp_dir)
    trials, returns, extra = collect_trials(results, exp, sweep.metric, sweep.mode, stored)
    bench = benchmark_trials(sweep.benchmark, trials, returns, extra["test_envs"]) if sweep.benchmark else None
    trials.to_parquet(exp_dir / "trials.parquet")
    _write_returns(returns, exp_dir / "test_returns.parquet", bench.returns if bench else {})
    groups = configuration_stats(trials, returns, sweep.bootstrap_samples, sweep.metric, sweep.mode)
    if bench is not None and bench.section["error"] is None:
        configuration_benchmark_stats(groups, trials, returns, bench.returns, sweep.bootstrap_samples)
    best_group = select_best(groups, sweep.mode)
    if best_group is not None:
        best_group["deflated_sharpe_vs_ew"] = stats.deflated_sharpe(
            best_group["_excess"], [g["_excess"] for g in groups]
        )
    for g in groups:
        del g["_excess"]
    best_trial = None
    if best_group is not None:
        cand = trials[(trials["config"] == best_group["config"]) & trials["best_checkpoint"].notna()]
        if len(cand):
            order = cand.sort_values("best_checkpoint_score", ascending=sweep.mode == "min")
            best_trial = order.iloc[0].to_dict()
    ensembles = ensemble_stats(trials, extra, sweep.bootstrap_samples)
    for g in groups:
        g["ensemble"] = ensembles.get(g["config"])
    baselines = _baseline_table(extra["baselines"])
    by_fold = _baselines_by_fold(extra["baselines"])
    curves = _curves(results, sweep.metric, trials, stored)
    plots = sweep_plots(curves, trials, groups, by_fold, exp_dir, exp.stopping.env_steps)
    backtest = None
    if best_trial is not None and sweep.backtest_best:
        from trainer.evaluation.backtest_report import run_backtest

        backtest = run_backtest(
            Path(best_trial["best_checkpoint"]),
            "test",
            out_dir=exp_dir / "best_backtest",
            agent=row_agent(best_trial["agent"]),
            benchmark=sweep.benchmark if bench is not None and bench.section["error"] is None else None,
        )
    summary = {
        "experiment": exp.name,
        "metric": sweep.metric,
        "mode": sweep.mode,
        "env_steps_per_trial": exp.stopping.env_steps,
        "folds": [
            {"fold": fold, **windows} for fold, windows in sorted(extra["windows"].items(), key=lambda x: str(x[0]))
        ],
        "trials": json.loads(trials.to_json(orient="records")),
        "configurations": groups,
        "baselines": baselines,
        "baselines_by_fold": by_fold,
        "baselines_not_fitted": _not_fitted(extra["baselines"]),
        "benchmark": bench.section if bench is not None else None,
        "best_configuration": best_group["config"] if best_group else None,
        "best_trial": best_trial,
        "best_backtest_report": str(Path(backtest["out_dir"]) / "report.md") if backtest else None,
        "plots": plots,
    }
    summary = nan_to_none(summary)
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (exp_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


def _write_returns(returns: dict[str, tuple], path: Path, benchmark: dict[str, np.ndarray]) -> None:
    """Each run's daily test returns beside Equal Weight's (and the benchmark's, with ``sweep.benchmark``)."""
    frames = [
        pd.DataFrame(
            {"trial": t, "fold": fold, "day": np.arange(len(sac)), "sac": sac, "equal_weight": ew}
            | ({"benchmark": benchmark[t]} if t in benchmark else {})
        )
        for t, (fold, sac, ew) in returns.items()
    ]
    (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_parquet(path)


def _curves(results: Any, metric: str, trials: pd.DataFrame, stored: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """Each run's selection metric over env steps: a population's agents each with their own validation
    scores (the result's per-agent section), by the trials table's row ids."""
    status = dict(zip(trials["trial"], trials["status"], strict=True))
    key = metric.removeprefix(f"{M.PORTFOLIO}/{M.VALIDATION}/")
    agents_column = f"{M.PORTFOLIO}/{M.AGENTS}"
    curves = {}
    for result in results:
        df = result.metrics_dataframe
        if df is None or M.ENV_STEPS_METRIC not in df:
            continue
        df = latest_history(df)
        steps = df[M.ENV_STEPS_METRIC].to_numpy()
        # A validation metric is measured only at validation passes; in between the result repeats the last.
        measured = np.ones(len(df), dtype=bool)
        if metric.startswith(f"{M.PORTFOLIO}/{M.VALIDATION}/") and M.VALIDATED_METRIC in df:
            measured = df[M.VALIDATED_METRIC].fillna(False).to_numpy(dtype=bool)
        for agent, _ in trial_members(trial_config(result, stored)):
            if agent is None:
                if metric in df:
                    trial_id = Path(result.path).name
                    curves[trial_id] = (
                        steps,
                        np.where(measured, df[metric].to_numpy(dtype=float), np.nan),
                        status[trial_id],
                    )
                continue
            if agents_column not in df:
                continue
            trial_id = agent_trial_id(Path(result.path).name, agent)
            values = np.array(
                [_agent_value(cell, agent, key) for cell in df[agents_column]],
                dtype=float,
            )
            curves[trial_id] = (steps, np.where(measured, values, np.nan), status[trial_id])
    return curves


def latest_history(df: pd.DataFrame) -> pd.DataFrame:
    """A trial's result rows as its final run saw them. A trial resumed from a checkpoint repeats the
    iterations reported after that checkpoint, and Tune appends the repeats to the rows of the interrupted
    run (env steps 300, 600, 900, 1200, 900, 1200, ...); the rows a later row restarted from are dropped, so the
    history climbs in env steps."""
    steps = df[M.ENV_STEPS_METRIC].to_numpy(dtype=float)
    # the lowest env steps of the rows after each row (a row without env steps is dropped and bounds nothing)
    later_min = np.append(np.minimum.accumulate(np.nan_to_num(steps, nan=math.inf)[::-1])[::-1][1:], math.inf)
    return df[steps < later_min].reset_index(drop=True)


def _agent_value(cell: Any, agent: int, key: str) -> float:
    """Agent ``agent``'s validation ``key`` in one result's per-agent section (NaN where not reported)."""
    if not isinstance(cell, list | tuple | np.ndarray) or agent >= len(cell):
        return math.nan
    value = (cell[agent].get(M.VALIDATION) or {}).get(key)
    return math.nan if value is None else float(value)
