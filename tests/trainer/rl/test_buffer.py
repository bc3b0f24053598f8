"""trainer.rl.buffer: shapes, ring wrap-around, uniform seeded sampling, save/load and reward moments of
FlatReplayBuffer, and PopulationReplayBuffer agent by agent against separate FlatReplayBuffers."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.rl.buffer import FlatReplayBuffer, PopulationReplayBuffer
from trainer.runtime.checkpoint import BUFFER_FILE

OBS_DIM, ACT_DIM = 3, 2
SEEDS = [3, 11, 5]  # a population's sampling seeds, one per agent
K = len(SEEDS)


def _transitions(start: int, n: int) -> tuple[np.ndarray, ...]:
    """``n`` transitions whose every value encodes the transition's number ``start .. start + n - 1``.

    obs = i, next_obs = i + 0.5, actions = -i, reward = i / 10, terminated = 1 when i is a multiple of 3.
    """
    i = np.arange(start, start + n, dtype=np.float32)
    obs = np.repeat(i[:, None], OBS_DIM, axis=1)
    actions = -np.repeat(i[:, None], ACT_DIM, axis=1)
    return obs, actions, i / 10, obs + 0.5, (i % 3 == 0).astype(np.float32)


def _filled(capacity: int, n: int, seed: int | None = 0) -> FlatReplayBuffer:
    buf = FlatReplayBuffer(capacity, OBS_DIM, ACT_DIM, seed=seed)
    buf.add(*_transitions(0, n))
    return buf


def test_add_and_sample_shapes_dtypes_and_pairing():
    buf = _filled(capacity=10, n=4)
    assert len(buf) == 4 and buf.pos == 4 and buf.added_lifetime == 4
    batch = buf.sample(64)
    assert set(batch) == {"obs", "next_obs", "actions", "rewards", "terminateds"}
    assert batch["obs"].shape == (64, OBS_DIM) and batch["next_obs"].shape == (64, OBS_DIM)
    assert batch["actions"].shape == (64, ACT_DIM)
    assert batch["rewards"].shape == (64,) and batch["terminateds"].shape == (64,)
    assert all(v.dtype == np.float32 for v in batch.values())
    # every field of a sampled row comes from the same transition, and only filled rows are drawn
    i = batch["obs"][:, 0]
    assert set(i.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(batch["next_obs"][:, 0], i + 0.5)
    np.testing.assert_array_equal(batch["actions"][:, 1], -i)
    np.testing.assert_array_equal(batch["rewards"], (i / 10).astype(np.float32))
    np.testing.assert_array_equal(batch["terminateds"], (i % 3 == 0).astype(np.float32))
    assert buf.nbytes == 10 * (2 * OBS_DIM + ACT_DIM + 2) * 4
    # the sampled arrays are copies: the learner's batch is normalised in place
    for values in batch.values():
        values += 100.0
    np.testing.assert_array_equal(buf.obs[:4, 0], [0.0, 1.0, 2.0, 3.0])
    assert buf.rewards[:4].max() < 1.0 and buf.actions[:4].max() <= 0.0


@pytest.mark.parametrize("population", [False, True], ids=["single", "population"])
def test_empty_add_is_a_no_op_and_empty_sample_is_an_error(population):
    if population:
        buf = PopulationReplayBuffer(5, OBS_DIM, ACT_DIM, seeds=SEEDS)
        buf.add(*_population_transitions(0, 0))
    else:
        buf = FlatReplayBuffer(5, OBS_DIM, ACT_DIM, seed=0)
        buf.add(*_transitions(0, 0))
    assert len(buf) == 0 and buf.added_lifetime == 0
    with pytest.raises(RuntimeError, match=r"^cannot sample from an empty replay buffer$"):
        buf.sample(1)


def test_wrap_around_overwrites_the_oldest_and_caps_the_size():
    buf = _filled(capacity=5, n=3)
    buf.add(*_transitions(3, 4))  # transitions 3..6: 5 and 6 overwrite 0 and 1
    assert len(buf) == 5 and buf.pos == 2 and buf.added_lifetime == 7
    np.testing.assert_array_equal(buf.obs[:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.next_obs[:, 0], [5.5, 6.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(buf.terminateds, [0, 1, 0, 1, 0])
    # state() lists the kept transitions oldest first
    state = buf.state()
    np.testing.assert_array_equal(state["obs"][:, 0], [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(state["actions"][:, 0], [-2, -3, -4, -5, -6])
    assert state["capacity"] == 5 and state["added_lifetime"] == 7


def test_adding_more_than_capacity_at_once_keeps_the_newest():
    buf = _filled(capacity=4, n=1)
    buf.add(*_transitions(1, 10))  # 1..10; only 7..10 fit
    assert len(buf) == 4 and buf.pos == 1
    # ... yet all 11 were added: the lifetime count and the reward moments include the dropped ones
    assert buf.added_lifetime == 11 and buf.reward_count == 11
    assert buf.reward_mean == pytest.approx(np.mean(np.arange(11, dtype=np.float32) / 10), rel=1e-6)
    np.testing.assert_array_equal(buf.state()["obs"][:, 0], [7, 8, 9, 10])
    np.testing.assert_array_equal(np.sort(buf.obs[:, 0]), [7, 8, 9, 10])


def test_sampling_is_uniform_over_the_filled_part():
    draws, capacity = 200_000, 10
    for filled in (4, capacity):  # partly filled, then full after wrap-around
        buf = _filled(capacity=capacity, n=filled if filled < capacity else capacity + 3, seed=7)
        counts = np.bincount(buf.sample_indices(draws), minlength=capacity)
        assert counts[filled:].sum() == 0  # never a row that holds no transition
        expected = draws / filled
        chi2 = float(((counts[:filled] - expected) ** 2 / expected).sum())
        # 99.9% quantile of chi-square with filled - 1 degrees of freedom (4 -> 3 df, 10 -> 9 df)
        assert chi2 < {4: 16.27, 10: 27.88}[filled], (filled, counts)


def test_same_seed_gives_the_same_samples():
    a, b, c = _filled(8, 8, seed=3), _filled(8, 8, seed=3), _filled(8, 8, seed=4)
    first, second = a.sample(32), b.sample(32)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["obs"], c.sample(32)["obs"])


def test_save_then_load_restores_contents_counters_and_the_next_samples(tmp_path):
    buf = _filled(capacity=6, n=5, seed=11)
    buf.add(*_transitions(5, 4))  # wrapped: keeps 3..8
    buf.sample(5)  # advance the RNG so that its saved state is not the initial one
    path = buf.save(tmp_path)
    assert path == tmp_path / BUFFER_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [BUFFER_FILE]  # no temporary file left behind
    restored = FlatReplayBuffer(6, OBS_DIM, ACT_DIM, seed=999)
    assert restored.load(tmp_path) is True
    assert len(restored) == 6 and restored.added_lifetime == 9
    # the same ring layout, so the restored RNG's indices pick the same transitions
    assert restored.pos == buf.pos == 3
    np.testing.assert_array_equal(restored.obs, buf.obs)
    before, after = buf.state(), restored.state()
    for key in ("obs", "next_obs", "actions", "rewards", "terminateds", "reward_moments"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert restored.reward_count == 9 and restored.reward_std == buf.reward_std
    nxt, nxt_restored = buf.sample(16), restored.sample(16)
    for key in nxt:
        np.testing.assert_array_equal(nxt_restored[key], nxt[key], err_msg=key)


def test_load_of_a_file_without_pos_still_restores_the_contents(tmp_path):
    """Files written before ``pos`` was saved load oldest-first from slot 0."""
    state = _filled(capacity=4, n=6).state()
    del state["pos"]
    np.savez(tmp_path / BUFFER_FILE, **state)
    buf = FlatReplayBuffer(4, OBS_DIM, ACT_DIM)
    assert buf.load(tmp_path)
    np.testing.assert_array_equal(buf.obs[:, 0], [2, 3, 4, 5])
    assert buf.pos == 0 and buf.added_lifetime == 6


def test_load_into_a_smaller_buffer_keeps_the_newest(tmp_path):
    _filled(capacity=8, n=8).save(tmp_path)
    small = FlatReplayBuffer(3, OBS_DIM, ACT_DIM, seed=0)
    assert small.load(tmp_path)
    np.testing.assert_array_equal(small.state()["obs"][:, 0], [5, 6, 7])
    assert small.added_lifetime == 8


def test_load_without_a_file_returns_false_and_leaves_the_buffer_alone(tmp_path):
    buf = _filled(capacity=5, n=2)
    assert buf.load(tmp_path) is False
    assert len(buf) == 2 and buf.added_lifetime == 2
    np.testing.assert_array_equal(buf.state()["obs"][:, 0], [0, 1])


def test_load_with_other_sizes_is_a_clear_error(tmp_path):
    _filled(capacity=5, n=2).save(tmp_path)
    other = FlatReplayBuffer(5, OBS_DIM + 1, ACT_DIM, seed=0)
    with pytest.raises(ValueError) as err:
        other.load(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / BUFFER_FILE}: replay buffer shapes (3,)/(2,) do not match this run's (4,)/(2,)"
    )
    assert len(other) == 0


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[: len(raw) // 2], "BadZipFile"),  # truncated write
        (lambda raw: b"", "EOFError"),
        (lambda raw: b"not an npz file", "ValueError"),
    ],
    ids=["truncated", "empty", "garbage"],
)
def test_load_of_a_damaged_file_is_a_clear_error_and_changes_nothing(tmp_path, damage, reason):
    path = _filled(capacity=5, n=3).save(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    buf = _filled(capacity=5, n=2)
    with pytest.raises(ValueError) as err:
        buf.load(tmp_path)
    assert str(err.value) == f"{path}: damaged replay buffer file ({reason})"
    assert len(buf) == 2 and buf.added_lifetime == 2


def test_load_of_a_file_missing_a_field_names_the_field(tmp_path):
    state = _filled(capacity=5, n=3).state()
    del state["rewards"]
    np.savez(tmp_path / BUFFER_FILE, **state)
    with pytest.raises(ValueError, match=r"damaged replay buffer file \(rewards is not a file in the archive\)"):
        FlatReplayBuffer(5, OBS_DIM, ACT_DIM).load(tmp_path)


def test_reward_std_is_the_sample_std_of_every_reward_ever_added():
    buf = FlatReplayBuffer(4, OBS_DIM, ACT_DIM, seed=0)
    assert buf.reward_std == 1.0  # undefined before two rewards: a neutral scale
    rng = np.random.default_rng(0)
    rewards = rng.normal(0.3, 2.0, 11).astype(np.float32)
    for chunk in np.split(rewards, [1, 4, 9]):  # several add() calls, wrapping the 4-slot ring
        n = len(chunk)
        obs = np.zeros((n, OBS_DIM), np.float32)
        buf.add(obs, np.zeros((n, ACT_DIM), np.float32), chunk, obs, np.zeros(n, np.float32))
    assert buf.reward_count == 11
    assert buf.reward_mean == pytest.approx(float(np.mean(rewards.astype(np.float64))), rel=1e-12)
    assert buf.reward_std == pytest.approx(float(np.std(rewards.astype(np.float64), ddof=1)), rel=1e-12)


def test_load_never_unpickles(tmp_path):
    """A buffer file holding a pickled object is refused, not unpickled (loading it could run code)."""
    state = _filled(capacity=5, n=3).state()
    state["rewards"] = np.array([{"not": "an array of numbers"}] * 3, dtype=object)  # stored as a pickle
    np.savez(tmp_path / BUFFER_FILE, **state)
    buf = _filled(capacity=5, n=2)
    with pytest.raises(ValueError) as err:
        buf.load(tmp_path)
    assert str(err.value) == f"{tmp_path / BUFFER_FILE}: damaged replay buffer file (ValueError)"
    assert len(buf) == 2


def test_add_with_mismatched_shapes_is_a_clear_error_and_adds_nothing():
    buf = _filled(capacity=5, n=2)
    obs, actions, rewards, next_obs, terminateds = _transitions(2, 3)
    with pytest.raises(ValueError) as err:
        buf.add(obs, actions[:2], rewards, next_obs, terminateds)
    assert str(err.value) == "replay buffer add: actions has shape (2, 2), expected (3, 2) (n transitions)"
    assert len(buf) == 2 and buf.added_lifetime == 2 and buf.reward_count == 2


# --- PopulationReplayBuffer -------------------------------------------------------------------------------
def _population_transitions(start: int, n: int, k: int = K) -> tuple[np.ndarray, ...]:
    """``[n, k, ...]`` transitions: agent ``j``'s value of transition ``i`` is ``v = i + 100 * j``.

    obs = v, next_obs = v + 0.5, actions = -v, reward = v / 10, terminated = 1 when i is a multiple of 3.
    """
    i = np.arange(start, start + n, dtype=np.float32)
    v = i[:, None] + 100 * np.arange(k, dtype=np.float32)  # [n, k]
    obs = np.repeat(v[..., None], OBS_DIM, axis=2)
    actions = -np.repeat(v[..., None], ACT_DIM, axis=2)
    terminateds = np.repeat((i % 3 == 0).astype(np.float32)[:, None], k, axis=1)
    return obs, actions, v / 10, obs + 0.5, terminateds


def _random_population_transitions(rng: np.random.Generator, n: int, k: int = K) -> tuple[np.ndarray, ...]:
    """``[n, k, ...]`` random transitions, each agent's rewards on its own scale (so the moments differ)."""
    obs, next_obs = rng.normal(size=(2, n, k, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, k, ACT_DIM)).astype(np.float32)
    rewards = (rng.normal(0.1, 1.0, (n, k)) * (1 + np.arange(k))).astype(np.float32)
    terminateds = (rng.uniform(size=(n, k)) < 0.2).astype(np.float32)
    return obs, actions, rewards, next_obs, terminateds


