"""trainer.rl.connectors: raw observations stay in the episodes, the module's batch gets normalised ones,
statistics match numpy, the vectorised formula matches RLlib's filter, frozen filters do not move."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.filter import SMALL_NUMBER

from trainer.rl.connectors import (
    FilterStats,
    FrozenObsFilter,
    ObsToModule,
    RawObsMeanStdFilter,
    find_obs_filter,
    make_env_to_module_connector,
    normalize_with,
)

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _filter(**kwargs) -> RawObsMeanStdFilter:
    # Spaces are set after construction as the env runner does: passing them to the constructor crashes
    # in RLlib 2.60 (its space recomputation reads clip_by_value before __init__ sets it).
    filt = RawObsMeanStdFilter(**kwargs)
    filt.input_observation_space = OBS_SPACE
    filt.input_action_space = ACT_SPACE
    return filt


def _observations(n: int, seed: int = 0) -> np.ndarray:
    """Observations of very different scales per component, as portfolio features are."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3)) * [0.01, 1.0, 50.0] + [0.002, -3.0, 100.0]).astype(np.float32)


def _run_episode(filt: RawObsMeanStdFilter, observations: np.ndarray) -> tuple[SingleAgentEpisode, list]:
    """Feed one episode step by step through the connector; return it and each call's batch OBS."""
    episode = SingleAgentEpisode(observations=[observations[0]], observation_space=OBS_SPACE, action_space=ACT_SPACE)
    seen = []
    for t in range(len(observations)):
        if t > 0:
            episode.add_env_step(observations[t], np.zeros(2, np.float32), 0.0)
        batch = filt(rl_module=None, batch={}, episodes=[episode])
        (items,) = batch[Columns.OBS].values()  # one episode -> one entry holding one observation
        seen.append(items[0])
    return episode, seen


def test_episode_keeps_raw_observations_while_the_batch_gets_normalised_ones():
    observations = _observations(40)
    filt = _filter(clip_by_value=10.0)
    episode, seen = _run_episode(filt, observations)
    # the episode (what the replay buffer stores) holds exactly what the env returned
    np.testing.assert_array_equal(np.asarray(episode.get_observations(slice(0, 40))), observations)
    # the batch of call t is normalised with the statistics of observations 0..t (pushed, then applied)
    for t in (1, 5, 39):
        head = observations[: t + 1].astype(np.float64)
        expected = (observations[t] - head.mean(0)) / (head.std(0, ddof=1) + SMALL_NUMBER)
        np.testing.assert_allclose(seen[t], expected, rtol=1e-5, atol=1e-6)
        assert seen[t].dtype == np.float32
    assert np.abs(np.stack(seen[5:])).max() > 1.0  # real spread, so the tolerance above is a real check


def test_statistics_equal_numpy_mean_and_sample_std_of_what_it_saw():
    observations = _observations(50, seed=1)
    filt = _filter()
    empty = filt.stats()
    assert isinstance(empty, FilterStats) and empty.count == 0
    np.testing.assert_array_equal(empty.mean, np.zeros(3))
    _run_episode(filt, observations)
    stats = filt.stats()
    assert stats.count == 50
    np.testing.assert_allclose(stats.mean, observations.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, observations.astype(np.float64).std(0, ddof=1), rtol=1e-6)
    mean, std, count = stats  # still unpacks as a plain triple
    assert count == stats.count and mean is stats.mean and std is stats.std


def test_the_filter_epsilon_is_rllibs():
    """Policy files carry the epsilon, and reading them needs no RLlib: the copy must be RLlib's number."""
    from trainer.evaluation.obs_filter import FILTER_EPSILON

    assert FILTER_EPSILON == SMALL_NUMBER


def test_normalize_with_is_the_filter_formula_within_float32_rounding():
    rng = np.random.default_rng(2)
    mean = np.array([0.5, -2.0, 100.0])
    std = np.array([0.01, 3.0, 0.0], np.float32)  # a constant component: std 0
    obs = (rng.standard_normal((64, 3)) * [0.02, 4.0, 1.0] + mean).astype(np.float32)
    original = obs.copy()
    out = normalize_with(obs, mean, std, 5.0)
    exact = np.clip((obs.astype(np.float64) - mean) / (std.astype(np.float64) + SMALL_NUMBER), -5.0, 5.0)
    assert out.dtype == np.float32 and out.shape == (64, 3)
    np.testing.assert_allclose(out, exact, rtol=2e-6, atol=1e-6)
    assert out.min() == -5.0 and out.max() == 5.0  # the clip is active on the std-0 component
    np.testing.assert_array_equal(obs, original)  # the caller's batch is not modified
    # no clip: values beyond 5 stay
    unclipped = normalize_with(obs, mean, std, None)
    np.testing.assert_allclose(unclipped[:, :2], exact[:, :2], rtol=2e-6, atol=1e-6)
    assert np.abs(unclipped[:, 2]).max() > 1e4


