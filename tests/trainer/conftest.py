"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import pytest

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
