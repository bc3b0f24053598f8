"""Observation normalisation that keeps raw observations in the episodes (and so in the replay buffer).

RLlib's ``MeanStdFilter`` writes normalised observations back into the episodes, so a replay buffer fed from
them holds observations normalised with whatever statistics were current when they were collected; the
statistics keep moving, so old and new transitions disagree (docs/rllib-notes.md). ``RawObsMeanStdFilter`` is RLlib's
filter with the same statistics, state, merging across env runners and checkpointing, but it puts the
normalised observation only into the *batch* the module acts on; the episode keeps the raw one. The replay
buffer stores raw observations and ``PortfolioSAC`` normalises each sampled batch with the current
statistics, so a sampled transition is normalised exactly as the policy would see it now.

The rest of the env runner's per-step pipelines are two pieces here instead of RLlib's defaults (five pieces
from env to module, six back), which the config switches off: ``ObsToModule`` batches the observations and
makes them tensors, ``ActionsToEnv`` makes the module's actions numpy and unsquashes them to the env's action
space. They call RLlib's own functions on the same data (``batch_fn``, ``convert_to_torch_tensor``,
``convert_to_numpy``, ``unsquash_action``), so the episodes hold the same values bit for bit
(tests/trainer/rl/test_connector_pipelines.py); what they drop is the work our single-agent, stateless modules
never need (time ranks, recurrent states, agent-to-module mapping, per-episode dictionaries and a timer per
piece): about 0.15 ms of the runner's 0.8 ms per env step on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.env_to_module import MeanStdFilter
from ray.rllib.connectors.module_to_env import GetActions
from ray.rllib.core.columns import Columns
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.spaces.space_utils import batch as batch_fn
from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter, normalize_with

__all__ = [
    "ActionsToEnv",
    "FilterStats",
    "FrozenObsFilter",
    "ObsToModule",
    "RawObsMeanStdFilter",
    "find_obs_filter",
    "make_env_to_module_connector",
    "make_module_to_env_connector",
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
        sa_episodes = list(self.single_agent_episode_iterator(episodes))
        items = self.normalize_each([sa_episode.get_observations(indices=-1) for sa_episode in sa_episodes])
        for sa_episode, item in zip(sa_episodes, items, strict=True):
            # The default AddObservationsFromEpisodesToBatch piece skips OBS when it is already present.
            self.add_batch_item(batch, Columns.OBS, item_to_add=item, single_agent_episode=sa_episode)
        return batch

    def normalize_each(self, observations: list[NDArray]) -> list[NDArray]:
        """What ``__call__`` puts in the batch for episodes whose latest observations these are, in order
        (``PortfolioEnvRunner`` calls it without episodes)."""
        if self._filters is None:
            self._init_new_filters()
        filt = self._filters[None]
        return [filt(raw, update=self._update_stats) for raw in observations]

    def stats(self) -> FilterStats:
        """The statistics of the observations seen so far (normalise batches with ``normalize_with``)."""
        if self._filters is None:
            self._init_new_filters()
        rs = self._filters[None].running_stats
        return FilterStats(rs.mean, rs.std, int(rs.num_pushes))


class ObsToModule(ConnectorV2):
    """The env-to-module pipeline's last piece: each episode's latest observation, batched, as a tensor.

    Takes what the observation filter put in the batch (one normalised observation per episode), or each
    episode's raw latest observation when there is no filter, and returns ``{OBS: tensor}`` as RLlib's
    ``AddObservationsFromEpisodesToBatch``, ``BatchIndividualItems`` and ``NumpyToTensor`` would for a
    single-agent module without recurrent state.
    """

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None, *, device: Any = None):
        super().__init__(input_observation_space, input_action_space)
        self._device = device

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs) -> Any:
        per_episode = batch.get(Columns.OBS)
        if per_episode is None:
            items = [ep.get_observations(indices=-1) for ep in self.single_agent_episode_iterator(episodes)]
        else:
            items = [item for episode_items in per_episode.values() for item in episode_items]
        return self.module_input(items)

    def module_input(self, items: list[NDArray]) -> dict[str, Any]:
        """``{OBS: tensor}`` of one observation per env, in env order (``PortfolioEnvRunner`` calls it directly)."""
        obs = batch_fn(items, individual_items_already_have_batch_dim="auto")
        return {Columns.OBS: convert_to_torch_tensor(obs, device=self._device)}


class ActionsToEnv(ConnectorV2):
    """The whole module-to-env pipeline: the module's outputs as numpy, and the actions the env receives.

    As RLlib's default pieces for a single-agent module without recurrent state: the action drawn where the
    module did not draw it (``GetActions``), every output as numpy with the envs first, and
    ``ACTIONS_FOR_ENV`` unsquashed (``normalize_actions``) or clipped (``clip_actions``) to the action space.
    """

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        normalize_actions: bool,
        clip_actions: bool,
    ):
        super().__init__(input_observation_space, input_action_space)
        self.normalize_actions, self.clip_actions = normalize_actions, clip_actions
        self._get_actions = GetActions()

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs) -> Any:
        self._get_actions._get_actions(batch, rl_module, explore)  # returns at once where the module drew
        batch = convert_to_numpy(batch)
        actions = batch[Columns.ACTIONS]
        if self.normalize_actions:
            batch[Columns.ACTIONS_FOR_ENV] = unsquash_action(actions, self.input_action_space)
        elif self.clip_actions:
            batch[Columns.ACTIONS_FOR_ENV] = clip_action(actions, self.input_action_space)
        return batch


def make_env_to_module_connector(enabled: bool, clip: float) -> Callable:
    """The ``env_to_module_connector`` factory for the config: the observation filter (when ``enabled``)
    and ``ObsToModule``, the whole pipeline (the config adds none of RLlib's default pieces)."""

    def factory(env: Any = None, spaces: Any = None, device: Any = None) -> list[ConnectorV2]:
        pieces: list[ConnectorV2] = [RawObsMeanStdFilter(clip_by_value=clip)] if enabled else []
        return [*pieces, ObsToModule(device=device)]

    return factory


def make_module_to_env_connector(normalize_actions: bool, clip_actions: bool) -> Callable:
    """The ``module_to_env_connector`` factory for the config: ``ActionsToEnv``, the whole pipeline."""

    def factory(env: Any = None, spaces: Any = None, device: Any = None) -> ActionsToEnv:
        return ActionsToEnv(normalize_actions=normalize_actions, clip_actions=clip_actions)

    return factory
