"""Distributed execution on this machine: a real two-node Ray cluster, fault tolerance, metrics export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import cli_env, ray_cluster, tune_args
from tests.conftest import tune_results as _results
from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


# --- env runner fault tolerance --------------------------------------------------------------------------
def test_killed_env_runner_is_restarted_and_training_continues(ray_session):
    exp = load_experiment("smoke", {"resources.num_env_runners": 1, "stopping.steps_per_iteration": 200})
    algo = build_sac_config(exp).build_algo()
    try:
        steps = [algo.train()["portfolio"]["env_steps"]]
        (pid,) = algo.env_runner_group.foreach_env_runner(lambda er: os.getpid(), local_env_runner=False)
        os.kill(pid, signal.SIGKILL)
        losses = []
        for _ in range(4):
            p = algo.train()["portfolio"]
            steps.append(p["env_steps"])
            losses.append(p["critic_loss"])
        (new_pid,) = algo.env_runner_group.foreach_env_runner(lambda er: os.getpid(), local_env_runner=False)
        assert new_pid != pid  # a new env runner process
        assert steps[-1] > steps[1] > steps[0] and steps == sorted(steps)  # the step count keeps growing
        assert np.isfinite(losses[-1]) and all(np.isfinite(x) for x in losses if x == x)
        buf = algo.buffer
        assert np.isfinite(buf.obs[: len(buf)]).all() and np.isfinite(buf.rewards[: len(buf)]).all()
    finally:
        algo.stop()


# --- metrics export -----------------------------------------------------------------------------------
def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_training_exports_ray_metrics_on_the_prometheus_endpoint(ray_session):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    exp = load_experiment("smoke", {"name": "metrics_probe", "stopping.steps_per_iteration": 300})
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        wanted = [
            "ray_portfolio_episode_return",
            "ray_portfolio_validation_sharpe",
            "ray_portfolio_critic_loss",
            "ray_portfolio_policy_entropy",
            "ray_portfolio_env_steps_per_s",
            "ray_portfolio_trained_samples_per_s",
        ]

        def ours(text: str, name: str) -> list[str]:
            # other tests' runs export the same gauges with their own experiment tag
            return [ln for ln in text.splitlines() if ln.startswith(name + "{") and 'experiment="metrics_probe"' in ln]

        text, deadline = "", time.time() + 90
        while time.time() < deadline:
            text = _scrape(port)
            if all(ours(text, w) for w in wanted):
                break
            algo.train()  # keep reporting; the agent flushes every few seconds
            time.sleep(1)
        for w in wanted:
            lines = ours(text, w)
            assert lines, f"{w} not exported for this run"
            assert "trial=" in lines[0] and np.isfinite(float(lines[0].rsplit(" ", 1)[1]))
    finally:
        algo.stop()


# --- a trial whose process dies -----------------------------------------------------------------------
def test_dead_trial_process_is_retried_from_its_checkpoint(ray_session, tmp_path):
    exp_dir = tmp_path / "smoke"
    args = tune_args(
        tmp_path,
        "sweep.search_space={model.hidden: {grid_search: [[32, 32]]}}",
        "sweep.scheduler.type=fifo",
        "stopping.env_steps=3600",  # 12 iterations: the kill lands mid-run, long before the end
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(ray_session),
    )
    killed, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rows = next(iter(_results(exp_dir).values()), []) if exp_dir.exists() else []
        ckpts = list(exp_dir.glob("trial_*/checkpoint_*"))
        if rows and rows[-1]["training_iteration"] >= 3 and ckpts:
            # this sweep's one trial process (Tune records its pid in every result row), never another Ray's
            killed = rows[-1]["training_iteration"]
            os.kill(int(rows[-1]["pid"]), signal.SIGKILL)
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=300)
    assert killed is not None, out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    (rows,) = _results(exp_dir).values()
    iterations = [r["training_iteration"] for r in rows]
    assert iterations.count(1) == 1  # never restarted from scratch
    # after the kill Tune restored the trial from a checkpoint: its iteration count since restore restarts
    restored = [r for r in rows if r["iterations_since_restore"] == 1 and r["training_iteration"] > 1]
    assert restored, [(r["training_iteration"], r["iterations_since_restore"]) for r in rows]
    assert rows[-1]["portfolio"]["env_steps"] == 3600
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed"]


# --- a real two-node cluster on this machine ----------------------------------------------------------
@pytest.fixture
def two_node_cluster(tmp_path):
    """``ray start --head`` plus a worker node with the custom resource ``rollout``; both stopped after."""
    with ray_cluster(tmp_path) as cluster:
        yield cluster


def test_sweep_on_two_node_cluster_places_env_runners_on_the_worker_and_resumes(two_node_cluster, tmp_path):
    from ray.util.state import list_actors

    exp_dir = tmp_path / "smoke"
    args = tune_args(
        tmp_path,
        "resources.num_env_runners=1",
        "resources.custom_resources_per_env_runner={rollout: 1}",
        "sweep.scheduler.type=fifo",
    )
    env = cli_env(two_node_cluster["address"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    interrupted, deadline = False, time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        results = _results(exp_dir) if exp_dir.exists() else {}
        done = [t for t, rows in results.items() if rows and rows[-1]["portfolio"]["env_steps"] >= 1500]
        running = [t for t, rows in results.items() if rows and rows[-1]["portfolio"]["env_steps"] < 1500]
        if done and running:
            proc.send_signal(signal.SIGINT)
            interrupted = True
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=300)
    assert interrupted and proc.returncode == 130, out[-4000:]
    assert f"Ray: joined {two_node_cluster['address']}" in out
    res = subprocess.run(
        [sys.executable, "-m", "trainer.tune", *args, "--resume"], capture_output=True, text=True, env=env, timeout=400
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    runners = list_actors(
        address=two_node_cluster["dashboard"], filters=[("class_name", "=", "PortfolioEnvRunner")], limit=1000
    )
    assert len(runners) >= 2  # one per trial run (plus the resumed one)
    assert {a.node_id for a in runners} == {two_node_cluster["worker_node_id"]}
