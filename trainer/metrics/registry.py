"""The metric registry (every metric declared once) and the portfolio performance measures.

Each ``Metric`` says where its value lives, its label, unit and format, whether higher is better, and where it
is shown: the progress table of ``trainer.train`` / ``trainer.tune`` (``PROGRESS``), the Ray dashboard gauges
(``GAUGE``), the backtest report (``REPORT``), the sweep summary (``SUMMARY``), the figures against a benchmark
series of the backtest and the sweep summary (``BENCHMARK``). The backtest measures also carry the function that
computes them from an evaluation run (or, against a benchmark, from the daily returns of a strategy and of the
benchmark), so adding a metric is one entry in ``REGISTRY``.

The measures themselves are in ``trainer.metrics.measures``; what a metric declares, in
``trainer.metrics.metric``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from trainer.metrics.measures import (
    Run,
    annualized_return,
    annualized_volatility,
    as_array,
    beta,
    calmar,
    excess_return,
    information_ratio,
    max_drawdown,
    run_effective_n,
    run_final_value,
    run_total_costs,
    run_turnover_per_day,
    sharpe_annualized,
    sharpe_difference,
    sortino_annualized,
    total_return,
    tracking_error,
)
from trainer.metrics.metric import PORTFOLIO, VALIDATION, Metric

# --- where values live in a training result (RLlib's nested result dict; Tune flattens with "/") ----------
# In PORTFOLIO and the training history: this iteration ran a validation pass (else VALIDATION repeats the last).
VALIDATED = "validated"
TRAINING_ITERATION = "training_iteration"  # Tune's iteration counter (ray.tune.result.TRAINING_ITERATION)

# --- keys (the registry below says what each one is) ---------------------------------------------------------
SHARPE = "sharpe"
TOTAL_RETURN = "total_return"
ANNUALIZED_RETURN = "annualized_return"
MAX_DRAWDOWN = "max_drawdown"
TURNOVER = "turnover_per_day"
SHARPE_MINUS_EW = "sharpe_minus_ew"  # Sharpe minus Equal Weight's over the same days and costs
# against a benchmark series over the same days (BENCHMARK below)
SHARPE_MINUS_BENCHMARK = "sharpe_minus_benchmark"
EXCESS_RETURN = "excess_return"
TRACKING_ERROR = "tracking_error"
INFORMATION_RATIO = "information_ratio"
BETA = "beta"
TOTAL_COSTS = "total_costs"
TRAIN_SHARPE = "train_episode_sharpe"
TRAIN_FINAL_VALUE = "train_episode_final_value"
TRAIN_TURNOVER = "train_episode_turnover"
CRITIC_LOSS = "critic_loss"
ACTOR_LOSS = "actor_loss"
ALPHA = "alpha"
ENTROPY = "entropy"
ENV_STEPS = "env_steps"
ENV_STEPS_PER_S = "env_steps_per_s"
TRAINED_SAMPLES_PER_S = "trained_samples_per_s"
EPISODE_RETURN = "episode_return_mean"
DIVERGED = "diverged"
DIVERGED_REASON = "diverged_reason"
BUFFER_SIZE = "buffer_size"
FILTER_COUNT = "obs_filter_count"
AGENTS = "agents"  # sub-section of PORTFOLIO in a population: one dict per agent (AGENT_SEED, VALIDATION, ...)
AGENT_SEED = "seed"

# --- run outcomes (trainer.train's summary.json and the sweep report) ----------------------------------------
STATUS_COMPLETED = "completed"
STATUS_EARLY = "early_stopped"
STATUS_DIVERGED = "diverged"
STATUS_INTERRUPTED = "interrupted"
STATUS_ERROR = "error"

# --- where a metric is shown -------------------------------------------------------------------------------
PROGRESS = "progress"
GAUGE = "gauge"
REPORT = "report"
SUMMARY = "summary"
BENCHMARK = "benchmark"


_EVAL = frozenset({REPORT, SUMMARY})
_REPORT = frozenset({REPORT})
_TRAINING = frozenset({PROGRESS, GAUGE})
_BENCH = frozenset({BENCHMARK})
_V = (VALIDATION,)

REGISTRY: tuple[Metric, ...] = (
    # evaluation measures of a strategy over a split (backtest report, sweep summary, validation passes)
    Metric(
        TOTAL_RETURN,
        "Total return",
        "+.1%",
        "fraction",
        True,
        _EVAL,
        "compounded net return",
        (*_V, TOTAL_RETURN),
        lambda r: total_return(r.net_returns),
    ),
    Metric(
        ANNUALIZED_RETURN,
        "Ann. return",
        "+.1%",
        "fraction/year",
        True,
        _REPORT,
        "mean daily net return x 252",
        compute=lambda r: annualized_return(r.net_returns),
    ),
    Metric(
        "annualized_volatility",
        "Ann. vol",
        ".1%",
        "fraction/sqrt(year)",
        False,
        _REPORT,
        "sample std of daily net returns x sqrt(252)",
        compute=lambda r: annualized_volatility(r.net_returns),
    ),
    Metric(
        SHARPE,
        "Sharpe",
        "+.2f",
        "ratio",
        True,
        _EVAL | {PROGRESS, GAUGE},
        "annualised Sharpe ratio of daily net returns (latest validation pass during training)",
        (*_V, SHARPE),
        lambda r: sharpe_annualized(r.net_returns),
    ),
    Metric(
        "sortino",
        "Sortino",
        "+.2f",
        "ratio",
        True,
        _REPORT,
        "annualised Sortino ratio",
        compute=lambda r: sortino_annualized(r.net_returns),
    ),
    Metric(
        MAX_DRAWDOWN,
        "Max DD",
        ".1%",
        "fraction",
        False,
        _EVAL,
        "largest peak-to-trough loss",
        (*_V, MAX_DRAWDOWN),
        lambda r: max_drawdown(r.net_returns),
    ),
    Metric(
        "calmar",
        "Calmar",
        "+.2f",
        "ratio",
        True,
        _REPORT,
        "annualised return / max drawdown",
        compute=lambda r: calmar(r.net_returns),
    ),
    Metric(
        TURNOVER,
        "Turnover/day",
        ".3f",
        "fraction/day",
        False,
        _EVAL,
        "mean one-way turnover per day",
        (*_V, TURNOVER),
        run_turnover_per_day,
    ),
    Metric(
        TOTAL_COSTS,
        "Costs",
        ".4f",
        "fraction of start value",
        False,
        _EVAL,
        "transaction costs paid over the split",
        (*_V, TOTAL_COSTS),
        run_total_costs,
    ),
    Metric(
        "effective_number_assets",
        "Eff. N",
        ".1f",
        "assets",
        None,
        _REPORT,
        "mean inverse Herfindahl index of the asset weights",
        compute=run_effective_n,
    ),
    Metric(
        "final_value",
        "Final value",
        ".3f",
        "start = 1",
        True,
        frozenset(),
        "portfolio value at the end",
        compute=run_final_value,
    ),
    Metric(
        "n_days",
        "Days",
        "d",
        "days",
        None,
        frozenset(),
        "trading days evaluated",
        compute=lambda r: int(as_array(r.net_returns).size),
    ),
    Metric(
        SHARPE_MINUS_EW,
        "Sharpe - EW",
        "+.2f",
        "ratio",
        True,
        frozenset({PROGRESS, GAUGE, SUMMARY}),
        "Sharpe ratio minus Equal Weight's over the same days and costs (latest validation pass)",
        (*_V, SHARPE_MINUS_EW),
    ),
    # against a benchmark series over the same days (``relative_performance``)
    Metric(
        SHARPE_MINUS_BENCHMARK,
        "Sharpe - bench",
        "+.2f",
        "ratio",
        True,
        _BENCH,
        "Sharpe ratio minus the benchmark's over the same days",
        relative=sharpe_difference,
    ),
    Metric(
        EXCESS_RETURN,
        "Excess return",
        "+.1%",
        "fraction/year",
        True,
        _BENCH,
        "mean daily (net return - benchmark return) x 252",
        relative=excess_return,
    ),
    Metric(
        TRACKING_ERROR,
        "Tracking error",
        ".1%",
        "fraction/sqrt(year)",
        None,
        _BENCH,
        "sample std of the daily differences to the benchmark x sqrt(252)",
        relative=tracking_error,
    ),
    Metric(
        INFORMATION_RATIO,
        "Info ratio",
        "+.2f",
        "ratio",
        True,
        _BENCH,
        "excess return / tracking error",
        relative=information_ratio,
    ),
    Metric(BETA, "Beta", ".2f", "ratio", None, _BENCH, "cov(return, benchmark) / var(benchmark)", relative=beta),
    # training progress (the portfolio section of each training result)
    Metric(ENV_STEPS, "env steps", ",d", "steps", None, frozenset({PROGRESS}), "env steps sampled so far"),
    Metric(ENV_STEPS_PER_S, "steps/s", ",.0f", "steps/s", True, _TRAINING, "env steps sampled per second"),
    Metric(
        TRAINED_SAMPLES_PER_S,
        "trained/s",
        ",.0f",
        "samples/s",
        True,
        _TRAINING,
        "replayed samples trained on per second",
    ),
    Metric(CRITIC_LOSS, "critic loss", ".4g", "loss", None, _TRAINING, "SAC critic loss (mean of the twin Q losses)"),
    Metric(ACTOR_LOSS, "actor loss", ".4g", "loss", None, frozenset(), "SAC policy loss"),
    Metric(ALPHA, "alpha", ".3g", "coefficient", None, frozenset({GAUGE}), "SAC entropy temperature alpha"),
    Metric(
        ENTROPY,
        "entropy",
        ".3g",
        "nats",
        None,
        _TRAINING,
        "policy entropy estimate (-mean log pi)",
        gauge="portfolio_policy_entropy",
    ),
    Metric(
        EPISODE_RETURN,
        "episode return",
        ".3g",
        "reward",
        True,
        frozenset({GAUGE}),
        "mean return of recent training episodes",
        gauge="portfolio_episode_return",
    ),
    Metric(
        TRAIN_FINAL_VALUE,
        "train value",
        ".3f",
        "start = 1",
        True,
        frozenset({GAUGE}),
        "final portfolio value of recent training episodes (each episode starts at 1)",
        gauge="portfolio_value",
    ),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in REGISTRY}


def split_key(split: str, key: str) -> str:
    """Column name of a measure on a split in tables and summaries, e.g. ``validation_sharpe``."""
    return f"{split}_{key}"


def shown_in(where: str) -> tuple[Metric, ...]:
    """The metrics shown in ``where`` (``PROGRESS``, ``GAUGE``, ``REPORT``, ``SUMMARY``), in registry order."""
    return tuple(m for m in REGISTRY if where in m.shown)


def evaluation_measures() -> tuple[Metric, ...]:
    """The measures computed for every validation pass (they live in the ``validation`` sub-section)."""
    return tuple(m for m in REGISTRY if m.path[:1] == _V)


def summarize(run: Run) -> dict[str, float]:
    """The compact set of measures of a validation pass (keys of ``evaluation_measures``)."""
    return {m.key: m.compute(run) for m in evaluation_measures() if m.compute is not None}


def performance(run: Run) -> dict[str, float]:
    """Every measure of one strategy over a split (the backtest's table and JSON)."""
    return {m.key: m.compute(run) for m in REGISTRY if m.compute is not None}


def relative_performance(returns: NDArray[np.float64], benchmark: NDArray[np.float64]) -> dict[str, float]:
    """Every measure of daily returns against a benchmark's daily returns over the same days."""
    return {m.key: m.relative(returns, benchmark) for m in REGISTRY if m.relative is not None}


VALIDATION_SHARPE_METRIC = BY_KEY[SHARPE].tune_key
VALIDATION_SHARPE_MINUS_EW_METRIC = BY_KEY[SHARPE_MINUS_EW].tune_key
ENV_STEPS_METRIC = BY_KEY[ENV_STEPS].tune_key
VALIDATED_METRIC = f"{PORTFOLIO}/{VALIDATED}"
DIVERGED_METRIC = f"{PORTFOLIO}/{DIVERGED}"
