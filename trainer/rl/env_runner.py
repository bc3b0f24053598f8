"""``PortfolioEnvRunner``: RLlib's single-agent env runner, sampling a fixed number of env steps without
episode objects.

RLlib's ``SingleAgentEnvRunner`` records every env step in a ``SingleAgentEpisode`` per env (lookback buffers,
validation), cuts each episode into a new chunk at the end of every ``sample`` call and turns the chunks into
numpy. Our replay buffer reads only the transitions, so with one env step per env and round (the schedule
that samples a round's env steps as that many envs at once) that bookkeeping is most of the runner's time:
per round of 8 envs, about 1.9 ms of RLlib's loop against 0.9 ms for the module, the filter and the vector
env themselves (2-core Xeon).

This runner keeps RLlib's runner for everything else (env and module creation, resets, weights, state and
checkpoints, metrics, fault handling) and replaces only the loop that samples ``num_timesteps``: it calls
the same pieces in the same order (our connectors' filter and tensor conversion, the module's exploration
forward pass, our actions-to-env piece, the vector env) and returns one ``Transitions`` per round, its rows
in the order RLlib's chunks would list them (finished episodes first, then the ongoing ones by env index),
so the replay buffer and the learner get the same numbers bit for bit
(tests/trainer/rl/test_env_runner.py). Episode metrics (length, return) and the ``on_episode_end`` callback
are made as RLlib makes them. Whole-episode sampling (``num_episodes``) and pipelines or callbacks this
loop does not know (per-step episode hooks, other connector pieces) use RLlib's loop.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.callbacks.utils import make_callback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_runner import ENV_STEP_FAILURE
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import RLMODULE_INFERENCE_TIMER

from trainer.rl.connectors import ActionsToEnv, ObsToModule, RawObsMeanStdFilter

# RLlib makes these per env step or per episode; this runner's loop makes only on_episode_end
_PER_STEP_HOOKS = ("on_episode_created", "on_episode_start", "on_episode_step")


class Transitions:
    """A sampling round's transitions, one row per env step (what the replay buffer stores).

    Attributes:
        obs, actions, rewards, next_obs, terminateds: ``[rows, ...]`` arrays; ``terminateds`` is 1.0 where the
            episode terminated at that step (a truncation bootstraps).
        infos: each row's info dict from the env step (a population's per-agent rewards are there).
    """

    __slots__ = ("actions", "infos", "next_obs", "obs", "rewards", "terminateds")

    def __init__(self, rows: list[tuple]) -> None:
        obs, actions, rewards, next_obs, terminateds, infos = zip(*rows, strict=True)
        self.obs = np.asarray(obs, np.float32)
        self.actions = np.asarray(actions, np.float32)
        self.rewards = np.asarray(rewards, np.float32)
        self.next_obs = np.asarray(next_obs, np.float32)
        self.terminateds = np.asarray(terminateds, np.float32)
        self.infos = list(infos)

    @classmethod
    def of_episode(cls, episode: Any) -> Transitions:
        """An RLlib episode chunk's transitions (from RLlib's runner: a config built before this one)."""
        n = len(episode)
        out = cls.__new__(cls)
        obs = np.asarray(episode.get_observations(slice(0, n + 1)), np.float32)
        out.obs, out.next_obs = obs[:-1], obs[1:]
        out.actions = np.asarray(episode.get_actions(slice(0, n)), np.float32)
        out.rewards = np.asarray(episode.get_rewards(slice(0, n)), np.float32)
        out.infos = list(episode.get_infos(slice(1, n + 1)))
        out.terminateds = np.zeros(n, np.float32)
        out.terminateds[-1] = float(episode.is_terminated)  # truncation (end of data/episode) bootstraps
        return out

    def __len__(self) -> int:
        return len(self.rewards)

    def env_steps(self) -> int:
        return len(self)

    agent_steps = env_steps


class _FinishedEpisode:
    """What ``on_episode_end`` callbacks read of an episode this runner finished: its infos, the reset's first
    (as an uncut ``SingleAgentEpisode.get_infos()``)."""

    def __init__(self, infos: list[dict]) -> None:
        self._infos = infos

    def get_infos(self) -> list[dict]:
        return list(self._infos)


class _Track:
    """One env's ongoing episode: its latest raw observation, this round's rows and the episode's totals."""

    __slots__ = ("chunk_returns", "infos", "length", "obs", "return_", "rows", "start")

    def __init__(self) -> None:
        self.obs: NDArray | None = None  # None: the env resets at its next step (RLlib's autoreset)
        self.rows: list[tuple] = []

    def begin(self, obs: NDArray, info: dict) -> None:
        self.obs, self.infos, self.length, self.start = obs, [info], 0, time.perf_counter()
        self.return_, self.chunk_returns = 0, []

    def step(self, obs: NDArray, action: Any, reward: Any, terminated: Any, info: dict) -> None:
        self.rows.append((self.obs, action, reward, obs, terminated, info))
        self.obs = obs
        self.infos.append(info)
        self.length += 1
        self.return_ += reward  # as SingleAgentEpisode.get_return: a plain sum of this round's rewards

    def cut(self) -> list[tuple]:
        """This round's rows; the episode goes on into the next round."""
        rows, self.rows = self.rows, []
        if rows:
            self.chunk_returns.append(self.return_)
            self.return_ = 0
        return rows

    def episode_return(self) -> Any:
        """The finished episode's return, summed as RLlib's ``get_metrics`` sums its chunks'."""
        total = self.return_
        for chunk in self.chunk_returns:
            total += chunk
        return total


