"""trainer.buffer.FlatReplayBuffer: shapes, ring wrap-around, uniform seeded sampling, save/load, reward moments."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.buffer import BUFFER_FILE, FlatReplayBuffer

OBS_DIM, ACT_DIM = 3, 2


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


def test_empty_add_is_a_no_op_and_empty_sample_is_an_error():
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
