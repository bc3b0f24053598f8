"""A sweep's trials as rows: each trial's (or each population agent's) best checkpoint by the selection metric,
its status and its label, read from Tune's results (validation windows only)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.experiment.config import SEED_KEY, SWEEPABLE, Experiment
from trainer.metrics import registry as M


def config_value(config: dict, path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def agent_trial_id(trial_id: str, agent: int) -> str:
    """The row id of agent ``agent`` of population trial ``trial_id``."""
    return f"{trial_id}/agent{agent}"


def row_agent(value: Any) -> int | None:
    """A trials-table ``agent`` cell as an agent index (None: a single-agent trial)."""
    return None if value is None or pd.isna(value) else int(value)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colour and cursor codes in Ray's error text


_CAUSE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:")  # "pkg.DataError: message"


def error_line(error: Any) -> str:
    """A trial's error as one plain line, without terminal colour codes: the underlying exception's line when
    the text carries one (Ray wraps a trial's error in an actor-death message with the traceback), else the
    first line."""
    if error is None:
        return ""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    causes = [line for line in lines if _CAUSE.match(line)]
    return causes[-1] if causes else lines[0]


def stored_configs(exp_dir: Path | str) -> dict[str, dict[str, Any]]:
    """Every trial's configuration by trial directory name, from Tune's stored experiment state.

    Tune's ``Result.config`` comes from the trial's last reported metrics, so a trial that failed before its
    first report has none; the experiment state (read with Tune's public ``ExperimentAnalysis``) has it.
    """
    import logging

    from ray.tune import ExperimentAnalysis

    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns about each trial without results: the summary says so already
    try:
        return {Path(t.path).name: dict(t.config) for t in ExperimentAnalysis(str(exp_dir)).trials}
    except (OSError, ValueError, RuntimeError):
        return {}
    finally:
        logger.setLevel(level)


def trial_config(result: Any, stored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's configuration: its result's, else the stored one (``stored_configs``) for its directory."""
    return result.config or stored.get(Path(result.path).name, {})


def label(values: dict[str, Any]) -> str:
    """A configuration's name from its swept values (seed and fold excluded)."""
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(single configuration)"


def best_checkpoint(result: Any, metric: str, mode: str) -> tuple[str | None, float]:
    """The trial's kept checkpoint with the best selection score (diverged or non-finite ones skipped)."""
    from ray.tune.utils import flatten_dict

    best, best_score = None, -math.inf if mode == "max" else math.inf
    for ckpt, metrics in result.best_checkpoints or []:
        flat = flatten_dict(metrics)
        score = flat.get(metric)
        if flat.get(M.DIVERGED_METRIC) or score is None or not np.isfinite(score):
            continue
        if (mode == "max" and score > best_score) or (mode == "min" and score < best_score):
            best, best_score = ckpt.path, float(score)
    return best, best_score


def trial_members(config: dict[str, Any]) -> list[tuple[int | None, Any]]:
    """``(agent, seed)`` of every run a trial holds: ``(None, seed)`` for one agent, ``(i, seed_i)`` for each
    agent of a population (seeds following the trial's, as ``PortfolioSAC`` derives them)."""
    from envs.population import SEEDS_KEY, agent_seeds

    seed = config_value(config, SWEEPABLE[SEED_KEY])
    placeholder = (config.get("_model_config") or {}).get(SEEDS_KEY)
    if not placeholder:
        return [(None, seed)]
    return list(enumerate(agent_seeds(seed or 0, len(placeholder))))


def agent_best_checkpoint(result: Any, agent: int, metric: str, mode: str) -> tuple[str | None, float]:
    """Agent ``agent``'s best kept checkpoint of a population trial, by its own validation score.

    Reads each checkpoint's per-agent validation (``portfolio_state.json``), never test; checkpoints written
    after the agent (or the whole population) diverged are skipped, and so are damaged ones (named on
    stderr), so one bad checkpoint never stops the summary of the others.
    """
    from trainer.runtime.checkpoint import AGENT_EVALUATIONS_KEY, DIVERGED_AGENTS_KEY, CheckpointError, read_state

    key = metric.removeprefix(f"{M.PORTFOLIO}/{M.VALIDATION}/")  # the schema allows only validation metrics
    best, best_score = None, -math.inf if mode == "max" else math.inf
    for ckpt, _ in result.best_checkpoints or []:
        try:
            state = read_state(ckpt.path)
        except CheckpointError as exc:
            print(f"warning: agent {agent}: skipping a damaged checkpoint: {exc}", file=sys.stderr)
            continue
        evaluations = state.get(AGENT_EVALUATIONS_KEY) or []
        if state.get("diverged") or str(agent) in (state.get(DIVERGED_AGENTS_KEY) or {}) or agent >= len(evaluations):
            continue
        score = evaluations[agent].get(key)
        if score is None or not np.isfinite(score):
            continue
        if (mode == "max" and score > best_score) or (mode == "min" and score < best_score):
            best, best_score = ckpt.path, float(score)
    return best, best_score


def agent_diverged(metrics: dict[str, Any], agent: int | None) -> bool:
    agents = metrics.get(M.PORTFOLIO, {}).get(M.AGENTS) or []
    return agent is not None and agent < len(agents) and bool(agents[agent].get(M.DIVERGED))


def trial_status(result: Any, exp: Experiment) -> str:
    metrics = result.metrics or {}
    p = metrics.get(M.PORTFOLIO, {})
    if result.error is not None:
        return M.STATUS_ERROR
    if p.get(M.DIVERGED):
        return M.STATUS_DIVERGED
    done_iterations = exp.stopping.iterations and metrics.get(M.TRAINING_ITERATION, 0) >= exp.stopping.iterations
    if int(p.get(M.ENV_STEPS, 0) or 0) >= exp.stopping.env_steps or done_iterations:
        return M.STATUS_COMPLETED
    return M.STATUS_EARLY