def _agent(transitions: tuple[np.ndarray, ...], j: int) -> tuple[np.ndarray, ...]:
    """Agent ``j``'s slice of population transitions, as a single-agent buffer takes them."""
    return tuple(np.ascontiguousarray(x[:, j]) for x in transitions)


def _filled_population(capacity: int, n: int, seeds: list[int] = SEEDS) -> PopulationReplayBuffer:
    buf = PopulationReplayBuffer(capacity, OBS_DIM, ACT_DIM, seeds=seeds)
    buf.add(*_population_transitions(0, n, len(seeds)))
    return buf


def test_population_shapes_dtypes_pairing_and_memory():
    buf = _filled_population(capacity=10, n=4)
    assert len(buf) == 4 and buf.pos == 4 and buf.added_lifetime == 4 and buf.n_agents == K
    assert buf.obs.shape == (10, K, OBS_DIM) and buf.actions.shape == (10, K, ACT_DIM)
    assert buf.rewards.shape == buf.terminateds.shape == (10, K)
    batch = buf.sample(64)
    assert set(batch) == {"obs", "next_obs", "actions", "rewards", "terminateds"}
    assert batch["obs"].shape == batch["next_obs"].shape == (64, K, OBS_DIM)
    assert batch["actions"].shape == (64, K, ACT_DIM)
    assert batch["rewards"].shape == batch["terminateds"].shape == (64, K)
    assert all(v.dtype == np.float32 for v in batch.values())
    # every field of a sampled row comes from the same transition of the same agent
    v = batch["obs"][..., 0]
    i = v - 100 * np.arange(K)  # the transition number, for agent j's column
    assert set(i.ravel().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(batch["next_obs"][..., 1], v + 0.5)
    np.testing.assert_array_equal(batch["actions"][..., 1], -v)
    np.testing.assert_array_equal(batch["rewards"], (v / 10).astype(np.float32))
    np.testing.assert_array_equal(batch["terminateds"], (i % 3 == 0).astype(np.float32))
    # each agent draws its own rows: the three columns are not the same indices
    assert len({tuple(col) for col in i.T.tolist()}) == K
    assert buf.nbytes == 10 * K * (2 * OBS_DIM + ACT_DIM + 2) * 4 == 1200


def test_population_agent_j_gets_exactly_what_a_buffer_of_its_own_gives():
    """Adds that wrap the ring (one larger than the capacity, one empty), then samples and moments."""
    capacity, rng = 7, np.random.default_rng(0)
    pop = PopulationReplayBuffer(capacity, OBS_DIM, ACT_DIM, seeds=SEEDS)
    alone = [FlatReplayBuffer(capacity, OBS_DIM, ACT_DIM, seed=s) for s in SEEDS]
    assert pop.reward_std.tolist() == [1.0] * K  # before two rewards, as each single buffer's 1.0
    for step, n in enumerate((2, 4, 0, 9, 3, 1)):
        transitions = _random_population_transitions(rng, n)
        pop.add(*transitions)
        for j, buf in enumerate(alone):
            buf.add(*_agent(transitions, j))
        assert (len(pop), pop.pos, pop.added_lifetime) == (len(alone[0]), alone[0].pos, alone[0].added_lifetime)
        batch_size = 5 + step  # a different batch size each round
        batch = pop.sample(batch_size)
        for j, buf in enumerate(alone):
            expected = buf.sample(batch_size)
            for key, values in expected.items():
                np.testing.assert_array_equal(batch[key][:, j], values, err_msg=f"{key}, agent {j}, add {step}")
            np.testing.assert_array_equal(pop.obs[:, j], buf.obs)
            # bit-for-bit the same floats: the population's Welford is the same arithmetic, per agent
            assert pop.reward_count == buf.reward_count
            assert pop.reward_mean[j] == buf.reward_mean and pop.reward_m2[j] == buf.reward_m2
            assert pop.reward_std[j] == buf.reward_std
    # pos: 2, 6, 6, then the newest 7 of 9 from slot 6 (back to 6), then 2 and 3
    assert pop.added_lifetime == 19 and len(pop) == capacity and pop.pos == 3
    assert pop.reward_std.shape == (K,) and len(set(pop.reward_std.tolist())) == K


def test_population_agents_are_independent_of_each_others_seeds_and_data():
    a = _filled_population(capacity=6, n=5, seeds=[1, 2])
    b = PopulationReplayBuffer(6, OBS_DIM, ACT_DIM, seeds=[1, 99])
    obs, actions, rewards, next_obs, terminateds = _population_transitions(0, 5, 2)
    rewards[:, 1] *= 50  # agent 1's rewards differ wildly: agent 0's moments must not move
    b.add(obs, actions, rewards, next_obs, terminateds)
    sa, sb = a.sample(32), b.sample(32)
    for key in sa:
        np.testing.assert_array_equal(sa[key][:, 0], sb[key][:, 0], err_msg=key)
    assert not np.array_equal(sa["obs"][:, 1], sb["obs"][:, 1])
    assert a.reward_std[0] == b.reward_std[0] and a.reward_std[1] != b.reward_std[1]


def test_population_of_one_matches_a_single_agent_buffer():
    pop, buf = _filled_population(capacity=4, n=6, seeds=[8]), _filled(capacity=4, n=6, seed=8)
    batch, expected = pop.sample(20), buf.sample(20)
    for key, values in expected.items():
        np.testing.assert_array_equal(batch[key][:, 0], values, err_msg=key)
    assert pop.reward_std.tolist() == [buf.reward_std]


def test_population_needs_a_seed_per_agent():
    with pytest.raises(ValueError, match=r"^PopulationReplayBuffer needs one seed per agent; got no seeds$"):
        PopulationReplayBuffer(5, OBS_DIM, ACT_DIM, seeds=[])


def test_population_add_without_the_agent_axis_is_a_clear_error():
    """n == K: numpy would broadcast the [n] rewards over the agent axis without a word; add refuses."""
    buf = _filled_population(capacity=5, n=1)
    obs, actions, rewards, next_obs, terminateds = _population_transitions(1, K)
    with pytest.raises(ValueError) as err:
        buf.add(obs, actions, rewards[:, 0], next_obs, terminateds)
    assert str(err.value) == (
        f"replay buffer add: rewards has shape ({K},), expected ({K}, {K}) (n transitions, then {K} agents)"
    )
    with pytest.raises(ValueError) as err:
        buf.add(obs[:, :2], actions, rewards, next_obs, terminateds)
    assert str(err.value) == (
        f"replay buffer add: obs has shape ({K}, 2, {OBS_DIM}), expected ({K}, {K}, {OBS_DIM}) "
        f"(n transitions, then {K} agents)"
    )
    assert len(buf) == 1 and buf.added_lifetime == 1 and buf.reward_count == 1


def test_population_save_then_load_restores_contents_counters_and_every_agents_next_samples(tmp_path):
    buf = _filled_population(capacity=6, n=5)
    buf.add(*_population_transitions(5, 4))  # wrapped: keeps 3..8
    buf.sample(5)  # advance the RNGs so that their saved states are not the initial ones
    path = buf.save(tmp_path)
    assert path == tmp_path / BUFFER_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [BUFFER_FILE]  # no temporary file left behind
    restored = PopulationReplayBuffer(6, OBS_DIM, ACT_DIM, seeds=[0, 0, 0])
    assert restored.load(tmp_path) is True
    assert len(restored) == 6 and restored.added_lifetime == 9 and restored.pos == buf.pos == 3
    np.testing.assert_array_equal(restored.obs, buf.obs)
    np.testing.assert_array_equal(restored.state()["obs"][:, 2, 0], np.arange(3, 9) + 200)
    before, after = buf.state(), restored.state()
    for key in ("obs", "next_obs", "actions", "rewards", "terminateds", "reward_moments"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert restored.reward_count == 9
    np.testing.assert_array_equal(restored.reward_std, buf.reward_std)
    # hand-computed: agent j's rewards are (0..8 + 100 j) / 10, whose sample std does not depend on j
    np.testing.assert_allclose(restored.reward_std, [np.std(np.arange(9) / 10, ddof=1)] * K, rtol=1e-6)
    nxt, nxt_restored = buf.sample(16), restored.sample(16)
    for key in nxt:
        np.testing.assert_array_equal(nxt_restored[key], nxt[key], err_msg=key)


def _refusal(buf: FlatReplayBuffer | PopulationReplayBuffer, directory) -> str:
    """The message of the ValueError ``buf.load(directory)`` raises; the buffer must be left unchanged."""
    before = buf.state()
    with pytest.raises(ValueError) as err:
        buf.load(directory)
    after = buf.state()
    for key in ("obs", "rewards", "reward_moments", "rng_state", "added_lifetime", "pos"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    return str(err.value)


def test_population_load_with_another_number_of_agents_is_a_clear_error(tmp_path):
    _filled_population(capacity=5, n=2, seeds=[1, 2, 3, 4]).save(tmp_path)
    message = _refusal(_filled_population(capacity=5, n=1), tmp_path)
    assert message == f"{tmp_path / BUFFER_FILE}: replay buffer holds 4 agents, this run has 3"


def test_single_agent_and_population_files_are_not_interchangeable(tmp_path):
    single, population = tmp_path / "single", tmp_path / "population"
    single.mkdir(), population.mkdir()
    _filled(capacity=5, n=2).save(single)
    _filled_population(capacity=5, n=2, seeds=[1]).save(population)  # even a population of one
    assert _refusal(_filled_population(capacity=5, n=1, seeds=[1]), single) == (
        f"{single / BUFFER_FILE}: replay buffer holds a single agent's transitions, this run has a population of 1"
    )
    assert _refusal(_filled(capacity=5, n=1), population) == (
        f"{population / BUFFER_FILE}: replay buffer holds a population of 1 agent, this run has a single agent"
    )


def test_population_load_with_other_sizes_is_a_clear_error(tmp_path):
    _filled_population(capacity=5, n=2).save(tmp_path)
    other = PopulationReplayBuffer(5, OBS_DIM, ACT_DIM + 1, seeds=SEEDS)
    assert _refusal(other, tmp_path) == (
        f"{tmp_path / BUFFER_FILE}: replay buffer shapes (3,)/(2,) do not match this run's (3,)/(3,)"
    )


def test_population_load_of_a_damaged_file_is_a_clear_error_and_changes_nothing(tmp_path):
    path = _filled_population(capacity=5, n=3).save(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert _refusal(_filled_population(5, 2), tmp_path) == f"{path}: damaged replay buffer file (BadZipFile)"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rewards", np.zeros((3, K - 1), np.float32), f"rewards has shape (3, {K - 1}), expected (3, {K})"),
        ("reward_moments", np.zeros(3), "reward_moments has shape (3,)"),
        ("rng_state", np.frombuffer(repr([{"state": 1}] * K).encode(), np.uint8), "rng_state"),
        ("rng_state", np.frombuffer(b"{}", np.uint8), "rng_state"),  # one state where K are due
    ],
    ids=["rewards-agents", "moments-shape", "rng-state-content", "rng-state-count"],
)
def test_population_load_of_a_file_whose_fields_disagree_is_a_clear_error(tmp_path, field, value, reason):
    state = _filled_population(capacity=5, n=3).state()
    state[field] = value
    np.savez(tmp_path / BUFFER_FILE, **state)
    message = _refusal(_filled_population(5, 2), tmp_path)
    assert message.startswith(f"{tmp_path / BUFFER_FILE}: damaged replay buffer file ({reason}")


def test_save_and_load_stream_in_pieces_without_copying_the_buffer(tmp_path, monkeypatch):
    """save/load move the arrays in bounded pieces (a population's buffer is gigabytes): with tiny pieces
    the round trip is exact, wrapped or not, into the same and a smaller capacity; saving allocates far less
    than the buffer's size."""
    import tracemalloc

    import trainer.rl.buffer_file as buffer_mod

    monkeypatch.setattr(buffer_mod, "CHUNK_BYTES", 7)
    wrapped = _filled_population(capacity=5, n=8)
    wrapped.save(tmp_path)
    same = PopulationReplayBuffer(5, OBS_DIM, ACT_DIM, SEEDS)
    same.load(tmp_path)
    for f in ("obs", "next_obs", "actions", "rewards", "terminateds"):
        np.testing.assert_array_equal(getattr(same, f), getattr(wrapped, f))
    assert (same.pos, same.size) == (wrapped.pos, wrapped.size)
    smaller = PopulationReplayBuffer(3, OBS_DIM, ACT_DIM, SEEDS)
    smaller.load(tmp_path)
    np.testing.assert_array_equal(smaller.state()["obs"], wrapped.state()["obs"][-3:])

    monkeypatch.setattr(buffer_mod, "CHUNK_BYTES", 64 * 1024)
    big = FlatReplayBuffer(20_000, 50, 4, seed=0)
    big.add(*(np.ones((20_000, *shape), np.float32) for shape in ((50,), (4,), (), (50,), ())))
    tracemalloc.start()
    big.save(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < big.nbytes / 10, (peak, big.nbytes)


def test_load_of_a_file_of_another_dtype_is_a_clear_error(tmp_path):
    state = _filled(capacity=5, n=3).state()
    state["obs"] = state["obs"].astype(np.float64)
    np.savez(tmp_path / BUFFER_FILE, **state)
    buf = _filled(capacity=5, n=2)
    with pytest.raises(ValueError) as err:
        buf.load(tmp_path)
    assert str(err.value) == f"{tmp_path / BUFFER_FILE}: damaged replay buffer file (obs has dtype float64)"
    assert len(buf) == 2
