"""One-pass runs of a policy or a weights rule through the env: the per-day outcome every figure is computed from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trainer.evaluation.policy import Policy


@dataclass
class EvalRun:
    """Per-day outcome of one pass: arrays of length ``n_steps`` (weights: ``[n_steps, n_assets + 1]``)."""

    net_returns: NDArray[np.float64]
    turnovers: NDArray[np.float64]
    costs: NDArray[np.float64]
    values: NDArray[np.float64]
    weights: NDArray[np.float64]
    step_indices: NDArray[np.int64]


def run_policy(env: Any, policy: Policy) -> EvalRun:
    """Run ``policy`` (raw observation -> action) over one episode of ``env`` (a whole evaluation split)."""
    return _run(env, lambda obs: env.step(policy(obs)))


def run_ensemble(env: Any, policies: list[Policy]) -> EvalRun:
    """A seed ensemble: each day, the average of the members' target weights, traded as one agent would be.

    Every member sees the ensemble's own state (its drifted weights), maps its action to target weights as
    the env does, and the averaged target goes through the env's no-trade band and partial rebalancing.
    """
    if not policies:
        raise ValueError("an ensemble needs at least one policy")

    def step(obs: NDArray[np.float32]) -> tuple:
        targets = [env.weights_from_action(policy(obs)) for policy in policies]
        return env.step_target(np.mean(targets, axis=0))

    return _run(env, step)


def run_weights(env: Any, target_weights: Callable[[Any], NDArray[np.float64]]) -> EvalRun:
    """Run a weights rule (env -> target weights, assets then cash) through the same env P&L code."""
    return _run(env, lambda obs: env.step_weights(target_weights(env)))


def run_population(env: Any, policy: Policy) -> list[EvalRun]:
    """Run a population's policy (all agents' raw observations -> all agents' actions) over one episode of
    ``env`` (an ``envs.population.PopulationEnv``): one ``EvalRun`` per agent, as ``run_policy`` would give
    for that agent alone."""
    from envs.population import AGENTS_INFO

    per_agent = _episode_infos(env, lambda obs: env.step(policy(obs)))
    return [_eval_run([info[AGENTS_INFO][i] for info in per_agent]) for i in range(env.n_agents)]


def _run(env: Any, step: Callable[[NDArray[np.float32]], tuple]) -> EvalRun:
    return _eval_run(_episode_infos(env, step))


def _episode_infos(env: Any, step: Callable[[NDArray[np.float32]], tuple]) -> list[dict[str, Any]]:
    obs, _ = env.reset(seed=0)
    infos = []
    done = False
    while not done:
        obs, _, terminated, truncated, info = step(obs)
        done = terminated or truncated
        infos.append(info)
    return infos


def _eval_run(infos: list[dict[str, Any]]) -> EvalRun:
    return EvalRun(
        np.array([i["net_return"] for i in infos]),
        np.array([i["turnover"] for i in infos]),
        np.array([i["cost"] for i in infos]),
        np.array([i["portfolio_value"] for i in infos]),
        np.array([i["weights"] for i in infos]),
        np.array([i["step_index"] for i in infos], dtype=np.int64),
    )
