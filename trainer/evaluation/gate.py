"""A rolling round's candidate and its promotion gate, on the round's validation window only.

- **The candidate** is chosen as a sweep chooses: among every checkpoint the round's runs kept (each seed's, or
  each agent's of a population), the best by the experiment's selection metric (``sweep.metric``, a
  validation figure recorded in the checkpoint), skipping checkpoints written after a run (or an agent)
  diverged. A population's candidate is its best agent, not the agents' average.
- **The gate** runs the candidate, Equal Weight and the live model over the round's validation window through
  the backtest's own code (``trainer.evaluation.simulation.simulate``, with the round's windows for the live
  model) at the candidate's costs, pairs them day by day, and gives the Sharpe differences with their 95%
  block-bootstrap intervals (``trainer.evaluation.stats``, as the study's).
- **The rule** (``rolling.promote_if``): every condition set must hold; with ``compare: ci_low`` a Sharpe
  threshold is met by the lower end of the interval instead of the difference itself. A first round (no live
  model) skips ``beat_live``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.portfolio import PortfolioEnv
from trainer.evaluation import stats
from trainer.evaluation.baselines import equal_weight_rule
from trainer.evaluation.runs import EvalRun, run_weights
from trainer.evaluation.simulation import SAC, Simulation, simulate
from trainer.experiment.rolling_config import CI_LOW, VALIDATION_PREFIX, PromoteIf
from trainer.metrics import registry as M
from trainer.runtime.checkpoint import AGENT_EVALUATIONS_KEY, DIVERGED_AGENTS_KEY, CheckpointError, read_state

SHARPE_MINUS_LIVE = "sharpe_minus_live"
FIGURE_KEYS = (M.SHARPE, M.TOTAL_RETURN, M.MAX_DRAWDOWN, M.TURNOVER, M.TOTAL_COSTS)


@dataclass(frozen=True)
class Candidate:
    """The selected checkpoint, its agent (of a population; None for one agent) and its selection score."""

    checkpoint: Path
    agent: int | None
    score: float
    seed: int


def _scores(state: dict[str, Any], key: str) -> list[tuple[int | None, float]]:
    """``(agent, score)`` of every usable policy of a checkpoint's state (one, or each live agent)."""
    if state.get("diverged"):
        return []
    evaluations = state.get(AGENT_EVALUATIONS_KEY)
    if not evaluations:
        return [(None, (state.get("last_evaluation") or {}).get(key, math.nan))]
    diverged = state.get(DIVERGED_AGENTS_KEY) or {}
    return [(i, e.get(key, math.nan)) for i, e in enumerate(evaluations) if str(i) not in diverged]


def select_candidate(checkpoints: Iterable[tuple[Path, int]], metric: str, mode: str) -> Candidate | None:
    """The best policy among ``checkpoints`` by ``metric`` (a validation metric, ``portfolio/validation/...``).

    Args:
        checkpoints: ``(checkpoint, seed of its run)`` (a population's agents follow that seed).
        metric: the selection metric.
        mode: ``max`` or ``min``.

    Returns:
        The best, or None when no checkpoint holds a usable policy with a finite score. Ties go to the first.
    """
    key = metric.removeprefix(VALIDATION_PREFIX)
    best: Candidate | None = None
    for ckpt, run_seed in checkpoints:
        try:
            state = read_state(ckpt)
        except CheckpointError:
            continue  # a damaged checkpoint is never a candidate
        seeds = state.get("population_seeds")
        for agent, score in _scores(state, key):
            if score is None or not np.isfinite(score):
                continue
            better = best is None or (score > best.score if mode == "max" else score < best.score)
            if better:
                seed = seeds[agent] if seeds and agent is not None else run_seed
                best = Candidate(Path(ckpt), agent, float(score), int(seed))
    return best


@dataclass
class GateResult:
    """The gate's figures (JSON-ready), each check's outcome, and the daily returns it compared."""

    figures: dict[str, Any]
    checks: list[tuple[str, bool, str]]
    returns: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def reason(self) -> str:
        failed = [text for _, ok, text in self.checks if not ok]
        if failed:
            return "not promoted: " + "; ".join(failed)
        return "promoted: " + ("; ".join(text for _, _, text in self.checks) or "the rule sets no condition")


def _equal_weight(sim: Simulation) -> EvalRun:
    kwargs = {k: v for k, v in sim.env_config.items() if k != "data"}
    env = PortfolioEnv(data=sim.market, **kwargs)
    return run_weights(env, equal_weight_rule(len(sim.market.tickers)))


def _measures(run: EvalRun) -> dict[str, float]:
    perf = M.performance(run)
    return {key: float(perf[key]) for key in FIGURE_KEYS}


def _difference(a: EvalRun, b: EvalRun, n_boot: int) -> tuple[float, list[float]]:
    """``a``'s Sharpe minus ``b``'s over the same days, and the 95% block-bootstrap interval of it."""
    low, high = stats.median_sharpe_difference_ci({0: (b.net_returns, [a.net_returns])}, n_boot)
    return float(M.performance(a)[M.SHARPE] - M.performance(b)[M.SHARPE]), [low, high]


