"""Deterministic policies: tanh of the Gaussian mean on frozen-filter observations, from a live algorithm or
restored from a checkpoint (without building an Algorithm or a Ray cluster).

The same policies serve training-time validation, ``trainer.backtest`` and the sweep report, so a backtest
cannot silently differ from what training reported; ``trainer.evaluation.runs`` runs them through the env.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from envs.population import SEEDS_KEY, agents_text
from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter
from trainer.runtime.checkpoint import (
    DIVERGED_AGENTS_KEY,
    OBS_FILTER_DIR,
    CheckpointError,
    absolute,
    needs_obs_filter,
    no_obs_filter,
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
    own = None if obs_filter is None else FrozenObsFilter(obs_filter.mean[sl], obs_filter.std[sl], obs_filter.clip)

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
    """Restore the RL module and the frozen filter statistics of a checkpoint, without building an Algorithm.

    The checkpoint is verified first (``read_state``; with ``usable``, ``read_usable_state``), once. A
    checkpoint trained with the observation filter but without its statistics is refused: its policy would
    act on unnormalised observations.

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
        CheckpointError: the checkpoint is not usable, or ``agent`` does not fit it.
    """
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )
    from ray.rllib.core.rl_module.rl_module import RLModule

    ck = Path(absolute(checkpoint))
    state = usable_state(ck, read_state(ck)) if usable else read_state(ck)
    check_agent(ck, state, agent, usable)
    module = RLModule.from_checkpoint(
        ck / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    )
    e2m_dir = ck / OBS_FILTER_DIR
    filt = None
    if e2m_dir.exists():
        from ray.rllib.connectors.env_to_module import EnvToModulePipeline

        filt = find_obs_filter(EnvToModulePipeline.from_checkpoint(e2m_dir))
    if filt is None and needs_obs_filter(state):
        raise no_obs_filter(ck)
    if agent is not None:
        return make_agent_policy(module, FrozenObsFilter.of(filt), agent), state
    return make_policy(module, FrozenObsFilter.of(filt)), state


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
