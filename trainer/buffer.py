"""A flat, preallocated ring buffer of raw transitions with uniform sampling.

Why not RLlib's episode buffers: they sample by slicing episodes per transition, which dominated the
update step in profiles, they store observations already normalised by a drifting filter, and
RLlib never checkpoints them (docs/rllib-notes.md). This buffer stores raw float32 arrays, samples with one
vectorised index, and saves/restores itself atomically next to the RLlib checkpoint.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
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
        # Every transition counts as added (and its reward in the moments), even one dropped at once below.
        self.added_lifetime += n
        for r in np.asarray(rewards, np.float64):  # Welford, per reward (n is small per call)
            self.reward_count += 1
            delta = r - self.reward_mean
            self.reward_mean += delta / self.reward_count
            self.reward_m2 += delta * (r - self.reward_mean)
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
        """Arrays of the filled part, in insertion order (oldest first), plus counters.

        ``pos`` (the ring slot of the oldest transition once full) lets ``load`` rebuild the same layout, so
        the restored RNG draws the same transitions as the saved buffer would have.
        """
        if self.size < self.capacity:
            order = np.arange(self.size)
        else:
            order = (self.pos + np.arange(self.capacity)) % self.capacity
        out: dict[str, Any] = {f: getattr(self, f)[order] for f in _FIELDS}
        out.update(
            capacity=self.capacity,
            pos=self.pos,
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
        """Restore from ``directory/replay_buffer.npz``; False when there is none.

        Raises:
            ValueError: the file is damaged (truncated, not an ``.npz`` written by ``save``, holding pickled
                objects, or missing a field), or its observation/action sizes differ from this buffer's. The
                buffer is left unchanged in both cases.
        """
        import ast

        path = Path(directory) / BUFFER_FILE
        if not path.exists():
            return False
        try:
            # Read everything before touching the buffer, so a damaged file leaves it as it was.
            # No pickles: every field is a plain array (the RNG state is a repr read by ast.literal_eval).
            with np.load(path, allow_pickle=False) as data:
                saved = {k: data[k] for k in (*_FIELDS, "added_lifetime", "reward_moments", "rng_state")}
                saved_pos = int(data["pos"]) if "pos" in data.files else 0  # absent in older files
            rng_state = ast.literal_eval(bytes(saved["rng_state"]).decode())
        except (OSError, EOFError, KeyError, ValueError, SyntaxError, zipfile.BadZipFile) as exc:
            # numpy's own messages can mislead here (a non-zip file is reported as pickled data to be
            # loaded with allow_pickle), so name the missing field or just the kind of failure.
            reason = str(exc.args[0]) if isinstance(exc, KeyError) else type(exc).__name__
            raise ValueError(f"{path}: damaged replay buffer file ({reason})") from None
        n = len(saved["rewards"])
        if saved["obs"].shape[1:] != self.obs.shape[1:] or saved["actions"].shape[1:] != self.actions.shape[1:]:
            raise ValueError(
                f"{path}: replay buffer shapes {saved['obs'].shape[1:]}/{saved['actions'].shape[1:]} do not "
                f"match this run's {self.obs.shape[1:]}/{self.actions.shape[1:]}"
            )
        keep = min(n, self.capacity)
        # A full buffer of the same capacity goes back into the same slots (oldest at the saved pos).
        self.size, self.pos = 0, saved_pos % self.capacity if n == self.capacity else 0
        self.add(*(saved[f][n - keep :] for f in ("obs", "actions", "rewards", "next_obs", "terminateds")))
        self.added_lifetime = int(saved["added_lifetime"])
        self.reward_count, self.reward_mean, self.reward_m2 = (float(x) for x in saved["reward_moments"])
        self.reward_count = int(self.reward_count)
        self.rng.bit_generator.state = rng_state
        return True
