"""Strategies against a benchmark series over an evaluated window: the ``benchmark`` section of a backtest.

The benchmark (``envs.benchmark``: skfolio's bundled S&P 500 index or ``FILE:COLUMN``) is read and checked before
anything runs; its daily returns over the window's holding periods are paired day by day with each strategy's
net returns, and the figures are the registry's ``BENCHMARK`` measures (``trainer.metrics.measures``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from envs.benchmark import Benchmark
from trainer.metrics import measures
from trainer.metrics import registry as M

# How the figures are defined, for reports (the measures' docstrings say the same).
CONVENTIONS = (
    "daily simple returns over the same days; excess return = mean daily (strategy - benchmark) x 252 "
    "(arithmetic: the difference of the annualised returns); tracking error = sample std (ddof 1) of the daily "
    "differences x sqrt(252); information ratio = excess return / tracking error; beta = cov(strategy, "
    "benchmark) / var(benchmark), both ddof 1"
)


# The benchmark's own figures over the window (registry keys), beside the strategies' in the report.
_OWN = {
    M.TOTAL_RETURN: measures.total_return,
    M.ANNUALIZED_RETURN: measures.annualized_return,
    M.SHARPE: measures.sharpe_annualized,
    M.MAX_DRAWDOWN: measures.max_drawdown,
}


def own_figures(returns: NDArray[np.float64]) -> dict[str, float]:
    """The benchmark's own figures over the window, by registry key."""
    return {key: measure(returns) for key, measure in _OWN.items()}


def benchmark_section(
    benchmark: Benchmark, returns: NDArray[np.float64], strategies: dict[str, NDArray[np.float64]]
) -> dict[str, Any]:
    """The ``benchmark`` section of ``backtest.json``: what the benchmark is, its own figures, and each
    strategy's figures against it (``strategies``: daily net returns over the same days)."""
    return {
        "spec": benchmark.spec,
        "source": benchmark.source,
        "column": benchmark.column,
        "label": benchmark.label,
        "notes": list(benchmark.notes),
        "conventions": CONVENTIONS,
        **own_figures(returns),
        "strategies": {name: M.relative_performance(r, returns) for name, r in strategies.items()},
    }


def own_line(section: dict[str, Any], n_days: int) -> str:
    """One line: the benchmark, its source and its own figures over the window."""
    shown = ", ".join(f"{M.BY_KEY[key].label} {M.BY_KEY[key].format(section[key])}" for key in _OWN)
    return f"benchmark: {section['label']} ({section['spec']}) over the same {n_days} days: {shown}"


def report_section(section: dict[str, Any], n_days: int) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The report's section against the benchmark: its lines, and each strategy's figures."""
    return [own_line(section, n_days), CONVENTIONS, *section["notes"]], section["strategies"]


def relative_text(section: dict[str, Any], n_days: int) -> str:
    """The section against the benchmark for the terminal: its first line, the table and its notes."""
    from trainer.evaluation.report import text_table

    table = text_table(section["strategies"], M.shown_in(M.BENCHMARK))
    return "\n".join(["", own_line(section, n_days), table, *(f"note: {n}" for n in section["notes"])])
