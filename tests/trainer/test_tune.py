"""trainer.tune: dry runs, sweep schema errors, a real smoke sweep with ASHA and its summary, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli_env
from tests.conftest import tune_results as _results
from trainer.config import ExperimentError, available_experiments, load_experiment
from trainer.tune import DivergenceOrBudgetStopper, build_plan, check_resources


def _tune(args: list[str], ray_address: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = cli_env(ray_address) if ray_address else None
    return subprocess.run(
        [sys.executable, "-m", "trainer.tune", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.parametrize("name", available_experiments())
def test_every_shipped_experiment_passes_dry_run(name):
    res = _tune(["--exp", name, "--dry-run"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"experiment {name}: " in res.stdout and "resources per trial:" in res.stdout


def test_dry_run_shows_grid_size_and_resources():
    plan = build_plan(load_experiment("arch_sweep"))
    assert plan["trials"] == 12
    assert plan["resources_per_trial"] == {"CPU": 3.0, "GPU": 0.5, "learner": 1.0, "rollout": 2.0}
    assert plan["scheduler"]["max_t"] == 1_000_000
    assert build_plan(load_experiment("seed_sweep"))["trials"] == 10


@pytest.mark.parametrize(
    ("sweep_yaml", "message"),
    [
        ("  serach_space: {}\n", "key 'sweep.serach_space': unknown key"),
        (
            "  search_space:\n    data.cost_bps: {grid_search: [1, 2]}\n",
            "key 'sweep': Value error, search_space key 'data.cost_bps' cannot be swept; sweepable: seed, "
            "model.hidden, model.activation, sac.actor_lr, sac.critic_lr, sac.alpha_lr, sac.tau, sac.gamma, "
            "sac.initial_alpha, sac.target_entropy, sac.batch_size, sac.learning_starts, sac.training_intensity, "
            "sac.buffer_size",
        ),
        (
            "  search_space:\n    sac.tau: {normal: [0, 1]}\n",
            "key 'sweep': Value error, search_space.sac.tau must be one of "
            "{grid_search | choice | uniform | loguniform | randint: ...}, got {'normal': [0, 1]}",
        ),
        (
            "  search_space:\n    sac.actor_lr: {loguniform: [0, 0.1]}\n",
            "key 'sweep': Value error, search_space.sac.actor_lr.loguniform: low must be > 0, got 0",
        ),
        (
            "  search_space:\n    model.hidden: {grid_search: [[64, 64], [0]]}\n",
            "key 'sweep.search_space.model.hidden': value [0] is invalid (key 'model.hidden': Value error, every "
            "hidden layer size must be >= 1)",
        ),
        ("  num_samples: 0\n", "key 'sweep.num_samples': Input should be greater than or equal to 1"),
    ],
)
def test_bad_sweep_files_give_exact_errors(tmp_path, sweep_yaml, message):
    path = tmp_path / "bad.yaml"
    path.write_text("stopping: {env_steps: 100}\nsweep:\n" + sweep_yaml)
    with pytest.raises(ExperimentError) as info:
        load_experiment(str(path))
    assert str(info.value).startswith(f"{path}: {message}")
    res = _tune(["--exp", str(path), "--dry-run"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {path}: ")


def test_set_overrides_are_validated():
    res = _tune(["--exp", "quick", "--dry-run", "--set", "sac.gamma=2"])
    assert res.returncode == 2
    assert "key 'sac.gamma': Input should be less than or equal to 1" in res.stderr
    ok = _tune(["--exp", "quick", "--dry-run", "--set", "stopping.env_steps=2000"])
    assert ok.returncode == 0 and "budget: 2,000 env steps per trial" in ok.stdout


def test_impossible_resource_request_is_reported_before_tune_waits():
    with pytest.raises(ExperimentError) as info:
        check_resources(build_plan(load_experiment("arch_sweep")), {"CPU": 2.0})
    assert str(info.value) == (
        "each trial needs CPU=3 but the Ray cluster has CPU=2 in total; no trial could ever start (lower "
        "resources.* in the experiment, e.g. --set resources.num_gpus_per_learner=0, or add nodes)"
    )
    exp2 = load_experiment("arch_sweep", {"resources.num_env_runners": 0})
    with pytest.raises(ExperimentError, match=r"each trial needs GPU=0\.5 but the Ray cluster has GPU=0"):
        check_resources(build_plan(exp2), {"CPU": 2.0})


def test_stopper():
    stop = DivergenceOrBudgetStopper(env_steps=1000, iterations=None)
    assert not stop("t", {"portfolio": {"env_steps": 999, "diverged": False}})
    assert stop("t", {"portfolio": {"env_steps": 1000, "diverged": False}})
    assert stop("t", {"portfolio": {"env_steps": 10, "diverged": True}})
    by_iterations = DivergenceOrBudgetStopper(env_steps=10**9, iterations=3)
    assert not by_iterations("t", {"training_iteration": 2, "portfolio": {"env_steps": 5}})
    assert by_iterations("t", {"training_iteration": 3, "portfolio": {"env_steps": 5}})


def _trial_progress(exp_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_csv(p) for p in sorted(exp_dir.glob("trial_*/progress.csv"))}


def test_smoke_sweep_end_to_end(ray_session, tmp_path):
    res = _tune(["--exp", "smoke", "--storage", str(tmp_path)], ray_session)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    exp_dir = tmp_path / "smoke"
    assert "=== Sweep smoke: results by configuration" in res.stdout and "best configuration (by" in res.stdout
    summary = json.loads((exp_dir / "summary.json").read_text())
    trials = pd.read_parquet(exp_dir / "trials.parquet")
    progress = _trial_progress(exp_dir)
    assert len(trials) == 2 and set(trials["trial"]) == set(progress)
    # consistent with Tune's own results
    for _, row in trials.iterrows():
        df = progress[row["trial"]]
        assert row["env_steps"] == df["portfolio/env_steps"].iloc[-1]
        assert row["iterations"] == df["training_iteration"].iloc[-1]
        assert len(list((exp_dir / row["trial"]).glob("checkpoint_*"))) >= 1  # checkpoints kept per trial
        assert Path(row["best_checkpoint"]).parent.name == row["trial"]
        # kept checkpoints are a subset of the reported iterations, so the best score is at most the best seen
        assert row["best_checkpoint_score"] <= df["portfolio/validation/sharpe"].max() + 1e-9
        assert np.isclose(df["portfolio/validation/sharpe"], row["best_checkpoint_score"], atol=1e-9).any()
    # ASHA: trials run one after the other and seeded, so its decisions are reproducible; with grace 300
    # and reduction 2 the second trial continues only if it is at least as good as the first at each rung.
    early = trials[trials["status"] == "early_stopped"]
    if len(early) == 0:
        first, second = (progress[t] for t in sorted(progress))
        for rung in (300, 600, 1200):
            a = first.loc[first["portfolio/env_steps"] >= rung, "portfolio/validation/sharpe"].iloc[0]
            b = second.loc[second["portfolio/env_steps"] >= rung, "portfolio/validation/sharpe"].iloc[0]
            assert b >= a, "ASHA should have stopped the second trial"
    else:
        assert (early["env_steps"] < 1500).all()
        assert summary["configurations"][0]["n_early_stopped"] + summary["configurations"][1]["n_early_stopped"] == 1
    assert {g["config"] for g in summary["configurations"]} == {"model.hidden=[32, 32]", "model.hidden=[16]"}
    ew_test = summary["baselines"]["equal_weight"]["test_sharpe"]
    for g in summary["configurations"]:
        assert g["trials"] == 1 and set(g["test_sharpe"]) == {"median", "q25", "q75", "mean", "n"}
        assert g["n_seeds"] == 1 and g["n_folds"] == 1
        (row,) = [t for t in summary["trials"] if t["config"] == g["config"]]
        # paired with Equal Weight over the same days and costs
        assert row["test_sharpe_minus_ew"] == pytest.approx(row["test_sharpe"] - ew_test, abs=1e-9)
        assert g["test_sharpe_minus_ew"]["median"] == pytest.approx(row["test_sharpe_minus_ew"], abs=1e-9)
        assert g["beat_ew_fraction"] == float(row["test_sharpe_minus_ew"] > 0)
        lo, hi = g["test_sharpe_minus_ew"]["ci95"]
        assert lo <= hi
    assert set(summary["baselines"]) == {"equal_weight", "min_volatility", "max_sharpe"}
    report = Path(summary["best_backtest_report"])
    assert report.exists() and "| sac |" in report.read_text()
    for png in ("validation_curves.png", "test_sharpe_by_fold.png"):
        assert (exp_dir / png).stat().st_size > 10_000
    assert "| configuration | seeds x folds |" in (exp_dir / "summary.md").read_text()


def test_interrupted_sweep_resumes_without_redoing_finished_trials(ray_session, tmp_path):
    """FIFO (no early stop) so the second trial runs long enough to be interrupted mid-way."""
    exp_dir = tmp_path / "smoke"
    args = ["--exp", "smoke", "--storage", str(tmp_path), "--set", "sweep.scheduler.type=fifo"]
    cmd = [sys.executable, "-m", "trainer.tune", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(ray_session))
    deadline = time.time() + 300
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        results = _results(exp_dir) if exp_dir.exists() else {}
        done = [t for t, rows in results.items() if rows and rows[-1]["portfolio"]["env_steps"] >= 1500]
        running = [t for t, rows in results.items() if rows and rows[-1]["portfolio"]["env_steps"] < 1500]
        if done and running:  # first trial finished, second one half-way
            first_done = done[0]
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=300)
    assert first_done is not None, out[-3000:]
    assert proc.returncode == 130, out[-3000:]
    assert "sweep interrupted: 1 of 2 trials finished" in out and "--resume" in out
    before = _results(exp_dir)
    res = _tune([*args, "--resume"], ray_session)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    after = _results(exp_dir)
    assert after[first_done] == before[first_done]  # the finished trial was not run again
    (other,) = set(after) - {first_done}
    steps = [r["portfolio"]["env_steps"] for r in after[other]]
    assert steps[-1] == 1500 and steps == sorted(steps)  # continued from its checkpoint, not from zero
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]


def test_gpu_request_on_cpu_only_cluster_is_a_clear_error(ray_session, tmp_path):
    res = _tune(
        ["--exp", "smoke", "--storage", str(tmp_path), "--set", "resources.num_gpus_per_learner=1"], ray_session
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().endswith(
        "error: each trial needs GPU=1 but the Ray cluster has GPU=0 in total; no trial could ever start "
        "(set resources.num_gpus_per_learner=0, e.g. --set resources.num_gpus_per_learner=0, or add nodes)"
    )
    assert not (tmp_path / "smoke").exists()  # nothing started, nothing written
