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


@pytest.mark.parametrize("features", ["asset+rank", "asset+market", "asset+rank+market"])
def test_env_writes_each_feature_sets_blocks(tmp_path, features):
    from envs.features import FeatureConfig
    from tests.conftest import synthetic_prices, write_wide_csv

    csv = write_wide_csv(tmp_path / "prices.csv", synthetic_prices(n_days=2400, n_assets=3))
    env = PortfolioEnv(data=csv, split="validation", features=features)
    cfg = FeatureConfig.of(features)
    layout = env.layout
    assert layout.per_asset == tuple(cfg.names) and layout.shared == tuple(cfg.shared_names)
    assert layout.size == env.observation_space.shape[0] == 3 * len(cfg.names) + len(cfg.shared_names) + 4
    # the purge gap is the set's lookback: the validation window starts that many rows after training ends
    splits = env.market.splits
    assert splits["validation"].start - splits["train"].end - 1 >= cfg.lookback
    env.reset(seed=0)
    obs, *_ = env.step(np.linspace(-1, 1, env.n_assets + 1).astype(np.float32))
    assets, shared, weights = layout.split(obs)
    t = env._t
    np.testing.assert_array_equal(assets, env.market.features[t])
    np.testing.assert_array_equal(shared, env.market.shared[t])
    assert shared.shape == (len(cfg.shared_names),) and (len(cfg.shared_names) == 0 or shared.any())
    np.testing.assert_allclose(weights, env._w.astype(np.float32))
    # a market of another set is refused: the observation would not be the one the setting names
    with pytest.raises(ValueError, match=r"^data: the MarketData holds the features 'asset' but the env's features"):
        PortfolioEnv(data=PortfolioEnv(data=csv, split="validation").market, split="validation", features=features)
