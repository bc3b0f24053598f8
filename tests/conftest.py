"""Test-wide settings: one thread per process, Ray auth off, feature cache in a temp dir, helpers."""

from __future__ import annotations

import os
import tempfile

# Before ray is imported anywhere: no token auth for the local test cluster (tests only).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PORTFOLIO_RL_CACHE", tempfile.mkdtemp(prefix="portfolio_rl_test_cache_"))
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

import numpy as np
import pandas as pd
import pytest

import trainer  # noqa: F401  sets OMP_NUM_THREADS (one thread per process) before torch is imported


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


@pytest.fixture
def signals_restored():
    """``trainer.train.main`` installs SIGINT/SIGTERM handlers: give pytest its own back afterwards."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (2 CPUs, no dashboard, on 127.0.0.1); yields its address."""
    import ray

    from trainer.ray_init import init_ray

    init_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def cli_env(ray_address: str) -> dict[str, str]:
    """Environment for CLI subprocesses: join the session's Ray instance instead of starting one."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_address
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def train_cli(out, ray_address: str, *args: str, timeout: int = 300):
    """Run ``python -m trainer.train --out OUT ARGS`` against the session's Ray instance."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "trainer.train", "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(ray_address), timeout=timeout)


def checkpoints(run_dir) -> list:
    return sorted((run_dir / "checkpoints").glob("checkpoint_*"))


@pytest.fixture(scope="session")
def smoke_run(ray_session, tmp_path_factory):
    """One real smoke training run through the CLI, shared by the trainer and backtest tests."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    res = train_cli(out, ray_session, "--exp", "smoke")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def toy_market():
    """3 assets over 4 days; every split is the whole series (features zero: not used by P&L tests).

    Prices: A 10, 11, 11, 12.1 (+10%, 0, +10%); B 20, 20, 18, 18 (0, -10%, 0); C 5, 5, 5.5, 5.5 (0, +10%, 0).
    """
    from envs.data import SPLITS, PriceData, SplitRange
    from envs.features import FeatureConfig
    from envs.market import MarketData

    prices = pd.DataFrame(
        {"A": [10.0, 11.0, 11.0, 12.1], "B": [20.0, 20.0, 18.0, 18.0], "C": [5.0, 5.0, 5.5, 5.5]},
        index=pd.bdate_range("2020-01-06", periods=4),
    )
    data = PriceData("toy", "wide", prices)
    splits = {n: SplitRange(n, 0, 3, prices.index[0], prices.index[3]) for n in SPLITS}
    rets = np.zeros((4, 3))
    rets[1:] = prices.to_numpy()[1:] / prices.to_numpy()[:-1] - 1
    return MarketData(data, np.zeros((4, 3, 2), np.float32), rets, splits, FeatureConfig())


def tune_results(exp_dir) -> dict[str, list[dict]]:
    """Each Tune trial's result.json rows (written line by line as results arrive), by trial directory."""
    import json

    out = {}
    for p in sorted(exp_dir.glob("trial_*/result.json")):
        out[p.parent.name] = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out


def listening_addresses(root_pid: int) -> list[str]:
    """``ip:port`` of every listening TCP socket of process ``root_pid`` and its descendants (``ss -ltnp``)."""
    import re
    import subprocess
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if {int(p) for p in re.findall(r"pid=(\d+)", line)} & tree:
            found.append(line.split()[3])
    return found


LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
