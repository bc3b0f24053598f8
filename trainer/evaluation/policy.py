"""Deterministic policies: tanh of the Gaussian mean on frozen-filter observations, from a live algorithm or
read from a checkpoint's policy files (without RLlib, an Algorithm or a Ray cluster).

Training-time validation acts with the live RLlib module; ``trainer.backtest`` and the sweep report read the
checkpoint's ``policy/`` files (``trainer.evaluation.policy_file``: JSON and plain arrays, never a pickle, so a
checkpoint from someone else cannot run code here) into ``trainer.evaluation.policy_net.PolicyNetwork``,
which computes the same actions (tested against the RLlib module, a single agent's and each agent of a
population's); ``trainer.evaluation.runs`` runs them through the env.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from envs.population import SEEDS_KEY, agents_text
from trainer.evaluation.obs_filter import FrozenObsFilter
from trainer.evaluation.policy_file import POLICY_JSON, PolicyFiles, read_policy_files
from trainer.evaluation.policy_net import PolicyNetwork
from trainer.runtime.checkpoint import (
    DIVERGED_AGENTS_KEY,
    STATE_FILE,
    USE_ANOTHER,
    CheckpointError,
    absolute,
    needs_obs_filter,
    no_obs_filter,
    read_manifest,
    read_state,
    usable_state,
)

Policy = Callable[[NDArray[np.float32]], NDArray[np.float32]]


def deterministic_action(module: Any, norm_obs: NDArray[np.float32]) -> NDArray[np.float32]:
    """``tanh(mean)`` of the squashed Gaussian: the true mode, unlike RLlib's ``explore=False`` path."""
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        obs_t = torch.as_tensor(np.atleast_2d(norm_obs), dtype=torch.float32)
        out = module.forward_inference({Columns.OBS: obs_t})
        mean, _log_std = out[Columns.ACTION_DIST_INPUTS].chunk(2, dim=-1)
        return torch.tanh(mean).numpy()


def make_policy(module: Any, obs_filter: FrozenObsFilter | None) -> Policy:
    """A policy on raw observations: frozen normalisation, then the deterministic action."""
    module.eval()

    def policy(raw_obs: NDArray[np.float32]) -> NDArray[np.float32]:
        obs = raw_obs if obs_filter is None else obs_filter(raw_obs)
        return deterministic_action(module, obs)[0]

    return policy


def make_agent_policy(module: Any, obs_filter: FrozenObsFilter | None, agent: int) -> Policy:
    """Agent ``agent`` of a population module as a policy on its own raw observations (one env's).

    The filter holds the population's statistics side by side; the agent's slice normalises its observations.
    """
    module.eval()
    dim = module.obs_dim
    sl = slice(agent * dim, (agent + 1) * dim)
    own = None
    if obs_filter is not None:
        own = FrozenObsFilter(obs_filter.mean[sl], obs_filter.std[sl], obs_filter.clip, obs_filter.epsilon)

    def policy(raw_obs: NDArray[np.float32]) -> NDArray[np.float32]:
        obs = raw_obs if own is None else own(raw_obs)
        return module.agent_action(agent, obs)[0]

    return policy


def policy_from_algorithm(algo: Any) -> Policy:
    """The deterministic policy of a live ``PortfolioSAC`` (module of the local env runner)."""
    return make_policy(algo.get_module(), FrozenObsFilter.of(algo.obs_filter()))


def load_policy(
    checkpoint: Path | str, usable: bool = False, agent: int | None = None
) -> tuple[Policy, dict[str, Any]]:
    """The deterministic policy of a checkpoint, read from its policy files only: never a pickle (checked as
    ``load_policy_files`` says).

    Args:
        checkpoint: a checkpoint directory.
        usable: refuse a checkpoint written after training diverged (and, of a population, an agent that
            had diverged by then).
        agent: which agent of a population checkpoint (``sac.population``): its index, 0 .. K-1. Required
            for a population, refused for a single agent.

    Returns:
        ``(policy, portfolio_state)``: the deterministic policy on raw observations (of one agent's env) and
        the checkpoint's ``portfolio_state.json``.

    Raises:
        CheckpointError: the checkpoint or its policy files are not usable, or ``agent`` does not fit it.
    """
    files, state = load_policy_files(checkpoint, usable, agent)
    return PolicyNetwork(files, agent or 0).act, state


def load_policy_files(
    checkpoint: Path | str, usable: bool = False, agent: int | None = None
) -> tuple[PolicyFiles, dict[str, Any]]:
    """A checkpoint's checked policy files and its ``portfolio_state.json`` (arguments as ``load_policy``).

    The checkpoint is verified first (``read_state``; with ``usable``, ``read_usable_state``), once; then
    ``policy/policy.json`` and ``policy/weights.npz`` are read and checked (``read_policy_files``) and must
    agree with ``portfolio_state.json`` (the agents, the observation filter). A checkpoint without policy
    files (an older version wrote it) is refused with how to convert it.

    Raises:
        CheckpointError: the checkpoint or its policy files are not usable, or ``agent`` does not fit it.
    """
    ck = Path(absolute(checkpoint))
    state = usable_state(ck, read_state(ck)) if usable else read_state(ck)
    check_agent(ck, state, agent, usable)
    files = read_policy_files(ck, read_manifest(ck)["files"])
    seeds = population_seeds(state)
    if files.seeds != seeds or files.n_agents != len(seeds or [None]):
        raise CheckpointError(
            f"{ck / POLICY_JSON}: holds agents with seeds {files.seeds} ({files.n_agents}), {STATE_FILE} "
            f"says {seeds}: the two disagree; {USE_ANOTHER}"
        )
    if files.spec["obs_filter"] is None and needs_obs_filter(state):
        raise no_obs_filter(ck / POLICY_JSON)
    return files, state


def population_seeds(state: dict[str, Any]) -> list[int] | None:
    """The agents' seeds of a population checkpoint's ``portfolio_state.json`` (None: a single agent)."""
    seeds = state.get(SEEDS_KEY)  # the same key in the env config and the state
    return [int(s) for s in seeds] if seeds else None


def check_agent(path: Path | str, state: dict[str, Any], agent: int | None, usable: bool = False) -> None:
    """Check that ``agent`` picks one agent of checkpoint ``path`` (``state``: its ``portfolio_state.json``).

    Raises:
        CheckpointError: a population without ``agent`` (listing the agents), ``agent`` of a single-agent
            checkpoint or out of range, or (with ``usable``) an agent that had diverged.
    """
    seeds = population_seeds(state)
    if seeds is None:
        if agent is not None:
            raise CheckpointError(
                f"{path}: a single-agent checkpoint has no agent {agent} (only a population's checkpoint, "
                "sac.population, does); drop --agent (agent=) to use its one policy"
            )
        return
    agents = ", ".join(f"{i} (seed {s})" for i, s in enumerate(seeds))
    if agent is None:
        raise CheckpointError(
            f"{path}: a population of {agents_text(len(seeds))}; choose one with --agent I (agent=I): {agents}"
        )
    if not 0 <= agent < len(seeds):
        raise CheckpointError(
            f"{path}: agent {agent} is out of range: the population has {agents_text(len(seeds))}, {agents}"
        )
    reason = (state.get(DIVERGED_AGENTS_KEY) or {}).get(str(agent))
    if usable and reason:
        raise CheckpointError(
            f"{path}: agent {agent} (seed {seeds[agent]}) had diverged when this checkpoint was written "
            f"({reason}); use another agent or an earlier checkpoint of the run"
        )
