"""Flat, preallocated ring buffers of raw transitions with uniform sampling.

Why not RLlib's episode buffers: they sample by slicing episodes per transition, which dominated the
update step in profiles, they store observations already normalised by a drifting filter, and
RLlib never checkpoints them (docs/rllib-notes.md). These buffers store raw float32 arrays, sample with one
vectorised index, and save/restore themselves atomically next to the RLlib checkpoint.

``FlatReplayBuffer`` holds one agent's transitions; ``PopulationReplayBuffer`` holds those of ``K``
independent agents trained side by side, with an agent axis second (``[capacity, K, ...]``). Agent ``i`` of a
population sees exactly the transitions, samples and reward moments that a ``FlatReplayBuffer`` seeded with
``seeds[i]`` and fed agent ``i``'s transitions would give it: one sampling RNG per agent, and every update
elementwise over the agent axis.
"""

from __future__ import annotations

import ast
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from envs.population import agents_text
from trainer.rl.buffer_file import npy_header, read_npy_into, reason, write_npy
from trainer.runtime.checkpoint import BUFFER_FILE

_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminateds")
_ADD_ORDER = ("obs", "actions", "rewards", "next_obs", "terminateds")  # the argument order of ``add``


class _RingBuffer:
    """Ring storage, reward moments, sampling and persistence shared by both buffers.

    Every array is time-major, ``[capacity, *agent_shape, ...]``, where ``agent_shape`` is ``()`` for a single
    agent and ``(K,)`` for a population: the ring arithmetic runs on the time axis only, and every other
    operation is elementwise over the agent axis, so one agent's numbers never depend on another's.

    Args:
        capacity: number of time steps kept (oldest overwritten first).
        obs_dim: observation size of one agent.
        act_dim: action size of one agent.
        seeds: one seed per sampling RNG (one per agent; their states are saved with the buffer).
        agent_shape: ``()`` or ``(K,)`` with ``K == len(seeds)``.
    """

    def __init__(
        self, capacity: int, obs_dim: int, act_dim: int, seeds: list[int | None], agent_shape: tuple[int, ...]
    ) -> None:
        self.capacity = int(capacity)
        self._agent_shape = agent_shape
        # Fancy index of the agent axis: row ``idx[b, i]`` of agent ``i`` for every agent in one gather.
        self._agent_index: tuple[NDArray[np.int64], ...] = tuple(np.arange(k) for k in agent_shape)
        lead = (self.capacity, *agent_shape)
        self.obs = np.zeros((*lead, obs_dim), np.float32)
        self.next_obs = np.zeros((*lead, obs_dim), np.float32)
        self.actions = np.zeros((*lead, act_dim), np.float32)
        self.rewards = np.zeros(lead, np.float32)
        self.terminateds = np.zeros(lead, np.float32)
        self.size = 0
        self.pos = 0
        self.added_lifetime = 0
        self._rngs = [np.random.default_rng(seed) for seed in seeds]
        # Running moments of the (clipped) rewards added, for optional reward normalisation: a float for one
        # agent, an array [K] for a population (``[()]`` turns the 0-d array of one agent into a scalar).
        self.reward_count = 0
        self.reward_mean: Any = np.zeros(agent_shape)[()]
        self.reward_m2: Any = np.zeros(agent_shape)[()]

    def __len__(self) -> int:
        return self.size

    def _check_batch(self, batch: dict[str, NDArray]) -> str | None:
        """Why ``batch`` (arrays named as in ``_FIELDS``) cannot be added, or None when it can."""
        n = len(batch["rewards"])
        agents = self._agent_shape
        for field in _ADD_ORDER:
            expected = (n, *agents, *getattr(self, field).shape[1 + len(agents) :])
            if batch[field].shape != expected:
                axes = "n transitions" + (f", then {agents[0]} agents" if agents else "")
                return f"{field} has shape {batch[field].shape}, expected {expected} ({axes})"
        return None

    def add(
        self,
        obs: NDArray,
        actions: NDArray,
        rewards: NDArray,
        next_obs: NDArray,
        terminateds: NDArray,
    ) -> None:
        """Append ``n`` transitions (arrays with a leading dimension ``n``, then the agent axis if any).

        Raises:
            ValueError: an array's shape does not match the others' ``n`` or this buffer's sizes.
        """
        batch = dict(zip(_ADD_ORDER, map(np.asarray, (obs, actions, rewards, next_obs, terminateds)), strict=True))
        problem = self._check_batch(batch)
        if problem is not None:
            raise ValueError(f"replay buffer add: {problem}")
        n = len(batch["rewards"])
        if n == 0:
            return
        # Every transition counts as added (and its reward in the moments), even one dropped at once below.
        self.added_lifetime += n
        # Welford, one time step at a time (n is small per call) and elementwise over the agent axis, so each
        # agent's moments are the very floats a buffer of its own would hold.
        for r in batch["rewards"].astype(np.float64):
            self.reward_count += 1
            delta = r - self.reward_mean
            self.reward_mean = self.reward_mean + delta / self.reward_count
            self.reward_m2 = self.reward_m2 + delta * (r - self.reward_mean)
        if n > self.capacity:  # keep only the newest
            batch = {f: x[-self.capacity :] for f, x in batch.items()}
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for field, values in batch.items():
            getattr(self, field)[idx] = values
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def _reward_std(self) -> Any:
        if self.reward_count > 1:
            return np.sqrt(self.reward_m2 / (self.reward_count - 1))
        return np.ones(self._agent_shape)[()]  # undefined before two rewards: a neutral scale

    def sample_indices(self, batch_size: int) -> NDArray[np.int64]:
        """Ring rows to sample: ``[batch_size, *agent_shape]``, agent ``i``'s column drawn by its own RNG."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        draws = [rng.integers(0, self.size, batch_size) for rng in self._rngs]
        return np.stack(draws, axis=-1).reshape(batch_size, *self._agent_shape)

    def sample(self, batch_size: int) -> dict[str, NDArray]:
        """A uniform batch (with replacement) of raw transitions, ``[batch_size, *agent_shape, ...]``."""
        rows = self.sample_indices(batch_size)
        if not self._agent_shape:
            # One agent: whole rows, gathered by torch's threads (numpy's fancy indexing copies on one thread,
            # 0.2 against 0.1 ms per 2,048 observations on 2 cores); the same values, fresh arrays.
            import torch

            index = torch.from_numpy(rows)
            return {f: torch.from_numpy(getattr(self, f)).index_select(0, index).numpy() for f in _FIELDS}
        idx = (rows, *self._agent_index)
        return {f: getattr(self, f)[idx] for f in _FIELDS}

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in _FIELDS)

    # --- persistence ------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Any] | list[dict[str, Any]]:
        """The sampling RNGs' states: one dict for a single agent, a list of K dicts for a population."""
        states = [rng.bit_generator.state for rng in self._rngs]
        return states if self._agent_shape else states[0]

    def _in_order(self, arr: NDArray) -> list[NDArray]:
        """The filled rows of ``arr`` in insertion order (oldest first), as contiguous views (no copies)."""
        if self.size < self.capacity:
            return [arr[: self.size]]
        return [arr[self.pos :], arr[: self.pos]]

    def _counters(self) -> dict[str, Any]:
        count = np.full(self._agent_shape, self.reward_count, np.float64)
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "added_lifetime": self.added_lifetime,
            "reward_moments": np.stack([count, np.asarray(self.reward_mean), np.asarray(self.reward_m2)]),
            "rng_state": np.frombuffer(repr(self._rng_state()).encode(), np.uint8),
        }

    def state(self) -> dict[str, Any]:
        """Arrays of the filled part, in insertion order (oldest first), plus counters: what ``save`` writes.

        ``pos`` (the ring slot of the oldest transition once full) lets ``load`` rebuild the same layout, so
        the restored RNGs draw the same transitions as the saved buffer would have.
        """
        out: dict[str, Any] = {f: np.concatenate(self._in_order(getattr(self, f))) for f in _FIELDS}
        return {**out, **self._counters()}

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/replay_buffer.npz`` atomically (temp file + rename).

        The file is an ordinary ``.npz`` (``np.load`` reads it), written field by field straight from the
        ring (no copy of the arrays: a population's buffer is gigabytes, and ``np.savez(**state())`` would
        hold a second copy of all of it while writing).
        """
        directory = Path(directory)
        path = directory / BUFFER_FILE
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for field in _FIELDS:
                    arr = getattr(self, field)
                    write_npy(zf, field, (self.size, *arr.shape[1:]), arr.dtype, self._in_order(arr))
                for name, value in self._counters().items():
                    value = np.asarray(value)
                    write_npy(zf, name, value.shape, value.dtype, [value])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def _layout_problem(self, saved: dict[str, NDArray]) -> str | None:
        """Why a readable file belongs to another kind of run (agents, observation or action sizes)."""
        theirs, ours = saved["obs"].shape[1:-1], self._agent_shape
        if theirs != ours:
            if not ours:
                return f"replay buffer holds a population of {agents_text(theirs[0])}, this run has a single agent"
            if not theirs:
                return f"replay buffer holds a single agent's transitions, this run has a population of {ours[0]}"
            return f"replay buffer holds {agents_text(theirs[0])}, this run has {ours[0]}"
        per_agent = 1 + len(ours)  # the sizes of one agent's observation and action
        saved_obs, saved_act = saved["obs"].shape[per_agent:], saved["actions"].shape[per_agent:]
        run_obs, run_act = self.obs.shape[per_agent:], self.actions.shape[per_agent:]
        if (saved_obs, saved_act) != (run_obs, run_act):
            return f"replay buffer shapes {saved_obs}/{saved_act} do not match this run's {run_obs}/{run_act}"
        return None

    def _damage(self, saved: dict[str, NDArray], rng_state: Any) -> str | None:
        """What is inconsistent in a file of the right layout (field shapes, moments, RNG states), or None."""
        problem = self._check_batch(saved)
        if problem is not None:
            return problem
        if saved["reward_moments"].shape != (3, *self._agent_shape):
            return f"reward_moments has shape {saved['reward_moments'].shape}"
        states = rng_state if self._agent_shape else [rng_state]
        if not isinstance(states, list) or len(states) != len(self._rngs):
            return "rng_state"
        try:  # on spare bit generators, so that a bad state leaves the buffer's own RNGs as they were
            for rng, state in zip(self._rngs, states, strict=True):
                type(rng.bit_generator)().state = state
        except (TypeError, ValueError, KeyError):
            return "rng_state"
        return None

    def load(self, directory: str | Path) -> bool:
        """Restore from ``directory/replay_buffer.npz``; False when there is none.

        Raises:
            ValueError: the file is damaged (truncated, not an ``.npz`` written by ``save``, holding pickled
                objects, missing a field or with fields that disagree), or it was written by a run with
                another number of agents (or a single agent where this is a population, or the reverse) or
                other observation/action sizes. The buffer is left unchanged in every case.
        """
        path = Path(directory) / BUFFER_FILE
        if not path.exists():
            return False
        try:
            # Check everything but the bulk before touching the buffer, so a damaged or foreign file leaves
            # it as it was: the small fields are read, the large ones only as headers (shape, dtype) here.
            # No pickles: every field is a plain array (the RNG state is a repr read by ast.literal_eval).
            with np.load(path, allow_pickle=False) as data:
                saved = {k: data[k] for k in ("added_lifetime", "reward_moments", "rng_state")}
                saved_pos = int(data["pos"]) if "pos" in data.files else 0  # absent in older files
                saved.update({f: npy_header(data, f) for f in _FIELDS})
            rng_state = ast.literal_eval(bytes(saved["rng_state"]).decode())
        except (OSError, EOFError, KeyError, ValueError, SyntaxError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: damaged replay buffer file ({reason(exc)})") from None
        problem = self._layout_problem(saved)
        if problem is not None:
            raise ValueError(f"{path}: {problem}")
        damage = self._damage(saved, rng_state) or next(
            (f"{f} has dtype {saved[f].dtype}" for f in _FIELDS if saved[f].dtype != getattr(self, f).dtype), None
        )
        if damage is not None:
            raise ValueError(f"{path}: damaged replay buffer file ({damage})")
        n = len(saved["rewards"])
        keep = min(n, self.capacity)
        # A full buffer of the same capacity goes back into the same slots (oldest at the saved pos);
        # otherwise the newest ``keep`` rows go to slots 0 .. keep-1.
        same_ring = n == self.capacity
        self.size, self.pos = 0, 0
        try:
            with np.load(path, allow_pickle=False) as data:
                for field in _FIELDS:
                    arr = getattr(self, field)
                    if same_ring:
                        start = saved_pos % self.capacity
                        targets = [arr[start:], arr[:start]]
                    else:
                        targets = [arr[:keep]]
                    read_npy_into(data, field, skip_rows=n - keep, targets=targets)
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            # Found only while streaming the bulk (after the checks above): the buffer is left empty.
            raise ValueError(f"{path}: damaged replay buffer file ({reason(exc)}); the buffer is left empty") from None
        self.size = keep
        self.pos = (saved_pos % self.capacity) if same_ring else keep % self.capacity
        self.added_lifetime = int(saved["added_lifetime"])
        count, mean, m2 = saved["reward_moments"]
        self.reward_count = int(np.ravel(count)[0])
        self.reward_mean, self.reward_m2 = np.array(mean)[()], np.array(m2)[()]
        states = rng_state if self._agent_shape else [rng_state]
        for rng, state in zip(self._rngs, states, strict=True):
            rng.bit_generator.state = state
        return True


class FlatReplayBuffer(_RingBuffer):
    """Uniform replay over the last ``capacity`` transitions of one agent.

    Arrays are ``[capacity, ...]``; ``sample`` returns ``[batch_size, ...]``.

    Args:
        capacity: number of transitions kept (oldest overwritten first).
        obs_dim: observation size.
        act_dim: action size.
        seed: seed of the sampling RNG (its state is saved with the buffer).
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int | None = None) -> None:
        super().__init__(capacity, obs_dim, act_dim, seeds=[seed], agent_shape=())

    @property
    def rng(self) -> np.random.Generator:
        """The sampling RNG (its state is saved with the buffer); assigning one replaces it."""
        return self._rngs[0]

    @rng.setter
    def rng(self, generator: np.random.Generator) -> None:
        self._rngs[0] = generator

    @property
    def reward_std(self) -> float:
        """Sample standard deviation of every reward ever added (1.0 before two rewards)."""
        return float(self._reward_std())


