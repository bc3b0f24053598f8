"""envs.layout: the observation's blocks, as the env writes them and a network reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.layout import ObservationLayout
from envs.portfolio import PortfolioEnv


def test_split_hand_built_vector_numpy_and_torch():
    layout = ObservationLayout(3, ("a", "b"), ("m",))
    assert (layout.n_features, layout.size) == (7, 11)
    obs = np.arange(2 * layout.size).reshape(2, layout.size)
    assets, shared, weights = layout.split(obs)
    np.testing.assert_array_equal(assets[0], [[0, 1], [2, 3], [4, 5]])  # asset-major
    np.testing.assert_array_equal(shared[1], [17])
    np.testing.assert_array_equal(weights[0], [7, 8, 9, 10])  # assets, then cash
    t_assets, t_shared, t_weights = layout.split(torch.as_tensor(obs))
    assert t_assets.shape == (2, 3, 2) and t_shared.shape == (2, 1) and t_weights.shape == (2, 4)


def test_round_trip_and_bad_sizes():
    layout = ObservationLayout(2, ("x",))
    assert ObservationLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ValueError, match="observation has 4 values; this layout has 5"):
        layout.split(np.zeros(4))
    with pytest.raises(ValueError, match="at least one asset"):
        ObservationLayout(0, ("x",))


def test_env_observation_follows_its_layout(price_csv):
    env = PortfolioEnv(data=price_csv, split="validation")
    env.reset(seed=0)
    layout = env.layout
    assert layout.size == env.observation_space.shape[0]
    assert layout.per_asset == tuple(env.market.feature_config.names) and layout.n_shared == 0
    obs, *_ = env.step(np.linspace(-1, 1, env.n_assets + 1).astype(np.float32))
    assets, shared, weights = layout.split(obs)
    t = env._t
    np.testing.assert_array_equal(assets, env.market.features[t])
    np.testing.assert_allclose(weights, env._w.astype(np.float32))
    assert shared.shape == (0,)
