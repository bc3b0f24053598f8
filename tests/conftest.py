"""Test-wide settings: one thread per process, Ray auth off, feature cache in a temp dir, helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Before ray is imported anywhere: no token auth for the local test cluster (tests only).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PORTFOLIO_RL_CACHE", tempfile.mkdtemp(prefix="portfolio_rl_test_cache_"))
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

import numpy as np
import pandas as pd
import pytest

import trainer  # sets OMP_NUM_THREADS (one thread per process) before torch is imported


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


def sharpe_by_hand(x: np.ndarray) -> float:
    """Annualised Sharpe ratio of daily returns with numpy alone (mean / sample std x sqrt(252))."""
    return float(x.mean() / x.std(ddof=1) * np.sqrt(252))


def relative_by_hand(r: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Daily returns ``r`` against a benchmark's ``b`` over the same days, with numpy alone (not trainer.metrics)."""
    d = r - b
    te = d.std(ddof=1) * np.sqrt(252)
    return {
        "sharpe_minus_benchmark": sharpe_by_hand(r) - sharpe_by_hand(b),
        "excess_return": d.mean() * 252,
        "tracking_error": te,
        "information_ratio": d.mean() * 252 / te,
        "beta": np.cov(r, b, ddof=1)[0, 1] / b.var(ddof=1),
    }


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


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Building an algorithm sets this process's torch threads to what ``resources.torch_threads: auto``
    gives its learner (two with a synchronous remote env runner on a 2-CPU instance): every test starts
    with the threads the suite runs with (torch is not imported for tests that never needed it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(trainer.OMP_NUM_THREADS))
    yield


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (2 CPUs, no dashboard, on 127.0.0.1); yields its address."""
    import ray

    from trainer.runtime.ray_init import init_ray

    init_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def tune_args(storage, *sets: str, exp: str = "smoke") -> list[str]:
    """``trainer.tune`` arguments: ``--exp``, ``--storage`` and one ``--set`` per override."""
    return ["--exp", exp, "--storage", str(storage), *(arg for s in sets for arg in ("--set", s))]


def cli_env(ray_address: str) -> dict[str, str]:
    """Environment for CLI subprocesses: join the session's Ray instance instead of starting one."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_address
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def train_cli(out, ray_address: str, *args: str, timeout: int = 300, cwd=None):
    """Run ``python -m trainer.train --out OUT ARGS`` against the session's Ray instance (in ``cwd``)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "trainer.train", "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(ray_address), timeout=timeout, cwd=cwd)


def checkpoints(run_dir) -> list:
    return sorted((run_dir / "checkpoints").glob("checkpoint_*"))


@pytest.fixture(scope="session")
def smoke_run(ray_session, tmp_path_factory):
    """One real smoke training run through the CLI, shared by the trainer and backtest tests."""
    # a relative --out, as users type it (RLlib's checkpoint writer refuses relative paths; ours resolves them)
    base = tmp_path_factory.mktemp("smoke")
    out = base / "run"
    res = train_cli("run", ray_session, "--exp", "smoke", cwd=base)
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
        text = p.read_text()
        # Read while a trial runs, the file may end inside a row Tune is still writing: only rows that end
        # with a newline are complete.
        complete = text[: text.rfind("\n") + 1]
        out[p.parent.name] = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return out


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_get(url: str, token: str | None = None, timeout: float = 10) -> dict:
    """GET a JSON endpoint of the Ray dashboard, with the cluster's token when it has token auth."""
    import json
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def wait_for_nodes(dashboard: str, n: int, timeout: float = 90, token: str | None = None) -> list[dict]:
    """The cluster's alive nodes (state API records) once there are ``n`` of them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            nodes = dashboard_get(f"{dashboard}/api/v0/nodes?limit=100", token)["data"]["result"]["result"]
            alive = [x for x in nodes if x["state"] == "ALIVE"]
            if len(alive) >= n:
                return alive
        except Exception:  # the dashboard is still starting
            pass
        time.sleep(1)
    raise TimeoutError(f"Ray cluster did not reach {n} node(s) in {timeout} s")


@contextlib.contextmanager
def ray_cluster(
    log_dir: Path, temp_dir: Path | None = None, env: dict[str, str] | None = None, token: str | None = None
) -> Iterator[dict]:
    """A real two-node Ray cluster: ``ray start --head`` (1 CPU, dashboard on 127.0.0.1) plus a worker node
    (2 CPUs, custom resource ``rollout``: 2); both stopped on exit.

    Started with ``--block`` so that terminating our two processes stops exactly these nodes (never
    ``ray stop``, which would stop every Ray node on the machine).

    Args:
        log_dir: where ``head.log`` and ``worker.log`` go.
        temp_dir: a folder for the nodes' temp dirs (``--temp-dir``), ``head/`` (session files, the Prometheus
            service-discovery file) and ``worker/``; default Ray's own, shared with every other Ray instance on
            the machine.
        env: the nodes' environment (default: this process' with token authentication off).
        token: the cluster's token, when ``env`` turns token authentication on.

    Yields:
        ``address`` (GCS), ``dashboard`` (URL), ``worker_node_id``, ``env`` (the nodes' environment).
    """
    ports = {name: free_port() for name in ("gcs", "dash", "agent1", "client", "agent2")}
    # `ray start --head` records itself in <temp dir>/ray_current_cluster; put back what was there.
    current = (temp_dir / "head" if temp_dir else Path("/tmp/ray")) / "ray_current_cluster"
    previous = current.read_text() if current.exists() else None
    env = env if env is not None else dict(os.environ, RAY_AUTH_MODE="disabled")
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--block", "--disable-usage-stats", "--object-store-memory=200000000"]
    # Each node its own temp dir, as on separate machines: nodes sharing one would also share the unpacked
    # working_dir of `ray job submit`, and one node's runtime-env agent re-unpacking it (it does not know
    # the other's cache) pulls the directory from under a job driver running in it.
    head_dir = [f"--temp-dir={temp_dir / 'head'}"] if temp_dir else []
    worker_dir = [f"--temp-dir={temp_dir / 'worker'}"] if temp_dir else []
    head_log, worker_log = open(log_dir / "head.log", "w"), open(log_dir / "worker.log", "w")  # noqa: SIM115
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            f"--port={ports['gcs']}",
            "--num-cpus=1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dash']}",
            f"--dashboard-agent-listen-port={ports['agent1']}",
            f"--ray-client-server-port={ports['client']}",
            *common,
            *head_dir,
        ],
        stdout=head_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    procs = [head]
    try:
        dash = f"http://127.0.0.1:{ports['dash']}"
        wait_for_nodes(dash, 1, token=token)
        worker = subprocess.Popen(
            [
                ray_bin,
                "start",
                f"--address=127.0.0.1:{ports['gcs']}",
                "--num-cpus=2",
                '--resources={"rollout": 2}',
                f"--dashboard-agent-listen-port={ports['agent2']}",
                *common,
                *worker_dir,
            ],
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append(worker)
        nodes = wait_for_nodes(dash, 2, token=token)
        worker_id = next(n["node_id"] for n in nodes if "rollout" in n["resources_total"])
        yield {"address": f"127.0.0.1:{ports['gcs']}", "dashboard": dash, "worker_node_id": worker_id, "env": env}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        head_log.close()
        worker_log.close()
        if previous is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(previous)


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
