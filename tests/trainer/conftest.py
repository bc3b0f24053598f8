"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import pytest

from tests.conftest import checkpoints, synthetic_prices, train_cli, write_wide_csv
from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


@pytest.fixture(scope="module")
def algo(ray_session):
    """A smoke-sized ``PortfolioSAC`` after one iteration (buffer and filter statistics filled, some updates
    done), one per test module."""
    exp = load_experiment("smoke", {"sac.learning_starts": 100, "stopping.steps_per_iteration": 200})
    algo = build_sac_config(exp).build_algo()
    algo.train()
    yield algo
    algo.stop()


# every rule between the action and the trade: tilt around the drifted weights, a no-trade band, partial
# rebalancing and position limits on weights and turnover
SETTINGS = {
    "data.action": "tilt",
    "data.tilt_reference": "previous",
    "data.no_trade_band": 0.02,
    "data.rebalance_fraction": 0.8,
    "data.max_weight": 0.35,
    "data.max_turnover": 0.3,
}


@pytest.fixture(scope="session")
def limited_run(ray_session, tmp_path_factory):
    """A short real run on 4 synthetic assets with every trading rule on; its price file."""
    base = tmp_path_factory.mktemp("decide")
    data = write_wide_csv(base / "prices.csv", synthetic_prices(n_days=900, n_assets=4, seed=1))
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    res = train_cli(base / "run", ray_session, "--exp", "smoke", "--data", data, "--steps", "600", *sets)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return checkpoints(base / "run"), data
