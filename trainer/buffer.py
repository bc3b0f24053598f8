"""A flat, preallocated ring buffer of raw transitions with uniform sampling.

Why not RLlib's episode buffers: they sample by slicing episodes per transition, which dominated the
update step in profiles, they store observations already normalised by a drifting filter, and
RLlib never checkpoints them (docs/rllib-notes.md). This buffer stores raw float32 arrays, samples with one
vectorised index, and saves/restores itself atomically next to the RLlib checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BUFFER_FILE = "replay_buffer.npz"
_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminateds")


class FlatReplayBuffer:
    """Uniform replay over the last ``capacity`` transitions.

    Args:
        capacity: number of transitions kept (oldest overwritten first).
        obs_dim: observation size.
        act_dim: action size.
        seed: seed of the sampling RNG (its state is saved with the buffer).
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int | None = None) -> None:
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminateds = np.zeros(capacity, np.float32)
        self.size = 0
        self.pos = 0
        self.added_lifetime = 0
        self.rng = np.random.default_rng(seed)
        # Running moments of the (clipped) rewards added, for optional reward normalisation.
        self.reward_count = 0
        self.reward_mean = 0.0
        self.reward_m2 = 0.0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: NDArray,
        actions: NDArray,
        rewards: NDArray,
        next_obs: NDArray,
        terminateds: NDArray,
    ) -> None:
        """Append ``n`` transitions (arrays with a leading dimension ``n``)."""
        n = len(rewards)
        if n == 0:
            return
        if n > self.capacity:  # keep only the newest
            obs, actions, rewards, next_obs, terminateds = (
                x[-self.capacity :] for x in (obs, actions, rewards, next_obs, terminateds)
            )
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminateds[idx] = terminateds
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        self.added_lifetime += n
        for r in np.asarray(rewards, np.float64):  # Welford, per reward (n is small per call)
            self.reward_count += 1
            delta = r - self.reward_mean
            self.reward_mean += delta / self.reward_count
            self.reward_m2 += delta * (r - self.reward_mean)

    @property
    def reward_std(self) -> float:
        return float(np.sqrt(self.reward_m2 / (self.reward_count - 1))) if self.reward_count > 1 else 1.0

    def sample_indices(self, batch_size: int) -> NDArray[np.int64]:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return self.rng.integers(0, self.size, batch_size)

    def sample(self, batch_size: int) -> dict[str, NDArray]:
        """A uniform batch (with replacement) of raw transitions."""
        idx = self.sample_indices(batch_size)
        return {f: getattr(self, f)[idx] for f in _FIELDS}

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in _FIELDS)

    # --- persistence ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Arrays of the filled part, in insertion order (oldest first), plus counters."""
        if self.size < self.capacity:
            order = np.arange(self.size)
        else:
            order = (self.pos + np.arange(self.capacity)) % self.capacity
        out: dict[str, Any] = {f: getattr(self, f)[order] for f in _FIELDS}
        out.update(
            capacity=self.capacity,
            added_lifetime=self.added_lifetime,
            reward_moments=np.array([self.reward_count, self.reward_mean, self.reward_m2]),
            rng_state=np.frombuffer(repr(self.rng.bit_generator.state).encode(), np.uint8),
        )
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/replay_buffer.npz`` atomically (temp file + rename)."""
        directory = Path(directory)
        path = directory / BUFFER_FILE
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **self.state())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def load(self, directory: str | Path) -> bool:
        """Restore from ``directory/replay_buffer.npz``; False when there is none."""
        import ast

        path = Path(directory) / BUFFER_FILE
        if not path.exists():
            return False
        with np.load(path) as data:
            n = len(data["rewards"])
            if data["obs"].shape[1:] != self.obs.shape[1:] or data["actions"].shape[1:] != self.actions.shape[1:]:
                raise ValueError(
                    f"{path}: replay buffer shapes {data['obs'].shape[1:]}/{data['actions'].shape[1:]} do not "
                    f"match this run's {self.obs.shape[1:]}/{self.actions.shape[1:]}"
                )
            keep = min(n, self.capacity)
            self.size, self.pos = 0, 0
            self.added_lifetime = 0
            self.add(*(data[f][n - keep :] for f in ("obs", "actions", "rewards", "next_obs", "terminateds")))
            self.added_lifetime = int(data["added_lifetime"])
            self.reward_count, self.reward_mean, self.reward_m2 = (float(x) for x in data["reward_moments"])
            self.reward_count = int(self.reward_count)
            self.rng.bit_generator.state = ast.literal_eval(bytes(data["rng_state"]).decode())
        return True
