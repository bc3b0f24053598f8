"""A sweep's test windows against a benchmark series (``sweep.benchmark``: ``sp500`` or ``FILE:COLUMN``).

Each run's test returns are paired day by day with the benchmark's over the same window
(``envs.benchmark.benchmark_returns``), exactly as with Equal Weight: per run the registry's ``BENCHMARK``
measures (``test_sharpe_minus_benchmark``, ``test_excess_return``, ...); per configuration, across seeds and
folds, their quantiles, the block-bootstrap 95% interval of the median Sharpe difference
(``stats.median_sharpe_difference_ci`` with the benchmark's returns in place of Equal Weight's) and the share of
runs above the benchmark's Sharpe. The benchmark is summary-only: it never reaches a trial or the selection.

``trainer.experiment.preflight`` refuses, before any trial starts, a benchmark that cannot be read or misses a day
of a test window; should it fail when the summary is written all the same (the file changed meanwhile), the
summary is written without it and says why (``benchmark.error``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.benchmark import benchmark_returns, load_benchmark, window_days
from envs.data import TEST, DataError
from trainer.evaluation import stats
from trainer.evaluation.relative import CONVENTIONS, own_figures
from trainer.metrics import registry as M

SHARPE_DIFF = M.split_key(TEST, M.SHARPE_MINUS_BENCHMARK)  # the paired figure with its interval
BEAT = "beat_benchmark_fraction"


def columns() -> list[str]:
    """The trials table's columns against the benchmark (test window), in registry order."""
    return [M.split_key(TEST, m.key) for m in M.shown_in(M.BENCHMARK)]


@dataclass
class SweepBenchmark:
    """The summary's ``benchmark`` section and, by trial id, the benchmark's returns over its test window."""

    section: dict[str, Any]
    returns: dict[str, NDArray[np.float64]] = field(default_factory=dict)


def benchmark_trials(
    spec: str, trials: pd.DataFrame, returns: dict[str, tuple], test_envs: dict[str, tuple]
) -> SweepBenchmark:
    """Add each run's figures against the benchmark to ``trials`` (NaN for a run without a checkpoint).

    Args:
        spec: ``sweep.benchmark``.
        trials: the trials table (``collect_trials``), changed in place.
        returns: by trial id, ``(fold, agent returns, Equal Weight returns)`` over its test window.
        test_envs: by trial id, ``(env config, market)`` of its test window.

    Returns:
        The section (the benchmark, its figures on each test window; ``error`` when it could not be used,
        and then no columns are added) and the benchmark's returns by trial id.
    """
    section: dict[str, Any] = {"spec": spec, "error": None}
    try:
        bench = load_benchmark(spec)
        windows = {trial_id: window_days(market, TEST) for trial_id, (_, market) in test_envs.items()}
        by_window = {(w[0], w[-1]): benchmark_returns(bench, w) for w in windows.values()}
    except DataError as exc:
        section["error"] = str(exc)
        return SweepBenchmark(section)
    section |= {
        "source": bench.source,
        "column": bench.column,
        "label": bench.label,
        "notes": list(bench.notes),
        "conventions": CONVENTIONS,
    }
    folds: dict[tuple, dict[str, Any]] = {}
    bench_returns, rows = {}, {}
    for trial_id, (fold, sac, _) in returns.items():
        window = windows[trial_id]
        b = by_window[(window[0], window[-1])]
        bench_returns[trial_id] = b
        rows[trial_id] = {M.split_key(TEST, k): v for k, v in M.relative_performance(sac, b).items()}
        folds.setdefault(
            (window[0], window[-1]),
            {"fold": fold, "test": [str(window[0].date()), str(window[-1].date())]}
            | {M.split_key(TEST, k): v for k, v in own_figures(b).items()},
        )
    for col in columns():
        trials[col] = [rows.get(t, {}).get(col, math.nan) for t in trials["trial"]]
    section["folds"] = sorted(folds.values(), key=lambda f: f["test"][0])
    return SweepBenchmark(section, bench_returns)


def configuration_benchmark_stats(
    groups: list[dict[str, Any]],
    trials: pd.DataFrame,
    returns: dict[str, tuple],
    bench_returns: dict[str, NDArray[np.float64]],
    n_boot: int,
) -> None:
    """Per configuration (``groups``, changed in place), across seeds and folds: quantiles of every figure
    against the benchmark, the paired interval of the median Sharpe difference, and the share of runs above the
    benchmark's Sharpe; as ``configuration_stats`` does against Equal Weight."""
    for entry in groups:
        g = trials[trials["config"] == entry["config"]]
        for col in columns():
            entry[col] = stats.quantiles(g[col].tolist())
        scored = g[g["best_checkpoint"].notna()]
        by_fold: dict[Any, tuple] = {}
        for trial_id in scored["trial"]:
            fold, sac, _ = returns[trial_id]
            by_fold.setdefault(fold, (bench_returns[trial_id], []))[1].append(sac)
        entry[SHARPE_DIFF]["ci95"] = list(stats.median_sharpe_difference_ci(by_fold, n_boot))
        diffs = scored[SHARPE_DIFF].to_numpy(dtype=float)
        entry[BEAT] = float((diffs > 0).mean()) if diffs.size else math.nan
