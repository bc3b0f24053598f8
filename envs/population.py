"""``PortfolioPopulation-v0``: K copies of the portfolio environment stepped together, one per agent.

A population trains K independent agents of one configuration (different seeds) with batched tensors. To RLlib
it is one agent on one environment with flat spaces: the observation is the K agents' observations side by
side and the action the K agents' actions, so RLlib's env runners, connectors and observation filter (which
keeps statistics per component, hence per agent) work unchanged; the trainer's population module acts for
each agent on its own slice. Each copy keeps its own random state, seeded from its agent's seed only, so an
agent sees the same episodes whatever the other agents of its population are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from envs.portfolio import PortfolioEnv

AGENTS_INFO = "agents"  # info key: the per-agent info dicts of one step
REWARDS_INFO = "rewards"  # info key: the per-agent rewards of one step (the step's reward is their mean)
SEEDS_KEY = "population_seeds"  # env config key: the agents' seeds


def agents_text(n: int) -> str:
    """``"1 agent"``, ``"3 agents"``: a population's size in messages."""
    return f"{n} agent" if n == 1 else f"{n} agents"


def agent_seeds(first_seed: int, size: int) -> list[int]:
    """The seeds of a population of ``size`` agents started from ``first_seed``: consecutive integers."""
    return [int(first_seed) + j for j in range(size)]


class PopulationEnv(gym.Env):
    """K ``PortfolioEnv`` copies, one per agent, with their observations and actions side by side.

    ## Action Space
    ``Box(-1, 1, (K * (N + 1),), float32)``: agent ``i``'s action is the slice ``[i * (N + 1), (i + 1) * (N + 1))``.
    A non-finite agent action (a diverged agent) is traded as a zero action and flagged in that agent's info
    (``invalid_action``), so one diverged agent cannot stop the others; the trainer marks it diverged.

    ## Observation Space
    ``Box(-inf, inf, (K * D,), float32)``: agent ``i``'s ``PortfolioEnv`` observation (size ``D``) at slice ``i``.

    ## Rewards
    The mean of the agents' rewards; each agent's own reward is in ``info["rewards"][i]``.

    ## Starting State / Episode End
    As ``PortfolioEnv``, per agent. Training episodes all have ``episode_len`` steps and validation/test
    episodes the split's length, so the copies end on the same step; the population's episode is truncated
    when they are (never terminated).

    ## Arguments
    ``population_seeds``: the agents' seeds (K = their number). ``reset(seed=s)`` seeds agent ``i``'s copy
    with ``population_seeds[i] + (s - population_seeds[0])``: the offset RLlib adds per env runner and vector
    index is kept, and an agent's episodes do not depend on which agents share its population. Everything
    else is passed to each ``PortfolioEnv`` (which share one loaded ``MarketData``).

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium convention

    def __init__(self, population_seeds: Sequence[int], **env_config: Any) -> None:
        seeds = [int(s) for s in population_seeds]
        if not seeds:
            raise ValueError(f"{SEEDS_KEY} must name at least one agent seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{SEEDS_KEY} must be distinct, got {seeds}")
        self.seeds = seeds
        first = PortfolioEnv(**env_config)
        # The copies share the first one's loaded arrays (the same windows; read-only in the env).
        shared = {k: v for k, v in env_config.items() if k not in ("data", "date_format", "sort_dates")}
        self.envs = [first] + [PortfolioEnv(data=first.market, **shared) for _ in seeds[1:]]
        self.n_agents = len(seeds)
        self.obs_dim = int(first.observation_space.shape[0])
        self.act_dim = int(first.action_space.shape[0])
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.n_agents * self.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.n_agents * self.act_dim,), np.float32)

    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        offset = None if seed is None else int(seed) - self.seeds[0]
        results = [
            env.reset(seed=None if offset is None else agent_seed + offset)
            for env, agent_seed in zip(self.envs, self.seeds, strict=True)
        ]
        return np.concatenate([obs for obs, _ in results]), {AGENTS_INFO: [info for _, info in results]}

    def step(self, action: NDArray) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        actions = np.asarray(action, dtype=np.float32).reshape(self.n_agents, self.act_dim)
        obs, rewards, infos = [], np.empty(self.n_agents), []
        truncated = terminated = False
        for i, env in enumerate(self.envs):
            a = actions[i]
            invalid = not math.isfinite(float(a.sum()))
            o, r, term, trunc, info = env.step(np.zeros_like(a) if invalid else a)
            if invalid:
                info["invalid_action"] = True
            obs.append(o)
            rewards[i] = r
            infos.append(info)
            terminated |= term
            truncated |= trunc
        info = {AGENTS_INFO: infos, REWARDS_INFO: rewards}
        return np.concatenate(obs), float(rewards.mean()), terminated, truncated, info


def make_population_env(config: Mapping[str, Any] | None = None) -> PopulationEnv:
    """Build a ``PopulationEnv`` from a small config dict (the env config plus ``population_seeds``)."""
    config = dict(config or {})
    if SEEDS_KEY not in config:
        raise ValueError(f"a population env config needs {SEEDS_KEY} (the agents' seeds)")
    return PopulationEnv(**config)
