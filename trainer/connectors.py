"""Observation normalisation that keeps raw observations in the episodes (and so in the replay buffer).

RLlib's ``MeanStdFilter`` writes normalised observations back into the episodes, so a replay buffer fed from
them holds observations normalised with whatever statistics were current when they were collected; the
statistics keep moving, so old and new transitions disagree (docs/rllib-notes.md). ``RawObsMeanStdFilter`` is RLlib's
filter with the same statistics, state, merging across env runners and checkpointing, but it puts the
normalised observation only into the *batch* the module acts on; the episode keeps the raw one. The replay
buffer stores raw observations and ``PortfolioSAC`` normalises each sampled batch with the current
statistics, so a sampled transition is normalised exactly as the policy would see it now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from ray.rllib.connectors.env_to_module import MeanStdFilter
from ray.rllib.core.columns import Columns
from ray.rllib.utils.filter import SMALL_NUMBER


class FilterStats(NamedTuple):
    """Running statistics of the observations a filter has seen, in the filter's own precision.

    Attributes:
        mean: per-component mean (float64).
        std: per-component sample standard deviation (float32; 0 until two observations were seen).
        count: number of observations seen.
    """

    mean: NDArray[np.float64]
    std: NDArray[np.float32]
    count: int


class RawObsMeanStdFilter(MeanStdFilter):
    """``MeanStdFilter`` that normalises the module's input but leaves the episodes' observations raw."""

    def __init__(self, **kwargs: Any) -> None:
        # Defined so that RLlib records the constructor arguments (clip_by_value, update_stats, ...):
        # ConnectorV2 captures them only for a class with its own __init__, and rebuilds a connector
        # restored from a checkpoint from them; without this a saved clip silently reverts to 10.
        super().__init__(**kwargs)

    def __call__(self, *, rl_module, batch, episodes, explore=None, persistent_data=None, **kwargs) -> Any:
        if self._filters is None:
            self._init_new_filters()
        filt = self._filters[None]
        for sa_episode in self.single_agent_episode_iterator(episodes):
            raw = sa_episode.get_observations(indices=-1)
            # The default AddObservationsFromEpisodesToBatch piece skips OBS when it is already present.
            self.add_batch_item(
                batch,
                Columns.OBS,
                item_to_add=filt(raw, update=self._update_stats),
                single_agent_episode=sa_episode,
            )
        return batch

    def stats(self) -> FilterStats:
        """The statistics of the observations seen so far (normalise batches with ``normalize_with``)."""
        if self._filters is None:
            self._init_new_filters()
        rs = self._filters[None].running_stats
        return FilterStats(rs.mean, rs.std, int(rs.num_pushes))


def normalize_with(obs: NDArray[np.float32], mean: NDArray, std: NDArray, clip: float | None) -> NDArray[np.float32]:
    """``clip((obs - mean) / (std + SMALL_NUMBER))``: RLlib's filter formula, vectorised over a batch.

    In float32 and in place (RLlib's filter computes in float64 and returns float32): within one float32
    rounding of the filter's output, and ~4x faster on the 2 x 2,048 x 201 values normalised per sampling
    round of the reference configuration.
    """
    out = np.subtract(obs, np.asarray(mean, np.float32), dtype=np.float32)
    np.divide(out, np.asarray(std + SMALL_NUMBER, np.float32), out=out)
    if clip:
        np.clip(out, -clip, clip, out=out)
    return out


def make_env_to_module_connector(enabled: bool, clip: float) -> Callable | None:
    """The ``env_to_module_connector`` factory for the config (None when the filter is off)."""
    if not enabled:
        return None

    def factory(env: Any = None, spaces: Any = None, device: Any = None) -> RawObsMeanStdFilter:
        return RawObsMeanStdFilter(clip_by_value=clip)

    return factory


def find_obs_filter(pipeline: Any) -> RawObsMeanStdFilter | None:
    """The filter piece of an env-to-module pipeline, or None."""
    if pipeline is None:
        return None
    for piece in getattr(pipeline, "connectors", []):
        if isinstance(piece, RawObsMeanStdFilter):
            return piece
    return None


@dataclass(frozen=True)
class FrozenObsFilter:
    """A snapshot of a filter's statistics, applied without updating them (evaluation, backtests, replay).

    The float32 mean and ``std + SMALL_NUMBER`` are computed once here, not on every call.
    """

    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    clip: float | None

    @classmethod
    def of(cls, filt: RawObsMeanStdFilter | None) -> FrozenObsFilter | None:
        """The frozen statistics of ``filt`` now (None when there is no filter)."""
        if filt is None:
            return None
        mean, std, _ = filt.stats()
        return cls(np.asarray(mean, np.float32), np.asarray(std, np.float32), filt.clip_by_value)

    def __call__(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        return normalize_with(obs, self.mean, self.std, self.clip)
