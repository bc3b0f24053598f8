"""Statistics of a sweep's runs per configuration (the swept keys other than seed and fold), across seeds and
folds: quantiles of every measure, the paired block-bootstrap interval of the median Sharpe difference to Equal
Weight (``trainer.evaluation.stats``), the share of runs that beat it, each fold's seed ensemble, and the
selection of the best configuration on validation scores only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from envs.data import TEST, VALIDATION
from trainer.evaluation import stats
from trainer.evaluation.baselines import EQUAL_WEIGHT
from trainer.evaluation.sweep_trials import row_agent
from trainer.metrics import registry as M

SPLITS = (VALIDATION, TEST)  # the windows every trial is evaluated on
# Per-trial measures on each split, and the ones paired with Equal Weight (difference agent - EW).
TRIAL_MEASURES = tuple(m for m in M.shown_in(M.SUMMARY) if m.compute is not None)
PAIRED = (M.SHARPE, M.TOTAL_RETURN)


def configuration_stats(
    trials: pd.DataFrame, returns: dict[str, tuple], n_boot: int, score: str, mode: str
) -> list[dict[str, Any]]:
    """Per configuration, across seeds and folds: quantiles, paired interval against EW, beat-EW fraction."""
    groups = []
    for name, g in trials.groupby("config", sort=True):
        entry: dict[str, Any] = {"config": name, "trials": len(g)}
        for status in (M.STATUS_COMPLETED, M.STATUS_EARLY, M.STATUS_DIVERGED, M.STATUS_ERROR):
            entry[f"n_{status}"] = int((g["status"] == status).sum())
        scored = g[g["best_checkpoint"].notna()]
        entry["n_seeds"] = int(scored["seed"].nunique())
        entry["n_folds"] = int(scored["fold"].nunique(dropna=False)) if len(scored) else 0
        for split in SPLITS:
            for m in TRIAL_MEASURES:
                col = M.split_key(split, m.key)
                entry[col] = stats.quantiles(g[col].tolist())
            for key in PAIRED:
                col = M.split_key(split, f"{key}_minus_ew")
                entry[col] = stats.quantiles(g[col].tolist())
        entry["best_checkpoint_score"] = stats.quantiles(g["best_checkpoint_score"].tolist())
        by_fold: dict[Any, tuple] = {}
        for trial_id in scored["trial"]:
            fold, sac, ew = returns[trial_id]
            by_fold.setdefault(fold, (ew, []))[1].append(sac)
        diff = entry["test_sharpe_minus_ew"]
        diff["ci95"] = list(stats.median_sharpe_difference_ci(by_fold, n_boot))
        diffs = scored["test_sharpe_minus_ew"].to_numpy(dtype=float)
        entry["beat_ew_fraction"] = float((diffs > 0).mean()) if diffs.size else math.nan
        entry["_excess"] = np.concatenate([sac - ew for ew, sacs in by_fold.values() for sac in sacs] or [[]])
        groups.append(entry)
    return groups


def ensemble_stats(trials: pd.DataFrame, extra: dict[str, Any], n_boot: int) -> dict[str, dict[str, Any]]:
    """Per configuration: the seed ensemble of each fold (average of its seeds' target weights) on the test
    window, paired with Equal Weight like the single seeds."""
    from envs.portfolio import PortfolioEnv
    from trainer.evaluation.policy import load_policy
    from trainer.evaluation.runs import run_ensemble

    out: dict[str, dict[str, Any]] = {}
    scored = trials[trials["best_checkpoint"].notna()]
    for name, g in scored.groupby("config", sort=True):
        per_fold, by_fold = [], {}
        for fold, members in g.groupby("fold", dropna=False, sort=True):
            if len(members) < 2:
                continue
            env_config, market = extra["test_envs"][members["trial"].iloc[0]]
            kwargs = {k: v for k, v in env_config.items() if k != "data"}
            policies = [
                load_policy(ckpt, agent=row_agent(agent))[0]
                for ckpt, agent in zip(members["best_checkpoint"], members["agent"], strict=True)
            ]
            run = run_ensemble(PortfolioEnv(data=market, **kwargs), policies)
            ew = extra["baselines"].runs_for(env_config, market)[EQUAL_WEIGHT]
            perf, ew_perf = M.performance(run), M.performance(ew)
            fold_key = None if pd.isna(fold) else fold
            per_fold.append(
                {
                    "fold": fold_key,
                    "seeds": len(members),
                    "test_sharpe": perf[M.SHARPE],
                    "test_sharpe_minus_ew": perf[M.SHARPE] - ew_perf[M.SHARPE],
                    "test_total_return": perf[M.TOTAL_RETURN],
                    "test_turnover_per_day": perf[M.TURNOVER],
                    "test_total_costs": perf[M.TOTAL_COSTS],
                }
            )
            by_fold[fold_key] = (ew.net_returns, [run.net_returns])
        if not per_fold:
            continue
        diff = stats.quantiles([f["test_sharpe_minus_ew"] for f in per_fold])
        diff["ci95"] = list(stats.median_sharpe_difference_ci(by_fold, n_boot))
        out[name] = {
            "folds": per_fold,
            "test_sharpe": stats.quantiles([f["test_sharpe"] for f in per_fold]),
            "test_sharpe_minus_ew": diff,
            "beat_ew_fraction": float(np.mean([f["test_sharpe_minus_ew"] > 0 for f in per_fold])),
            "test_turnover_per_day": stats.quantiles([f["test_turnover_per_day"] for f in per_fold]),
        }
    return out


def select_best(groups: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The configuration with the best median validation score (the sweep's metric); never reads test."""
    sign = 1 if mode == "max" else -1
    candidates = [g for g in groups if np.isfinite(g["best_checkpoint_score"]["median"])]
    return max(candidates, key=lambda g: sign * g["best_checkpoint_score"]["median"], default=None)