def _check(name: str, value: float, threshold: float, at_least: bool, label: str) -> tuple[str, bool, str]:
    ok = bool(np.isfinite(value) and (value >= threshold if at_least else value <= threshold))
    sign = (">=" if at_least else "<=") if ok else ("<" if at_least else ">")
    return name, ok, f"{label} {value:+.3f} {sign} {threshold:+.3f} ({name})"


def run_gate(
    candidate: Candidate,
    live: tuple[Path, int | None] | None,
    data: str,
    split_dates: dict[str, list[str]],
    rule: PromoteIf,
    n_boot: int,
) -> GateResult:
    """Evaluate the candidate (and the live model) on the round's validation window and apply ``rule``.

    Args:
        candidate: the round's selected policy (its own windows are the round's).
        live: the live model's checkpoint and agent; None for a first round.
        data: the round's prices.
        split_dates: the round's windows (the live model runs on them instead of its own).
        rule: the promotion rule.
        n_boot: bootstrap replicates of the intervals.

    Raises:
        BacktestError: a checkpoint or the data cannot be evaluated (the message says which).
    """
    sim = simulate(candidate.checkpoint, "validation", baselines=False, agent=candidate.agent)
    cand, ew = sim.runs[SAC], _equal_weight(sim)
    window = sim.market.splits["validation"]
    figures: dict[str, Any] = {
        "window": [str(window.start_date.date()), str(window.end_date.date())],
        "days": int(cand.net_returns.size),
        "candidate": _measures(cand),
        "equal_weight": _measures(ew),
    }
    figures[M.SHARPE_MINUS_EW], figures[f"{M.SHARPE_MINUS_EW}_ci95"] = _difference(cand, ew, n_boot)
    figures[M.TURNOVER] = figures["candidate"][M.TURNOVER]
    returns = {"candidate": cand.net_returns, "equal_weight": ew.net_returns}
    if live is not None:
        cost = float(sim.env_config["cost_bps"])
        live_run = simulate(
            live[0], "validation", data=data, cost_bps=cost, baselines=False, agent=live[1], split_dates=split_dates
        ).runs[SAC]
        figures["live"] = _measures(live_run)
        figures[SHARPE_MINUS_LIVE], figures[f"{SHARPE_MINUS_LIVE}_ci95"] = _difference(cand, live_run, n_boot)
        returns["live"] = live_run.net_returns
    return GateResult(figures, promotion_checks(figures, rule), returns)


def promotion_checks(figures: dict[str, Any], rule: PromoteIf) -> list[tuple[str, bool, str]]:
    """``(condition, passed, what it compared)`` for every condition of ``rule`` that applies to ``figures``
    (``beat_live`` only when they hold a live model's). A figure that is not a finite number fails."""
    use_low = rule.compare == CI_LOW
    low = " (95% low)" if use_low else ""

    def value(key: str) -> float:
        return float(figures[f"{key}_ci95"][0] if use_low else figures[key])

    checks = []
    if rule.min_sharpe_minus_ew is not None:
        checks.append(
            _check("min_sharpe_minus_ew", value(M.SHARPE_MINUS_EW), rule.min_sharpe_minus_ew, True, f"Sharpe - EW{low}")
        )
    if rule.beat_live and SHARPE_MINUS_LIVE in figures:
        diff = value(SHARPE_MINUS_LIVE)
        ok = bool(np.isfinite(diff) and diff > 0)
        checks.append(("beat_live", ok, f"Sharpe - live{low} {diff:+.3f} {'>' if ok else '<='} 0 (beat_live)"))
    if rule.max_turnover_per_day is not None:
        checks.append(
            _check("max_turnover_per_day", figures[M.TURNOVER], rule.max_turnover_per_day, False, "turnover per day")
        )
    return checks


def gate_text(figures: dict[str, Any], live_round: str | None) -> str:
    """The gate's figures, as printed: the window, each side's Sharpe, the paired differences and the turnover."""

    def ci(key: str) -> str:
        lo, hi = figures[f"{key}_ci95"]
        return f"{figures[key]:+.3f} (95% {lo:+.3f} .. {hi:+.3f})"

    sharpe = [
        f"candidate {figures['candidate'][M.SHARPE]:+.3f}",
        f"Equal Weight {figures['equal_weight'][M.SHARPE]:+.3f}",
    ]
    line = f"  Sharpe - EW {ci(M.SHARPE_MINUS_EW)}"
    if "live" in figures:
        sharpe.append(f"live (round {live_round}) {figures['live'][M.SHARPE]:+.3f}")
        line += f" | Sharpe - live {ci(SHARPE_MINUS_LIVE)}"
    return "\n".join(
        [
            f"gate on the validation window {figures['window'][0]} .. {figures['window'][1]} ({figures['days']} days):",
            "  Sharpe: " + " | ".join(sharpe),
            f"{line} | turnover {figures[M.TURNOVER]:.4f}/day",
        ]
    )