class PortfolioEnvRunner(SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` whose ``num_timesteps`` sampling returns ``Transitions`` instead of episodes."""

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self._tracks: list[_Track] | None = None
        self._finished: list[tuple[int, Any, float]] = []  # (length, return, seconds) for get_metrics
        self._pieces = self._own_pieces()

    def _own_pieces(self) -> tuple[RawObsMeanStdFilter | None, ObsToModule, ActionsToEnv] | None:
        """The pipelines' pieces where they are ours alone and no callback needs per-step episodes, else None."""
        if self.module is None or self._env_to_module is None or self._module_to_env is None:
            return None
        to_module = list(self._env_to_module.connectors)
        to_env = list(self._module_to_env.connectors)
        filt = to_module.pop(0) if to_module and type(to_module[0]) is RawObsMeanStdFilter else None
        if [type(c) for c in to_module] != [ObsToModule] or [type(c) for c in to_env] != [ActionsToEnv]:
            return None
        for hook in _PER_STEP_HOOKS:
            if getattr(self.config, f"callbacks_{hook}", None) is not None:
                return None
            if any(getattr(type(cb), hook) is not getattr(RLlibCallback, hook) for cb in self._callbacks):
                return None
        return filt, to_module[0], to_env[0]

    # --- sampling ---------------------------------------------------------------------------------------
    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list:
        if num_timesteps is None or self._pieces is None:
            self._tracks = None
            return super()._sample(
                num_timesteps=num_timesteps,
                num_episodes=num_episodes,
                explore=explore,
                random_actions=random_actions,
                force_reset=force_reset,
            )
        if force_reset or self._needs_initial_reset or self._tracks is None:
            self._reset_tracks(explore)
        finished_rows: list[tuple] = []
        ts = finished = 0
        while ts < num_timesteps:
            to_env = self._act(explore, random_actions, ts)
            actions = to_env.pop(Columns.ACTIONS)
            results = self._try_env_step(to_env.pop(Columns.ACTIONS_FOR_ENV, actions))
            if results is ENV_STEP_FAILURE:  # as RLlib: reset the envs, the ongoing episodes' rows are lost
                ts = 0
                self._reset_tracks(explore)
                continue
            observations, rewards, terminateds, truncateds, infos = results
            done: list[int] = []
            for i, track in enumerate(self._tracks):
                if track.obs is None:  # the env's reset after a finished episode: no env step
                    track.begin(observations[i], infos[i])
                else:
                    ts += 1
                    track.step(observations[i], actions[i], rewards[i], terminateds[i], infos[i])
                    if terminateds[i] or truncateds[i]:
                        done.append(i)
            self._cached_to_module = self._module_input(list(observations))
            for i in done:  # after the module input, as RLlib's loop: the filter also sees the last observation
                finished_rows.extend(self._finish(i))
            finished += len(done)
        rows = finished_rows + [row for track in self._tracks for row in track.cut()]
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, finished)
        return [Transitions(rows)] if rows else []

    def _act(self, explore: bool, random_actions: bool, ts: int) -> dict[str, Any]:
        """The module's outputs for the cached input (or random actions), as the env takes them."""
        if random_actions:
            return {Columns.ACTIONS: self.env.action_space.sample()}
        to_module, self._cached_to_module = self._cached_to_module, None
        with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
            if explore:
                # the global env step count RLlib's loop passes (this runner's share times the runners)
                runners = self.config.num_env_runners or 1
                t = (self.num_env_steps_sampled_lifetime // runners + ts) * runners
                out = self.module.forward_exploration(to_module, t=t)
            else:
                out = self.module.forward_inference(to_module)
        return self._pieces[2](rl_module=self.module, batch=out, episodes=None, explore=explore)

    def _module_input(self, observations: list[NDArray]) -> dict[str, Any]:
        """The env-to-module pipeline's output for these latest observations, one per env in env order."""
        filt, to_module, _ = self._pieces
        items = filt.normalize_each(observations) if filt is not None else observations
        return to_module.module_input(items)

    def _reset_tracks(self, explore: bool) -> None:
        """RLlib's reset (episodes, env seeds, the filter's first observations), then one track per env."""
        self._reset_envs_and_episodes(explore)
        self._tracks = []
        for episode in self._ongoing_episodes:
            track = _Track()
            track.begin(episode.get_observations(indices=-1), episode.get_infos(indices=-1))
            self._tracks.append(track)

    def _finish(self, env_index: int) -> list[tuple]:
        """Env ``env_index``'s finished episode: its rows this round; its metrics and callback made as RLlib's
        loop makes them."""
        track = self._tracks[env_index]
        make_callback(
            "on_episode_end",
            callbacks_objects=self._callbacks,
            callbacks_functions=self.config.callbacks_on_episode_end,
            kwargs={
                "episode": _FinishedEpisode(track.infos),
                "prev_episode_chunks": [],
                "env_runner": self,
                "metrics_logger": self.metrics,
                "env": self.env.unwrapped,
                "rl_module": self.module,
                "env_index": env_index,
            },
        )
        self._finished.append((track.length, track.episode_return(), time.perf_counter() - track.start))
        rows, track.rows, track.obs = track.rows, [], None
        return rows

    def get_metrics(self) -> dict:
        for length, ret, seconds in self._finished:
            self._log_episode_metrics(length, ret, seconds)
        self._finished.clear()
        return super().get_metrics()