def test_normalize_with_matches_rllibs_own_filter_call():
    filt = _filter(clip_by_value=10.0)
    _run_episode(filt, _observations(30, seed=3))
    stats, rllib_filter = filt.stats(), filt._filters[None]
    batch = _observations(16, seed=4)
    ours = normalize_with(batch, stats.mean, stats.std, filt.clip_by_value)
    theirs = np.stack([rllib_filter(o, update=False) for o in batch])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    assert filt.stats().count == 30  # neither path pushed anything


def test_frozen_filter_normalises_with_fixed_statistics_and_never_updates():
    trained = _filter(clip_by_value=10.0)
    _run_episode(trained, _observations(30, seed=5))
    frozen = _filter(clip_by_value=10.0, update_stats=False)
    frozen.set_state(trained.get_state())  # what evaluation restores from a checkpoint
    before = frozen.stats()
    assert before.count == 30
    np.testing.assert_array_equal(before.mean, trained.stats().mean)
    new = _observations(10, seed=6) * 3.0
    episode, seen = _run_episode(frozen, new)
    after = frozen.stats()
    assert after.count == 30
    np.testing.assert_array_equal(after.mean, before.mean)
    np.testing.assert_array_equal(after.std, before.std)
    np.testing.assert_allclose(np.stack(seen), normalize_with(new, before.mean, before.std, 10.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(episode.get_observations(slice(0, 10))), new)


@pytest.mark.parametrize("clip", [None, 10.0, 0.5])
def test_normalising_in_place_gives_the_same_floats_as_normalize_with(clip):
    rng = np.random.default_rng(4)
    mean = rng.standard_normal(7).astype(np.float32)
    std = np.concatenate([[0.0], rng.random(6) * 3]).astype(np.float32)  # a constant component: std 0 -> 1/epsilon
    obs = (rng.standard_normal((2048, 7)) * 40).astype(np.float32)
    obs[0, 1] = np.nan
    frozen = FrozenObsFilter(mean, std, clip)
    expected = frozen(obs)
    work = obs.copy()
    out = frozen.normalize_in_place(work)
    assert out is work and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)  # bit for bit, NaN where NaN
    assert clip is None or (np.nanmax(np.abs(out)) == clip and np.isnan(out[0, 1]))


def test_env_to_module_connector_factory():
    (no_filter,) = make_env_to_module_connector(False, 10.0)()
    assert type(no_filter) is ObsToModule
    factory = make_env_to_module_connector(True, 4.0)
    piece, last = factory(None, None, None)
    assert isinstance(piece, RawObsMeanStdFilter) and piece.clip_by_value == 4.0
    assert type(last) is ObsToModule
    assert factory()[0] is not piece  # a fresh filter per env runner


def test_find_obs_filter():
    class Pipeline:
        def __init__(self, connectors):
            self.connectors = connectors

    filt = _filter()
    assert find_obs_filter(None) is None
    assert find_obs_filter(Pipeline([object(), filt])) is filt
    assert find_obs_filter(Pipeline([object()])) is None


def test_checkpoint_round_trip_keeps_the_clip_and_the_statistics(tmp_path):
    """Evaluation rebuilds the filter from a checkpoint: a non-default clip must survive, not revert to 10."""
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline

    filt = _filter(clip_by_value=3.0)
    _run_episode(filt, _observations(25, seed=7))
    pipeline = EnvToModulePipeline(input_observation_space=OBS_SPACE, input_action_space=ACT_SPACE, connectors=[filt])
    pipeline.save_to_path(tmp_path)
    restored = find_obs_filter(EnvToModulePipeline.from_checkpoint(tmp_path))
    assert type(restored) is RawObsMeanStdFilter and restored is not filt
    assert restored.clip_by_value == 3.0
    saved, loaded = filt.stats(), restored.stats()
    assert loaded.count == saved.count == 25
    np.testing.assert_array_equal(loaded.mean, saved.mean)
    np.testing.assert_array_equal(loaded.std, saved.std)
