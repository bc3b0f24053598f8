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
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from ray.rllib.connectors.env_to_module import MeanStdFilter
from ray.rllib.core.columns import Columns

from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter, normalize_with

__all__ = [
    "FilterStats",
    "FrozenObsFilter",
    "RawObsMeanStdFilter",
    "find_obs_filter",
    "make_env_to_module_connector",
    "normalize_with",
]


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


def make_env_to_module_connector(enabled: bool, clip: float) -> Callable | None:
    """The ``env_to_module_connector`` factory for the config (None when the filter is off)."""
    if not enabled:
        return None

    def factory(env: Any = None, spaces: Any = None, device: Any = None) -> RawObsMeanStdFilter:
        return RawObsMeanStdFilter(clip_by_value=clip)

    return factory
