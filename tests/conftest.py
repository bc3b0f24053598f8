"""Test-wide settings: one thread per process, Ray auth off, feature cache in a temp dir, helpers."""

from __future__ import annotations

import os
import tempfile

# Before torch/ray are imported anywhere: one thread per process (9x faster on 2 cores, see
# ../shared/docs/rllib-2.60-notes.md) and no token auth for the local test cluster (tests only).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PORTFOLIO_RL_CACHE", tempfile.mkdtemp(prefix="portfolio_rl_test_cache_"))
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

import numpy as np
import pandas as pd
import pytest


def write_wide_csv(path, prices: pd.DataFrame) -> str:
    """Write prices (DatetimeIndex x tickers) as a wide CSV with a 'date' column; return the path."""
    frame = prices.copy()
    frame.index.name = "date"
    frame.to_csv(path, date_format="%Y-%m-%d")
    return str(path)


def synthetic_prices(
    n_days: int = 600, n_assets: int = 3, seed: int = 0, drifts: list[float] | None = None
) -> pd.DataFrame:
    """Business-day geometric random walks; ``drifts`` are daily log-drifts per asset."""
    rng = np.random.default_rng(seed)
    mu = np.array(drifts if drifts is not None else [0.0003] * n_assets)
    log_ret = mu + 0.01 * rng.standard_normal((n_days, len(mu)))
    prices = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    dates = pd.bdate_range("2010-01-04", periods=n_days)
    return pd.DataFrame(prices, index=dates, columns=[f"A{i}" for i in range(len(mu))])


@pytest.fixture
def price_csv(tmp_path):
    """A valid wide CSV of 600 days x 3 assets."""
    return write_wide_csv(tmp_path / "prices.csv", synthetic_prices())


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (2 CPUs, no dashboard); yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def cli_env(ray_address: str) -> dict[str, str]:
    """Environment for CLI subprocesses: join the session's Ray instance instead of starting one."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_address
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