class PopulationReplayBuffer(_RingBuffer):
    """Uniform replay over the last ``capacity`` time steps of ``K = len(seeds)`` independent agents.

    Arrays are ``[capacity, K, ...]`` (time-major, agent axis second); ``add`` takes ``[n, K, ...]`` (all agents
    add the same number of transitions at once) and ``sample`` returns ``[batch_size, K, ...]``. Agent ``i``'s
    slice of everything equals what ``FlatReplayBuffer(capacity, obs_dim, act_dim, seed=seeds[i])``, fed
    agent ``i``'s transitions, holds or returns.

    Args:
        capacity: number of time steps kept per agent (oldest overwritten first).
        obs_dim: observation size of one agent.
        act_dim: action size of one agent.
        seeds: one sampling seed per agent (``rngs[i] = np.random.default_rng(seeds[i])``).

    Raises:
        ValueError: ``seeds`` is empty.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seeds: list[int]) -> None:
        if len(seeds) == 0:
            raise ValueError("PopulationReplayBuffer needs one seed per agent; got no seeds")
        super().__init__(capacity, obs_dim, act_dim, seeds=list(seeds), agent_shape=(len(seeds),))
        self.rngs = self._rngs

    @property
    def n_agents(self) -> int:
        return self._agent_shape[0]

    @property
    def reward_std(self) -> NDArray[np.float64]:
        """Per-agent sample standard deviation of every reward ever added, ``[K]`` (1.0 before two)."""
        return np.array(self._reward_std(), np.float64)
